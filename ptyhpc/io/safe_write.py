"""Safe replacement of a store: what ``ingest --overwrite`` may delete, and the swap itself.

Rules (issue 12):

- only an existing *ptyhpc store* (a zarr v3 group with ``ptyhpc_schema``) may be overwritten; a raw
  file, a data folder or any other path is refused, as is a symbolic link;
- never a path that is, or contains, one of the ingest's inputs;
- only while holding the old store's run lock (:func:`ptyhpc.pipeline.lock.run_lock`), so a running
  ``reconstruct`` is never wiped (refused with exit code 3 instead);
- the new store is built beside the old one; the old one is moved aside and deleted only once the new one
  is in place, so any failure leaves the old store intact.

Stale build folders (``<store>.partial-<pid>``, ``<store>.old-<pid>``) of killed ingests are found by
:func:`stale_build_folders` and removed by :func:`remove_stale_build_folders`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from .validate import IngestError

__all__ = ["is_ptyhpc_store", "check_target", "replace_store", "remove_path", "stale_build_folders",
           "remove_stale_build_folders", "clean_stale_for", "StaleBuildWarning"]

class StaleBuildWarning(UserWarning):
    """Build folders of killed ingests were found (and, for the same target, removed)."""


_BUILD = re.compile(r"^(?P<store>.+)\.(?P<what>partial|old)-(?P<pid>\d+)$")


def is_ptyhpc_store(path: str | PathLike) -> bool:
    """True when ``path`` is a folder whose ``zarr.json`` is a group with a ``ptyhpc_schema`` attribute.

    Incomplete stores (``ingest_complete`` false) count: they are ptyhpc's own.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group" and \
        "ptyhpc_schema" in (meta.get("attributes") or {})


def _inputs_inside(target: Path, inputs: Iterable[str | PathLike]) -> list[str]:
    found = []
    for f in inputs:
        if f is None:
            continue
        real = Path(f).resolve()
        if real == target or target in real.parents:
            found.append(str(f))
    return found


def check_target(store_path: str | PathLike, overwrite: bool, inputs: Iterable[str | PathLike] = ()) -> None:
    """Refuse an ingest target that must not be written (before anything is read or written).

    Parameters
    ----------
    store_path : path-like
        The store to create.
    overwrite : bool
        ``--overwrite`` was given.
    inputs : iterable of path-like
        Every file the ingest reads (raw files, dark, flat, mask).

    Raises
    ------
    IngestError
        The target is or contains an input; it exists and ``overwrite`` is
        False; it exists and is not a ptyhpc store, or is a symbolic link.
    StoreLockedError
        ``overwrite`` of a store another run holds.
    """
    store_path = Path(store_path)
    inside = _inputs_inside(store_path.resolve(), inputs)
    if inside:
        raise IngestError(f"{store_path}: is or contains input file(s) {inside[:3]}; choose another output "
                          "(nothing was written or deleted)")
    if not (store_path.exists() or store_path.is_symlink()):
        return
    if not overwrite:
        raise IngestError(f"{store_path}: store already exists; pass overwrite=True (--overwrite) to replace it")
    if store_path.is_symlink():
        raise IngestError(f"{store_path}: is a symbolic link; --overwrite replaces only a store folder itself "
                          f"(give {store_path.resolve()})")
    if not is_ptyhpc_store(store_path):
        raise IngestError(f"{store_path}: exists and is not a ptyhpc store; --overwrite replaces only a store "
                          "written by ptyhpc ingest (nothing was deleted)")
    from ..pipeline.lock import run_lock  # noqa: PLC0415  (io must not import the pipeline at module level)

    with run_lock(store_path):   # raises StoreLockedError at once when a run holds the store
        pass


def replace_store(tmp: Path, store_path: Path, overwrite: bool) -> None:
    """Put the complete store ``tmp`` at ``store_path`` (the last step of every ingest).

    With ``overwrite`` the old store (checked again by :func:`check_target`)
    is moved aside under its run lock, the new one renamed into place, and
    only then the old one deleted; a failed rename puts the old one back.
    Without it, a store that appeared meanwhile (a concurrent ingest to the
    same target) is kept and this one refused.

    Raises
    ------
    IngestError
        A concurrent ingest created ``store_path``; the target is no longer a ptyhpc store.
    StoreLockedError
        A run took the old store meanwhile.
    """
    from ..pipeline.lock import run_lock  # noqa: PLC0415

    exists = store_path.exists() or store_path.is_symlink()
    if not exists:
        try:
            tmp.rename(store_path)
            return
        except OSError as exc:
            if not (store_path.exists() or store_path.is_symlink()):
                raise
            exists = True   # lost the race to another ingest: fall through to the checks below
    if not overwrite:
        raise IngestError(f"{store_path}: was created by another ingest while this one ran (two ingests to "
                          "one target); that store is kept and this one discarded")
    check_target(store_path, overwrite)
    old = store_path.with_name(f"{store_path.name}.old-{os.getpid()}")
    remove_path(old)
    with run_lock(store_path):
        store_path.rename(old)   # the open lock file moves with it; a new run cannot start on it
        try:
            tmp.rename(store_path)
        except BaseException:
            old.rename(store_path)
            raise
    remove_path(old)


def remove_path(path: Path) -> None:
    """Delete a folder tree, a file or a dangling link; nothing when ``path`` does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_build_folders(folder: str | PathLike) -> list[Path]:
    """Build folders of ingests whose process is gone, in ``folder``.

    ``<store>.partial-<pid>`` (a store being written) and ``<store>.old-<pid>``
    (a replaced store not yet deleted) whose ``pid`` is not a live process on
    this host. A folder of an ingest running on another host that shares the
    file system cannot be told from a stale one by its pid; remove those only
    when no ingest runs there.

    Returns
    -------
    list of Path
        Sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _BUILD.match(p.name)
        if m and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            if m["what"] == "old" and not (folder / m["store"]).exists():
                continue   # killed between the two renames: the only copy, restore it by hand (mv)
            out.append(p)
    return sorted(out)


def remove_stale_build_folders(folder: str | PathLike) -> list[Path]:
    """Delete :func:`stale_build_folders` of ``folder``; returns what was removed."""
    gone = stale_build_folders(folder)
    for p in gone:
        remove_path(p)
    return gone


def clean_stale_for(store_path: str | PathLike) -> list[Path]:
    """Remove the stale build folders of ``store_path`` (called by every ingest) and warn about them.

    Returns
    -------
    list of Path
        The folders removed.

    Warns
    -----
    StaleBuildWarning
        Naming the folders removed, and stale folders of other stores in the same folder (left alone).
    """
    import warnings  # noqa: PLC0415

    store_path = Path(store_path)
    stale = stale_build_folders(store_path.parent)
    mine = [p for p in stale if _BUILD.match(p.name)["store"] == store_path.name]
    others = [p for p in stale if p not in mine]
    for p in mine:
        remove_path(p)
    if mine:
        warnings.warn(f"removed {len(mine)} build folder(s) of killed ingests of {store_path}: "
                      f"{[p.name for p in mine]}", StaleBuildWarning, stacklevel=2)
    if others:
        warnings.warn(f"build folder(s) of killed ingests of other stores in {store_path.parent}: "
                      f"{[p.name for p in others]}; ptyhpc verify STORE --repair (or the next ingest of that "
                      "store) removes them", StaleBuildWarning, stacklevel=2)
    return mine
