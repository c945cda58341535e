"""4D-STEM analysis against ground truth: simulated crystal (ptyhpc.stem.sim) through real MIB files, the store,
the map-reduce on a real dask cluster, and the stage; drift at low dose."""

from __future__ import annotations

import numpy as np
import pytest

from _stem_files import write_mib
from ptyhpc.io import open_store
from ptyhpc.stem.calibration import Calibration
from ptyhpc.stem.ingest import ingest_stem
from ptyhpc.stem.sim import StemSim, drift_series, simulate_4dstem

THETA_DEG = -123.0  # imposed scan rotation (the transpose is imposed too)


def lowpass(a, step, k_cut):
    """Hard low-pass of an image at spatial frequency k_cut (1/m), mean removed."""
    qy = np.fft.fftfreq(a.shape[0], step)[:, None]
    qx = np.fft.fftfreq(a.shape[1], step)[None]
    return np.fft.ifft2(np.fft.fft2(a - a.mean()) * (np.hypot(qy, qx) <= k_cut)).real


def corr_to_truth(img, sim, p):
    """Correlation with the projected phase after low-passing both to the aperture's limit 2α/λ."""
    k = 2 * p.semiangle_rad / p.wavelength_m
    return float(np.corrcoef(lowpass(img, p.step_m, k).ravel(), lowpass(sim["phase"], p.step_m, k).ravel())[0, 1])


@pytest.fixture(scope="module")
def crystal():
    """Noise-free 4D-STEM of the crystal: 48x48 scan, rotation -123 deg, transposed detector, descan."""
    p = StemSim(weights_rad=(1.0, 0.5), scan_rotation_rad=np.deg2rad(THETA_DEG), transpose=True,
                descan_px_per_step=(0.05, -0.03), scan_shape=(48, 48))
    return p, simulate_4dstem(p)


def _store(tmp_path, p, sim, dose, seed=0, name="s"):
    """Poisson counts at ``dose`` e/A^2 written as a Merlin file and ingested."""
    counts = np.random.default_rng(seed).poisson(sim["frames"] * dose * (p.step_m * 1e10) ** 2).astype(np.uint16)
    mib = write_mib(tmp_path / f"{name}.mib", counts, scan_x=p.scan_shape[1])
    return ingest_stem([mib], tmp_path / f"{name}.zarr", calibration=Calibration(**sim["calibration"]),
                       progress=False, chunk_bytes=96 * counts[0].nbytes), counts


@pytest.mark.parametrize("dose, icom_min, ssb_min, rot_tol", [(1e4, 0.95, 0.95, 0.5), (100, 0.35, 0.35, None)])
def test_icom_ssb_rotation_vs_truth(tmp_path, crystal, dose, icom_min, ssb_min, rot_tol):
    from ptyhpc.stem.stage import run_stem

    p, sim = crystal
    store, counts = _store(tmp_path, p, sim, dose)
    out = run_stem(store, {"ssb": True}, progress=False)
    g = open_store(store)
    res = g["results/stem"]
    assert out["transpose"] is True
    err = (np.degrees(out["scan_rotation_rad"]) - THETA_DEG + 180) % 360 - 180
    if rot_tol is not None:
        assert abs(err) < rot_tol
    else:
        assert abs(err) < 10  # the 180-degree branch is resolved even at low dose
    c_icom, c_ssb = corr_to_truth(res["icom"][0], sim, p), corr_to_truth(res["ssb"][0], sim, p)
    assert c_icom > icom_min and c_ssb > ssb_min, (c_icom, c_ssb)
    # Result contract: shapes, units, attributes.
    assert res["icom"].shape == (1, 48, 48) and res["icom"].dtype == np.float32
    for name in ("bf", "abf", "adf", "com_y", "com_x", "dpc_y", "dpc_x", "icom", "ssb", "dose"):
        a = res[name].attrs
        assert a["pixel_size_m"] == [p.step_m, p.step_m] and a["transpose"] is True
        assert a["scan_rotation_rad"] == pytest.approx(out["scan_rotation_rad"])
    # Dose map in e/m^2 equals the counts per frame over the step area (1 count per electron).
    np.testing.assert_allclose(res["dose"][0].ravel() * 1e-20, counts.sum((1, 2)) / (p.step_m * 1e10) ** 2,
                               rtol=1e-5)
    # Descan plane found (imposed 0.05 and -0.03 px per step along y and x, in the transposed detector).
    plane = np.asarray(res["descan_plane"][0])
    np.testing.assert_allclose([plane[1, 1], plane[0, 2]], [0.05, -0.03], atol=0.01)
    # A rerun finds the item done and changes nothing.
    again = run_stem(store, {"ssb": True}, progress=False)
    assert again["done"] == [] and again["skipped"] == [0]


