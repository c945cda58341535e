"""``ptyhpc verify``: an fsck of a store (missing and corrupt chunks by array and item), and its repair.

Every stored chunk of every array is read back, so its crc32c checksum
(:mod:`ptyhpc.io.checksum`) is checked; chunks that must exist are checked
for presence (a deleted chunk reads as the fill value):

- ``frames``: every item's shard;
- per-item ptycho results (``object``, ``probe``, ``error``, ``illumination``,
  ``positions``): the chunks of every item whose status is 1 (done); done
  items must also be finite;
- tomo arrays of a complete tomography (written with every chunk present).

``repair=True`` resets the items whose results are damaged to pending
(status 0, damaged chunks deleted) so that a rerun of ``ptyhpc reconstruct``
recomputes them, clears the tomography's ``complete`` flag when a tomo array
is damaged, and removes stale build folders of killed ingests. Damaged raw
data (``frames`` and the other ingest arrays) cannot be recomputed from the
store: the report names the source files to re-ingest.

Stages run the cheap part (presence of the chunks they consume,
:func:`check_consumed_items`); checksums are checked by zarr on every read.
"""

from __future__ import annotations

import itertools
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import zarr

from . import layout
from .checksum import chunk_path, has_checksum, is_checksum_error, item_chunk_keys, storage_chunks
from .store import StoreError, open_store

__all__ = ["verify_store", "check_consumed_items", "PTYCHO_ITEM_RESULTS"]

#: Per-item ptycho results whose chunks a done item must have.
PTYCHO_ITEM_RESULTS = (layout.PTYCHO_OBJECT, layout.PTYCHO_PROBE, layout.PTYCHO_ERROR, layout.PTYCHO_ILLUMINATION,
                       layout.PTYCHO_POSITIONS)
_PTYCHO_BOOKKEEPING = (layout.PTYCHO_STATUS, layout.PTYCHO_FAILURE)
_TOMO_ARRAYS = (layout.TOMO_SIRT, layout.TOMO_FBP, layout.TOMO_PROJECTIONS, layout.TOMO_SHIFTS)


def check_consumed_items(group, names, items, where) -> None:
    """Refuse to consume items whose chunks are missing from the store (one ``stat`` per chunk).

    Parameters
    ----------
    group : zarr.Group
    names : iterable of str
        Per-item arrays (axis 0 = item) the stage reads.
    items : iterable of int
    where : str or path
        Store, for the message.

    Raises
    ------
    StoreError
        Naming the array and the items, and the repair command.
    """
    for name in names:
        arr = group.get(name)
        if not isinstance(arr, zarr.Array):
            continue
        bad = [int(i) for i in items if any(not chunk_path(arr, k).exists() for k in item_chunk_keys(arr, i))]
        if bad:
            raise StoreError(f"{where}: {name}: chunks of item(s) {bad} are missing from the store (they would "
                             f"read as the fill value); run ptyhpc verify {where} --repair, then reconstruct")


def _region(arr: zarr.Array, coords) -> tuple:
    size = storage_chunks(arr)
    return tuple(slice(c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, size, arr.shape))


