"""Dask clusters: local, SLURM (dask-jobqueue), MPI (dask-mpi) or an existing scheduler.

Every kind is used through a plain ``distributed.Client``; the pipeline does
not know which one it runs on. The kind and its options come from a
:class:`ClusterConfig`, built from (lowest to highest precedence) the
defaults, a site configuration file (YAML), the recipe's ``cluster:`` section
and command-line flags (:func:`resolve_config`).

Kinds
-----
``local`` (default)
    A ``LocalCluster`` on this machine: ``workers`` single-threaded worker
    processes (default: one per core); with ``gpus: N`` N workers that each
    offer the resource ``GPU=1`` (for N > 1 dask-cuda's ``LocalCUDACluster``,
    which pins one device per worker).
``slurm``
    dask-jobqueue's ``SLURMCluster``: every SLURM job runs ``slurm.processes``
    workers; with ``gpus: 1`` each job asks for ``--gres=gpu:1`` and its
    worker offers ``GPU=1``. ``slurm.jobs`` fixed jobs, or
    ``slurm.adaptive: {minimum, maximum}`` (jobs) to let dask add and remove
    jobs with the queue of pending items.
``mpi``
    dask-mpi under ``mpiexec``/``srun``: rank 0 runs the scheduler and a
    worker, the other ranks run a worker each, and rank 1 also runs the
    ptyhpc driver (:func:`run_with_client`). Two ranks give two workers.
``address``
    An existing scheduler: ``scheduler`` is ``tcp://host:port`` or a
    scheduler file (``*.json``).

Site configuration (``--site-config FILE`` or ``$PTYHPC_SITE_CONFIG``)::

    cluster:
      kind: slurm
      gpus: 1                      # per job: --gres=gpu:1 and worker resource GPU=1
      slurm:
        queue: gpu
        account: abc123
        cores: 8                   # CPUs per job
        processes: 1               # workers per job (one per GPU)
        memory: 64GB
        walltime: "04:00:00"
        adaptive: {minimum: 0, maximum: 32}
        job_script_prologue: ["module load cuda/12", "source /opt/ptyhpc/venv/bin/activate"]

Workers are processes with one thread each: the engines are NumPy/SciPy
code that holds the GIL for part of each step, and one task per core (or
per GPU) is what scales.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["connect", "run_with_client", "ClusterConfig", "SlurmOptions", "MpiOptions", "load_site_config",
           "resolve_config", "WORKER_ENV", "BATCH_DASK_CONFIG", "SITE_CONFIG_ENV", "KINDS"]

#: Environment for worker processes we start. dask sets MALLOC_TRIM_THRESHOLD_=64 KiB, which
#: turns off glibc's adaptive mmap threshold: every multi-MB batch array is then mmap'ed and
#: page-faulted afresh, and on 2 cores the engine spent 2/3 of its time in the kernel. Large
#: thresholds keep freed batch buffers in the heap for reuse.
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 * 2**20), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

#: dask settings for batch work made of second-to-hour tasks. dask's defaults suit interactive
#: sub-second tasks: the worker samples the running task's stack every 10 ms (statistical
#: profiler), every process checks its event loop every 20 ms and the worker polls its memory
#: every 100 ms. Each wake-up takes the GIL and, with one worker per core, a core away from the
#: engine: two workers on two cores had ~650 involuntary context switches per 3 s task and ran
#: 19 % slower than alone; with these settings ~70 and 2-3 % (benchmarks/scaling.py).
BATCH_DASK_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                     "distributed.worker.memory.monitor-interval": "1s",
                     "distributed.admin.system-monitor.interval": "2s"}


def _dask_env(config: dict) -> dict:
    """``DASK_*`` environment variables for dask settings (for workers started outside this process)."""
    return {"DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split(".")): str(value)
            for key, value in config.items()}


#: Environment variable naming the site configuration file.
SITE_CONFIG_ENV = "PTYHPC_SITE_CONFIG"
KINDS = ("local", "slurm", "mpi", "address")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Adaptive(_Strict):
    """Bounds of adaptive scaling, in SLURM jobs."""

    minimum: int = Field(default=0, ge=0)
    maximum: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _order(self):
        if self.minimum > self.maximum:
            raise ValueError(f"adaptive: minimum {self.minimum} > maximum {self.maximum}")
        return self


class SlurmOptions(_Strict):
    """Options of ``kind: slurm``; names and meanings are dask-jobqueue's ``SLURMCluster`` ones.

    Options left unset (None) come from dask's own ``jobqueue.slurm`` configuration
    (``~/.config/dask/jobqueue.yaml``, see ``deploy/jobqueue.yaml``); dask-jobqueue raises
    its own clear error when neither gives ``cores`` and ``memory``.
    """

    queue: Optional[str] = None
    account: Optional[str] = None
    cores: Optional[int] = Field(default=None, ge=1)
    processes: Optional[int] = Field(default=None, ge=1)
    memory: Optional[str] = None
    walltime: Optional[str] = None
    jobs: int = Field(default=1, ge=1)
    adaptive: Optional[Adaptive] = None
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    local_directory: Optional[str] = None
    log_directory: Optional[str] = None
    interface: Optional[str] = None
    python: Optional[str] = None


class MpiOptions(_Strict):
    """Options of ``kind: mpi`` (dask-mpi)."""

    interface: Optional[str] = None
    local_directory: Optional[str] = None


class ClusterConfig(_Strict):
    """Which cluster ptyhpc runs on, and how (see the module docstring).

    Raises
    ------
    pydantic.ValidationError
        Unknown keys, a bad value, ``kind: address`` without ``scheduler``,
        ``scheduler`` with another kind, ``gpus`` > 1 per SLURM job.
    """

    kind: Literal["local", "slurm", "mpi", "address"] = "local"  # local | slurm | mpi | address
    scheduler: Optional[str] = None  # tcp://host:port or a scheduler file (kind address)
    workers: Optional[int] = Field(default=None, ge=1)  # LocalCluster workers (null: all cores)
    gpus: int = Field(default=0, ge=0)  # GPU workers (local) or GPUs per job (slurm); tasks then ask for GPU=1
    dashboard: bool = False  # start the dask dashboard
    slurm: SlurmOptions = SlurmOptions()
    mpi: MpiOptions = MpiOptions()

    @model_validator(mode="before")
    @classmethod
    def _address_shorthand(cls, data):
        # Older recipes say only ``scheduler: ADDRESS``: that is kind address.
        if isinstance(data, dict) and data.get("scheduler") and "kind" not in data:
            data = {**data, "kind": "address"}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "address" and not self.scheduler:
            raise ValueError("cluster kind 'address' needs 'scheduler' (tcp://host:port or a scheduler file)")
        if self.kind != "address" and self.scheduler:
            raise ValueError(f"'scheduler' is only used with kind 'address', not {self.kind!r}")
        if self.kind == "slurm" and self.gpus > 1:
            raise ValueError("kind 'slurm': use gpus 1 (one GPU per job, one worker per job); more jobs give "
                             "more GPUs (slurm.jobs or slurm.adaptive.maximum)")
        return self

    @property
    def gpu(self) -> bool:
        """True when the workers offer a ``GPU`` resource."""
        return self.gpus > 0


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_site_config(path: str | os.PathLike | None = None) -> dict:
    """The ``cluster`` mapping of a site configuration file.

    Parameters
    ----------
    path : path-like, optional
        YAML file with a top-level ``cluster:`` mapping. ``None``: the file
        named by ``$PTYHPC_SITE_CONFIG``, or nothing.

    Returns
    -------
    dict
        Raw (unvalidated) cluster settings; ``{}`` without a file.

    Raises
    ------
    FileNotFoundError
        The file given (or named by the variable) does not exist.
    ValueError
        Not YAML, or no ``cluster`` mapping.
    """
    if path is None:
        path = os.environ.get(SITE_CONFIG_ENV) or None
        if path is None:
            return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"site configuration {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("cluster"), dict):
        raise ValueError(f"{path}: a site configuration is a YAML mapping with a 'cluster:' mapping")
    return raw["cluster"]


def resolve_config(*layers: dict | None, site_config: str | os.PathLike | None = None) -> ClusterConfig:
    """Merge the site configuration and later layers into a validated config.

    Parameters
    ----------
    *layers : dict or None
        Cluster settings, lowest precedence first (e.g. the recipe's
        ``cluster`` section, then the command-line flags); ``None`` values
        inside a layer are ignored, so unset flags do not erase a setting.
    site_config : path-like, optional
        Site file (see :func:`load_site_config`).

    Raises
    ------
    ValueError
        Invalid settings; the message names the key.
    FileNotFoundError
        Site file missing.
    """
    merged = load_site_config(site_config)
    for layer in layers:
        if layer:
            clean = {k: v for k, v in layer.items() if v is not None}
            if clean.get("scheduler") and "kind" not in clean:
                clean["kind"] = "address"  # a --scheduler flag overrides a site kind
            merged = _deep_merge(merged, clean)
    try:
        return ClusterConfig.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(f"cluster configuration: {exc}") from None


def _as_config(scheduler, n_workers, dashboard, config) -> ClusterConfig:
    if config is not None:
        if isinstance(config, dict):
            config = resolve_config(config)
        return config
    if scheduler:
        return ClusterConfig(kind="address", scheduler=scheduler)
    return ClusterConfig(kind="local", workers=n_workers, dashboard=dashboard)


@contextlib.contextmanager
def connect(scheduler: str | None = None, n_workers: int | None = None, *, dashboard: bool = False,
            config: ClusterConfig | dict | None = None):
    """Yield a ``distributed.Client`` on the configured cluster; close what was started on exit.

    Parameters
    ----------
    scheduler : str, optional
        Shorthand for ``kind: address``: a scheduler address
        (``tcp://host:8786``) or scheduler file (``*.json``).
    n_workers : int, optional
        Shorthand for ``kind: local`` with this many workers (default: cores).
    dashboard : bool
        Serve the dask dashboard on :8787 (local and slurm kinds).
    config : ClusterConfig or dict, optional
        Full configuration; overrides the shorthands.

    Raises
    ------
    OSError
        The scheduler cannot be reached (raised by distributed).
    ValueError
        ``kind: mpi``: use :func:`run_with_client` (MPI ranks other than the
        driver never return); invalid configuration.
    ImportError
        dask-jobqueue (slurm) or dask-cuda (local, gpus > 1) missing, with the
        package to install in the message.
    """
    from distributed import Client  # noqa: PLC0415

    cfg = _as_config(scheduler, n_workers, dashboard, config)
    if cfg.kind == "address":
        client = Client(scheduler_file=cfg.scheduler) if cfg.scheduler.endswith(".json") else Client(cfg.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    if cfg.kind == "mpi":
        raise ValueError("cluster kind 'mpi' runs the driver inside MPI rank 1: use run_with_client(config, fn) "
                         "under mpiexec/srun (the ptyhpc commands do)")
    import dask  # noqa: PLC0415

    # The scheduler runs in this process and LocalCluster's nannies pass this config to their workers.
    with dask.config.set(BATCH_DASK_CONFIG):
        cluster = _local_cluster(cfg) if cfg.kind == "local" else _slurm_cluster(cfg)
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


def _local_cluster(cfg: ClusterConfig):
    import dask  # noqa: PLC0415
    from distributed import LocalCluster  # noqa: PLC0415

    dash = ":8787" if cfg.dashboard else None
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV}):
        if cfg.gpus > 1:
            try:
                from dask_cuda import LocalCUDACluster  # noqa: PLC0415
            except ImportError as exc:
                raise ImportError("kind 'local' with gpus > 1 needs dask-cuda (pip install dask-cuda), which "
                                  "gives each worker its own device") from exc
            return LocalCUDACluster(n_workers=cfg.gpus, threads_per_worker=1, dashboard_address=dash,
                                    resources={"GPU": 1})
        n = cfg.gpus or cfg.workers or os.cpu_count() or 1
        extra = {"resources": {"GPU": 1}} if cfg.gpus else {}
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=dash, **extra)


def slurm_cluster_kwargs(cfg: ClusterConfig) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for a config.

    GPU jobs (``gpus: 1``) get ``--gres=gpu:1``, one worker process and the
    worker argument ``--resources GPU=1``; CPU jobs one single-threaded worker
    per core unless ``processes`` says otherwise. Every job exports
    :data:`WORKER_ENV`. Unset options are left out so that dask's
    ``jobqueue.slurm`` configuration applies.
    """
    import dask  # noqa: PLC0415

    s = cfg.slurm
    cores = s.cores or dask.config.get("jobqueue.slurm.cores", None)
    if cfg.gpu:
        processes = 1
    else:
        processes = s.processes or cores or dask.config.get("jobqueue.slurm.processes", None)
    directives = list(s.job_extra_directives)
    worker_args = list(s.worker_extra_args)
    if cfg.gpu:
        directives.append(f"--gres=gpu:{cfg.gpus}")
        worker_args += ["--resources", f"GPU={cfg.gpus}"]
    env = {**WORKER_ENV, **_dask_env(BATCH_DASK_CONFIG)}
    prologue = [f"export {k}={v}" for k, v in env.items()] + list(s.job_script_prologue)
    kw = {"queue": s.queue, "account": s.account, "cores": cores, "processes": processes, "memory": s.memory,
          "walltime": s.walltime, "job_extra_directives": directives, "job_script_prologue": prologue,
          "worker_extra_args": worker_args, "python": s.python or sys.executable, "log_directory": s.log_directory,
          "local_directory": s.local_directory, "interface": s.interface,
          "scheduler_options": {"dashboard_address": ":8787"} if cfg.dashboard else {"dashboard": False}}
    return {k: v for k, v in kw.items() if v is not None}


def _slurm_cluster(cfg: ClusterConfig):
    try:
        from dask_jobqueue import SLURMCluster  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("cluster kind 'slurm' needs dask-jobqueue (pip install 'ptyhpc[cluster]')") from exc
    cluster = SLURMCluster(**slurm_cluster_kwargs(cfg))
    if cfg.slurm.adaptive is not None:
        # dask adds jobs while items are pending and retires idle ones, within these bounds.
        cluster.adapt(minimum_jobs=cfg.slurm.adaptive.minimum, maximum_jobs=cfg.slurm.adaptive.maximum)
    else:
        cluster.scale(jobs=cfg.slurm.jobs)
    return cluster


def _tune_malloc() -> None:
    """Apply :data:`WORKER_ENV`'s malloc thresholds to this process (glibc only).

    MPI ranks become workers in the process mpiexec started, so the
    environment cannot be set before they start as it is for LocalCluster
    workers; ``mallopt`` sets the same thresholds at run time.
    """
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    libc.mallopt(m_trim_threshold, int(WORKER_ENV["MALLOC_TRIM_THRESHOLD_"]))
    libc.mallopt(m_mmap_threshold, int(WORKER_ENV["MALLOC_MMAP_THRESHOLD_"]))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(k, WORKER_ENV[k])


def run_with_client(config: ClusterConfig | dict | None, fn, *args, **kwargs):
    """Call ``fn(client, *args, **kwargs)`` on the configured cluster and return its result.

    For every kind but ``mpi`` this is ``with connect(config=config) as c:
    return fn(c, ...)``. Under MPI (``mpiexec -n N ptyhpc ...``) every rank
    calls it: dask-mpi's ``execute`` starts the scheduler and a worker on
    rank 0 and a worker on each other rank, and runs ``fn`` on rank 1 next to
    its worker; when ``fn`` returns (or raises) the cluster is shut down and
    every rank returns. Rank 1 returns ``fn``'s result or re-raises its
    exception; the other ranks return ``None``.

    Raises
    ------
    ValueError
        Kind ``mpi`` with fewer than 2 ranks.
    """
    cfg = _as_config(None, None, False, config)
    if cfg.kind != "mpi":
        with connect(config=cfg) as client:
            return fn(client, *args, **kwargs)
    try:
        from dask_mpi import execute  # noqa: PLC0415
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("cluster kind 'mpi' needs dask-mpi and mpi4py with an MPI library "
                          "(pip install 'ptyhpc[cluster]')") from exc
    _tune_malloc()
    import dask  # noqa: PLC0415

    dask.config.set(BATCH_DASK_CONFIG)  # every rank: scheduler, workers and driver live in them
    # dask-mpi's shutdown closes comms under the workers' feet: distributed logs each closed stream
    # with a traceback at INFO. Keep warnings and errors only.
    import logging  # noqa: PLC0415

    logging.getLogger("distributed").setLevel(logging.WARNING)
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise ValueError("cluster kind 'mpi' needs at least 2 MPI ranks (mpiexec -n 2 ...): rank 0 runs the "
                         "scheduler, rank 1 the driver, each runs a worker")
    outcome: dict = {}

    def driver():
        from distributed import Client  # noqa: PLC0415

        # dask-mpi shuts the cluster down only when the client function returns; an exception would
        # leave every rank waiting. Catch it here and re-raise on rank 1 once the ranks have stopped.
        try:
            with Client() as client:  # the scheduler address dask-mpi put in the dask config
                client.wait_for_workers(comm.Get_size())
                outcome["value"] = fn(client, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    worker_options = {"resources": {"GPU": cfg.gpus}} if cfg.gpu else {}
    execute(driver, client_rank=1, exclusive_workers=False,
            nthreads=1, interface=cfg.mpi.interface, local_directory=cfg.mpi.local_directory,
            dashboard=cfg.dashboard, worker_options=worker_options, comm=comm, worker_name="mpi")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
