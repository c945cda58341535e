"""A map-reduce over the frames of a 4D-STEM store (in the spirit of LiberTEM's UDFs), on dask.

An :class:`Analysis` declares its outputs — per scan position (one value or
small array per frame) or reduced over frames (summed or max'd) — and the work
on a block of frames. :func:`run_analyses` runs several analyses in one pass
over one item: the positions are cut into partitions of whole ``frames``
chunks (independent of the number of workers, so the reductions add up in
the same order on 1 or N workers), each partition is one dask task that reads
its frames one chunk at a time, converts them to float32 on the array
backend (NumPy or CuPy, :mod:`ptyhpc.backend`) and hands them to every
analysis. Memory per task: one chunk of frames (a few MB) plus the outputs of
the partition. Without a client the partitions run in this process.

Analyses that are linear in the frame (virtual detectors, centre of mass
without a threshold) declare a weight matrix (:meth:`Analysis.linear`); the
weights of all of them are stacked into one (det_pixels, k) float32 matrix and
each chunk meets it in ONE matrix product. When no other analysis needs the
float32 frames, the chunk is converted in slabs of :data:`SLAB_FRAMES` frames
that stay in cache, each multiplied right away: the raw chunk is read from
memory once (measured in docs/stem.md).

The chunks are read by :class:`ptyhpc.stem.chunkread.ChunkReader` straight from
the shard files into one reused buffer (zarr-python's read path costs about
twice the decompression); analyses that set :attr:`Analysis.raw_ok` get that
buffer in the store's dtype, without a float32 copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["Output", "Analysis", "StemContext", "run_analyses", "stem_context", "PARTITION_BYTES", "SLAB_FRAMES"]

#: Raw bytes of frames per task (a whole number of chunks, at least one).
PARTITION_BYTES = 64 << 20
#: Frames converted to float32 at a time for the fused matrix product on the CPU (a 128x128 slab of 8 frames
#: is 512 kB: it stays in the L2 cache between the conversion and the product).
SLAB_FRAMES = 8


@dataclass(frozen=True)
class Output:
    """One output of an analysis.

    Attributes
    ----------
    kind : {"position", "reduce"}
        ``position``: an array ``(scan_y, scan_x, *shape)``, one entry per frame;
        ``reduce``: ``shape``, combined over all frames with ``op``.
    shape : tuple of int
    dtype : str
    op : {"sum", "max"}
        Reduction of ``reduce`` outputs (sums in float64 by default).
    """

    kind: str
    shape: tuple = ()
    dtype: str = "float32"
    op: str = "sum"


@dataclass(frozen=True)
class StemContext:
    """What an analysis knows about the data: shapes and the store's calibration (SI)."""

    scan_shape: tuple
    detector_shape: tuple
    geometry: dict
    stem: dict

    @property
    def n_positions(self) -> int:
        return int(self.scan_shape[0] * self.scan_shape[1])


class Analysis:
    """Base class: subclasses define :meth:`outputs` and :meth:`process` (and optionally :meth:`prepare`).

    Instances are pickled to the workers: keep them to plain arrays and numbers.

    Attributes
    ----------
    raw_ok : bool
        :meth:`process` accepts the block in the store's dtype (e.g. uint16
        counts) instead of float32; the block is then a view of the read
        buffer, valid only during the call. Default False.
    """

    raw_ok = False

    def outputs(self, ctx: StemContext) -> dict[str, Output]:
        raise NotImplementedError

    def prepare(self, ctx: StemContext, xp):
        """Per-task state on the backend (e.g. masks moved to the GPU once); default None."""
        return None

    def linear(self, ctx: StemContext):
        """Weights (det_pixels, k) float32 NumPy if the outputs follow from ``frames @ weights``; default None.

        A linear analysis gets :meth:`finish` called with the product instead
        of :meth:`process` (one product for all linear analyses of a pass).
        """
        return None

    def finish(self, products, index, state, ctx: StemContext, xp) -> dict:
        """Outputs of a linear analysis from ``products`` (b, k) float32 = frames (b, det_pixels) @ weights."""
        raise NotImplementedError

    def process(self, frames, index, state, ctx: StemContext, xp) -> dict:
        """Work on one block.

        Parameters
        ----------
        frames : xp.ndarray, (b, det_y, det_x) float32 (the store's dtype if :attr:`raw_ok`)
        index : numpy.ndarray, (b,) int
            Raster indices of the frames (p = iy * scan_x + ix).

        Returns
        -------
        dict
            For each ``position`` output an array (b, *shape); for each
            ``reduce`` output its partial over the block.
        """
        raise NotImplementedError