def test_parallax_defocus_and_phase(tmp_path):
    """Tilt-corrected BF of a defocused probe: phase vs truth, defocus sign and size from the parallax fit."""
    from ptyhpc.stem.stage import run_stem

    p = StemSim(weights_rad=(1.0, 0.5), scan_rotation_rad=np.deg2rad(30), scan_shape=(32, 32), defocus_m=100e-10)
    sim = simulate_4dstem(p)
    cal = dict(sim["calibration"], defocus_m=p.defocus_m)
    counts = np.random.default_rng(0).poisson(sim["frames"] * 1e4 * (p.step_m * 1e10) ** 2).astype(np.uint16)
    store = ingest_stem([write_mib(tmp_path / "d.mib", counts, scan_x=32)], tmp_path / "d.zarr",
                        calibration=Calibration(**cal), progress=False)
    run_stem(store, {"ssb": True, "parallax": True, "scan_rotation_rad": p.scan_rotation_rad, "transpose": False},
             progress=False)
    g = open_store(store)
    fit = g["results/stem"].attrs["parallax_fit"]["0"]
    assert abs(fit["defocus_m"] / p.defocus_m - 1) < 0.1, fit  # a strong (1 rad) phase object, 32x32 scan
    # The parallax phase is a rough start (CTF zeros at 10 nm defocus; 0.38 measured here, 0.61 for a weak,
    # noise-free object): the tcBF and the defocus are its main products (docs/stem.md).
    c = corr_to_truth(g["results/stem/parallax"][0], sim, p)
    assert c > 0.3, c
    assert corr_to_truth(g["results/stem/ssb"][0], sim, p) > 0.9  # SSB with the defocus corrected


def test_virtual_images_one_and_two_workers_equal_numpy(tmp_path):
    """Virtual BF/ABF/ADF and CoM: in-process, on 2 dask workers, and by direct NumPy — the same."""
    from distributed import Client, LocalCluster

    from ptyhpc.stem.mapreduce import run_analyses
    from ptyhpc.stem.virtual import (CentreOfMass, VirtualDetectors, VirtualDiffraction, find_bf_disk,
                                     sample_mean_pattern, standard_masks)

    p = StemSim(scan_shape=(20, 24), det_px=32, dx_m=0.4e-10, step_m=0.5e-10, dose_e_per_A2=2000)
    sim = simulate_4dstem(p)
    mib = write_mib(tmp_path / "v.mib", sim["frames"], scan_x=24)
    store = ingest_stem([mib], tmp_path / "v.zarr", calibration=Calibration(**sim["calibration"]), progress=False,
                        chunk_bytes=37 * sim["frames"][0].nbytes)  # chunks that do not divide the scan
    g = open_store(store)
    det = find_bf_disk(sample_mean_pattern(g), g.attrs["geometry"])
    masks = standard_masks((32, 32), det)
    analyses = [VirtualDetectors(masks), CentreOfMass(det.centre), VirtualDiffraction()]
    one = run_analyses(store, analyses, progress=False, partition_bytes=80 * 2048)
    # Thread workers start in a second on this 2-core machine; the tasks, pickling and scheduler are the real ones.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        two = run_analyses(store, analyses, client=client, progress=False, partition_bytes=80 * 2048)
        assert len(client.scheduler_info()["workers"]) == 2
    f = sim["frames"].astype(np.float64)
    yy, xx = np.indices((32, 32))
    for k in range(3):
        for name in one[k]:
            np.testing.assert_array_equal(one[k][name], two[k][name])
    for name, m in masks.items():
        np.testing.assert_allclose(one[0][name].ravel(), (f * m).sum((1, 2)), rtol=1e-6)
    tot = f.sum((1, 2))
    np.testing.assert_allclose(one[1]["com_y"].ravel(), (f * (yy - det.centre[0])).sum((1, 2)) / tot, atol=1e-4)
    np.testing.assert_allclose(one[1]["com_x"].ravel(), (f * (xx - det.centre[1])).sum((1, 2)) / tot, atol=1e-4)
    np.testing.assert_allclose(one[2]["sum"], f.sum(0), rtol=1e-9)
    np.testing.assert_array_equal(one[2]["max"], f.max(0))
    # Linear analyses alone: one fused product on slab-converted frames (37-frame chunks, 8-frame slabs), and
    # each analysis on its own (fuse=False): the same numbers as NumPy.
    for fuse in (True, False):
        lin = run_analyses(store, analyses[:2], progress=False, partition_bytes=80 * 2048, fuse=fuse)
        for name, m in masks.items():
            np.testing.assert_allclose(lin[0][name].ravel(), (f * m).sum((1, 2)), rtol=1e-6)
        np.testing.assert_allclose(lin[1]["com_y"].ravel(), (f * (yy - det.centre[0])).sum((1, 2)) / tot, atol=1e-4)
        np.testing.assert_allclose(lin[1]["com_x"].ravel(), (f * (xx - det.centre[1])).sum((1, 2)) / tot, atol=1e-4)
        np.testing.assert_allclose(lin[1]["total"].ravel(), tot, rtol=1e-6)
    # CoM inside a disk of 1.2 r_BF, counts below 3 zeroed first.
    disk = np.hypot(yy - det.centre[0], xx - det.centre[1]) <= 1.2 * det.bf_radius_px
    got = run_analyses(store, [CentreOfMass(det.centre, disk, 3.0)], progress=False)[0]
    w = f * disk * (f >= 3)
    np.testing.assert_allclose(got["com_x"].ravel(), (w * (xx - det.centre[1])).sum((1, 2)) / w.sum((1, 2)),
                               atol=1e-4)
    np.testing.assert_allclose(got["total"].ravel(), w.sum((1, 2)), rtol=1e-6)


