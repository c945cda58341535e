"""Dask clusters: a LocalCluster on this machine (the default) or an existing scheduler.

Workers are processes with one thread each: the engines are NumPy/SciPy
code that holds the GIL for part of each step, and one task per core is
what scales. SLURM (dask-jobqueue) and MPI (dask-mpi) clusters come with
the facility-scale issue; every cluster is used through a plain
``distributed.Client``.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["connect", "WORKER_ENV"]

#: Environment for worker processes we start. dask sets MALLOC_TRIM_THRESHOLD_=64 KiB, which
#: turns off glibc's adaptive mmap threshold: every multi-MB batch array is then mmap'ed and
#: page-faulted afresh, and on 2 cores the engine spent 2/3 of its time in the kernel. Large
#: thresholds keep freed batch buffers in the heap for reuse.
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 * 2**20), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@contextlib.contextmanager
def connect(scheduler: str | None = None, n_workers: int | None = None, *, dashboard: bool = False):
    """Yield a ``distributed.Client``; close what was started on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``) or a scheduler
        file (``*.json``). ``None`` starts a LocalCluster.
    n_workers : int, optional
        LocalCluster workers (default: the number of cores); one thread each.
    dashboard : bool
        Serve the dask dashboard (LocalCluster only).

    Raises
    ------
    OSError
        The scheduler cannot be reached (raised by distributed).
    """
    from distributed import Client, LocalCluster  # noqa: PLC0415

    if scheduler:
        if scheduler.endswith(".json"):
            client = Client(scheduler_file=scheduler)
        else:
            client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask  # noqa: PLC0415

    n = n_workers or os.cpu_count() or 1
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":8787" if dashboard else None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
