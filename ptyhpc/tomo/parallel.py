"""Slab decomposition of a tilt-series reconstruction over dask.distributed.

Parallel-beam tilts about y decouple the volume into independent slices
along y (one per detector row), so rows are split into slabs and each slab
is one task. The slab boundaries depend only on ``slab_size``, never on the
number of workers, and each slice's arithmetic does not depend on which slab
holds it, so the result is bit-identical for any number of workers.

Memory discipline: given a zarr array (the store), each task reads only its
own sinogram rows ``projections[:, a:b]`` and, given an ``out`` array, writes
its own slab ``out[a:b]``, so a worker holds one slab's sinogram and volume
(plus the shared projection matrix) and the client holds neither.
"""

from __future__ import annotations

import numpy as np

from .fbp import _as_3d, fbp
from .iterative import cgls, sart
from .sirt import sirt

__all__ = ["reconstruct_slabs", "slab_bounds", "METHODS"]

#: Reconstruction functions by name, all ``f(projections, angles, **kw)``.
METHODS = {"sirt": sirt, "fbp": fbp, "sart": sart, "cgls": cgls}

#: Default rows per task: sparse products are most efficient per row for 32-64
#: right-hand sides (measured, 228² slices), and 100-300 rows still give several tasks.
DEFAULT_SLAB_SIZE = 32


def slab_bounds(n_rows: int, slab_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_rows)`` in slabs of ``slab_size`` rows."""
    if slab_size < 1:
        raise ValueError(f"slab_size must be >= 1, got {slab_size}")
    return [(a, min(a + slab_size, n_rows)) for a in range(0, n_rows, slab_size)]


def _is_array_store(obj) -> bool:
    # a zarr array (or anything array-like that is not in memory) is read slab by slab
    return not isinstance(obj, np.ndarray) and hasattr(obj, "shape") and hasattr(obj, "__getitem__") \
        and type(obj).__module__.split(".")[0] in ("zarr", "dask")


def _reconstruct_one(source, bounds, angles: np.ndarray, method: str, kw: dict, out, scale: float):
    """One task: read rows ``bounds`` of ``source`` (array or store), reconstruct, write or return."""
    a, b = bounds
    slab = np.asarray(source[:, a:b] if _is_array_store(source) else source, dtype=np.float32)
    # The projector is cached per process (Projector.cached), so each worker builds it once.
    vol = METHODS[method](slab, angles, **kw)
    if scale != 1.0:
        vol *= np.float32(scale)
    if out is None:
        return vol
    out[a:b] = vol
    return bounds


def reconstruct_slabs(projections, angles, *, method: str = "sirt", client=None,
                      slab_size: int | None = None, out=None, scale: float = 1.0, **kw):
    """Reconstruct a tilt series slab by slab, serially or on a dask cluster.

    Parameters
    ----------
    projections : ndarray or zarr.Array of float, shape (n_angles, n_rows, n_cols)
        Rows are slices along the tilt axis y. A zarr array is read by the
        tasks themselves, each its own rows (chunk it along rows, e.g.
        ``(n_angles, slab_size, n_cols)``, so a task decompresses only its rows).
    angles : array_like of float, shape (n_angles,)
        Radians.
    method : {"sirt", "fbp", "sart", "cgls"}
        Reconstruction per slab (:data:`METHODS`).
    client : distributed.Client, optional
        One task per slab; None runs the slabs serially in this process.
        In-memory projections are scattered slab by slab.
    slab_size : int, optional
        Rows per slab, default :data:`DEFAULT_SLAB_SIZE`, or the row chunk
        of ``out``.
    out : zarr.Array, shape (n_rows, n_cols, n_cols), optional
        Each task writes its slab here (the slab size must be a multiple of
        its row chunk, so no two tasks write one chunk) and nothing comes
        back to the client.
    scale : float
        Factor applied to each slab (e.g. 1 / pixel size for values per metre).
    **kw
        Passed to the method (``center``, ``n_iter``, ``nonneg``, ``support``,
        ``filter_name``; an ``x0`` volume (n_rows, n_cols, n_cols) is split
        with the slabs).

    Returns
    -------
    ndarray of float32, shape (n_rows, n_cols, n_cols), or ``out``
        Axes (y, z, x).

    Raises
    ------
    ValueError
        Unknown method, bad shapes, ``slab_size < 1``, or an ``out`` of the
        wrong shape or with row chunks that do not divide the slab size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {tuple(METHODS)}")
    angles = np.asarray(angles, dtype=np.float64).ravel()
    from_store = _is_array_store(projections)
    if from_store:
        if len(projections.shape) != 3 or projections.shape[0] != angles.size:
            raise ValueError(f"projections {projections.shape} must be (n_angles={angles.size}, n_rows, n_cols)")
    else:
        p, angles, single = _as_3d(np.asarray(projections), angles)
        if single:
            raise ValueError("reconstruct_slabs needs projections shaped (n_angles, n_rows, n_cols)")
        projections = np.asarray(p, dtype=np.float32)
    n_rows, n_cols = projections.shape[1:]
    if slab_size is None:
        slab_size = out.chunks[0] if out is not None else DEFAULT_SLAB_SIZE
    slab_size = int(slab_size)
    if out is not None:
        if tuple(out.shape) != (n_rows, n_cols, n_cols):
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {(n_rows, n_cols, n_cols)}")
        if slab_size % out.chunks[0]:
            raise ValueError(f"slab_size {slab_size} is not a multiple of out's row chunk {out.chunks[0]}: "
                             "two tasks would write one chunk")
    bounds = slab_bounds(n_rows, slab_size)
    x0 = kw.pop("x0", None)
    support = kw.pop("support", None)
    kws = [dict(kw) for _ in bounds]
    for k, (a, b) in zip(kws, bounds):
        if x0 is not None:
            k["x0"] = np.asarray(x0[a:b], dtype=np.float32)
        if support is not None:
            s = np.asarray(support, dtype=bool)
            k["support"] = s if s.ndim == 2 else s[a:b]
    if from_store:
        sources = [projections] * len(bounds)           # a reference: each task reads its rows
    else:
        sources = [np.ascontiguousarray(projections[:, a:b]) for a, b in bounds]
    n = len(bounds)
    if client is None:
        parts = [_reconstruct_one(s, bd, angles, method, k, out, scale) for s, bd, k in zip(sources, bounds, kws)]
    else:
        if not from_store:
            # hash=False: equal slabs of two calls must not share (and release) one key
            sources = client.scatter(sources, hash=False)
        futures = client.map(_reconstruct_one, sources, bounds, [angles] * n, [method] * n, kws,
                             [out] * n, [scale] * n, pure=False)
        parts = client.gather(futures)
    if out is not None:
        return out
    vol = np.empty((n_rows, n_cols, n_cols), dtype=np.float32)
    for (a, b), part in zip(bounds, parts):
        vol[a:b] = part
    return vol
