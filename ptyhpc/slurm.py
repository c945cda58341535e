"""Job scripts for SLURM and ``ptyhpc submit``: a recipe as SLURM jobs.

Three ways to run a recipe on a SLURM cluster (``--mode``):

``array`` (default; for sites that do not run dask)
    job 1 ingests the raw files (skipped when the store exists), job 2 is a
    job array with one element per item (``ptyhpc reconstruct-item STORE
    $SLURM_ARRAY_TASK_ID``), job 3 runs the tomography and report once every
    element has succeeded. Each element is an independent process: a failed
    element leaves its item pending for a rerun, the others are kept.
``jobqueue``
    one small driver job runs ``ptyhpc run RECIPE --cluster slurm``; its
    dask-jobqueue ``SLURMCluster`` submits the worker jobs (options from the
    site configuration). The same command can be run on a login node instead.
``mpi``
    one job of ``--ntasks N`` runs ``ptyhpc run RECIPE --cluster mpi`` under
    ``mpiexec`` (dask-mpi: N workers, scheduler on rank 0, driver on rank 1).

The job scripts are the templates in :data:`TEMPLATES` (also in the repository's
``slurm/`` folder, for use by hand); :func:`submit` copies them into
``<store>.jobs/`` (a record of what ran) and passes the store, recipe and
python interpreter as arguments and environment, so nothing is rendered
into the scripts. ``#SBATCH`` lines in the scripts are defaults that
``sbatch`` options (``--sbatch-arg``) override.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["TEMPLATES", "MODES", "submit", "wait_for_jobs", "job_states", "SlurmError"]

MODES = ("array", "jobqueue", "mpi")


class SlurmError(RuntimeError):
    """sbatch/squeue missing or refusing a job; the message has SLURM's own words."""


_COMMON_ENV = """\
set -euo pipefail
# One FFT thread per process and a malloc that keeps the engines' batch buffers (see ptyhpc.cluster).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg
export MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=33554432
# The python of the environment where ptyhpc is installed (ptyhpc submit sets it to its own).
PY=${PTYHPC_PYTHON:-python3}
"""

