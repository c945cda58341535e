"""Orchestration: which items run, where, in what order, and what a failed item leaves behind.

Shared by every per-item stage: the worker resources of a task (one ``GPU`` per CuPy task), the
warm-start order (anchors first; a warm-started task waits for its source's task), the serial or
dask submission with failures collected per item (:class:`ItemsFailedError`), and the progress
display. Locks are :mod:`ptyhpc.pipeline.lock`; the tasks themselves are the stage's.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

from ..io import layout
from ..io.energy import item_groups
from ..ptycho.options import PtychoOptions

__all__ = ["GPU_RESOURCE", "ItemsFailedError", "ItemProgress", "task_resources", "warm_start_sources",
           "warm_start_order", "run_item_tasks"]


#: The worker resource a CuPy task asks for: one per GPU (start GPU workers with ``--resources GPU=1``).
GPU_RESOURCE = "GPU"


class ItemsFailedError(RuntimeError):
    """Some items raised; the others finished and are kept. ``failed`` maps item -> error text."""

    def __init__(self, failed: dict):
        self.failed = dict(failed)
        lines = "; ".join(f"item {i}: {msg}" for i, msg in sorted(self.failed.items()))
        super().__init__(f"{len(self.failed)} item(s) failed ({lines}); the finished items are kept, "
                         "rerun to retry the failed ones")


def task_resources(params: PtychoOptions, client=None) -> dict | None:
    """The worker resources each item's task asks for.

    ``{"GPU": 1}`` when the task will run on CuPy: ``backend="cupy"``, or
    ``"auto"`` (without ``PTYHPC_BACKEND=numpy``) on a cluster whose workers
    offer a ``GPU`` resource. Then the scheduler runs one task per GPU
    whatever the worker's thread count. ``None`` otherwise: the same tasks
    run on CPU workers.

    Raises
    ------
    ValueError
        ``backend="cupy"`` but the connected workers offer no ``GPU``
        resource (the tasks would wait forever). A cluster with no worker yet
        (adaptive, jobs queued) is not checked.
    """
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"].values() if _takes_n_workers(client) else \
        client.scheduler_info()["workers"].values()
    offered = [w.get("resources", {}).get(GPU_RESOURCE, 0) for w in workers]
    want = params.backend
    if want == "auto":
        want = os.environ.get("PTYHPC_BACKEND", "auto")
    if want == "cupy":
        if offered and not any(offered):
            raise ValueError("backend 'cupy' asks every task for a GPU worker resource, but no worker offers one; "
                             "start GPU workers with '--resources GPU=1' (ptyhpc.cluster does this for gpus >= 1) "
                             "or use backend 'numpy'")
        return {GPU_RESOURCE: 1}
    if want == "auto" and any(offered):
        return {GPU_RESOURCE: 1}
    return None


def _takes_n_workers(client) -> bool:
    import inspect  # noqa: PLC0415

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def warm_start_sources(group, params: PtychoOptions) -> dict[int, int | None]:
    """Where each item's initial probe comes from.

    Returns
    -------
    dict
        item -> ``None`` (the model probe) or the index of the finished item
        whose probe it starts from. Without ``params.warm_start`` every item
        maps to ``None``. With it, in each sequence of
        :func:`ptyhpc.io.energy.item_groups` (the tilt series; one
        polarisation of an energy stack) items 0, s, 2s, ... (s =
        ``warm_start_stride``) are anchors started from the model probe and
        every other item starts from its nearest anchor (the lower one on a
        tie). The choice depends on indices only, never on which task happened
        to finish first, so results do not depend on scheduling.
    """
    n = group[layout.FRAMES].shape[0]
    src = dict.fromkeys(range(n))
    if not params.warm_start:
        return src
    s = params.warm_start_stride
    for seq in item_groups(group):
        anchors = list(range(0, len(seq), s))
        for k, item in enumerate(seq):
            if k % s:
                a = min(anchors, key=lambda j: (abs(j - k), j))
                src[item] = seq[a]
    return src


def warm_start_order(todo: list[int], sources: dict, status) -> tuple[list[int], dict[int, int]]:
    """Items in submission order and the unfinished source each warm-started item waits for.

    Raises
    ------
    ValueError
        A source is neither finished nor among ``todo``.
    """
    need = {i: sources[i] for i in todo if sources[i] is not None and status[sources[i]] != 1}
    missing = {i: j for i, j in need.items() if j not in todo}
    if missing:
        raise ValueError(f"warm start: items {sorted(missing)} start from items {sorted(set(missing.values()))}, "
                         "which are neither finished nor in this run; add them to the items to run")
    # Anchors (and items whose source is already done) first; the rest wait for their source.
    return sorted(todo, key=lambda i: i in need), need


def run_item_tasks(task: Callable, order: list[int], args: Callable[[int], tuple], *, client=None,
                   waits_for: dict | None = None, resources=None, label: str = "items", progress=True,
                   key: str = "item") -> tuple[list, dict]:
    """Run ``task(*args(i))`` for each item of ``order``, here one by one or as dask tasks.

    Parameters
    ----------
    task : callable
        The per-item task (idempotent: it skips an item that is already done).
    order : list of int
        Items in submission order.
    args : callable
        Item -> the task's arguments.
    client : distributed.Client, optional
        None: run in this process.
    waits_for : dict, optional
        Item -> item whose task must finish first (its future is passed as a last argument).
    resources : dict, optional
        Worker resources each dask task asks for.
    label, progress
        Progress display (:class:`ItemProgress`).
    key : str
        Prefix of the dask task keys.

    Returns
    -------
    results : list
        The tasks' return values, in completion order.
    failed : dict
        Item -> ``"ErrorType: message"`` of each task that raised.
    """
    waits_for = waits_for or {}
    results, failed = [], {}
    with ItemProgress(progress, label, len(order)) as advance:
        if client is None:
            for i in order:
                try:
                    results.append(task(*args(i)))
                except Exception as exc:  # noqa: BLE001  (reported together by the caller)
                    failed[i] = f"{type(exc).__name__}: {exc}"
                advance()
            return results, failed
        from distributed import as_completed  # noqa: PLC0415

        stamp = math.floor(time.time())
        futures = {}
        for i in order:
            after = (futures[waits_for[i]],) if i in waits_for else ()
            futures[i] = client.submit(task, *args(i), *after, key=f"{key}-{i}-{stamp}", pure=False,
                                       resources=resources)
        item_of = {f.key: i for i, f in futures.items()}
        for fut in as_completed(list(futures.values())):
            try:
                results.append(fut.result())
            except Exception as exc:  # noqa: BLE001
                failed[item_of[fut.key]] = f"{type(exc).__name__}: {exc}"
            advance()
    return results, failed


class ItemProgress:
    """A rich progress bar that counts items (a no-op when disabled; plain lines with ``"lines"``)."""

    #: Seconds between two plain progress lines (the first and the last item are always reported).
    LINE_EVERY_S = 10.0

    def __init__(self, enabled, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total

    def _lines(self):
        import sys  # noqa: PLC0415

        t0 = last = time.perf_counter()
        count = 0

        def advance():
            nonlocal count, last
            count += 1
            now = time.perf_counter()
            if count in (1, self.total) or now - last >= self.LINE_EVERY_S:
                last = now
                eta = (now - t0) / count * (self.total - count)
                # No estimate from the first item: items run in parallel, so one finished item says little.
                print(f"{self.label}: {count}/{self.total} items, {now - t0:.0f} s"
                      + (f", about {eta:.0f} s left" if 1 < count < self.total else ""), file=sys.stderr, flush=True)
        return advance

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        if self.enabled == "lines":
            self.enabled = False     # nothing to close in __exit__
            return self._lines()
        from rich.progress import Progress  # noqa: PLC0415

        self.bar = Progress()
        self.bar.__enter__()
        job = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(job)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
