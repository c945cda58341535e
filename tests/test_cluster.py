"""Cluster kinds and their configuration, GPU resource scheduling, dask-mpi under mpiexec."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _cnt import FAST, assert_same_results, results

from ptyhpc.cluster import WORKER_ENV, ClusterConfig, connect, resolve_config, slurm_cluster_kwargs
from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho, task_resources


def test_site_config_recipe_and_flags_merge_in_order(tmp_path, monkeypatch):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"cluster": {"kind": "slurm", "gpus": 1, "slurm": {
        "queue": "gpu", "cores": 8, "memory": "64GB", "adaptive": {"minimum": 0, "maximum": 20}}}}))
    cfg = resolve_config({"slurm": {"walltime": "02:00:00"}}, {"workers": None}, site_config=site)
    assert cfg.kind == "slurm" and cfg.gpus == 1
    assert cfg.slurm.queue == "gpu" and cfg.slurm.walltime == "02:00:00" and cfg.slurm.adaptive.maximum == 20
    # A flag beats the site file; an unset flag (None) does not erase it.
    assert resolve_config({"kind": "local", "gpus": 0}, {"kind": None}, site_config=site).kind == "local"
    # The environment variable names the site file when no flag does.
    monkeypatch.setenv("PTYHPC_SITE_CONFIG", str(site))
    assert resolve_config().kind == "slurm"
    # --scheduler alone means kind address, even over a site kind.
    assert resolve_config({"scheduler": "tcp://h:8786"}).kind == "address"
    monkeypatch.delenv("PTYHPC_SITE_CONFIG")
    assert resolve_config().kind == "local"


@pytest.mark.parametrize("bad, words", [
    ({"kind": "pbs"}, "kind"),
    ({"kind": "address"}, "scheduler"),
    ({"kind": "slurm", "gpus": 2}, "one GPU per job"),
    ({"slurm": {"queu": "x"}}, "queu"),
    ({"kind": "slurm", "slurm": {"adaptive": {"minimum": 5, "maximum": 2}}}, "minimum 5 > maximum 2"),
])
def test_bad_cluster_settings_are_named(bad, words):
    with pytest.raises(ValueError, match=words):
        resolve_config(bad)


def test_bad_site_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        resolve_config(site_config=tmp_path / "nowhere.yaml")
    f = tmp_path / "s.yaml"
    f.write_text("kind: slurm\n")
    with pytest.raises(ValueError, match="'cluster:' mapping"):
        resolve_config(site_config=f)


def test_slurm_gpu_jobs_ask_for_gres_and_offer_gpu_resource():
    """The job script dask-jobqueue writes for a GPU config (no job is submitted here)."""
    from dask_jobqueue import SLURMCluster

    cfg = ClusterConfig(kind="slurm", gpus=1, slurm={"queue": "gpu", "cores": 4, "memory": "16GB",
                                                     "job_script_prologue": ["module load cuda"]})
    kw = slurm_cluster_kwargs(cfg)
    assert kw["processes"] == 1 and "--gres=gpu:1" in kw["job_extra_directives"]
    with SLURMCluster(**kw) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    # One worker per job; its 4 threads may overlap I/O, the resource keeps it to one task at a time.
    assert "--resources GPU=1" in script and "--nthreads 4" in script
    assert "export MALLOC_TRIM_THRESHOLD_=268435456" in script and "module load cuda" in script
    # The batch settings reach workers started by SLURM through dask's environment variables.
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in script
    assert "export DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL=1s" in script
    # CPU jobs: one single-threaded worker per core.
    cpu = slurm_cluster_kwargs(ClusterConfig(kind="slurm", slurm={"cores": 4}))
    assert cpu["processes"] == 4 and cpu["cores"] == 4 and not any("gres" in d for d in cpu["job_extra_directives"])


def test_local_gpu_workers_offer_the_resource():
    with connect(config={"kind": "local", "gpus": 1}) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert [w["resources"] for w in workers] == [{"GPU": 1}]


def test_local_workers_run_with_batch_settings():
    """The workers connect() starts do not profile tasks and check their event loop once a second."""
    import dask

    def settings():
        return (dask.config.get("distributed.worker.profile.enabled"),
                dask.config.get("distributed.admin.tick.interval"))

    with connect(n_workers=1) as client:
        assert list(client.run(settings).values()) == [(False, "1s")]
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process is left as it was


def _local_cluster(**kw):
    """A LocalCluster with ptyhpc's worker environment (malloc thresholds: see ptyhpc.cluster)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV}):
        return LocalCluster(dashboard_address=None, **kw)


