"""A newcomer's first hour (issue 14): restart, figures folder, stage order, recipe error text,
OME-Zarr read back with its physical scale, docs/recipes.md up to date."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from ptyhpc.io import ingest, layout, open_store

DATA = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"


def _cli(*args, cwd=None):
    # stderr is a pipe here, as in a batch job's log: progress must come as plain lines.
    return subprocess.run([sys.executable, "-m", "ptyhpc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})


@pytest.mark.slow   # five CLI runs, two of them with a LocalCluster: about 30 s on 2 idle cores
def test_restart_figures_folder_and_stage_order(tmp_path):
    store = ingest([DATA / f"tilt_{i:03d}.h5" for i in (6, 12, 18)], tmp_path / "s.zarr", progress=False)

    # A scheduler address where nothing listens: a command that tried to connect would fail, so these
    # pass only when the store and the work are checked before any cluster.
    nowhere = ("--cluster", "address", "--scheduler", "tcp://127.0.0.1:9")
    r = _cli("tomo", str(store), *nowhere)
    assert r.returncode == 2, r.stderr
    assert "run `ptyhpc reconstruct" in r.stderr and "array" not in r.stderr

    figs = tmp_path / "my_figures"
    r = _cli("reconstruct", str(store), "--n-iter", "2", "--workers", "1", "--figures", str(figs))
    assert r.returncode == 0, r.stderr
    assert "3/3 items" in r.stderr                       # progress lines, not a bar, off a terminal
    assert (figs / "ptycho_error.png").is_file()

    # Nothing to do: no cluster, the figures stay where the run put them (no new s_figures/).
    r = _cli("reconstruct", str(store), "--n-iter", "2", *nowhere)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stderr and str(figs) in r.stderr.replace("\n", "")
    assert not (tmp_path / "s_figures").exists()

    # Other settings are refused, naming the way out; --restart takes it.
    r = _cli("reconstruct", str(store), "--n-iter", "3", *nowhere)
    assert r.returncode == 2
    assert "--restart" in r.stderr
    assert open_store(store)[layout.PTYCHO_ERROR].shape == (3, 2)       # nothing touched
    r = _cli("reconstruct", str(store), "--n-iter", "3", "--workers", "1", "--restart")
    assert r.returncode == 0, r.stderr
    g = open_store(store)
    assert g[layout.PTYCHO_ERROR].shape == (3, 3)
    assert np.all(np.asarray(g[layout.PTYCHO_STATUS][...]) == 1)
    assert not (tmp_path / "s_figures").exists()


def test_recipe_errors_name_file_and_key_in_plain_words(tmp_path):
    from ptyhpc.recipe import load_recipe

    recipe = tmp_path / "mine.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"files": [str(DATA / "tilt_012.h5")], "formt": "cxi"},
                                      "store": "s.zarr", "tomo": {"n_iter": 0}, "ptycho": {"n_itre": 5}}))
    with pytest.raises(ValueError) as err:
        load_recipe(recipe)
    text = str(err.value)
    assert str(recipe) in text
    assert "input.formt: unknown key" in text and "format" in text        # the known keys are listed
    assert "tomo.n_iter: should be greater than or equal to 1 (got 0)" in text
    assert "n_itre" in text
    assert "pydantic" not in text and "http" not in text and "Input should" not in text

    recipe.write_text(yaml.safe_dump({"input": {"files": ["../data/tilt_*.h5"]}, "store": "s.zarr"}))
    with pytest.raises(FileNotFoundError, match="relative to the recipe's folder"):
        load_recipe(recipe)


def test_ome_zarr_tomogram_reads_back_with_physical_scale(tmp_path):
    import ngff_zarr

    from ptyhpc.pipeline.ome import ome_images, write_ome_phase_stack, write_ome_tomograms

    store = tmp_path / "s.zarr"
    root = zarr.open_group(store, mode="w")
    rng = np.random.default_rng(0)
    vol = rng.random((80, 64, 96), dtype=np.float32)           # (y, z, x) as results/tomo/sirt
    a = root.create_array(layout.TOMO_SIRT, shape=vol.shape, dtype="float32", chunks=(16, 64, 96))
    a[...] = vol
    a.attrs.update({"voxel_size_m": 0.384e-10, "origin_m": [1e-10, -2e-10, 3e-10], "axes": ["y", "z", "x"]})
    obj = root.create_array(layout.PTYCHO_OBJECT, shape=(3, 50, 60), dtype="complex64", chunks=(1, 50, 60))
    phase = rng.uniform(-1, 1, (3, 50, 60)).astype(np.float32)
    obj[...] = np.exp(1j * phase)
    obj.attrs.update({"pixel_size_m": [2e-9, 2e-9], "origin_m": [0.0, 0.0]})
    root.create_array(layout.TILT_ANGLE, shape=(3,), dtype="float64")[...] = np.radians([-30, 0, 30])

    (path,) = write_ome_tomograms(store)
    write_ome_phase_stack(store)
    assert [p.name for p in ome_images(store)] == ["phase.ome.zarr", "sirt.ome.zarr"]

    ms = ngff_zarr.from_ngff_zarr(str(path))
    im = ms.images[0]
    assert im.dims == ("z", "y", "x")
    assert im.axes_units == {"z": "angstrom", "y": "angstrom", "x": "angstrom"}
    assert im.scale == pytest.approx({"z": 0.384, "y": 0.384, "x": 0.384})
    assert im.translation == pytest.approx({"z": -2.0, "y": 1.0, "x": 3.0})
    np.testing.assert_array_equal(np.asarray(im.data), vol.transpose(1, 0, 2))
    assert len(ms.images) == 2 and ms.images[1].scale["x"] == pytest.approx(0.768)   # a real pyramid

    ms = ngff_zarr.from_ngff_zarr(str(store / "ome" / "phase.ome.zarr"))
    im = ms.images[0]
    assert im.dims == ("c", "y", "x") and im.axes_units["y"] == "nanometer"
    assert im.scale["y"] == pytest.approx(2.0)
    np.testing.assert_allclose(np.asarray(im.data), phase, atol=1e-6)
    assert [c.label for c in ms.metadata.omero.channels] == ["-30.0 deg", "0.0 deg", "30.0 deg"]
    np.testing.assert_array_equal(root[layout.TOMO_SIRT][...], vol)     # the contract's array untouched

    # `ptyhpc view` without napari (or with --print) names the images for other viewers.
    from ptyhpc.pipeline.view import view_store

    said = []
    assert view_store(store, print_only=True, echo=said.append) == ome_images(store)
    assert said == [str(p) for p in ome_images(store)]


def test_recipe_reference_is_up_to_date():
    from ptyhpc.recipe_docs import DOC_PATH, render

    assert DOC_PATH.read_text() == render(), "docs/recipes.md is out of date: run `python -m ptyhpc.recipe_docs`"
    text = DOC_PATH.read_text()
    for key in ("`input.files`", "`ptycho.n_iter`", "`tomo.n_iter`", "`cluster.kind`"):
        assert key in text


def test_poisson_noise_floor_matches_simulated_counts():
    """The figure's noise floor is the error the true model gives on Poisson data (low and high dose)."""
    from ptyhpc.pipeline.plotting import poisson_floor

    rng = np.random.default_rng(0)
    y, x = np.mgrid[-32:32, -32:32]
    for peak in (0.5, 30.0, 2000.0):           # electrons per pixel at the disk centre ... X-ray flat field
        lam = peak * np.exp(-(x**2 + y**2) / 300.0) + 0.01 * peak
        counts = rng.poisson(lam, (100, *lam.shape))
        measured = ((np.sqrt(counts) - np.sqrt(lam)) ** 2).sum() / counts.sum()
        assert poisson_floor(lam) == pytest.approx(measured, rel=0.01), peak
    assert poisson_floor(np.full((8, 8), 1e4)) == pytest.approx(0.25 / 1e4, rel=0.01)   # high-count limit
