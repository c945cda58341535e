"""Per-item ptychography on a dask cluster: one task per tilt angle or energy.

A thin composition of the pipeline's layers: the options (:mod:`ptyhpc.ptycho.options`), item
set-up (:mod:`.item_setup`: grids, propagation geometry, initial probe, masks), result writing
(:mod:`.results`: declare the arrays, write an item, status last) and orchestration
(:mod:`.orchestrate`: resources, warm-start order, submission, failures; :mod:`.lock`).

Each task opens the store itself, reads only its own frames, reconstructs, writes its own region
of the result arrays (one chunk per item, so tasks never share a chunk) and then sets its
``status`` to 1. A rerun skips items whose status is 1; an item that crashed half-way keeps status
0 and is redone from scratch. A run holds the store's run lock, each task its item's lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import numpy as np

from ..io import layout, open_store
from ..ptycho.chain import reconstruct_chain
from ..ptycho.defaults import stalled
from ..ptycho.engines import reconstruct
from ..ptycho.options import STAGE_KEYS, PtychoOptions  # noqa: F401
from .item_setup import (NEAR_FIELD_MODEL, ObjectGrid, item_engine_inputs, item_grids, object_grid,  # noqa: F401
                         propagation_geometry, resolve_params)
from .item_status import record_failure
from .orchestrate import (GPU_RESOURCE, ItemProgress, ItemsFailedError, run_item_tasks, task_resources,  # noqa: F401
                          warm_start_order, warm_start_sources)
from .results import prepare_ptycho_results, write_ptycho_item

__all__ = ["PtychoParams", "ObjectGrid", "object_grid", "item_grids", "reconstruct_item", "run_ptycho",
           "task_resources", "warm_start_sources", "ItemsFailedError", "prepare_results", "resolve_params"]

#: The stage's options under their original name (recipes, tests and scripts use it).
PtychoParams = PtychoOptions
#: Declares (or checks, on a rerun) the stage's result arrays (:func:`.results.prepare_ptycho_results`).
prepare_results = prepare_ptycho_results


def reconstruct_item(store_path: str, item: int, params: PtychoOptions | dict, init_probe_from: int | None = None,
                     after=None) -> dict:
    """Reconstruct one item and write it into the store (runs on a worker).

    As :func:`_reconstruct_item`; when it raises, the item gets status 2
    (failed) with the reason stored (:func:`ptyhpc.pipeline.item_status.mark_failed`),
    unless a twin task finished it meanwhile, and the error is raised again.
    """
    try:
        return _reconstruct_item(store_path, item, params, init_probe_from, after)
    except Exception as exc:
        record_failure(store_path, item, f"{type(exc).__name__}: {exc}")
        raise


def _reconstruct_item(store_path: str, item: int, params: PtychoOptions | dict, init_probe_from: int | None = None,
                      after=None) -> dict:
    """Reconstruct one item and write it into the store (runs on a worker).

    Holds the item's lock (:func:`ptyhpc.pipeline.lock.item_lock`) while it
    works, and returns at once when the item is already done, so a task that
    runs twice (resubmitted after a lost worker or a vanished client) writes
    once. Writes ``object[item]``, ``probe[item]``, ``error[item]``,
    ``illumination[item]``, ``positions[item]`` (refined when position
    correction is on), then ``status[item] = 1``. The store's detector mask,
    when it has one, marks the bad pixels left free (``use_detector_mask``).

    Parameters
    ----------
    store_path : str
        Store with result arrays made by :func:`prepare_results`.
    item : int
        Item index.
    params : PtychoOptions or dict
    init_probe_from : int, optional
        Warm start: take the initial probe from this finished item (scaled to
        this item's counts) instead of the model probe.
    after : any
        Ignored; a dask future passed here makes the task wait for it.

    Returns
    -------
    dict
        ``item``, ``seconds`` (whole task), ``compute_seconds`` (engine only),
        ``final_error``, ``backend``, ``worker`` (host:pid), ``started`` and
        ``finished`` (epoch s), ``already_done`` (True when it found status 1).

    Raises
    ------
    RuntimeError
        ``init_probe_from`` is not finished.
    """
    from .lock import item_lock  # noqa: PLC0415

    if isinstance(params, dict):
        params = PtychoOptions(**params)
    started = time.time()
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with item_lock(store_path, item):
        group = open_store(store_path, mode="r+")
        if int(group[layout.PTYCHO_STATUS][item]) == 1:
            return {"item": item, "seconds": time.perf_counter() - t0, "compute_seconds": 0.0,
                    "final_error": float(group[layout.PTYCHO_ERROR][item, -1]), "backend": None, "worker": worker,
                    "started": started, "finished": time.time(), "already_done": True}
        if not params.resolved:   # called directly (reconstruct-item): the choice prepare_results made
            params, _ = resolve_params(group, params)
        frames, positions, probe, common, grid, xp = item_engine_inputs(group, item, params, init_probe_from)
        tc = time.perf_counter()
        if params.engine == "chain":
            result = reconstruct_chain(frames, positions, probe, grid.pixel_size_m, params.stages, **common)
        else:
            stop = stalled if params.stop_when_stalled else None
            result = reconstruct(frames, positions, probe, grid.pixel_size_m, engine=params.engine,
                                 n_iter=params.n_iter, stop=stop, **common)
        compute = time.perf_counter() - tc
        write_ptycho_item(group, item, result)   # data first, status last
    return {"item": item, "seconds": time.perf_counter() - t0, "compute_seconds": compute,
            "final_error": float(result.error[-1]), "backend": xp.__name__, "worker": worker,
            "started": started, "finished": time.time(), "already_done": False}


def run_ptycho(store_path: str | Path, params: PtychoOptions | None = None, *, client=None,
               progress: bool = True, items=None, resources: dict | str | None = "auto",
               lock: bool = True) -> dict:
    """Reconstruct every pending item of a store on a dask cluster.

    Parameters
    ----------
    store_path : path
        An ingested store (tilt series or energy stack).
    params : PtychoOptions, optional
    client : distributed.Client, optional
        Where the tasks run; ``None`` runs them in this process, one by one.
    progress : bool or "lines"
        Show a progress bar counting items; ``"lines"``: plain lines on stderr instead (for logs and
        pipes, where a bar would print nothing until the end).
    items : iterable of int, optional
        Restrict to these items.
    resources : dict, "auto" or None
        Worker resources each task asks for; ``"auto"``: :func:`task_resources`
        (``{"GPU": 1}`` for CuPy tasks).
    lock : bool
        Hold the store's run lock (exclusive) while running; pass False only
        when the caller holds it already.

    Returns
    -------
    dict
        ``done`` (items computed now), ``skipped`` (already done), ``tasks``
        (per-item dicts from :func:`reconstruct_item`), ``seconds``,
        ``resources`` (what each task asked for), ``defaults`` (the data-driven choice made now,
        :func:`resolve_params`; None when ``params`` came resolved).

    Raises
    ------
    StoreLockedError
        Another run holds the store.
    StoreError
        Not a store, or existing results made with other settings.
    ItemsFailedError
        Some items raised; every other item was still computed and kept.
    """
    from .lock import run_lock, setup_lock  # noqa: PLC0415

    params = params or PtychoOptions()
    store_path = str(Path(store_path).resolve())
    t0 = time.perf_counter()
    with run_lock(store_path) if lock else contextlib.nullcontext():
        group = open_store(store_path, mode="r+")
        record = None
        if not params.resolved:
            params, record = resolve_params(group, params)
        with setup_lock(store_path):
            prepare_results(group, params, record)
        status = np.asarray(group[layout.PTYCHO_STATUS][...])
        todo = [int(i) for i in (range(len(status)) if items is None else items) if status[i] != 1]
        skipped = [i for i in range(len(status)) if status[i] == 1]
        sources = warm_start_sources(group, params)
        order, waits_for = warm_start_order(todo, sources, status)
        if resources == "auto":
            resources = task_resources(params, client)
        # The validated options themselves are the payload (a dataclass: pickled as they are).
        tasks, failed = run_item_tasks(reconstruct_item, order, lambda i: (store_path, i, params, sources[i]),
                                       client=client, waits_for=waits_for, resources=resources,
                                       label=f"ptychography ({len(skipped)} already done)", progress=progress,
                                       key="ptycho-item")
    if failed:
        raise ItemsFailedError(failed)
    tasks.sort(key=lambda d: d["item"])
    return {"done": todo, "skipped": skipped, "tasks": tasks, "seconds": time.perf_counter() - t0,
            "resources": resources, "defaults": record}


#: The item progress display under its original name (:mod:`ptyhpc.spectro.stage` uses it).
_progress = ItemProgress