TEMPLATES = {
    "ptyhpc_stage.sbatch": """\
#!/bin/bash
# One or more stages of a recipe in one job: `ingest` before a job array, `tomo` (tomography and
# report) after it.   sbatch slurm/ptyhpc_stage.sbatch RECIPE.yaml ingest
#SBATCH --job-name=ptyhpc-stage
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=ptyhpc-stage-%j.out
""" + _COMMON_ENV + """\
RECIPE=${1:?usage: sbatch ptyhpc_stage.sbatch RECIPE.yaml STAGES}
STAGES=${2:?usage: sbatch ptyhpc_stage.sbatch RECIPE.yaml STAGES (ingest, tomo, ...)}
# Workers of the LocalCluster (tomography slabs): the CPUs of this job.
exec "$PY" -m ptyhpc.cli run "$RECIPE" --stages "$STAGES" --workers "${SLURM_CPUS_PER_TASK:-1}"
""",
    "ptyhpc_array.sbatch": """\
#!/bin/bash
# One array element per item (tilt angle or energy) for sites that do not run dask:
#   sbatch --array=0-179 slurm/ptyhpc_array.sbatch STORE [RECIPE.yaml]
# Each element reconstructs item $SLURM_ARRAY_TASK_ID and writes it into the store, status last;
# finished items are skipped, so resubmitting the array redoes only what is missing.
# GPU nodes: add --gres=gpu:1 (and PTYHPC_BACKEND=cupy in the environment, or backend in the recipe).
#SBATCH --job-name=ptyhpc-item
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=ptyhpc-item-%A_%a.out
""" + _COMMON_ENV + """\
STORE=${1:?usage: sbatch --array=0-N ptyhpc_array.sbatch STORE [RECIPE.yaml]}
RECIPE=${2:-}
exec "$PY" -m ptyhpc.cli reconstruct-item "$STORE" "${SLURM_ARRAY_TASK_ID:?not in a job array}" \\
    ${RECIPE:+--recipe "$RECIPE"}
""",
    "ptyhpc_jobqueue.sbatch": """\
#!/bin/bash
# A dask-jobqueue run: this small job is the driver; its SLURMCluster submits the worker jobs
# (queue, cores, memory, GPUs, adaptive bounds from the site configuration, see deploy/).
#   sbatch slurm/ptyhpc_jobqueue.sbatch RECIPE.yaml [SITE.yaml]
# From a login node the same run is:  ptyhpc run RECIPE.yaml --cluster slurm --site-config SITE.yaml
# (in tmux/screen: the driver must live as long as the run).
#SBATCH --job-name=ptyhpc-driver
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --output=ptyhpc-driver-%j.out
""" + _COMMON_ENV + """\
RECIPE=${1:?usage: sbatch ptyhpc_jobqueue.sbatch RECIPE.yaml [SITE.yaml]}
SITE=${2:-${PTYHPC_SITE_CONFIG:-}}
exec "$PY" -m ptyhpc.cli run "$RECIPE" --cluster slurm ${SITE:+--site-config "$SITE"}
""",
    "ptyhpc_mpi.sbatch": """\
#!/bin/bash
# An MPI job: dask-mpi turns the ranks into a dask cluster (rank 0 scheduler + worker, rank 1
# driver + worker, every other rank a worker), for sites that schedule MPI jobs only, and for
# the MPI parts (distributed tomography, the Bragg solver).
#   sbatch --ntasks=8 slurm/ptyhpc_mpi.sbatch RECIPE.yaml
# PTYHPC_MPIEXEC picks the launcher (default: the MPI of the environment, `mpiexec -n NTASKS`;
# `srun --mpi=pmi2` where the site's MPI is built for it).
#SBATCH --job-name=ptyhpc-mpi
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --output=ptyhpc-mpi-%j.out
""" + _COMMON_ENV + """\
RECIPE=${1:?usage: sbatch --ntasks=N ptyhpc_mpi.sbatch RECIPE.yaml}
MPIEXEC=${PTYHPC_MPIEXEC:-$(dirname "$(command -v "$PY")")/mpiexec -n ${SLURM_NTASKS:-2}}
exec $MPIEXEC "$PY" -m ptyhpc.cli run "$RECIPE" --cluster mpi
""",
}


