"""Checks a command makes before it starts a cluster: is there a store, is there work, is the
previous stage done; where the store's figures go; discarding results for ``--restart``.

Everything here runs in the driver under the store's run lock (:func:`ptyhpc.pipeline.lock.run_lock`),
so that a refused or empty run costs no cluster start (seconds locally, a queue wait on SLURM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ..io import StoreError, layout, open_store

__all__ = ["figures_dir", "remember_figures", "discard_results", "ptycho_todo", "check_tomo_ready",
           "FIGURES_ATTR"]

#: Root attribute: the folder (absolute) where the last run on this store wrote its figures.
FIGURES_ATTR = "figures_dir"


def figures_dir(store, figures=None) -> Path:
    """Where a command writes its figures.

    ``figures`` when given; else the folder this store's figures went to before (the root attribute
    :data:`FIGURES_ATTR`, kept when that folder still exists); else ``STORE_figures`` next to the
    store (``out/cnt.zarr`` -> ``out/cnt_figures``).
    """
    if figures is not None:
        return Path(figures)
    store = Path(store)
    try:
        known = open_store(store).attrs.get(FIGURES_ATTR)
    except (StoreError, FileNotFoundError, OSError):
        known = None
    if known and Path(known).is_dir():
        return Path(known)
    return store.parent / (store.stem + "_figures")


def remember_figures(store, folder) -> None:
    """Record ``folder`` as the store's figure folder (:data:`FIGURES_ATTR`), for later commands."""
    group = open_store(store, mode="r+")
    group.attrs[FIGURES_ATTR] = str(Path(folder).resolve())


def discard_results(store, stages=("ptycho", "tomo")) -> list[str]:
    """Delete the results of ``stages`` (and what derives from them) so that they are computed anew.

    Discarding the ptychography also discards the tomography and the OME-Zarr copies built on it.
    The frames and the store's metadata are never touched.

    Returns
    -------
    list of str
        The groups deleted (those that existed).
    """
    from .ome import OME_GROUP  # noqa: PLC0415

    group = open_store(store, mode="r+")
    names = []
    if "ptycho" in stages:
        names += [layout.PTYCHO, layout.TOMO, OME_GROUP]
    if "tomo" in stages:
        names += [layout.TOMO, OME_GROUP]
    gone = []
    for name in dict.fromkeys(names):
        if name in group:
            del group[name]
            gone.append(name)
    return gone


def ptycho_todo(store, params, restart_hint: str) -> tuple[list[int], int]:
    """Prepare (or check) the ptycho result arrays and list the items still to reconstruct.

    Parameters
    ----------
    store : path
    params : PtychoParams
    restart_hint : str
        The command that discards the old results, named in the refusal (``ptyhpc reconstruct
        STORE --restart``).

    Returns
    -------
    todo : list of int
        Items whose status is not 1.
    n_items : int

    Raises
    ------
    StoreError
        Not a store, or results made with other settings (the message names ``restart_hint``).
    """
    from .lock import setup_lock  # noqa: PLC0415
    from .ptycho_stage import prepare_results  # noqa: PLC0415

    group = open_store(store, mode="r+")
    try:
        with setup_lock(store):
            prepare_results(group, params)
    except StoreError as exc:
        raise StoreError(f"{exc}. To discard the existing results and reconstruct with the new settings: "
                         f"{restart_hint}") from None
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    return [int(i) for i in np.flatnonzero(status != 1)], int(status.size)


def check_tomo_ready(store) -> None:
    """Refuse tomography before the ptychography has finished, saying which command comes first.

    Raises
    ------
    StoreError
        Not a store; no ptycho results (``run `ptyhpc reconstruct STORE` first``); unfinished items
        (listed, with the same hint).
    """
    group = open_store(store)
    if not isinstance(group.get(layout.PTYCHO_STATUS), zarr.Array):
        raise StoreError(f"{store} has no ptychography results yet: run `ptyhpc reconstruct {store}` first")
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    pending = np.flatnonzero(status != 1)
    if pending.size:
        shown = ", ".join(str(i) for i in pending[:10]) + (", ..." if pending.size > 10 else "")
        raise StoreError(f"{store}: {pending.size} of {status.size} items have no finished ptychography "
                         f"(items {shown}): run `ptyhpc reconstruct {store}` first (it resumes)")