def test_drift_recovered_at_low_dose():
    """Seed 003: low-pass then cross-correlate; 1 count per pixel on average."""
    from ptyhpc.stem.lowdose import drift_corrected_sum, measure_drift

    d = drift_series(10, (96, 96), dose_counts=1.0, seed=0)
    s = measure_drift(d["images"])
    rms = np.sqrt(np.mean((s - d["shifts"]) ** 2))
    assert rms < 0.1, rms
    assert np.abs(d["shifts"]).max() > 3  # a real drift was imposed
    # A smooth (linear) drift at 2 counts per pixel, fitted: every frame within 0.1 px.
    d = drift_series(10, (96, 96), dose_counts=2.0, seed=1, jitter_px=0.0)
    s = measure_drift(d["images"], order=1)
    assert np.abs(s - d["shifts"]).max() < 0.1
    total = drift_corrected_sum(d["images"], s)
    naive = d["images"].sum(0)
    # The drift-corrected sum matches the specimen; the plain sum is blurred by the drift.
    inner = (slice(8, -8), slice(8, -8))  # away from the content that drifted in at the edges
    c_fixed = np.corrcoef(total[inner].ravel(), d["truth"][inner].ravel())[0, 1]
    c_naive = np.corrcoef(naive[inner].ravel(), d["truth"][inner].ravel())[0, 1]
    assert c_fixed > 0.9 and c_fixed > c_naive + 0.2, (c_fixed, c_naive)


def test_cli_ingest_stem_recipe(tmp_path):
    """ptyhpc ingest (flags only) -> ptyhpc stem on a LocalCluster -> results, figures; rerun skips; recipe stage."""
    from typer.testing import CliRunner

    from ptyhpc.cli import app
    from ptyhpc.recipe import load_recipe

    p = StemSim(scan_shape=(16, 16), det_px=32, dx_m=0.4e-10, step_m=0.5e-10, dose_e_per_A2=5000,
                scan_rotation_rad=0.3)
    sim = simulate_4dstem(p)
    mib = write_mib(tmp_path / "c.mib", sim["frames"])  # no .hdr: the scan shape comes from the flag
    c = sim["calibration"]
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", str(mib), "-o", str(tmp_path / "c.zarr"), "--beam-energy-ev",
                            str(c["beam_energy_eV"]), "--convergence-semiangle-rad", str(c["convergence_semiangle_rad"]),
                            "--scan-step-m", str(c["scan_step_m"]), "--reciprocal-sampling-inv-m",
                            str(c["reciprocal_sampling_inv_m"]), "--scan-shape", "16,16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["stem", str(tmp_path / "c.zarr"), "--workers", "1", "--ssb", "--virtual", "bf,adf",
                            "--figures", str(tmp_path / "fig")])
    assert r.exit_code == 0, r.output
    assert "1 items done" in r.output
    g = open_store(tmp_path / "c.zarr")
    assert {"bf", "adf", "icom", "ssb", "dpc_x", "vd_sum"} <= set(g["results/stem"].keys())
    assert "abf" not in g["results/stem"]
    for name in ("stem_virtual.png", "stem_com.png", "stem_phase.png", "stem_diffraction.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000
    # Other products on a finished store: refused, naming the settings (nothing half-overwritten).
    r = runner.invoke(app, ["stem", str(tmp_path / "c.zarr"), "--workers", "1", "--parallax"])
    assert r.exit_code == 2 and "other settings" in r.output
    r = runner.invoke(app, ["stem", str(tmp_path / "c.zarr"), "--workers", "1", "--virtual", "haadf"])
    assert r.exit_code == 2 and "haadf" in r.output
    (tmp_path / "r.yaml").write_text(f"input: {{files: [c.mib], format: mib, calibration: {{scan_shape: [16, 16]}}}}\n"
                                     "store: c.zarr\nstem: {ssb: true, virtual: [bf]}\n")
    rc, _ = load_recipe(tmp_path / "r.yaml")
    assert rc.stem == {"ssb": True, "virtual": ["bf"]}
    (tmp_path / "bad.yaml").write_text("input: {files: [c.mib]}\nstore: c.zarr\nstem: {ssbb: true}\n")
    with pytest.raises(ValueError, match="ssbb"):
        load_recipe(tmp_path / "bad.yaml")
