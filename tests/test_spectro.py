"""Issue 16: spectro-ptychography analysis (ptyhpc.spectro) against simulated truth, and the seed's dose numbers."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ptyhpc.cli import EXIT_USER, app
from ptyhpc.io import open_store
from ptyhpc.sim.spectro import default_materials, fermat_spiral, raster_scan, simulate_energy_stack
from ptyhpc.spectro import dose, quality
from ptyhpc.spectro.fit import fit_thickness, nnls_batched
from ptyhpc.spectro.references import Reference, read_reference, xraydb_reference
from ptyhpc.spectro.stack import register
from ptyhpc.spectro.stage import dichroism_pairs

runner = CliRunner()


def _out(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())
ZP_ARGS = ["--zone-plate-diameter", "160e-6", "--outer-zone-width", "35e-9", "--central-stop-diameter", "60e-6"]
# (energy, polarisation) as simulated, and the specimen drift of each, m.
ITEMS = ((700.0, "CR"), (707.0, "CR"), (707.0, "CL"), (712.0, "CR"))
DRIFT = np.array([[0.0, 0.0], [20e-9, -10e-9], [-15e-9, 25e-9], [30e-9, -20e-9]])


# --- seed 001: overlap and dose (eqs. (1)-(5), Fig. 7) ------------------------------------------------

def test_seed_overlap_weight_factor_and_exposures(tmp_path):
    assert dose.overlap_ratio(50e-9, 500e-9) == pytest.approx(0.9)
    assert dose.overlap_area(0.0, 1.0) == pytest.approx(np.pi)          # a circle with itself
    assert dose.overlap_area(2.0, 1.0) == pytest.approx(0.0)
    assert dose.weight_factor(0.2, 1.0) == pytest.approx(78, abs=1)     # "as high as 78" at d = 0.2R
    assert dose.weight_factor(2.0, 1.0) == pytest.approx(1.0)           # no overlap at d = 2R
    # Fig. 7(c, d): 2 µm x 2 µm raster; 500 nm beam at 50 nm steps is exposed up to 81 times,
    # 60 nm at 30 nm 1-5 times.
    px = 5e-9
    for diameter, step, lo, hi in ((500e-9, 50e-9, None, 81), (60e-9, 30e-9, 1, 5)):
        n = int(round(2e-6 / step)) + 1
        m = dose.exposure_map(raster_scan((n, n), step), diameter, (px, px), (-1e-6, -1e-6), (400, 400))
        assert m.max() == hi
        if lo is not None:
            assert m.min() == lo
    # A spiral scan works the same way (exposures bounded by the raster's of the same density).
    spiral = dose.exposure_map(fermat_spiral(200, 50e-9), 500e-9, (px, px), (-0.2e-6, -0.2e-6), (80, 80))
    assert 40 < spiral.max() < 110
    dose.weight_factor_figure(tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_dose_formula():
    # 1e6 photons of 192 eV on (100 nm)^2 through 50 nm of density 2100 kg/m3 with OD 0.3:
    d = dose.dose_gray(0.3, 50e-9, 2100.0, 1e6, 192.0, 1e-14)
    expected = 1e6 * 192 * 1.602176634e-19 * (1 - np.exp(-0.3)) / (2100 * 50e-9 * 1e-14)
    assert d == pytest.approx(expected) and 1e6 < d < 1e9   # Gy; the MGy range of soft X-ray imaging
    with pytest.raises(ValueError):
        dose.dose_gray(0.3, 0.0, 2100.0, 1e6, 192.0, 1e-14)


def test_quality_measures():
    from scipy.special import erf

    x = np.arange(200) * 1e-9
    sigma = 10e-9
    edge = 0.5 * (1 + erf((x - 100e-9) / (sigma * np.sqrt(2))))
    assert quality.knife_edge_width(edge, 1e-9) == pytest.approx(2 * 0.8416 * sigma, rel=0.02)
    assert quality.knife_edge_width(edge[::-1], 1e-9) == pytest.approx(2 * 0.8416 * sigma, rel=0.02)
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64))
    img[20:40, 20:40] = 1.0
    from scipy import ndimage
    assert quality.laplacian_variance(img) > quality.laplacian_variance(ndimage.gaussian_filter(img, 2))
    noisy = 2.0 + 0.1 * rng.standard_normal((64, 64))
    assert quality.snr(noisy, np.ones((64, 64), bool)) == pytest.approx(20, rel=0.1)


def test_stack_quality_knife_edge_of_known_blur():
    """A tilted edge blurred by a known Gaussian σ per energy: the automatic 20-80 % width is 1.683 σ (±5 %)."""
    from scipy.special import erf

    yy, xx = np.indices((64, 64)).astype(float)
    d = (xx - 30) * np.cos(0.44) + (yy - 34) * np.sin(0.44)          # a 25° edge
    sigmas = np.array([1.2, 2.0, 3.0])                               # px
    rng = np.random.default_rng(4)
    od = np.stack([0.2 + 0.25 * (1 + erf(d / (s * np.sqrt(2)))) for s in sigmas])
    od += 0.002 * rng.standard_normal(od.shape)
    valid = np.hypot(yy - 32, xx - 32) < 30
    od[:, ~valid] = np.nan
    q = quality.stack_quality(od, valid, (10e-9, 10e-9), half_length_px=12)
    np.testing.assert_allclose(q["knife_edge_m"], 2 * 0.8416 * sigmas * 10e-9, rtol=0.05)
    assert np.all(np.diff(q["laplacian_variance"]) < 0)              # blurrier is less sharp
    # SNR region: the high-OD side, 0.7 ± 0.002 → SNR ≈ 350.
    assert q["snr"] == pytest.approx([350] * 3, rel=0.25)


def test_frc_of_halves_band_limited_pair():
    """Two noisy copies of a field band-limited to k_c = 0.2/px (one shifted by a sub-pixel drift and a global
    phase): half-bit resolution 1/(2 k_c) = 2.5 px within -12 % / +5 % (apodisation leaks a little beyond k_c)."""
    rng = np.random.default_rng(5)
    n = 128
    f = np.fft.fftfreq(n)
    kk = np.hypot(f[:, None], f[None, :])
    noise = lambda: rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))  # noqa: E731
    field = 1 + 0.3 * np.fft.ifft2(np.fft.fft2(noise()) * (kk < 0.2))
    shifted = np.fft.ifft2(np.fft.fft2(field) * np.exp(-2j * np.pi * (0.6 * f[:, None] - 1.3 * f[None, :])))
    a = field + 0.03 * noise()
    b = shifted * np.exp(0.4j) + 0.03 * noise()
    valid = np.hypot(*(np.indices((n, n)) - n / 2)) < 56
    r = quality.frc_of_halves(a, b, valid, 10e-9)
    assert 0.88 * 25e-9 <= r["resolution_m"] <= 1.05 * 25e-9, r["resolution_m"]
    np.testing.assert_allclose(r["shift_px"], [-0.6, 1.3], atol=0.1)
    # Independent halves (no common signal) are resolved at no frequency above the lowest rings.
    r = quality.frc_of_halves(a, 1 + 0.3 * noise(), valid, 10e-9)
    assert r["resolution_m"] > 10 * 25e-9


def test_chunked_fit_is_the_same_on_one_and_two_workers(tmp_path):
    """Row blocks read from results/spectro/aligned, fitted as tasks on a real dask cluster: the thickness maps
    equal the truth (noise-free) and are identical with 1 and 2 workers and with the in-memory fit."""
    import zarr
    from distributed import Client, LocalCluster

    from ptyhpc.io.energy import photon_wavelength
    from ptyhpc.spectro.chunked import fit_block, prepare_fit_arrays
    from ptyhpc.spectro.stage import _compute

    energies = np.array([700.0, 707.0, 707.0, 712.0])
    uniq = np.unique(energies)
    which = [np.flatnonzero(energies == e) for e in uniq]
    refs = [xraydb_reference("Fe", "Fe", 7.87, uniq), xraydb_reference("PS", "C8H8", 1.05, uniq)]
    rng = np.random.default_rng(6)
    H, W, rows = 40, 24, 7
    t = np.stack([rng.uniform(0, 30e-9, (H, W)), rng.uniform(0, 300e-9, (H, W))])
    mu = np.stack([np.interp(energies, uniq, r.mu_per_m) for r in refs], 1)
    k = np.array([2 * np.pi / photon_wavelength(e) for e in energies])
    dl = np.stack([np.interp(energies, uniq, r.delta) for r in refs], 1)
    aligned = np.exp(-0.5 * np.einsum("ek,khw->ehw", mu, t) - 1j * np.einsum("ek,khw->ehw", k[:, None] * dl, t))
    valid = np.ones((H, W), bool)
    valid[:3] = False
    maps = []
    for n_workers in (1, 2):
        path = tmp_path / f"w{n_workers}.zarr"
        res = zarr.open_group(path, mode="w", zarr_format=3).require_group("results/spectro")
        res.create_array("aligned", data=aligned.astype(np.complex64), chunks=(4, rows, W))
        res.create_array("valid", data=valid, chunks=(rows, W))
        prepare_fit_arrays(res, 2, (H, W), rows, joint=True, attrs={"thickness": {}, "thickness_od_only": {}},
                           residual_attrs={})
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
                Client(c) as client:
            blocks = _compute([(fit_block, (str(path), r0, min(r0 + rows, H), refs, uniq, which, True, 2.0))
                               for r0 in range(0, H, rows)], client)
        assert len(blocks) == 6 and sum(b["pixels"] for b in blocks) == valid.sum()
        maps.append(np.asarray(res["thickness"][...]))
    assert np.array_equal(maps[0], maps[1], equal_nan=True)
    assert np.all(np.isnan(maps[0][:, :3]))
    np.testing.assert_allclose(maps[0][:, valid], t[:, valid], atol=1e-3 * t.max())
    od = -np.log(np.abs(aligned.astype(np.complex64)) ** 2)
    od_e = np.stack([od[w].mean(0) for w in which])
    ph_e = np.stack([np.angle(aligned.astype(np.complex64))[w].mean(0) for w in which])
    whole, _ = fit_thickness(od_e, refs, uniq, phase=ph_e, valid=valid, phase_weight=2.0)
    np.testing.assert_allclose(maps[0], whole, rtol=1e-6, atol=1e-15)


# --- fits and references ------------------------------------------------------------------------------

def test_nnls_batched_matches_scipy():
    from scipy.optimize import nnls

    rng = np.random.default_rng(1)
    A = rng.random((7, 3))
    B = rng.standard_normal((7, 300))
    X, r = nnls_batched(A, B)
    for j in range(0, 300, 7):
        x, rr = nnls(A, B[:, j])
        np.testing.assert_allclose(X[:, j], x, atol=1e-10)
        assert r[j] == pytest.approx(rr, abs=1e-10)


def test_thickness_fit_recovers_truth_and_joint_fit_needs_delta(tmp_path):
    """Noise-free OD of known thicknesses → the thickness maps in m; noisy: the joint fit lowers the error."""
    energies = np.array([700.0, 705.0, 707.0, 712.0])
    refs = [xraydb_reference("Fe", "Fe", 7.87, energies), xraydb_reference("PS", "C8H8", 1.05, energies)]
    rng = np.random.default_rng(2)
    t = np.stack([rng.uniform(0, 30e-9, (16, 16)), rng.uniform(0, 300e-9, (16, 16))])
    mu = np.stack([r.mu_per_m for r in refs], 1)
    od = np.einsum("ek,khw->ehw", mu, t)
    got, res = fit_thickness(od, refs, energies)
    np.testing.assert_allclose(got, t, atol=1e-12 + 1e-6 * t.max())
    assert np.nanmax(res) < 1e-6
    from ptyhpc.io.energy import photon_wavelength
    k = np.array([2 * np.pi / photon_wavelength(e) for e in energies])
    phase = -np.einsum("ek,khw->ehw", k[:, None] * np.stack([r.delta for r in refs], 1), t)
    noisy_od = od + 0.01 * rng.standard_normal(od.shape)
    noisy_ph = phase + 0.005 * rng.standard_normal(od.shape)
    err_od = np.sqrt(np.mean((fit_thickness(noisy_od, refs, energies)[0] - t) ** 2))
    err_joint = np.sqrt(np.mean((fit_thickness(noisy_od, refs, energies, phase=noisy_ph)[0] - t) ** 2))
    assert err_joint < 0.5 * err_od
    with pytest.raises(ValueError, match="delta"):
        fit_thickness(od, [Reference("x", refs[0].mu_per_m, None, "f")], energies, phase=phase)


def test_reference_file_must_cover_the_stack(tmp_path):
    p = tmp_path / "fe.csv"
    p.write_text("energy_eV,mu_per_m\n700,1e6\n710,5e6\n")
    assert read_reference(p, "Fe", [700, 705]).mu_per_m == pytest.approx([1e6, 3e6])
    with pytest.raises(ValueError, match=r"fe.csv: covers 700-710 eV, but the stack has 712 eV"):
        read_reference(p, "Fe", [700, 712])
    bad = tmp_path / "bad.csv"
    bad.write_text("E,mu\n700,1\n710,2\n")
    with pytest.raises(ValueError, match="header"):
        read_reference(bad, "x", [705])


def test_dichroism_pairs_and_mismatch():
    assert dichroism_pairs([707, 707, 710], ["CR", "CL", "CR"], "circular") == [(707.0, 0, 1)]
    assert dichroism_pairs([707, 707], ["LH", "LV"], "linear") == [(707.0, 1, 0)]
    with pytest.raises(ValueError, match=r"XMCD needs CR and CL at the same energy; the store has CR at \[700.0\]"):
        dichroism_pairs([700, 707], ["C+", "C-"], "circular")


def test_registration_of_imposed_subpixel_drift():
    """Drifts imposed on the true object at energies across the edge are found to < 0.5 px (XMCD pair included)."""
    mats = default_materials()
    from ptyhpc.sim.spectro import _transmission

    px = 20e-9
    y = (np.arange(48) - 24)[:, None] * px
    x = (np.arange(48) - 24)[None, :] * px
    valid = np.broadcast_to(np.hypot(y, x) < 0.45e-6, (48, 48))
    rng = np.random.default_rng(3)
    objs = [_transmission(mats, y - d[0], x - d[1], e, p) * np.exp(0.03 * rng.standard_normal((48, 48)))
            for (e, p), d in zip(ITEMS, DRIFT)]
    for i in range(len(ITEMS)):
        shift = register(objs[1], objs[i], valid, valid)
        np.testing.assert_allclose(shift, -(DRIFT[i] - DRIFT[1]) / px, atol=0.5)


# --- the whole CLI path: CXI files -> ingest -> reconstruct -> spectro ----------------------------------

@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spectro_cli")
    sim = simulate_energy_stack(folder / "raw", items=ITEMS, drift_m=DRIFT)
    store = folder / "stack.zarr"
    r = runner.invoke(app, ["ingest", *map(str, sim.files), "-o", str(store), "--dark", f"{sim.dark_file}:/dark",
                            *ZP_ARGS, "--defocus", str(sim.defocus_m)])
    assert r.exit_code == 0, r.output
    return sim, store, folder


@pytest.mark.slow
def test_cli_path_thickness_od_alignment_xmcd(cli_stack):
    sim, store, folder = cli_stack
    refs = [f"--reference={name}={path}" for name, path in sim.references.items()]
    # Before ptychography: a clear error.
    r = runner.invoke(app, ["spectro", str(store), *refs])
    assert r.exit_code == EXIT_USER and "ptychography not finished for items [0, 1, 2, 3]" in _out(r)
    r = runner.invoke(app, ["reconstruct", str(store), "--engine", "lsqml", "--n-iter", "40", "--workers", "1",
                            "--figures", str(folder / "fig")])
    assert r.exit_code == 0, r.output
    # A reference that does not cover the stack's energies: refused before any work.
    short = folder / "short.csv"
    short.write_text("energy_eV,mu_per_m\n695,1e6\n708,2e6\n")
    r = runner.invoke(app, ["spectro", str(store), f"--reference=Fe={short}"])
    assert r.exit_code == EXIT_USER and "covers 695-708 eV, but the stack has 712 eV" in _out(r)
    r = runner.invoke(app, ["spectro", str(store), *refs, "--clusters", "3", "--density", "3000", "--frc",
                            "--figures", str(folder / "fig")])
    assert r.exit_code == 0, r.output
    assert "FRC resolution" in _out(r) and "halves: computed" in _out(r)

    g = open_store(store)
    res = g["results/spectro"]
    assert res.attrs["complete"]
    energies = np.asarray(g["photon_energy_eV"])
    labels = list(g.attrs["polarisation"])
    drift = np.array([DRIFT[ITEMS.index((float(e), lab))] for e, lab in zip(energies, labels)])  # store order
    t = res["thickness"]
    assert t.dtype == np.float32 and list(t.attrs["components"]) == ["Fe", "PS"] and t.attrs["fit"] == "od+phase"
    for name in ("aligned", "shifts", "optical_density", "thickness", "residual", "xmcd", "exposures"):
        assert "pixel_size_m" in res[name].attrs and "origin_m" in res[name].attrs, name
    assert res["aligned"].dtype == np.complex64 and res["aligned"].shape[0] == len(ITEMS)
    assert list(res["optical_density"].attrs["energy_eV"]) == energies.tolist()
    px, org = res["thickness"].attrs["pixel_size_m"], res["thickness"].attrs["origin_m"]
    ref = int(res["shifts"].attrs["reference_item"])
    H, W = t.shape[1:]
    # Aligned frame = the reference item's frame, whose specimen sits displaced by its drift.
    yy = org[0] + np.arange(H)[:, None] * px[0] - drift[ref, 0]
    xx = org[1] + np.arange(W)[None, :] * px[1] - drift[ref, 1]
    truth = sim.thickness(yy, xx)
    valid = res["valid"][...]
    # Alignment: the measured shifts against the imposed drifts.
    shift_err = np.abs(res["shifts"][...] - (-(drift - drift[ref]) / px[0])).max()
    assert shift_err < 0.6
    # Thickness maps (m) against the truth, RMSE inside the analysed area / largest thickness.
    rmse = [float(np.sqrt(np.mean((t[c][valid] - truth[c][valid]) ** 2)) / truth.max()) for c in range(2)]
    assert max(rmse) < 0.06, rmse
    od_only = res["thickness_od_only"][...]
    rmse_od = max(float(np.sqrt(np.mean((od_only[c][valid] - truth[c][valid]) ** 2)) / truth.max()) for c in range(2))
    assert max(rmse) < rmse_od          # the phase channel helps (docs/spectro.md gives the numbers)
    # OD spectra of single-material regions against the references times the true thickness.
    od = res["optical_density"][...]
    for c, name in enumerate(("Fe", "PS")):
        region = valid & (truth[c] > 0.97 * truth[c].max()) & (truth[1 - c] < 1e-12)
        ref_mu = np.interp(energies, *np.loadtxt(sim.references[name], delimiter=",", skiprows=1)[:, :2].T)
        expected = ref_mu * truth[c].max()
        measured = np.array([od[i][region].mean() for i in range(len(energies))])
        # CR/CL differ by the XMCD on Fe: compare their mean at 707 eV.
        for e in np.unique(energies):
            measured[energies == e] = measured[energies == e].mean()
        np.testing.assert_allclose(measured, expected, rtol=0.15, atol=0.02)
    # Dose map: the formula by hand at the most exposed valid pixel.
    dose_map = res["dose_Gy"][...]
    ex = res["exposures"][...]
    iy, ix = np.unravel_index(np.argmax(np.where(valid & (truth[0] > 0), ex, 0)), ex.shape)
    tt = np.nansum(t[:, iy, ix])
    area = np.pi * (res["exposures"].attrs["beam_diameter_m"] / 2) ** 2
    probe = g["results/ptycho/probe"]
    expected = sum(ex[iy, ix] * float(np.sum(np.abs(probe[i]) ** 2)) * e * 1.602176634e-19
                   * (1 - np.exp(-od[i][iy, ix])) / (3000 * tt * area) for i, e in enumerate(energies))
    assert dose_map[iy, ix] == pytest.approx(expected, rel=1e-4) and "Howells" in res["dose_Gy"].attrs["source"]
    # XMCD: +a·L(E0) where the rod is magnetised +1 (x < 0), −a·L where −1; a = 0.25, L(707) = 1.
    x = res["xmcd"][0]
    rod = valid & (truth[0] > 0.9 * truth[0].max()) & (truth[1] < 1e-12)
    left, right = np.median(x[rod & (xx < -0.05e-6)]), np.median(x[rod & (xx > 0.05e-6)])
    assert 0.18 < left < 0.32 and -0.32 < right < -0.18, (left, right)
    assert list(res["xmcd"].attrs["energy_eV"]) == [707.0]
    # Resolution: FRC of two half-data reconstructions of the reference item (reconstructed now and kept),
    # between 1 px (the half period at Nyquist) and half the 0.58 µm beam; knife edge, sharpness and SNR per item.
    frc = res["frc"]
    assert frc.shape[0] == 3 and frc.attrs["item"] == ref and frc.attrs["halves"] == "computed"
    assert 0.99 * frc.attrs["pixel_size_m"][0] <= frc.attrs["resolution_m"] < 0.3e-6, frc.attrs["resolution_m"]
    assert g["results/ptycho_halves"][f"item_{ref}"].attrs["complete"]
    edge = res["knife_edge_m"][...]
    # The rod's edge is a 15 nm linear ramp (20-80 %: 9 nm); the 20 nm pixels blur it to at most 3 px.
    assert edge.shape == (len(ITEMS),) and np.all(edge < 0.3e-6) and 0.6 * 15e-9 <= edge[ref] < 3 * px[0], edge
    assert np.all(res["snr"][...] > 1) and np.all(res["laplacian_variance"][...] > 0)
    # The recipe's spectro: stage, with paths relative to the recipe: a given I0 mask (the truth's vacuum
    # on item 0's grid) and a label image for the region spectra; the rerun replaces results/spectro.
    obj = g["results/ptycho/object"]
    p0, o0 = obj.attrs["pixel_size_m"][0], obj.attrs["origin_m"][0]
    y0 = o0[0] + np.arange(obj.shape[1])[:, None] * p0[0] - drift[0, 0]
    x0 = o0[1] + np.arange(obj.shape[2])[None, :] * p0[1] - drift[0, 1]
    th0 = sim.thickness(y0, x0)
    (folder / "masks").mkdir()
    np.save(folder / "masks" / "i0.npy", (th0.sum(0) < 1e-12) & (np.hypot(y0, x0) < 0.35e-6))
    np.save(folder / "masks" / "regions.npy", (th0[0] > 25e-9).astype(np.int16) + 2 * (th0[1] > 250e-9))
    ref_csv = {name: path.name for name, path in sim.references.items()}
    recipe = sim.files[0].parent / "recipe.yaml"
    recipe.write_text(f"input: {{files: ['item_*.cxi'], format: cxi}}\nstore: {store}\nfigures: ../fig2\n"
                      f"spectro: {{references: {ref_csv}, i0_mask: ../masks/i0.npy, regions: ../masks/regions.npy, "
                      f"clusters: 0, frc: true, fit_rows: 8}}\n")
    r = runner.invoke(app, ["run", str(recipe), "--stages", "spectro", "--workers", "1"])
    assert r.exit_code == 0, r.output
    res = open_store(store)["results/spectro"]
    assert res["i0_mask"].attrs["source"] == "given" and "clusters" not in res
    assert res["frc"].attrs["halves"] == "store"                     # the rerun reuses the stored halves
    assert res["thickness"].chunks[1] == 8 and res["aligned"].chunks[1] == 8   # fitted in row blocks
    t2 = res["thickness"][...]
    valid2 = res["valid"][...]
    assert max(float(np.sqrt(np.mean((t2[c][valid2] - truth[c][valid2]) ** 2)) / truth.max()) for c in range(2)) < 0.08
    spectra = np.loadtxt(folder / "fig2" / "region_spectra.csv", delimiter=",", skiprows=1)
    assert spectra.shape == (3, 1 + 2 * 3)          # 3 energies; Fe, PS and their overlap
    figs = folder / "fig"
    for png in ("spectro_od_montage.png", "spectro_thickness_rgb.png", "spectro_xmcd.png", "spectro_exposures.png",
                "spectro_region_spectra.png", "dose_weight_factor.png", "region_spectra.csv", "spectro_dose.png",
                "spectro_quality.png"):
        assert (figs / png).stat().st_size > 100, png


def test_one_energy_and_mismatched_polarisations(tmp_path, cli_stack):
    sim, _, _ = cli_stack
    from ptyhpc.io.readers import ingest_files
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho
    from ptyhpc.spectro import run_spectro

    one = ingest_files(sim.files[:1], tmp_path / "one.zarr", progress=False)
    r = runner.invoke(app, ["spectro", str(one)])
    assert r.exit_code == EXIT_USER and "one photon energy only (700 eV)" in _out(r)
    # CR at 700 eV and CL at 707 eV only: no energy has both.
    pair = ingest_files([sim.files[0], sim.files[2]], tmp_path / "pair.zarr", progress=False, defocus_m=sim.defocus_m,
                        zone_plate={"outer_diameter_m": 160e-6, "outer_zone_width_m": 35e-9})
    run_ptycho(pair, PtychoParams(n_iter=2), progress=False)
    with pytest.raises(ValueError, match="XMCD needs CR and CL at the same energy"):
        run_spectro(pair)
    assert "results/spectro" not in open_store(pair)   # nothing half-written
