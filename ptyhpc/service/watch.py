"""Beamline watch folders: a scan sub-folder is queued once its marker (or last expected) file appears.

Each configured folder is polled every ``poll_s``. A scan is one sub-folder; it is complete when the
file ``marker`` or ``last_file`` exists in it (and is at least ``settle_s`` old). The recipe file of
the watch entry, its ``input.files`` relative to the scan folder, is then checked and queued as a
job of the entry's user. The database remembers queued scans, so a restart queues nothing twice; a
scan whose recipe is refused is remembered too, with the reason on stderr (no retry loop).
"""

from __future__ import annotations

import sys
import threading
import time

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import WatchSeen
from .jobs import RecipeRefused

__all__ = ["Watcher"]


class Watcher:
    def __init__(self, app_state):
        self.state = app_state
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ptyhpc-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - keep watching
                print(f"ptyhpc service: watch poll failed: {exc!r}", file=sys.stderr, flush=True)
            self._stop.wait(self.state.cfg.poll_s)

    def poll(self) -> list[str]:
        """One scan of every watch folder; returns the ids of the jobs queued."""
        from .app import submit_job  # noqa: PLC0415

        queued = []
        for w in self.state.cfg.watch:
            folder = w.folder.resolve()
            if not folder.is_dir():
                continue
            with self.state.Session() as s:
                seen = set(s.scalars(select(WatchSeen.scan).where(WatchSeen.folder == str(folder))))
            for scan in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in seen):
                trigger = scan / (w.marker or w.last_file)
                if not trigger.is_file() or time.time() - trigger.stat().st_mtime < w.settle_s:
                    continue
                def record(job_id, scan=scan):
                    return [WatchSeen(folder=str(folder), scan=scan.name, job_id=job_id, created_at=time.time())]

                try:
                    recipe = yaml.safe_load(w.recipe.read_text())
                    queued.append(submit_job(self.state, w.user, recipe, w.stages, source=f"watch:{scan}",
                                             files_from=scan, also=record))
                except IntegrityError:
                    continue  # recorded meanwhile
                except (RecipeRefused, OSError, yaml.YAMLError) as exc:
                    print(f"ptyhpc service: watch {scan}: not queued: {exc}", file=sys.stderr, flush=True)
                    with self.state.Session.begin() as s:  # remembered, so it is not retried every poll
                        s.add_all(record(""))
        return queued
