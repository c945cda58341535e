"""Item status beyond pending/done: checked inputs and outputs, failed items and their reasons.

``results/ptycho/status`` holds :data:`PENDING` (0), :data:`DONE` (1) or
:data:`FAILED` (2); a failed item's reason is in ``results/ptycho/failure``
(one string per item, each in its own chunk, so tasks never share a chunk).
A rerun retries failed items; ``ptyhpc status`` shows the reasons; later
stages refuse items that are not done and name them.

An item is marked done only after :func:`check_item_frames` accepted its
inputs (frames present in the store, finite, not all zero) and
:func:`check_item_result` its outputs (finite, the expected shapes): an item
without data never becomes a NaN result marked done.
"""

from __future__ import annotations

import numpy as np

from ..io import layout, open_store
from ..io.checksum import missing_item_chunks, result_codecs

__all__ = ["PENDING", "DONE", "FAILED", "STATUS_MEANING", "ItemDataError", "check_item_frames",
           "check_item_result", "prepare_item_status", "mark_failed", "clear_failure", "failure_reasons",
           "item_memory_bytes", "check_item_memory", "check_params_memory", "expected_results", "record_failure"]

PENDING, DONE, FAILED = 0, 1, 2
STATUS_MEANING = "0 = pending, 1 = done, 2 = failed (reason in results/ptycho/failure)"
#: Longest reason stored (characters).
MAX_REASON = 2000


class ItemDataError(ValueError):
    """An item's input or output is unusable; the message names the item and the array."""


def check_item_frames(group, item: int, frames: np.ndarray) -> None:
    """Check one item's frames before any compute.

    Parameters
    ----------
    group : zarr.Group
        The store.
    item : int
    frames : ndarray, (n_positions, det_y, det_x)
        As read by :func:`ptyhpc.io.read_item`.

    Raises
    ------
    ItemDataError
        The item's shard of ``frames`` is missing from the store (it would read
        as zeros), the frames hold NaN/inf, or every count is zero.
    """
    missing = missing_item_chunks(group[layout.FRAMES], item)
    if missing:
        raise ItemDataError(f"item {item}: {layout.FRAMES}: missing from the store ({missing[0]}); the store is "
                            "damaged: run ptyhpc verify, re-ingest from the source files")
    bad = ~np.isfinite(frames)
    if bad.any():
        raise ItemDataError(f"item {item}: {layout.FRAMES}: {int(bad.sum())} non-finite value(s)")
    if not np.any(frames):
        raise ItemDataError(f"item {item}: {layout.FRAMES}: every count is zero (no data recorded?); "
                            "nothing to reconstruct")


def check_item_result(item: int, arrays: dict) -> None:
    """Check one item's results before they are written and the item marked done.

    Parameters
    ----------
    item : int
    arrays : dict
        name -> (value, expected shape); the value must be finite.

    Raises
    ------
    ItemDataError
        A value with another shape, or with NaN/inf (the reconstruction diverged).
    """
    for name, (value, shape) in arrays.items():
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise ItemDataError(f"item {item}: {name}: result has shape {value.shape}, expected {tuple(shape)}")
        n_bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if n_bad:
            raise ItemDataError(f"item {item}: {name}: {n_bad} non-finite value(s) in the result (the "
                                "reconstruction diverged); the item is not marked done")


def prepare_item_status(group) -> None:
    """Create ``results/ptycho/failure`` if missing and document the status values (idempotent)."""
    n = int(group[layout.FRAMES].shape[0])
    parent = group.require_group(layout.PTYCHO)
    leaf = layout.PTYCHO_FAILURE.rsplit("/", 1)[1]
    if leaf not in parent:
        parent.create_array(leaf, shape=(n,), dtype=str, chunks=(1,), fill_value="", compressors=result_codecs(),
                            attributes={"meaning": "why an item failed (status 2); empty otherwise"})
    status = group[layout.PTYCHO_STATUS]
    if status.attrs.get("meaning") != STATUS_MEANING:
        status.attrs["meaning"] = STATUS_MEANING


def mark_failed(group, item: int, reason: str) -> None:
    """Store ``reason`` and set the item's status to :data:`FAILED` (reason first, status last)."""
    if layout.PTYCHO_FAILURE in group:
        group[layout.PTYCHO_FAILURE][item] = str(reason)[:MAX_REASON]
    group[layout.PTYCHO_STATUS][item] = FAILED