def stem_context(group) -> StemContext:
    """The :class:`StemContext` of an open store; ``StoreError`` if it is not a 4D-STEM store."""
    from ..io.layout import SCAN_SHAPE, STEM_ATTRS  # noqa: PLC0415
    from ..io.store import StoreError, read_geometry  # noqa: PLC0415

    shape = group.attrs.get(SCAN_SHAPE)
    if shape is None:
        raise StoreError(f"{str(group.store).removeprefix('file://')}: not a 4D-STEM store (no 'scan_shape' "
                         "attribute; ingest with --format mib|arina|empad)")
    return StemContext(tuple(shape), tuple(group["frames"].shape[2:]), read_geometry(group),
                       dict(group.attrs.get(STEM_ATTRS, {})))


def partitions(n_positions: int, chunk: int, itemsize_frame: int, partition_bytes: int = PARTITION_BYTES) -> list:
    """``[(start, stop), ...]`` covering the positions, each a whole number of chunks."""
    per = chunk * max(1, partition_bytes // max(1, chunk * itemsize_frame))
    return [(a, min(a + per, n_positions)) for a in range(0, n_positions, per)]


def _product(raw, weights_t, xp, slab: int):
    """``float32(raw) (b, det_pixels) @ weights`` with the conversion done ``slab`` frames at a time.

    ``weights_t`` is the (k, det_pixels) C-contiguous transpose: OpenBLAS does the skinny product as
    ``weights_t @ slab.T`` 20-30 % faster than ``slab @ weights`` (k = 3-6, 8-frame slabs; docs/stem.md).
    Returns a (b, k) view.
    """
    b = len(raw)
    flat = raw.reshape(b, -1)
    out = xp.empty((weights_t.shape[0], b), xp.float32)
    buf = xp.empty((min(slab, b), flat.shape[1]), xp.float32)
    for s in range(0, b, slab):
        e = min(s + slab, b)
        v = buf[:e - s]
        v[...] = flat[s:e]
        xp.matmul(weights_t, v.T, out=out[:, s:e])
    return out.T


def _run_partition(store_path: str, item: int, start: int, stop: int, chunk: int, analyses, ctx, backend: str,
                   fuse: bool = True):
    from ..backend import get_xp, to_host  # noqa: PLC0415
    from .chunkread import ChunkReader  # noqa: PLC0415

    xp = get_xp(backend)
    states = [a.prepare(ctx, xp) for a in analyses]
    outs = [a.outputs(ctx) for a in analyses]
    # The linear analyses share one weight matrix; cols[k] is analysis k's slice of its columns.
    lin = [a.linear(ctx) if fuse else None for a in analyses]
    cols, stack, n = {}, [], 0
    for k, w in enumerate(lin):
        if w is not None:
            cols[k] = slice(n, n + w.shape[1])
            stack.append(np.asarray(w, np.float32))
            n += w.shape[1]
    weights = xp.asarray(np.ascontiguousarray(np.concatenate(stack, 1))) if stack else None
    weights_t = xp.ascontiguousarray(weights.T) if stack else None
    # Float32 frames only for analyses that are neither fused nor take the raw counts.
    need_frames = any(k not in cols and not a.raw_ok for k, a in enumerate(analyses))
    # On a GPU one conversion of the whole chunk is cheapest; on the CPU cache-sized slabs.
    slab = SLAB_FRAMES if xp is np else chunk
    result = []
    for spec in outs:
        r = {}
        for name, o in spec.items():
            if o.kind == "position":
                r[name] = np.empty((stop - start, *o.shape), o.dtype)
            else:
                r[name] = None
        result.append(r)
    reader = ChunkReader(Path(store_path) / "frames")
    for a in range(start, stop, chunk):
        z = min(a + chunk, stop)
        raw = reader.read(item, a, z)  # a view of the reader's buffer, overwritten by the next read
        index = np.arange(a, z)
        raw_xp = raw if xp is np else xp.asarray(raw)
        block = xp.asarray(raw_xp, dtype=xp.float32) if need_frames else None
        if weights is not None:
            prod = (block.reshape(len(block), -1) @ weights if block is not None
                    else _product(raw_xp, weights_t, xp, slab))
        for k, analysis in enumerate(analyses):
            if k in cols:
                got = analysis.finish(prod[:, cols[k]], index, states[k], ctx, xp)
            else:
                got = analysis.process(raw_xp if analysis.raw_ok else block, index, states[k], ctx, xp)
            for name, o in outs[k].items():
                v = got[name]
                if o.kind == "position":
                    result[k][name][a - start:z - start] = to_host(v)
                else:
                    v = to_host(v).astype(o.dtype, copy=False)
                    cur = result[k][name]
                    result[k][name] = v.copy() if cur is None else (cur + v if o.op == "sum" else np.maximum(cur, v))
    reader.close()
    return result


def run_analyses(store: str | PathLike, analyses, *, item: int = 0, client=None, backend: str = "numpy",
                 progress: bool = True, partition_bytes: int = PARTITION_BYTES, fuse: bool = True) -> list[dict]:
    """Run analyses over item ``item`` of a 4D-STEM store in one pass.

    Parameters
    ----------
    store : path-like
        A store with ``scan_shape`` (:func:`ptyhpc.stem.ingest.ingest_stem`).
    analyses : sequence of Analysis
    item : int
    client : distributed.Client, optional
        One task per partition on its workers (any :mod:`ptyhpc.cluster` kind);
        None: run in this process.
    backend : {"numpy", "cupy", "auto"}
        Array module on the workers (:func:`ptyhpc.backend.get_xp`).
    progress : bool
        Progress bar over partitions.
    partition_bytes : int
        Raw bytes of frames per task (rounded to whole chunks).
    fuse : bool
        One matrix product per chunk for all linear analyses (default); False
        runs each analysis's own :meth:`Analysis.process` on the float32 chunk
        (the same numbers to float32 rounding; kept to measure the gain).

    Returns
    -------
    list of dict
        Per analysis, its outputs: ``position`` ones shaped ``(scan_y, scan_x, *shape)``,
        ``reduce`` ones ``shape``.

    Raises
    ------
    StoreError
        Not a 4D-STEM store; ``item`` out of range (IndexError).
    """
    from rich.progress import Progress  # noqa: PLC0415

    from ..io.store import open_store  # noqa: PLC0415

    store = Path(store)
    group = open_store(store)
    ctx = stem_context(group)
    arr = group["frames"]
    if not 0 <= item < arr.shape[0]:
        raise IndexError(f"item {item} out of range; the store has {arr.shape[0]} items")
    chunk = int(arr.chunks[1])
    frame_bytes = int(np.prod(ctx.detector_shape)) * arr.dtype.itemsize
    parts = partitions(ctx.n_positions, chunk, frame_bytes, partition_bytes)
    analyses = list(analyses)
    results = [None] * len(parts)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"4D-STEM item {item}", total=len(parts))
        if client is None:
            for j, (a, z) in enumerate(parts):
                results[j] = _run_partition(str(store), item, a, z, chunk, analyses, ctx, backend, fuse)
                bar.advance(task)
        else:
            from distributed import as_completed  # noqa: PLC0415

            futures = {client.submit(_run_partition, str(store), item, a, z, chunk, analyses, ctx, backend,
                                     fuse, pure=False): j for j, (a, z) in enumerate(parts)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.advance(task)
    specs = [a.outputs(ctx) for a in analyses]
    out = []
    for k, spec in enumerate(specs):
        merged = {}
        for name, o in spec.items():
            pieces = [r[k][name] for r in results]
            if o.kind == "position":
                merged[name] = np.concatenate(pieces).reshape(*ctx.scan_shape, *o.shape)
            else:
                acc = pieces[0]
                for p in pieces[1:]:  # in partition order: the same sum on any number of workers
                    acc = acc + p if o.op == "sum" else np.maximum(acc, p)
                merged[name] = acc
        out.append(merged)
    return out
