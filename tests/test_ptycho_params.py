"""PtychoParams: engine features of the pipeline (DM, chains, probe modes, positions, detector mask)
through real stores made by ingest, with tiny iteration counts."""

import shutil
from dataclasses import asdict

import numpy as np
import pytest

from ptyhpc.io import ingest, layout, open_store
from ptyhpc.io.store import StoreError
from ptyhpc.pipeline.figures import ptycho_figures
from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho

CHAIN = [{"engine": "dm", "n_iter": 2}, {"engine": "lsqml", "n_iter": 1, "noise_model": "amplitude", "subpixel": "bilinear"}]


@pytest.fixture
def tiny_store(make_tilt_files, tmp_path):
    """Three angles, 4 x 4 positions, 16 x 16 detector (random counts): a real ingested store.

    0.1 1/Å per detector pixel (0.625 Å object pixels) so the 25 mrad aperture fits the detector."""
    files = make_tilt_files(n_angles=3, detector_sampling_inv_A=np.array([0.1, 0.1]), nominal_defocus_A=50.0)
    return ingest(files, tmp_path / "tiny.zarr", progress=False)


def _copy(store, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(store, out)
    return out


@pytest.mark.parametrize("kw,match", [
    ({"engine": "nope"}, "ptycho.engine"),
    ({"engine": "chain"}, "needs ptycho.stages"),
    ({"engine": "rpie", "stages": CHAIN}, "set engine: chain"),
    ({"engine": "chain", "stages": [{"engine": "dm"}]}, "n_iter"),
    ({"engine": "chain", "stages": [{"engine": "dm", "n_iter": 2, "mask": None}]}, "unknown|cannot be set"),
    ({"engine": "chain", "stages": [{"engine": "dm", "n_iter": 2, "seed": 3}]}, "cannot be set per stage"),
    ({"engine": "chain", "stages": [{"engine": "rpie", "n_iter": 2}, {"engine": "dm", "n_iter": 2}],
      "n_probe_modes": 2}, r"stages\[1\].n_probe_modes"),
    ({"n_probe_modes": 0}, "n_probe_modes"),
    ({"n_probe_modes": 2, "engine": "dm"}, r"n_probe_modes.* rpie, epie, mpie, not 'dm'"),
    ({"n_probe_modes": 2, "engine": "lsqml"}, r"n_probe_modes.* rpie, epie, mpie, not 'lsqml'"),
    ({"position_correction_start": 0, "engine": "er"}, r"position_correction_start.* not 'er'"),
    ({"position_correction_start": -1}, "position_correction_start"),
    ({"position_correction_start": 1.5}, "position_correction_start"),
    ({"dm_beta": 0.0, "engine": "dm"}, "dm_beta"),
    ({"alpha": 0.0}, "alpha"),
    ({"beta_object": 0.0}, "beta_object"),
    ({"max_position_shift_px": -1.0}, "max_position_shift_px"),
    ({"noise_model": "gauss"}, "noise_model"),
    ({"n_iter": 0}, "n_iter"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"probe_update_start": -1}, "probe_update_start"),
    ({"probe_mask_factor": -1.0}, "probe_mask_factor"),
    ({"subpixel": "cubic"}, "subpixel"),
    ({"subpixel": "bilinear", "engine": "dm"}, "subpixel"),
])
def test_bad_params_are_refused_clearly(kw, match):
    with pytest.raises(ValueError, match=match):
        PtychoParams(**kw)


def test_chain_params_count_all_iterations_and_survive_a_round_trip():
    p = PtychoParams(engine="chain", stages=CHAIN)
    assert p.n_iter == 3
    assert PtychoParams(**asdict(p)) == p           # how tasks receive their params
    assert p.final_probe_modes == 1
    q = PtychoParams(engine="chain", stages=[{"engine": "dm", "n_iter": 2}, {"engine": "rpie", "n_iter": 1,
                                                                              "n_probe_modes": 3}])
    assert q.final_probe_modes == 3


def test_dm_and_chain_in_the_pipeline(tiny_store, tmp_path):
    """engine dm and a dm → lsqml chain run per item: error curves of n_iter and of the chain's total,
    a single-mode probe stored as (n, Ny, Nx), the input positions stored (nothing refined)."""
    for name, params in (("dm", PtychoParams(engine="dm", n_iter=2)),
                         ("chain", PtychoParams(engine="chain", stages=CHAIN))):
        store = _copy(tiny_store, tmp_path, f"{name}.zarr")
        run_ptycho(store, params, progress=False)
        g = open_store(store)
        n, fft = g[layout.FRAMES].shape[0], tuple(g[layout.PTYCHO].attrs["fft_shape"])
        assert g[layout.PTYCHO_ERROR].shape == (n, params.n_iter)
        assert np.all(np.isfinite(g[layout.PTYCHO_ERROR][...]))
        assert g[layout.PTYCHO_PROBE].shape == (n, *fft)
        np.testing.assert_array_equal(g[layout.PTYCHO_POSITIONS][...], g[layout.POSITIONS][...])
        assert g[layout.PTYCHO_POSITIONS].attrs["refined"] is False
        assert (np.asarray(g[layout.PTYCHO_STATUS][...]) == 1).all()


