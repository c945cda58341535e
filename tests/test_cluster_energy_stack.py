"""Energy stacks: X-ray reader and ingest, per-item wavelength and pixel, per-item scheduling, warm start."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import XRAY_GEOMETRY, xray_truth

from ptyhpc.cluster import connect
from ptyhpc.io import IngestError, layout, open_store
from ptyhpc.io.energy import (
    ingest_energy_stack,
    item_geometry,
    item_groups,
    photon_wavelength,
    read_xray_metadata,
)
from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho, warm_start_sources

PARAMS = PtychoParams(n_iter=30, batch_size=8, beta_object=0.5, beta_probe=0.5, noise_model="poisson")


def test_photon_wavelength():
    assert photon_wavelength(1000.0) == pytest.approx(1.23984198e-9, rel=1e-8)
    with pytest.raises(ValueError, match="positive"):
        photon_wavelength(-5)


def test_ingest_sorts_items_and_stores_per_item_energy_wavelength_polarisation(make_xray_files, tmp_path):
    files = make_xray_files(items=((704.0, "C+"), (700.0, "C-"), (700.0, "C+")), photons=None)
    meta = read_xray_metadata(files[0])
    assert meta.photon_energy_eV == 704.0 and meta.polarisation == "C+" and meta.scan_shape == (6, 6)
    store = ingest_energy_stack(files, tmp_path / "e.zarr", progress=False)
    g = open_store(store)
    assert g.attrs["kind"] == "energy_stack" and g.attrs["radiation"] == "xray"
    assert list(g.attrs["polarisation"]) == ["C+", "C-", "C+"]
    np.testing.assert_allclose(g["photon_energy_eV"][...], [700, 700, 704])
    lam = np.array([photon_wavelength(e) for e in (700, 700, 704)])
    np.testing.assert_allclose(g["wavelength_m"][...], lam, rtol=1e-12)
    dk = XRAY_GEOMETRY["detector_pixel_size_m"][0] / (lam * XRAY_GEOMETRY["detector_distance_m"])
    np.testing.assert_allclose(g["reciprocal_sampling_inv_m"][...], np.stack([dk, dk], 1), rtol=1e-12)
    assert item_geometry(g, 2)["wavelength_m"] == pytest.approx(lam[2])
    assert item_groups(g) == [[0, 2], [1]]  # one sequence per polarisation, increasing energy
    # The raw counts went in unchanged, in the sorted order.
    with h5py.File(files[2]) as f:
        np.testing.assert_array_equal(g[layout.FRAMES][0], f["entry/data/counts"][()].reshape(36, 32, 32))


@pytest.mark.parametrize("change, words", [
    ({"polarisation": None}, "polarisation: missing"),
    ({"photon_energy_eV": -700.0}, "photon_energy_eV: must be > 0"),
    ({"detector_pixel_size_m": (75e-6,)}, "detector_pixel_size_m: expected 2"),
])
def test_bad_xray_file_is_named(make_xray_files, tmp_path, change, words):
    files = make_xray_files(items=((700.0, "C+"),), photons=None, **change)
    with pytest.raises(IngestError, match=words) as err:
        ingest_energy_stack(files, tmp_path / "e.zarr", progress=False)
    assert "energy_000.h5" in str(err.value)
    assert not (tmp_path / "e.zarr").exists()


def test_inconsistent_stack_is_refused(make_xray_files, tmp_path):
    a = make_xray_files(items=((700.0, "C+"), (700.0, "C+")), photons=None)
    with pytest.raises(IngestError, match="700.0 eV with polarisation 'C\\+' also in"):
        ingest_energy_stack(a, tmp_path / "e.zarr", progress=False)
    b = make_xray_files(items=((702.0, "C+"),), photons=None, detector_distance_m=0.012)
    with pytest.raises(IngestError, match="detector_distance_m"):
        ingest_energy_stack([a[0], *b], tmp_path / "e.zarr", progress=False)


def _disc_absorption(g, i):
    """−ln(|O| inside the disc / |O| around it) of item i, on the item's own pixel grid."""
    px, origin = g[layout.PTYCHO_OBJECT].attrs["pixel_size_m"][i], g[layout.PTYCHO_OBJECT].attrs["origin_m"][i]
    obj = np.asarray(g[layout.PTYCHO_OBJECT][i])
    yy = origin[0] + np.arange(obj.shape[0])[:, None] * px[0]
    xx = origin[1] + np.arange(obj.shape[1])[None, :] * px[1]
    truth = np.abs(xray_truth(yy, xx, 700.0))
    disc = truth < 0.95
    r = np.hypot(yy - (0.35e-6 + 60e-9), xx - (0.35e-6 + 40e-9))
    ring = (r > 45e-9) & (r < 60e-9)
    return float(-np.log(np.median(np.abs(obj[disc])) / np.median(np.abs(obj[ring]))))


