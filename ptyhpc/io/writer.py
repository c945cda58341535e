"""The one store writer: every ingest (tilt series, energy stack, raster 4D-STEM) ends in :func:`write_store`.

An ingest checks its inputs, then describes the store as a :class:`StorePlan` (root attributes, the
``frames`` layout, the small arrays written whole, the blocks of frames to copy and how to load one);
:func:`write_store` builds it in a sibling folder (:func:`partial_path`), copies the frames block by block
while the next block is read (:func:`read_ahead`), sets ``ingest_complete`` and renames the folder into
place (:func:`commit_store`). On any error the folder is removed: a failed ingest never leaves a store
that looks usable. Names and the store contract: :mod:`ptyhpc.io.layout`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .checksum import result_codecs
from .layout import FRAMES
from .safe_write import clean_stale_for, remove_path, replace_store

__all__ = ["FramesLayout", "WholeArray", "StorePlan", "Block", "write_store", "frames_chunking", "partial_path",
           "commit_store", "read_ahead", "MAX_POSITIONS_PER_CHUNK"]

#: Upper bound on positions per inner chunk of ``frames`` (:func:`frames_chunking`).
MAX_POSITIONS_PER_CHUNK = 64

#: One block of frames to copy: (item, first position, end position).
Block = tuple[int, int, int]


@dataclass(frozen=True)
class FramesLayout:
    """Shape, dtype and encoding of ``frames`` (n_items, n_positions, det_y, det_x)."""

    shape: tuple
    dtype: Any
    chunks: tuple
    shards: tuple
    compressors: Any
    config: dict | None = None


@dataclass(frozen=True)
class WholeArray:
    """A small array written at once (positions, per-item values, the detector mask).

    ``compressors`` defaults to the checksummed codecs of result arrays
    (:func:`ptyhpc.io.checksum.result_codecs`); ``"auto"`` leaves zarr's default.
    """

    name: str
    data: np.ndarray
    chunks: tuple
    attributes: dict | None = None
    dimension_names: tuple | None = None
    compressors: Any = None


@dataclass
class StorePlan:
    """Everything :func:`write_store` needs to build one store.

    Attributes
    ----------
    attrs : dict
        Root attributes written first (``ingest_complete`` is added last by the writer).
    frames : FramesLayout
    arrays : list of WholeArray
    blocks : sequence of Block
        Frames to copy, in order; each is written to ``frames[item, start:stop]``.
    load : callable
        ``load(block) -> ndarray (stop - start, det_y, det_x)`` (or (n_positions, det_y, det_x) for a whole
        item); runs in a reader thread, one block ahead of the writes. Raises ``IngestError`` for bad data.
    check : callable, optional
        ``check(block, data)`` in the writing thread before the block is written (warnings, running sums).
    finish : callable, optional
        ``finish() -> dict`` of root attributes known only once every block is written (doses).
    label : str
        Progress-bar text.
    """

    attrs: dict
    frames: FramesLayout
    arrays: list[WholeArray]
    blocks: Sequence[Block]
    load: Callable[[Block], np.ndarray]
    check: Callable[[Block, np.ndarray], None] | None = None
    finish: Callable[[], dict] | None = None
    label: str = "ingest"
    dimension_names: tuple = field(default=("item", "position", "det_y", "det_x"))


def frames_chunking(n_positions: int, det_shape: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and shard shapes of ``frames`` for tilt series and energy stacks.

    One shard per item; inner chunks of a block of positions with full frames. Zarr requires the shard
    to be a whole number of chunks, so the block is the largest divisor of ``n_positions`` not above
    :data:`MAX_POSITIONS_PER_CHUNK` (50 for a 20 x 20 scan).

    Returns
    -------
    chunks, shards : tuple of int
        ``(1, block, det_y, det_x)`` and ``(1, n_positions, det_y, det_x)``.
    """
    block = max(d for d in range(1, min(n_positions, MAX_POSITIONS_PER_CHUNK) + 1) if n_positions % d == 0)
    return (1, block, *det_shape), (1, n_positions, *det_shape)


def item_blocks(n_items: int, n_positions: int) -> list[Block]:
    """One block per whole item."""
    return [(k, 0, n_positions) for k in range(n_items)]


def write_store(store_path: Path, plan: StorePlan, *, overwrite: bool, progress: bool) -> Path:
    """Build the store of ``plan`` in a sibling folder and rename it to ``store_path`` once complete.

    Parameters
    ----------
    store_path : Path
        Store folder to create (its target checks are the caller's, before any reading).
    plan : StorePlan
    overwrite : bool
        Replace an existing store once the new one is complete (:func:`commit_store`).
    progress : bool
        Progress bar over frames.

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        Whatever ``plan.load`` / ``plan.check`` raise; the build folder is removed.
    """
    from rich.progress import Progress  # noqa: PLC0415

    store_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(store_path)
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update(plan.attrs)
        f = plan.frames
        frames = root.create_array(FRAMES, shape=f.shape, dtype=f.dtype, chunks=f.chunks, shards=f.shards,
                                   compressors=f.compressors, config=f.config, fill_value=0,
                                   dimension_names=plan.dimension_names)
        for a in plan.arrays:
            root.create_array(a.name, data=a.data, chunks=a.chunks, attributes=a.attributes,
                              dimension_names=a.dimension_names,
                              compressors=result_codecs() if a.compressors is None else a.compressors)
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task(plan.label, total=sum(z - a for _, a, z in plan.blocks))
            for block, data in zip(plan.blocks, read_ahead(plan.load, plan.blocks)):
                if plan.check is not None:
                    plan.check(block, data)
                k, a, z = block
                frames[k, a:z] = data
                bar.advance(task, z - a)
        if plan.finish is not None:
            root.attrs.update(plan.finish())
        root.attrs["ingest_complete"] = True
        commit_store(tmp, store_path, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    return store_path


def read_ahead(load, items):
    """Yield ``load(item)`` for each of ``items`` in order, loading the next one in a thread meanwhile.

    Ingest reads item k+1 while item k is compressed and written: h5py and Blosc release the GIL,
    and the copy becomes write-bound.
    """
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(load, items[0]) if len(items) else None
        for k in range(len(items)):
            result = pending.result()
            if k + 1 < len(items):
                pending = reader.submit(load, items[k + 1])
            yield result


def partial_path(store_path: Path) -> Path:
    """The sibling folder a store is built in before :func:`commit_store` renames it into place.

    Any leftover of an earlier crashed run of a process with the same pid is removed, and so are the
    build folders of killed ingests of the same store (:func:`ptyhpc.io.safe_write.clean_stale_for`).
    """
    clean_stale_for(store_path)
    tmp = store_path.with_name(f"{store_path.name}.partial-{os.getpid()}")
    remove_path(tmp)
    return tmp


def commit_store(tmp: Path, store_path: Path, overwrite: bool) -> None:
    """Rename the complete store ``tmp`` to ``store_path`` (the last step of every ingest).

    :func:`ptyhpc.io.safe_write.replace_store`: with ``overwrite`` the old
    store is moved aside under its run lock and deleted only once the new one
    is in place; without it a store created meanwhile by another ingest is kept.
    """
    replace_store(tmp, store_path, overwrite)
