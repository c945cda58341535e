"""Advisory locks on a store, so concurrent runs never interleave their writes.

Three locks, all ``flock(2)`` locks on small files in ``<store>/.ptyhpc/``
(zarr ignores a folder without ``zarr.json``):

``run.lock``
    Held for the whole of a run. A driver (:func:`ptyhpc.pipeline.ptycho_stage.run_ptycho`,
    ``ptyhpc reconstruct``, ``ptyhpc run``) takes it *exclusively*; the elements
    of a SLURM job array (``ptyhpc reconstruct-item``) take it *shared*, so they
    run side by side but never next to a driver. A second driver is refused at
    once with :class:`StoreLockedError` naming the holder.
``setup.lock``
    Taken exclusively and waited for while the result arrays are created or
    checked, so that array elements starting together do not race to create them.
``locks/item-NNNNNN.lock``
    Taken exclusively (waiting) by the task of one item, on whichever worker
    it runs: a task left running by a vanished client and its resubmitted twin
    never write the same item at once; the second sees status 1 and skips.

The kernel drops a ``flock`` lock when its process dies, so a killed run
leaves no stale lock behind. On network file systems ``flock`` must reach
the server: NFSv4 (Linux emulates it with POSIX locks), GPFS and BeeGFS do;
Lustre needs the ``flock`` mount option. The lock files themselves are
empty apart from the holder's description, and are never deleted (deleting
a lock file while another process waits on it would split the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..io import StoreError

__all__ = ["StoreLockedError", "run_lock", "setup_lock", "item_lock", "lock_dir"]

LOCK_DIR = ".ptyhpc"


class StoreLockedError(StoreError):
    """Another run holds the store; the message names it and says what to do."""


def lock_dir(store_path: str | os.PathLike) -> Path:
    """``<store>/.ptyhpc``, created if missing.

    Raises
    ------
    StoreError
        The store folder does not exist or is not a zarr store.
    """
    store = Path(store_path)
    if not store.is_dir():
        raise StoreError(f"{store}: no such store")
    if not (store / "zarr.json").is_file():
        # Never write into a folder that is not a store (a data folder given by mistake).
        raise StoreError(f"{store}: not a zarr store (no zarr.json); nothing was written there")
    d = store / LOCK_DIR
    (d / "locks").mkdir(parents=True, exist_ok=True)
    return d


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}


@contextlib.contextmanager
def _flock(path: Path, mode: int, *, wait: bool):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            fd = -1
            yield False
            return
        except OSError as exc:  # ENOLCK/ENOSYS/EINVAL: the file system has no flock
            raise StoreError(f"{path}: cannot lock ({exc.strerror}); the store's file system must support "
                             "flock(2) (Lustre: mount with -o flock)") from exc
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def run_lock(store_path: str | os.PathLike, *, shared: bool = False):
    """Hold the store's run lock for the duration of a ``with`` block.

    Parameters
    ----------
    store_path : path-like
        Store folder.
    shared : bool
        ``False`` (a driver): exclusive. ``True`` (one element of a job
        array): shared with other elements, exclusive of drivers.

    Raises
    ------
    StoreLockedError
        The lock is held in a conflicting mode; raised at once, without waiting.
    StoreError
        The store folder does not exist.
    """
    path = lock_dir(store_path) / "run.lock"
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with _flock(path, mode, wait=False) as fd:
        if fd is False:
            raise StoreLockedError(_refusal(Path(store_path), path))
        if not shared:
            # Only an exclusive holder may describe itself: shared holders would overwrite each other.
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)


def _refusal(store: Path, path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if info:
        who = (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
               f"({info.get('command')!r})")
    else:
        who = "the elements of a job array (ptyhpc reconstruct-item)"
    return (f"{store}: store is in use by another ptyhpc run: {who}. Two runs on one store would "
            "interleave their writes; wait for that run to finish (or cancel it), then rerun: finished "
            "items are kept and skipped.")


@contextlib.contextmanager
def setup_lock(store_path: str | os.PathLike):
    """Exclusive lock around creating/checking result arrays; waits for the holder."""
    with _flock(lock_dir(store_path) / "setup.lock", fcntl.LOCK_EX, wait=True):
        yield


@contextlib.contextmanager
def item_lock(store_path: str | os.PathLike, item: int):
    """Exclusive lock of one item's results; waits for the holder.

    Parameters
    ----------
    store_path : path-like
    item : int
        Item index (>= 0).
    """
    with _flock(lock_dir(store_path) / "locks" / f"item-{int(item):06d}.lock", fcntl.LOCK_EX, wait=True):
        yield