def _blocks(arr: zarr.Array, region: tuple):
    """The chunk-sized blocks of one stored object (one block unless the array is sharded)."""
    if arr.shards is None:
        yield region
        return
    starts = [range(r.start, r.stop, c) for r, c in zip(region, arr.chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(a, min(a + c, r.stop)) for a, c, r in zip(corner, arr.chunks, region))


def _grid(arr: zarr.Array):
    size = storage_chunks(arr)
    return itertools.product(*[range(-(-int(n) // int(s))) for n, s in zip(arr.shape, size)])


def verify_store(store_path: str | PathLike, *, repair: bool = False) -> dict:
    """Check every chunk of a store; optionally reset what it finds damaged so a rerun recomputes it.

    Parameters
    ----------
    store_path : path-like
        A complete ptyhpc store.
    repair : bool
        Reset damaged ptycho items to pending (status 0) and delete their
        damaged chunks; clear ``results/tomo`` ``complete`` when a tomo array
        is damaged; remove stale ``.partial-*``/``.old-*`` build folders of
        this store. Takes the store's run lock (refused while a run holds it).

    Returns
    -------
    dict
        ``store``; ``arrays`` and ``chunks`` checked; ``checksummed`` (names of
        arrays without crc32c: stores older than checksums); ``problems``, a
        list of dicts ``array``, ``chunk`` (key), ``items`` (list, or None for
        arrays without an item axis), ``kind`` (``"missing"``, ``"corrupt"``,
        ``"non-finite"``), ``detail``, ``repairable``; ``reset_items`` (items
        set to pending); ``tomo_reset`` (bool); ``reingest`` (source files of
        items whose raw data is damaged); ``stale_build_folders`` (found, and
        removed with ``repair``); ``clean`` (True when nothing is left to do).

    Raises
    ------
    StoreError
        Not a complete ptyhpc store.
    StoreLockedError
        ``repair`` while another run holds the store.
    """
    import contextlib  # noqa: PLC0415

    from ..pipeline.lock import run_lock  # noqa: PLC0415
    from .safe_write import remove_path, stale_build_folders  # noqa: PLC0415

    store_path = Path(store_path)
    group = open_store(store_path, mode="r+" if repair else "r")
    with run_lock(store_path) if repair else contextlib.nullcontext():
        report = _scan(group, store_path)
        stale = stale_build_folders(store_path.parent)
        stale = [p for p in stale if p.name.startswith(store_path.name + ".")]
        report["stale_build_folders"] = [str(p) for p in stale]
        report["reset_items"], report["tomo_reset"], report["repaired"] = [], False, repair
        if repair:
            _repair(group, report)
            for p in stale:   # this store's build folders only, never another store's
                remove_path(p)
    left = [p for p in report["problems"] if not (repair and p["repairable"])]
    report["clean"] = not left and not (report["stale_build_folders"] and not repair)
    return report


def _scan(group, store_path: Path) -> dict:
    status = None
    problems = []
    if layout.PTYCHO_STATUS in group:
        try:
            status = np.asarray(group[layout.PTYCHO_STATUS][...])
        except Exception:  # noqa: BLE001  (reported below, chunk by chunk)
            status = None
    tomo = group.get(layout.TOMO)
    tomo_complete = bool(getattr(tomo, "attrs", {}).get("complete", False))
    n_arrays = n_chunks = 0
    unchecked = []
    with warnings.catch_warnings():   # the lock folder .ptyhpc is not a zarr node, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        members = sorted(group.members(max_depth=None), key=lambda kv: kv[0])
    for name, arr in members:
        if not isinstance(arr, zarr.Array):
            continue
        n_arrays += 1
        if not has_checksum(arr):
            unchecked.append(name)
        per_item = name == layout.FRAMES or name in PTYCHO_ITEM_RESULTS or name in _PTYCHO_BOOKKEEPING
        for coords in _grid(arr):
            n_chunks += 1
            region = _region(arr, coords)
            items = list(range(region[0].start, region[0].stop)) if per_item else None
            key = arr.metadata.encode_chunk_key(tuple(coords))
            done = status is not None and items is not None and bool(np.any(status[items] == 1))
            if not chunk_path(arr, coords).exists():
                expected = (name == layout.FRAMES or (name in PTYCHO_ITEM_RESULTS and done)
                            or (name in _TOMO_ARRAYS and tomo_complete and has_checksum(arr)))
                if expected:
                    problems.append(_problem(name, key, items, "missing", "chunk file deleted"))
                continue
            for block in _blocks(arr, region):   # inner chunks of a shard: memory bounded by one chunk
                try:
                    data = np.asarray(arr[block])
                except Exception as exc:  # noqa: BLE001  (any decode failure is damage)
                    detail = "checksum mismatch" if is_checksum_error(exc) else f"{type(exc).__name__}: {exc}"
                    problems.append(_problem(name, key, items, "corrupt", detail))
                    break
                if (name in PTYCHO_ITEM_RESULTS and done and data.dtype.kind in "fc"
                        and not np.all(np.isfinite(data))):
                    problems.append(_problem(name, key, items, "non-finite", "NaN/inf in a done item"))
                    break
    sources = list(group.attrs.get("source_files", []))
    reingest = sorted({sources[i] if i < len(sources) else f"item {i}" for p in problems
                       if not p["repairable"] and p["items"] for i in p["items"]})
    if any(not p["repairable"] and not p["items"] for p in problems):
        reingest = sources or reingest
    return {"store": str(store_path), "arrays": n_arrays, "chunks": n_chunks, "not_checksummed": unchecked,
            "problems": problems, "reingest": reingest}


def _problem(name, key, items, kind, detail) -> dict:
    repairable = name in PTYCHO_ITEM_RESULTS or name in _PTYCHO_BOOKKEEPING or name in _TOMO_ARRAYS
    return {"array": name, "chunk": f"{name}/{key}", "items": items, "kind": kind, "detail": detail,
            "repairable": repairable}


def _repair(group, report: dict) -> None:
    root = Path(report["store"])
    reset = set()
    for p in report["problems"]:
        if not p["repairable"]:
            continue
        f = root / p["chunk"]
        if f.exists() and p["kind"] != "non-finite":
            f.unlink()   # a damaged chunk; its item is recomputed (a status chunk deleted reads as 0 = pending)
        if p["array"] in _TOMO_ARRAYS:
            report["tomo_reset"] = True
        elif p["items"]:
            reset.update(p["items"])
    if layout.PTYCHO_STATUS in group:
        status = group[layout.PTYCHO_STATUS]
        failure = group.get(layout.PTYCHO_FAILURE)
        for i in sorted(reset):
            status[i] = 0
            if isinstance(failure, zarr.Array):
                try:
                    failure[i] = ""
                except Exception:  # noqa: BLE001  (its chunk was the damaged one and is gone)
                    pass
    if report["tomo_reset"] and layout.TOMO in group and "complete" in group[layout.TOMO].attrs:
        del group[layout.TOMO].attrs["complete"]
    report["reset_items"] = sorted(reset)


def report_lines(report: dict) -> list[str]:
    """Plain-text lines of a :func:`verify_store` report (for ``ptyhpc verify``)."""
    lines = [f"{report['store']}: {report['arrays']} arrays, {report['chunks']} chunks checked"]
    if report["not_checksummed"]:
        lines.append(f"  without checksums (written before them; damage found only when it breaks decoding): "
                     f"{', '.join(report['not_checksummed'])}")
    for p in report["problems"]:
        items = "" if not p["items"] else f" item {p['items'][0]}" if len(p["items"]) == 1 else \
            f" items {p['items'][0]}-{p['items'][-1]}"
        lines.append(f"  {p['kind']}: {p['chunk']}{items} ({p['detail']})"
                     + ("" if p["repairable"] else " - raw data: re-ingest"))
    if report["reset_items"]:
        lines.append(f"  reset to pending: item(s) {report['reset_items']}; rerun ptyhpc reconstruct")
    if report["tomo_reset"]:
        lines.append("  tomography marked incomplete; rerun ptyhpc tomo")
    if report["reingest"]:
        lines.append(f"  raw data damaged: re-ingest from {report['reingest']}")
    for p in report["stale_build_folders"]:
        lines.append(f"  stale build folder of a killed ingest: {p}")
    if report["clean"]:
        lines.append("clean")
    elif not report["repaired"] and any(p["repairable"] for p in report["problems"]):
        lines.append("damage found: ptyhpc verify --repair resets the damaged items, then rerun the stages")
    else:
        lines.append("damage left that the store cannot recompute: re-ingest the raw data named above")
    return lines
