"""Helpers of the service tests: a config, tokens from the CLI, the service as a real process on
loopback, a real PostgreSQL server (Debian's package) in a temporary folder, SSE reading."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CNT = DATA / "cnt_tilt_series"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, **settings) -> Path:
    """``service.yaml`` in ``folder``: data root = the project's data/, results under ``folder``."""
    cfg = {"data_roots": [str(DATA)], "results_root": str(folder / "results"), "port": free_port(),
           "cluster": {"workers": 1}, "poll_s": 0.2, "cancel_grace_s": 3, **settings}
    path = folder / "service.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptyhpc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})


def create_token(config: Path, user: str, role: str = "user") -> str:
    r = run_cli("token", "create", "--config", config, "--user", user, "--role", role)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _sessions(config: Path):
    from ptyhpc.service.config import load_config
    from ptyhpc.service.db import make_engine, migrate, sessions

    cfg = load_config(config)
    cfg.results_root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.db_url)
    migrate(engine)
    return engine, sessions(engine)


def make_tokens(config: Path, users) -> list[str]:
    """Tokens made in-process, as ``ptyhpc token create`` makes them (that command is tested on its own)."""
    from ptyhpc.service.auth import create_token as make

    engine, Session = _sessions(config)
    try:
        return [make(Session, u, r) for u, r in users]
    finally:
        engine.dispose()


def revoke_token(config: Path, token: str) -> None:
    from ptyhpc.service.auth import revoke_token as revoke

    engine, Session = _sessions(config)
    try:
        revoke(Session, token)
    finally:
        engine.dispose()


def cnt_recipe(angles=(0, 1, 2), n_iter=2, tomo_iter=5) -> dict:
    """The bundled CNT demo recipe cut down: a few angles, a few iterations, no output paths."""
    files = [str(CNT / f"tilt_{i:03d}.h5") for i in angles]
    return {"input": {"files": files}, "ptycho": {"n_iter": n_iter}, "tomo": {"n_iter": tomo_iter}}


class Service:
    """``ptyhpc serve --config`` as a child process on 127.0.0.1."""

    def __init__(self, config: Path):
        self.config = config
        cfg = yaml.safe_load(config.read_text())
        self.port = cfg["port"]
        self.results = Path(cfg["results_root"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = config.parent / "serve.log"

    def start(self, timeout=60) -> "Service":
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ptyhpc.cli", "serve", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MPLBACKEND": "Agg"})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service did not answer in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def client(self, token=None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def kill_job_processes(db_url: str) -> None:
    """Stop the ``ptyhpc run`` process groups a test's service left running (by recorded pid + start)."""
    from sqlalchemy import select

    from ptyhpc.service.db import Job, make_engine, sessions
    from ptyhpc.service.executor import pid_alive

    engine = make_engine(db_url)
    try:
        with sessions(engine)() as s:
            rows = s.execute(select(Job.pid, Job.pid_start)).all()
    except Exception:  # noqa: BLE001 - no database yet
        rows = []
    finally:
        engine.dispose()
    for pid, start in rows:
        if pid_alive(pid, start):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def follow_events(client: httpx.Client, job_id: str, timeout=180) -> list[tuple[str, dict]]:
    """Read the job's SSE stream to its ``end`` event (or fail after ``timeout`` s)."""
    events, name = [], None
    deadline = time.monotonic() + timeout
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(60)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not end in {timeout} s; events {events[-3:]}")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    return events
    raise AssertionError(f"event stream closed without 'end': {events[-3:]}")


def wait_state(client: httpx.Client, job_id: str, states, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")


class PostgresUnavailable(RuntimeError):
    pass


class LocalPostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl), run as a non-root user when
    the tests run as root (PostgreSQL refuses root)."""

    def __init__(self):
        self.bindir = self._bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ptyhpc-pg-"))
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise PostgresUnavailable("running as root and no 'postgres'/'nobody' user to run PostgreSQL as")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    @staticmethod
    def _bindir() -> Path:
        found = shutil.which("initdb")
        if found:
            return Path(os.path.realpath(found)).parent
        cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not cands:
            raise PostgresUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        return Path(cands[-1]).parent

    def _run(self, *args, timeout=60):
        def demote():
            if self.user is not None:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        r = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                           timeout=timeout, preexec_fn=demote, cwd=self.root)
        if r.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {r.stderr.strip()[-800:]}")
        return r

    def start(self) -> "LocalPostgres":
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
