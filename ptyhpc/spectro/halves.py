"""Two independent half-data reconstructions of one item, for the Fourier ring correlation.

The scan positions of the item are split into two interleaved halves (even and odd index of the
scan order, so that both halves cover the whole field), and each half is reconstructed alone by
the ptycho machinery (:func:`ptyhpc.pipeline.ptycho_stage.item_engine_inputs`: the same grid,
optics and starting probe as the full reconstruction, the starting probe found from the half's
own data). They are kept in the store, so a rerun reuses them:

``results/ptycho_halves/item_{i}/object``        (2, H, W) complex64, on the item's object grid
``results/ptycho_halves/item_{i}/illumination``  (2, H, W) float32

with attributes ``engine``, ``n_iter``, ``split`` and ``complete`` (written last). A store that
already holds this group for an item (made by this module or by another tool in the same layout)
is used as it is.
"""

from __future__ import annotations

import numpy as np

from ..io import layout, open_store

__all__ = ["HALVES", "reconstruct_half", "half_data_objects", "stored_halves"]

HALVES = "results/ptycho_halves"
SPLIT = "interleaved: even and odd position index"


def reconstruct_half(store_path: str, item: int, half: int, engine: str, n_iter: int):
    """Reconstruct one half (0: even, 1: odd positions) of ``item``; runs on a worker.

    Returns
    -------
    object : (H, W) complex64
    illumination : (H, W) float32
    """
    from ..pipeline.ptycho_stage import PtychoParams, item_engine_inputs  # noqa: PLC0415
    from ..ptycho.engines import reconstruct  # noqa: PLC0415

    group = open_store(store_path)
    n_pos = group[layout.POSITIONS].shape[1]
    params = PtychoParams(engine=engine, n_iter=n_iter)
    frames, positions, probe, common, grid, _ = item_engine_inputs(group, item, params,
                                                                   select=np.arange(half, n_pos, 2))
    res = reconstruct(frames, positions, probe, grid.pixel_size_m, engine=engine, n_iter=n_iter, **common)
    return np.asarray(res.object, np.complex64), np.asarray(res.illumination, np.float32)


def stored_halves(group, item: int):
    """``(objects (2, H, W), illumination (2, H, W), attrs)`` of a complete stored pair, or None."""
    key = f"{HALVES}/item_{item}"
    if key not in group or not group[key].attrs.get("complete", False):
        return None
    g = group[key]
    return np.asarray(g["object"][...]), np.asarray(g["illumination"][...]), dict(g.attrs)


def half_data_objects(store_path, item: int, *, engine: str = "lsqml", n_iter: int | None = None, compute=None):
    """The two half-data reconstructions of ``item``: from the store when it has them, else computed and stored.

    Parameters
    ----------
    store_path : path
        A store whose ptychography is finished.
    item : int
    engine : str
        Engine for computed halves (:func:`ptyhpc.ptycho.engines.reconstruct`).
    n_iter : int, optional
        Iterations; default the full reconstruction's (``results/ptycho/error``).
    compute : callable, optional
        ``compute(list of (fn, args))`` returning the results in order (the spectro stage passes its
        dask runner, so that the two halves are two tasks); default: one after the other here.

    Returns
    -------
    objects : (2, H, W) complex64
    illumination : (2, H, W) float32
    source : str
        ``"store"`` or ``"computed"``.

    Raises
    ------
    ValueError
        Fewer than 8 positions (no meaningful half).
    """
    store_path = str(store_path)
    group = open_store(store_path, mode="r+")
    have = stored_halves(group, item)
    if have is not None:
        return have[0], have[1], "store"
    n_pos = group[layout.POSITIONS].shape[1]
    if n_pos < 8:
        raise ValueError(f"{store_path}: item {item} has {n_pos} positions; an FRC of halves needs >= 8")
    if n_iter is None:
        n_iter = int(group[layout.PTYCHO_ERROR].shape[1])
    tasks = [(reconstruct_half, (store_path, item, h, engine, n_iter)) for h in (0, 1)]
    out = compute(tasks) if compute is not None else [fn(*args) for fn, args in tasks]
    objects = np.stack([o for o, _ in out])
    ill = np.stack([i for _, i in out])
    key = f"{HALVES}/item_{item}"
    if key in group:
        del group[key]
    g = group.require_group(key)
    g.attrs.update({"complete": False, "engine": engine, "n_iter": n_iter, "split": SPLIT})
    g.create_array("object", data=objects, chunks=objects.shape)
    g.create_array("illumination", data=ill, chunks=ill.shape)
    g.attrs["complete"] = True
    return objects, ill, "computed"