def test_probe_modes_and_refined_positions_are_stored(tiny_store, tmp_path):
    """Two probe modes with position correction and a warm start: probe (n, 2, Ny, Nx) with the mode
    axis named, refined positions stored (moved, by at most 2 iterations x 0.5 px), the figures still
    made; a rerun with one mode is refused (the probe array has another shape)."""
    store = _copy(tiny_store, tmp_path, "modes.zarr")
    params = PtychoParams(n_iter=2, n_probe_modes=2, position_correction_start=0, warm_start=True,
                          warm_start_stride=2)
    run_ptycho(store, params, progress=False)
    g = open_store(store)
    n, fft = g[layout.FRAMES].shape[0], tuple(g[layout.PTYCHO].attrs["fft_shape"])
    probe = g[layout.PTYCHO_PROBE]
    assert probe.shape == (n, 2, *fft)
    assert list(probe.attrs["axes"]) == ["item", "mode", "y", "x"] and probe.attrs["n_probe_modes"] == 2
    power = (np.abs(probe[...]) ** 2).sum(axis=(2, 3))
    assert np.all(power[:, 0] >= power[:, 1])                    # strongest mode first
    pos, refined = g[layout.POSITIONS][...], g[layout.PTYCHO_POSITIONS][...]
    px = g[layout.PTYCHO_OBJECT].attrs["pixel_size_m"][0]
    moved = np.abs(refined - pos).max() / px
    assert 0 < moved <= 2 * 0.5 + 1e-6, moved
    assert g[layout.PTYCHO_POSITIONS].attrs["refined"] is True
    assert len(ptycho_figures(g, tmp_path / "fig")) == 2
    with pytest.raises(StoreError, match="shape"):
        run_ptycho(store, PtychoParams(n_iter=2), progress=False)


def test_store_detector_mask_leaves_bad_pixels_free(tiny_store, tmp_path):
    """With the store's detector_mask, garbage in the masked pixels does not change the result at all;
    with use_detector_mask=False it does."""
    det = open_store(tiny_store)[layout.FRAMES].shape[2:]
    mask = np.ones(det, bool)
    mask[3, 5] = mask[10, 2] = mask[7, 7] = False
    stores = {}
    for name, corrupt in (("clean", False), ("hot", True)):
        store = _copy(tiny_store, tmp_path, f"{name}.zarr")
        g = open_store(store, mode="r+")
        arr = g.create_array(layout.DETECTOR_MASK, shape=det, dtype=bool, chunks=det)
        arr[...] = mask
        if corrupt:
            frames = g[layout.FRAMES]
            for i in range(frames.shape[0]):
                f = frames[i]
                f[:, ~mask] = 60000
                frames[i] = f
        stores[name] = store
    params = PtychoParams(n_iter=2)
    for store in stores.values():
        run_ptycho(store, params, progress=False)
    a, b = (open_store(stores[k])[layout.PTYCHO_OBJECT][...] for k in ("clean", "hot"))
    np.testing.assert_array_equal(a, b)
    unmasked = _copy(stores["hot"], tmp_path, "unmasked.zarr")
    shutil.rmtree(unmasked / "results")
    run_ptycho(unmasked, PtychoParams(n_iter=2, use_detector_mask=False), progress=False)
    assert not np.allclose(open_store(unmasked)[layout.PTYCHO_OBJECT][...], a)


def test_recipe_takes_a_chain_and_names_a_bad_stage():
    import yaml
    from pydantic import ValidationError

    from ptyhpc.recipe import Recipe

    text = """
input: {files: [raw/*.h5]}
store: out.zarr
ptycho:
  engine: chain
  stages:
    - {engine: dm, n_iter: 50}
    - {engine: lsqml, n_iter: 30, noise_model: poisson}
  n_probe_modes: 1
  position_correction_start: null
"""
    recipe = Recipe.model_validate(yaml.safe_load(text))
    params = recipe.ptycho_params()
    assert params.engine == "chain" and params.n_iter == 80 and params.stages[0] == {"engine": "dm", "n_iter": 50}
    bad = yaml.safe_load(text.replace("n_iter: 30,", "n_iter: 30, dm_beta: 0,"))
    with pytest.raises(ValidationError, match=r"stages\[1\]\.dm_beta"):
        Recipe.model_validate(bad)