def test_energy_stack_reconstructs_the_absorption_edge(make_xray_files, tmp_path):
    """Four energies across the edge at 704 eV, plus the other polarisation: one task per item on 2 workers."""
    items = ((700.0, "C+"), (703.0, "C+"), (705.0, "C+"), (708.0, "C+"), (705.0, "C-"))
    store = ingest_energy_stack(make_xray_files(items=items), tmp_path / "e.zarr", progress=False)
    with connect(n_workers=2) as client:
        out = run_ptycho(store, PARAMS, client=client, progress=False)
    assert sorted(out["done"]) == [0, 1, 2, 3, 4]
    g = open_store(store)
    px = np.array(g[layout.PTYCHO_OBJECT].attrs["pixel_size_m"])[:, 0]
    lam = np.asarray(g["wavelength_m"][...])
    # The object pixel λz/(N p) follows each item's wavelength.
    np.testing.assert_allclose(px, lam * XRAY_GEOMETRY["detector_distance_m"] / (32 * 75e-6), rtol=1e-12)
    mu = [_disc_absorption(g, i) for i in range(5)]
    truth = [0.15 + 0.35 / (1 + np.exp(-(e - 704.0) / 1.5)) for e, _ in (items[0], items[1], items[4], items[2],
                                                                           items[3])]
    # Items sorted by (energy, polarisation): 700, 703, 705 C+, 705 C-, 708.
    np.testing.assert_allclose(mu, truth, atol=0.06)
    assert mu[0] < mu[1] < mu[2] < mu[4]


def test_warm_start_is_deterministic_and_starts_closer(make_xray_files, tmp_path):
    """Warm start (off by default): items 1 and 3 start from the refined probes of anchors 0 and 2.

    The simulated probe is 0.3 µm further from focus than the files state (a model probe that
    misses, as at a beamline), so the neighbour's refined probe is the better start.
    """
    items = tuple((700.0 + k, "C+") for k in range(5))
    clean = ingest_energy_stack(make_xray_files(items=items, true_defocus_m=1.5e-6), tmp_path / "clean.zarr",
                                progress=False)
    warm = PtychoParams(**{**PARAMS.__dict__, "warm_start": True, "warm_start_stride": 2})
    assert warm_start_sources(open_store(clean), warm) == {0: None, 1: 0, 2: None, 3: 2, 4: None}
    assert set(warm_start_sources(open_store(clean), PARAMS).values()) == {None}
    errors = {}
    for name, params, workers in (("cold", PARAMS, None), ("warm", warm, None), ("warm2", warm, 2)):
        store = tmp_path / f"{name}.zarr"
        shutil.copytree(clean, store)
        if workers:
            with connect(n_workers=workers) as client:
                run_ptycho(store, params, client=client, progress=False)
        else:
            run_ptycho(store, params, progress=False)
        errors[name] = np.asarray(open_store(store)[layout.PTYCHO_ERROR][...])
    np.testing.assert_array_equal(errors["warm"], errors["warm2"])  # independent of scheduling
    np.testing.assert_array_equal(errors["warm"][[0, 2, 4]], errors["cold"][[0, 2, 4]])  # anchors are cold
    first_cold, first_warm = errors["cold"][[1, 3], 0], errors["warm"][[1, 3], 0]
    final_cold, final_warm = errors["cold"][[1, 3], -1], errors["warm"][[1, 3], -1]
    print(json.dumps({"warm_start": {"first_iteration_error_cold": first_cold.tolist(),
                                     "first_iteration_error_warm": first_warm.tolist(),
                                     "final_error_cold": final_cold.tolist(), "final_error_warm": final_warm.tolist()}}))
    assert np.all(first_warm < first_cold)
    assert np.all(final_warm <= final_cold * 1.02)


def test_cli_ingest_detects_energy_stack_and_status_shows_energies(make_xray_files, tmp_path):
    files = make_xray_files(items=((700.0, "LH"), (701.0, "LV")), photons=None)
    store = tmp_path / "e.zarr"
    r = subprocess.run([sys.executable, "-m", "ptyhpc.cli", "ingest", *map(str, files), "-o", str(store)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "ptyhpc.cli", "status", str(store), "--json"], capture_output=True,
                       text=True, timeout=120)
    st = json.loads(r.stdout)
    assert st["kind"] == "energy_stack" and st["counts"]["pending"] == 2
    assert [(i["energy_eV"], i["polarisation"]) for i in st["items"]] == [(700.0, "LH"), (701.0, "LV")]
