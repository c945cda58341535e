"""Real SLURM jobs (slurmctld + slurmd on localhost, see conftest.slurm_cluster): job arrays and dask-jobqueue."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _cnt import FAST, assert_same_results, cnt_files, results

from ptyhpc.cluster import connect
from ptyhpc.io import layout, open_store
from ptyhpc.pipeline.ptycho_stage import run_ptycho
from ptyhpc.slurm import TEMPLATES, wait_for_jobs

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ptyhpc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})


def _recipe(tmp_path, **extra):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "input": {"files": [str(f) for f in cnt_files([6, 12, 18])]}, "store": "out/cnt.zarr",
        "figures": "out/figures", "ptycho": {"n_iter": 3}, "tomo": {"n_iter": 5, "align": False},
        "cluster": {"workers": 1}, **extra}))
    return recipe


def test_repository_templates_are_the_ones_submit_uses():
    for name, text in TEMPLATES.items():
        assert (REPO / "slurm" / name).read_text() == text, f"slurm/{name} differs from ptyhpc.slurm.TEMPLATES"


def test_submit_job_array_one_element_per_item(slurm_cluster, tmp_path, cnt3):
    """ptyhpc submit --slurm: ingest job → array of 3 elements → tomography job, all real SLURM jobs."""
    _, ref = cnt3
    recipe = _recipe(tmp_path)
    r = _cli("submit", recipe, "--slurm", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    lines = dict(re.findall(r"^(\w+)\s+(\d+)\s", r.stdout, flags=re.M))
    assert set(lines) == {"ingest", "items", "tomo"}
    states = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(states.values()) == {"COMPLETED"}
    store = tmp_path / "out" / "cnt.zarr"
    # The array had one element per item, each its own SLURM job.
    array = subprocess.run(["scontrol", "show", "job", "-o", lines["items"]], capture_output=True, text=True).stdout
    assert sorted(re.findall(r"ArrayTaskId=(\d+)", array)) == ["0", "1", "2"]
    assert_same_results(results(store), ref)
    assert open_store(store)[layout.TOMO].attrs.get("complete") is True
    logs = sorted(p.name for p in (tmp_path / "out" / "cnt.zarr.jobs").glob("*.out"))
    assert len([n for n in logs if n.startswith("item-")]) == 3
    st = _cli("status", store, "--json")
    assert json.loads(st.stdout)["counts"] == {"done": 3, "running": 0, "pending": 0, "failed": 0}
    # Resubmitting the array redoes nothing: every element finds its item done.
    r = _cli("submit", recipe, "--slurm", "--wait")
    assert r.returncode == 0, r.stderr
    item_logs = sorted((tmp_path / "out" / "cnt.zarr.jobs").glob("item-*.out"))
    assert sum("already done" in p.read_text() for p in item_logs) == 3


def test_dask_jobqueue_slurm_cluster(slurm_cluster, tmp_path, cnt3):
    """kind slurm: dask-jobqueue submits two worker jobs; results identical to a local run."""
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    cfg = {"kind": "slurm", "slurm": {"cores": 1, "memory": "2GB", "walltime": "00:15:00", "jobs": 2,
                                      "log_directory": str(tmp_path / "logs")}}
    with connect(config=cfg) as client:
        client.wait_for_workers(2, timeout=120)
        job_ids = list(client.cluster.workers)  # dask-jobqueue's job names, one per SLURM job
        out = run_ptycho(store, FAST, client=client, progress=False)
        slurm_ids = [j.job_id for j in client.cluster.workers.values()]
    assert len(job_ids) == 2 and all(slurm_ids)
    assert {t["worker"].split(":")[0] for t in out["tasks"]} == {slurm_cluster.node}
    assert_same_results(results(store), ref)
    # The jobs were real SLURM jobs and end with the cluster.
    assert set(wait_for_jobs(slurm_ids, timeout_s=60).values()) <= {"CANCELLED", "COMPLETED", "UNKNOWN"}


def test_dask_jobqueue_gpu_jobs_adaptive(slurm_cluster, tmp_path, cnt3, monkeypatch):
    """gpus: 1 → jobs with --gres=gpu:1 whose worker offers GPU=1; adaptive scaling starts them on demand.

    The test node declares one GPU generic resource with no device, so the tasks ask for the GPU
    resource and compute with NumPy (no CuPy here): the scheduling path of a GPU site.
    """
    clean, ref = cnt3
    monkeypatch.delenv("PTYHPC_BACKEND", raising=False)
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    cfg = {"kind": "slurm", "gpus": 1, "slurm": {"cores": 1, "memory": "2GB", "walltime": "00:15:00",
                                                 "adaptive": {"minimum": 0, "maximum": 1},
                                                 "log_directory": str(tmp_path / "logs")}}
    with connect(config=cfg) as client:
        assert "#SBATCH --gres=gpu:1" in client.cluster.job_script()
        assert not client.scheduler_info()["workers"]  # adaptive: no job until there is work
        out = run_ptycho(store, FAST, client=client, progress=False, resources={"GPU": 1})
        slurm_ids = [j.job_id for j in client.cluster.workers.values()]
    assert out["resources"] == {"GPU": 1} and sorted(out["done"]) == [0, 1, 2]
    spans = sorted((t["started"], t["finished"]) for t in out["tasks"])
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))  # one task at a time on the one GPU
    assert_same_results(results(store), ref)
    assert slurm_ids
    shown = subprocess.run(["scontrol", "show", "job", "-o", slurm_ids[0]], capture_output=True, text=True).stdout
    assert "TresPerNode=gres:gpu:1" in shown  # SLURM allocated the GPU generic resource


def test_submit_refuses_clearly(tmp_path, slurm_cluster):
    recipe = _recipe(tmp_path, ptycho={"n_iter": 3, "warm_start": True})
    r = _cli("submit", recipe, "--slurm")
    assert r.returncode == 2 and "warm_start" in r.stderr
    r = _cli("submit", _recipe(tmp_path), "--slurm", "--mode", "pbs")
    assert r.returncode == 2 and "unknown submit mode" in r.stderr
    r = _cli("submit", _recipe(tmp_path))
    assert r.returncode == 2 and "--slurm" in r.stderr
    r = _cli("submit", _recipe(tmp_path), "--slurm", "--sbatch-arg=--partition=nowhere")
    assert r.returncode == 2 and "refused" in r.stderr and "partition" in r.stderr.lower()


@pytest.mark.parametrize("mode", ["mpi", "jobqueue"])
def test_submit_driver_modes(slurm_cluster, tmp_path, cnt3, mode):
    """--mode mpi: one 2-task job running dask-mpi; --mode jobqueue: a driver job whose SLURMCluster
    submits a worker job. Both run the whole recipe; the items equal the local run."""
    _, ref = cnt3
    recipe = _recipe(tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"cluster": {"kind": "slurm", "slurm": {
        "cores": 1, "memory": "2GB", "walltime": "00:15:00", "log_directory": str(tmp_path / "wlogs")}}}))
    extra = ["--sbatch-arg=--ntasks=2"] if mode == "mpi" else ["--site-config", site]
    r = _cli("submit", recipe, "--slurm", "--mode", mode, "--wait", *extra)
    jobs = tmp_path / "out" / "cnt.zarr.jobs"
    logs = "".join(p.read_text()[-2000:] for p in jobs.glob("*.out")) if jobs.exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + logs
    store = tmp_path / "out" / "cnt.zarr"
    assert_same_results(results(store), ref)
    assert open_store(store)[layout.TOMO].attrs.get("complete") is True
    if mode == "jobqueue":  # the worker ran in its own SLURM job
        assert list((tmp_path / "wlogs").glob("*.err")) or list((tmp_path / "wlogs").glob("*.out"))