def clear_failure(group, item: int) -> None:
    """Forget a previous failure of the item (before it is marked done)."""
    if layout.PTYCHO_FAILURE in group and group[layout.PTYCHO_FAILURE][item]:
        group[layout.PTYCHO_FAILURE][item] = ""


def failure_reasons(group) -> dict[int, str]:
    """item -> reason for every item with status :data:`FAILED` (``""`` when none was stored)."""
    if layout.PTYCHO_STATUS not in group:
        return {}
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    failed = [int(i) for i in np.flatnonzero(status == FAILED)]
    if not failed:
        return {}
    reasons = group[layout.PTYCHO_FAILURE] if layout.PTYCHO_FAILURE in group else None
    return {i: (str(reasons[i]) if reasons is not None else "") for i in failed}


def item_memory_bytes(n_positions: int, det_shape, fft_shape, object_shape, batch_size: int,
                      n_modes: int = 1) -> int:
    """A lower bound of the memory one item's reconstruction allocates, bytes.

    Frames (float32, and their square roots), the object with its update
    numerator and denominator (complex64, float32 weights), the illumination,
    and a batch of exit waves with their Fourier transforms and updates
    (about six complex64 arrays of ``fft_shape`` per position and mode).
    """
    det = int(np.prod(det_shape))
    obj = int(np.prod(object_shape, dtype=np.float64))
    waves = min(int(batch_size), int(n_positions)) * int(n_modes) * int(np.prod(fft_shape)) * 8 * 6
    return int(n_positions) * det * 4 * 2 + obj * (8 * 2 + 4 * 3) + waves


def check_item_memory(where, nbytes: int, detail: str, limit: int | None = None) -> None:
    """Refuse an item that cannot fit in memory before anything is allocated.

    Parameters
    ----------
    where : str
        Store, for the message.
    nbytes : int
        :func:`item_memory_bytes`.
    detail : str
        What makes it this large (object grid, frames), for the message.
    limit : int, optional
        Bytes available; default: this machine's physical memory.

    Raises
    ------
    ValueError
        ``nbytes > limit``.
    """
    if limit is None:
        import psutil  # noqa: PLC0415  (a dependency of distributed)

        limit = int(psutil.virtual_memory().total)
    if nbytes > limit:
        raise ValueError(f"{where}: one item needs at least {_size(nbytes)} ({detail}), more than the "
                         f"{_size(limit)} of memory here; check the store's geometry (scan step, detector "
                         "sampling, pixel size): a unit slip gives an enormous object grid")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def check_params_memory(group, grid, params) -> None:
    """:func:`check_item_memory` of one item of ``group`` on ``grid`` (an ``ObjectGrid``) with ``params``
    (``PtychoParams``: batch size, probe modes of every stage)."""
    n_pos, det = group[layout.FRAMES].shape[1], group[layout.FRAMES].shape[2:]
    modes = max(int(st["n_probe_modes"]) for _, st in params._stage_settings())
    need = item_memory_bytes(n_pos, det, grid.fft_shape, grid.object_shape, params.batch_size, modes)
    check_item_memory(str(group.store).removeprefix("file://"), need,
                      f"object {grid.object_shape[0]} x {grid.object_shape[1]} px of {grid.pixel_size_m[0]:.3g} m, "
                      f"{n_pos} frames of {tuple(det)}")


def expected_results(group, result) -> dict:
    """name -> (value, shape in the store) of one item's reconstruction, for :func:`check_item_result`."""
    names = (layout.PTYCHO_OBJECT, layout.PTYCHO_PROBE, layout.PTYCHO_ERROR, layout.PTYCHO_ILLUMINATION,
             layout.PTYCHO_POSITIONS)
    values = (result.object, result.probe, result.error, result.illumination, result.info["positions_m"])
    return {name: (value, group[name].shape[1:]) for name, value in zip(names, values)}


def record_failure(store_path: str, item: int, reason: str) -> None:
    """Mark ``item`` failed with ``reason`` unless it is done; never raises (the caller reports the error)."""
    from .lock import item_lock  # noqa: PLC0415

    try:
        with item_lock(store_path, item):
            group = open_store(store_path, mode="r+")
            if layout.PTYCHO_STATUS in group and int(group[layout.PTYCHO_STATUS][item]) != DONE:
                mark_failed(group, item, reason)
    except Exception:  # noqa: BLE001  (a read-only or damaged store: the error itself is reported by the caller)
        pass