def _sbatch(args: list[str], cwd: Path) -> str:
    exe = shutil.which("sbatch")
    if exe is None:
        raise SlurmError("sbatch not found: run ptyhpc submit on a SLURM login node")
    r = subprocess.run([exe, "--parsable", *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise SlurmError(f"sbatch {shlex.join(args)} refused: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]


def submit(recipe_path: str | Path, *, mode: str = "array", sbatch_args: list[str] | None = None,
           site_config: str | Path | None = None, python: str | None = None,
           jobs_dir: str | Path | None = None, dry_run: bool = False) -> dict:
    """Submit a recipe as SLURM jobs.

    Parameters
    ----------
    recipe_path : path-like
        A ``ptyhpc run`` recipe.
    mode : {"array", "jobqueue", "mpi"}
        See the module docstring.
    sbatch_args : list of str, optional
        Extra ``sbatch`` options for every job (``--partition=gpu``,
        ``--gres=gpu:1``, ``--ntasks=8`` for mpi, ...).
    site_config : path-like, optional
        Site configuration for ``jobqueue`` mode.
    python : str, optional
        Interpreter of the jobs (default: this one).
    jobs_dir : path-like, optional
        Where job scripts and logs go (default ``<store>.jobs``).
    dry_run : bool
        Write the scripts and return the sbatch command lines without submitting.

    Returns
    -------
    dict
        ``jobs``: list of {``name``, ``id`` (None in a dry run), ``command``};
        ``jobs_dir``; ``n_items``; ``store``.

    Raises
    ------
    ValueError
        Unknown mode; warm start with ``array`` mode (array elements cannot
        wait for their neighbour).
    FileNotFoundError
        Recipe or input files missing.
    SlurmError
        sbatch missing or refusing a job.
    """
    from .recipe import load_recipe  # noqa: PLC0415

    if mode not in MODES:
        raise ValueError(f"unknown submit mode {mode!r}; use one of {MODES}")
    recipe_path = Path(recipe_path).resolve()
    rc, files = load_recipe(recipe_path)
    if mode == "array" and rc.ptycho_params().warm_start:
        raise ValueError("warm_start needs the items' tasks to wait for their anchors: use --mode jobqueue or mpi, "
                         "or switch warm_start off for a job array")
    store = Path(rc.store)
    jobs = Path(jobs_dir) if jobs_dir else store.with_name(store.name + ".jobs")
    jobs.mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        (jobs / name).write_text(text)
        (jobs / name).chmod(0o755)
    env = f"--export=ALL,PTYHPC_PYTHON={python or sys.executable}"
    extra = list(sbatch_args or [])
    plan = []
    if mode == "array":
        n = len(files)
        first = []
        if not store.exists() or rc.overwrite:
            plan.append(("ingest", [env, *extra, f"--output={jobs}/ingest-%j.out", "ptyhpc_stage.sbatch",
                                    str(recipe_path), "ingest"]))
            first = ["ingest"]
        plan.append(("items", [env, *extra, f"--array=0-{n - 1}", f"--output={jobs}/item-%A_%a.out",
                               *(["@after:ingest"] if first else []), "ptyhpc_array.sbatch", str(store),
                               str(recipe_path)]))
        plan.append(("tomo", [env, *extra, f"--output={jobs}/tomo-%j.out", "@after:items", "ptyhpc_stage.sbatch",
                              str(recipe_path), "tomo"]))
    elif mode == "jobqueue":
        plan.append(("driver", [env, *extra, f"--output={jobs}/driver-%j.out", "ptyhpc_jobqueue.sbatch",
                                str(recipe_path), *([str(Path(site_config).resolve())] if site_config else [])]))
    else:
        plan.append(("mpi", [env, *extra, f"--output={jobs}/mpi-%j.out", "ptyhpc_mpi.sbatch", str(recipe_path)]))

    ids: dict[str, str] = {}
    out = []
    for name, args in plan:
        resolved = []
        for a in args:
            if a.startswith("@after:"):
                dep = ids.get(a.split(":", 1)[1], "<" + a.split(":", 1)[1] + ">")
                # afterok: the next stage runs only when every element succeeded.
                resolved.append(f"--dependency=afterok:{dep}")
            else:
                resolved.append(a)
        command = ["sbatch", *resolved]
        job_id = None if dry_run else _sbatch(resolved, cwd=jobs)
        if job_id:
            ids[name] = job_id
        out.append({"name": name, "id": job_id, "command": shlex.join(command)})
    return {"jobs": out, "jobs_dir": str(jobs), "n_items": len(files), "store": str(store), "mode": mode}


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state of each job (array elements folded: the worst state wins).

    Returns
    -------
    dict
        job id -> ``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``,
        ``CANCELLED``, ``TIMEOUT``, ... or ``UNKNOWN`` once SLURM forgot the job.
    """
    exe = shutil.which("scontrol")
    if exe is None:
        raise SlurmError("scontrol not found")
    order = ["FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "RUNNING", "PENDING", "COMPLETING",
             "CONFIGURING", "COMPLETED"]
    states = {}
    for jid in job_ids:
        r = subprocess.run([exe, "show", "job", "-o", str(jid)], capture_output=True, text=True)
        found = re.findall(r"JobState=(\S+)", r.stdout)
        if not found:
            states[jid] = "UNKNOWN"
            continue
        states[jid] = min(found, key=lambda s: order.index(s) if s in order else len(order))
    return states


def wait_for_jobs(job_ids: list[str], *, timeout_s: float = 3600, poll_s: float = 2.0) -> dict[str, str]:
    """Wait until no job is pending or running; return :func:`job_states`.

    Raises
    ------
    TimeoutError
        Jobs still queued or running after ``timeout_s``.
    """
    active = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING"}
    deadline = time.monotonic() + timeout_s
    while True:
        states = job_states(job_ids)
        if not any(s in active for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM jobs still active after {timeout_s:.0f} s: {states}")
        time.sleep(poll_s)
