"""Distribution of per-angle tasks on a real dask cluster, resume, CLI and the full pipeline."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ptyhpc.cluster import connect
from ptyhpc.io import ingest, layout, open_store
from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho

DATA = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"
FAST = PtychoParams(n_iter=3)


def _cnt_files(indices):
    return [DATA / f"tilt_{i:03d}.h5" for i in indices]


def _results(store):
    g = open_store(store)
    return {name: np.asarray(g[name][...]) for name in
            (layout.PTYCHO_OBJECT, layout.PTYCHO_PROBE, layout.PTYCHO_ERROR, layout.PTYCHO_STATUS)}


@pytest.fixture(scope="module")
def cnt_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnt") / "three.zarr"
    return ingest(_cnt_files([6, 12, 18]), path, progress=False)


def test_one_and_two_workers_give_identical_results(cnt_store, tmp_path):
    outs = []
    for n_workers in (1, 2):
        store = tmp_path / f"w{n_workers}.zarr"
        shutil.copytree(cnt_store, store)
        with connect(n_workers=n_workers) as client:
            out = run_ptycho(store, FAST, client=client, progress=False)
        assert sorted(out["done"]) == [0, 1, 2]
        outs.append(_results(store))
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name], err_msg=name)
    assert np.all(outs[0][layout.PTYCHO_STATUS] == 1)


def test_rerun_skips_finished_items_and_redoes_unfinished(cnt_store, tmp_path):
    store = tmp_path / "resume.zarr"
    shutil.copytree(cnt_store, store)
    run_ptycho(store, FAST, progress=False)
    before = _results(store)
    g = open_store(store, mode="r+")
    # Simulate a crash of item 1 after it wrote part of its data but before its status.
    g[layout.PTYCHO_STATUS][1] = 0
    g[layout.PTYCHO_OBJECT][1] = np.zeros(g[layout.PTYCHO_OBJECT].shape[1:], np.complex64)
    out = run_ptycho(store, FAST, progress=False)
    assert out["done"] == [1] and out["skipped"] == [0, 2]
    after = _results(store)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_rerun_with_other_settings_is_refused(cnt_store, tmp_path):
    from ptyhpc.io import StoreError

    store = tmp_path / "other.zarr"
    shutil.copytree(cnt_store, store)
    run_ptycho(store, FAST, progress=False, items=[0])
    with pytest.raises(StoreError, match="shape"):
        run_ptycho(store, PtychoParams(n_iter=4), progress=False)


def test_result_contract_attributes(cnt_store, tmp_path):
    store = tmp_path / "contract.zarr"
    shutil.copytree(cnt_store, store)
    run_ptycho(store, FAST, progress=False, items=[0])
    g = open_store(store)
    obj = g[layout.PTYCHO_OBJECT]
    assert obj.dtype == np.complex64 and obj.shape[0] == 3
    px, origin = obj.attrs["pixel_size_m"], obj.attrs["origin_m"]
    # Detector 122 px of 1/48 Å^-1 padded to a fast FFT length of 125 px -> 48/125 Å.
    assert np.allclose(px, 48e-10 / 125)
    # Pixel [0, 0] lies up-left of the first probe centre (10 Å, 10 Å) by at least half a window.
    assert np.all(np.asarray(origin) < 10e-10 - 62 * px[0])
    status = np.asarray(g[layout.PTYCHO_STATUS][...])
    assert status.dtype == np.uint8 and status.tolist() == [1, 0, 0]


def _run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ptyhpc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def test_cli_reports_bad_input_clearly(tmp_path):
    bad = tmp_path / "not_hdf5.h5"
    bad.write_text("hello")
    r = _run_cli("ingest", str(bad), "-o", str(tmp_path / "s.zarr"))
    assert r.returncode == 2
    assert "not_hdf5.h5" in r.stderr and "error" in r.stderr
    assert not (tmp_path / "s.zarr").exists()
    r = _run_cli("reconstruct", str(tmp_path / "missing.zarr"))
    assert r.returncode == 2 and "missing.zarr" in r.stderr


def test_recipe_validation(tmp_path):
    from ptyhpc.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"files": [str(DATA / "tilt_012.h5")]}, "store": "s.zarr",
                                      "ptycho": {"n_itre": 5}}))
    with pytest.raises(ValueError, match="n_itre"):
        load_recipe(recipe)
    recipe.write_text(yaml.safe_dump({"input": {"files": ["nothing_*.h5"]}, "store": "s.zarr"}))
    with pytest.raises(FileNotFoundError, match="nothing_"):
        load_recipe(recipe)


@pytest.mark.slow
def test_full_pipeline_on_five_cnt_angles(tmp_path):
    """ptyhpc run on 5 angles (−60°, −30°, 0°, 30°, 60°) with the default settings."""
    for i in (0, 6, 12, 18, 24):
        shutil.copy(DATA / f"tilt_{i:03d}.h5", tmp_path)
    for name in ("index.json", "truth_tubes.json", *[f"truth_projected_{i:03d}.npy" for i in (0, 6, 12, 18, 24)]):
        shutil.copy(DATA / name, tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "input": {"files": ["tilt_*.h5"]}, "store": "out/cnt.zarr", "figures": "out/figures",
        "report": "out/report.txt", "cluster": {"workers": 2}, "tomo": {"n_iter": 50}, "truth": ".",
    }))
    r = _run_cli("run", str(recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    g = open_store(tmp_path / "out" / "cnt.zarr")
    assert np.all(np.asarray(g[layout.PTYCHO_STATUS][...]) == 1)
    for name in (layout.TOMO_SIRT, layout.TOMO_FBP):
        vol = g[name]
        assert vol.dtype == np.float32 and vol.ndim == 3
        assert list(vol.attrs["axes"]) == ["y", "z", "x"]
        assert "voxel_size_m" in vol.attrs and len(vol.attrs["origin_m"]) == 3
    figs = {p.name for p in (tmp_path / "out" / "figures").glob("*.png")}
    assert {"ptycho_phase_montage.png", "ptycho_error.png"} <= figs and len(figs) >= 4
    report = json.loads((tmp_path / "out" / "report.txt.json").read_text())
    # Measured on the full series: mean correlation 0.87 (see README); 5 angles, same defaults.
    assert report["truth"]["phase"]["mean_correlation"] > 0.8
    # Five angles under-sample the tomogram, so the tube bound is looser than the 1.5 Å of 25 angles.
    assert report["truth"]["tubes_sirt"]["max_distance_A"] < 3.0
