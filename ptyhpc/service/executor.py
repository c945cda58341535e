"""Runs queued jobs as ``ptyhpc run`` subprocesses, with bounded concurrency, and survives restarts.

Each run is ``sh -c 'python -m ptyhpc.cli run recipe.yaml; echo $? > rc-N'`` in the job folder, in a
session of its own (so it outlives the service, and a cancel can signal the whole process group,
dask workers included). The database records its pid and the pid's kernel start time. On every
poll (and so after a restart) a running job is:

* finished, when its ``rc-N`` file exists (``done`` for 0, else ``failed`` with the log's error);
* re-attached, while its process lives (same pid *and* start time);
* resumed, when the process is gone without an ``rc-N`` (killed with the service, a reboot): run
  again, up to ``max_attempts``; ``ptyhpc run`` keeps the store and skips finished items.

Queued jobs start in submission order while fewer than ``max_concurrent_jobs`` run in all and fewer
than ``max_jobs_per_user`` for their owner. The store's lock and status arrays stay the truth about
progress: the executor only starts, watches and stops processes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from .config import ServiceConfig
from .db import Job
from .jobs import job_dir

__all__ = ["Executor", "proc_start_time", "pid_alive"]


def proc_start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def pid_alive(pid: Optional[int], start: Optional[int]) -> bool:
    """True when ``pid`` runs and is the same process that started at ``start``."""
    return pid is not None and start is not None and proc_start_time(pid) == start


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if re.match(r"\s*(error|refused|Traceback|\w+Error)\b", line):
            return line.strip()[:2000]
    return (lines[-1].strip() if lines else "no output")[:2000]


class Executor:
    """Starts, watches, resumes and cancels jobs; :meth:`poll` does one round, :meth:`start` loops."""

    def __init__(self, cfg: ServiceConfig, Session: sessionmaker):
        self.cfg, self.Session = cfg, Session
        self._procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # -- loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ptyhpc-executor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling. Running jobs keep running: a restarted service re-attaches to them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the loop must survive a database hiccup
                print(f"ptyhpc service: executor poll failed: {exc!r}", file=sys.stderr, flush=True)
            self._wake.wait(self.cfg.poll_s)
            self._wake.clear()

    def poll(self) -> None:
        """One round: reap or resume running jobs, then start queued ones within the limits."""
        with self._lock:
            for pid, p in list(self._procs.items()):
                if p.poll() is not None:  # reap our children (no zombies); the rc file tells the result
                    del self._procs[pid]
            self._check_running()
            self._start_queued()

    # -- running jobs ----------------------------------------------------------------------------
    def _check_running(self) -> None:
        with self.Session() as s:
            running = s.scalars(select(Job).where(Job.state == "running")).all()
        for job in running:
            d = job_dir(self.cfg, job.id)
            rc_file = d / f"rc-{job.attempts}"
            if rc_file.exists():
                try:
                    rc = int(rc_file.read_text().strip() or "1")
                except ValueError:
                    rc = 1
                error = None if rc == 0 else _last_error(d / f"run-{job.attempts}.log")
                self._finish(job.id, "done" if rc == 0 else "failed", rc, error)
            elif not pid_alive(job.pid, job.pid_start):
                if job.attempts >= self.cfg.max_attempts:
                    self._finish(job.id, "failed", None,
                                 f"the run ended without an exit status {job.attempts} times; see run-*.log")
                else:
                    self._launch(job.id)  # resume: ptyhpc run keeps the store, skips finished items

    def _finish(self, job_id: str, state: str, rc: Optional[int], error: Optional[str]) -> None:
        with self.Session.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "running":
                return  # cancelled meanwhile
            job.state, job.exit_code, job.error, job.finished_at = state, rc, error, time.time()

    # -- queued jobs -----------------------------------------------------------------------------
    def _start_queued(self) -> None:
        with self.Session() as s:
            running = s.scalars(select(Job.owner).where(Job.state == "running")).all()
            queued = s.execute(select(Job.id, Job.owner).where(Job.state == "queued")
                               .order_by(Job.created_at, Job.id)).all()
        per_user: dict[str, int] = {}
        for owner in running:
            per_user[owner] = per_user.get(owner, 0) + 1
        total = len(running)
        for job_id, owner in queued:
            if total >= self.cfg.max_concurrent_jobs:
                break
            if per_user.get(owner, 0) >= self.cfg.max_jobs_per_user:
                continue
            with self.Session.begin() as s:
                job = s.get(Job, job_id, with_for_update=True)
                if job is None or job.state != "queued":
                    continue
                job.state, job.started_at = "running", time.time()
            self._launch(job_id)
            total += 1
            per_user[owner] = per_user.get(owner, 0) + 1

    def _launch(self, job_id: str) -> None:
        with self.Session.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.state != "running":
                return
            job.attempts += 1
            attempt, stages = job.attempts, job.stages
        d = job_dir(self.cfg, job_id)
        cmd = [sys.executable, "-m", "ptyhpc.cli", "run", "recipe.yaml"]
        if stages:
            cmd += ["--stages", ",".join(json.loads(stages))]
        script = (f"{shlex.join(cmd)}; rc=$?; echo $rc > .rc-{attempt}.tmp && mv .rc-{attempt}.tmp rc-{attempt}")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")}
        with open(d / f"run-{attempt}.log", "ab") as log:
            log.write(f"# attempt {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n".encode())
            log.flush()
            p = subprocess.Popen(["/bin/sh", "-c", script], cwd=d, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        self._procs[str(p.pid)] = p
        start = proc_start_time(p.pid)
        with self.Session.begin() as s:
            job = s.get(Job, job_id)
            job.pid, job.pid_start = p.pid, start

    # -- cancel ----------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job (SIGTERM to its process group, SIGKILL after the grace
        period). Returns the job's state afterwards (a finished job keeps its state)."""
        with self._lock, self.Session.begin() as s:  # not between a poll's check and its launch
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise KeyError(job_id)
            if job.state not in ("queued", "running"):
                return job.state
            pid, start, was = job.pid, job.pid_start, job.state
            job.state, job.finished_at, job.error = "cancelled", time.time(), "cancelled by request"
        if was == "running" and pid_alive(pid, start):
            _signal_group(pid, signal.SIGTERM)
            threading.Thread(target=self._kill_later, args=(pid, start), daemon=True).start()
        self.wake()
        return "cancelled"

    def _kill_later(self, pid: int, start: int) -> None:
        deadline = time.monotonic() + self.cfg.cancel_grace_s
        while time.monotonic() < deadline:
            if not pid_alive(pid, start):
                break
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)  # the leader may be gone while dask workers linger


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