def test_gpu_tasks_run_one_per_gpu_and_cpu_path_is_the_same(cnt3, tmp_path, monkeypatch):
    """A worker with 2 threads but one GPU runs GPU tasks one at a time; results equal the CPU run."""
    from distributed import Client

    clean, ref = cnt3
    monkeypatch.delenv("PTYHPC_BACKEND", raising=False)
    with _local_cluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1}) as lc, Client(lc) as client:
        # backend auto on a cluster offering GPUs: the tasks ask for one (and fall back to NumPy here).
        assert task_resources(PtychoParams(), client) == {"GPU": 1}
        assert task_resources(PtychoParams(backend="numpy"), client) is None
        runs = {}
        for name, resources in (("gpu", "auto"), ("free", None)):
            store = tmp_path / f"{name}.zarr"
            shutil.copytree(clean, store)
            out = run_ptycho(store, FAST, client=client, progress=False, resources=resources)
            assert out["resources"] == ({"GPU": 1} if name == "gpu" else None)
            spans = sorted((t["started"], t["finished"]) for t in out["tasks"])
            runs[name] = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # any overlap?
            assert_same_results(results(store), ref)
    assert runs == {"gpu": False, "free": True}


def test_cupy_backend_without_gpu_workers_is_refused(cnt3, tmp_path):
    from distributed import Client

    clean, _ = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    with _local_cluster(n_workers=1, threads_per_worker=1) as lc, Client(lc) as client:
        with pytest.raises(ValueError, match="no worker offers one"):
            run_ptycho(store, PtychoParams(n_iter=3, backend="cupy"), client=client, progress=False)


def test_address_kind_joins_an_existing_scheduler(cnt3, tmp_path):
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    with _local_cluster(n_workers=2, threads_per_worker=1) as lc:
        with connect(config={"scheduler": lc.scheduler_address}) as client:
            run_ptycho(store, FAST, client=client, progress=False)
        assert len(lc.scheduler_info["workers"]) == 2  # the cluster outlives the client
    assert_same_results(results(store), ref)


def test_mpi_kind_under_mpiexec_two_ranks(cnt3, tmp_path):
    """`mpiexec -n 2 ptyhpc reconstruct --cluster mpi`: two dask-mpi workers, same results."""
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("no mpiexec beside this python (the mpich wheel provides it: pip install 'ptyhpc[cluster]')")
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    r = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "ptyhpc.cli", "reconstruct", str(store),
                        "--cluster", "mpi", "--n-iter", "3"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 items reconstructed" in r.stderr
    assert_same_results(results(store), ref)
    # One rank alone is refused clearly (no scheduler/worker split possible).
    r = subprocess.run([str(mpiexec), "-n", "1", sys.executable, "-m", "ptyhpc.cli", "reconstruct", str(store),
                        "--cluster", "mpi"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "at least 2 MPI ranks" in r.stderr


def test_recipe_cluster_section_is_validated(tmp_path):
    from ptyhpc.recipe import load_recipe

    data = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"files": [str(data / "tilt_012.h5")]}, "store": "s.zarr",
                                      "cluster": {"kind": "slurm", "slurm": {"cores": 0}}}))
    with pytest.raises(ValueError, match="cores"):
        load_recipe(recipe)
    recipe.write_text(yaml.safe_dump({"input": {"files": [str(data / "tilt_012.h5")]}, "store": "s.zarr",
                                      "cluster": {"scheduler": None, "workers": 2}}))
    rc, _ = load_recipe(recipe)
    assert rc.cluster_settings() == {"workers": 2}
    np.testing.assert_equal(rc.ptycho_params().warm_start, False)


@pytest.mark.parametrize("name", ["site-slurm-gpu.yaml", "site-slurm-cpu.yaml"])
def test_deploy_site_examples_are_valid(name):
    """The example site files in deploy/ load and render a dask-jobqueue job script."""
    from dask_jobqueue import SLURMCluster

    cfg = resolve_config(site_config=Path(__file__).resolve().parents[1] / "deploy" / name)
    assert cfg.kind == "slurm"
    kw = slurm_cluster_kwargs(cfg)
    kw.pop("log_directory", None)  # not created on this machine
    kw.pop("interface", None)  # the example names the cluster network (ib0), absent here
    with SLURMCluster(**kw) as cluster:
        script = cluster.job_script()
    assert ("--gres=gpu:1" in script) == cfg.gpu and "#SBATCH -p" in script
