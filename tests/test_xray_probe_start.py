"""Issue 16, "First": energy-only CXI 1.6, the X-ray defocus sign, zone-plate optics in the store, and a
default start that converges for a defocused probe with unknown optics."""

import h5py
import numpy as np
import pytest

from ptyhpc.io import IngestError, open_store
from ptyhpc.io.cxi import read_cxi, read_cxi_scan
from ptyhpc.io.energy import photon_wavelength
from ptyhpc.io.readers import ingest_files
from ptyhpc.physics import angular_spectrum_propagator, electron_probe
from ptyhpc.physics.xray_optics import ZonePlate, defocus_convention, xray_probe
from ptyhpc.sim.spectro import simulate_energy_stack

ZP = {"outer_diameter_m": 160e-6, "outer_zone_width_m": 35e-9, "central_stop_diameter_m": 60e-6}


def _overlap(a, b):
    return abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return simulate_energy_stack(tmp_path_factory.mktemp("cxi"), items=((700.0, "CR"), (707.0, "CR")))


def test_energy_only_cxi_with_default_basis(stack):
    """source_1/energy (J) gives λ; no basis_vectors: CXI's default from x/y_pixel_size; positions as simulated."""
    with h5py.File(stack.files[1], "r") as f:
        assert "wavelength" not in f["entry_1/instrument_1/source_1"]
        assert "basis_vectors" not in f["entry_1/instrument_1/detector_1"]
    cxi = read_cxi(stack.files[1])
    assert cxi.wavelength_m == pytest.approx(photon_wavelength(707.0), rel=1e-12)
    assert cxi.pixel_size_m == pytest.approx((stack.detector_pixel_m,) * 2)
    np.testing.assert_allclose(cxi.positions_m, stack.positions_m, atol=1e-15)
    scan = read_cxi_scan(stack.files[1])
    assert scan.energy_eV == pytest.approx(707.0) and scan.polarisation == "CR"
    assert scan.fields["energy"] == "entry_1/instrument_1/source_1/energy"


def test_cxi_without_wavelength_or_energy_names_the_field(tmp_path, stack):
    bad = tmp_path / "bad.cxi"
    with h5py.File(stack.files[0], "r") as src, h5py.File(bad, "w") as f:
        for k in src:
            src.copy(k, f)
        del f["entry_1/instrument_1/source_1/energy"]
    with pytest.raises(IngestError, match="source_1/wavelength: missing .*source_1/energy"):
        read_cxi(bad)


def test_defocus_signs_against_propagated_focus():
    """X-ray Δz > 0 is the focal field propagated downstream by Δz (exact angular spectrum, independent of
    the Fresnel code); the electron sign is the opposite (C10 = −defocus: focus Δf downstream)."""
    lam, n, px, dz = photon_wavelength(700.0), 256, 10e-9, 6e-6
    zp = ZonePlate(**ZP)
    focus = xray_probe((n, n), (px, px), lam, optics=zp)
    prop = np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(focus)) * angular_spectrum_propagator((n, n), (px, px), lam, dz))
    prop = np.fft.fftshift(prop)
    assert _overlap(xray_probe((n, n), (px, px), lam, optics=zp, defocus_m=dz), prop) > 0.99
    assert _overlap(xray_probe((n, n), (px, px), lam, optics=zp, defocus_m=-dz), prop) < 0.3
    na = zp.numerical_aperture(lam)
    circ = xray_probe((n, n), (px, px), lam, semiangle_rad=na, defocus_m=dz)
    assert _overlap(circ, electron_probe((n, n), (px, px), lam, na, defocus=-dz)) > 0.999


def test_ingest_records_optics_and_convention(tmp_path, stack):
    store = ingest_files(stack.files, tmp_path / "s.zarr", zone_plate=ZP, defocus_m=stack.defocus_m, progress=False,
                         dark=f"{stack.dark_file}:/dark")
    g = open_store(store)
    assert g.attrs["defocus_convention"] == "xray" and defocus_convention(g.attrs) == "xray"
    assert ZonePlate.from_dict(g.attrs["probe_optics"]) == ZonePlate(**ZP)
    assert list(g.attrs["polarisation"]) == ["CR", "CR"]
    assert defocus_convention({}) == "electron"   # stores written before the attribute: electron sign
    # The stage's model probe from these metadata is the simulated one.
    from ptyhpc.io.energy import item_geometry
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, item_grids
    from ptyhpc.ptycho.probe_start import xray_start_probe

    grid = item_grids(g, PtychoParams())[1]
    geom = item_geometry(g, 1)
    assert geom["convergence_semiangle_rad"] == pytest.approx(ZonePlate(**ZP).numerical_aperture(geom["wavelength_m"]))
    model = xray_start_probe(g.attrs, geom, grid, 1.0, None, None)
    true = xray_probe(grid.fft_shape, grid.pixel_size_m, geom["wavelength_m"], optics=stack.optics,
                      defocus_m=stack.defocus_m)
    assert _overlap(model, true) > 0.99
    with pytest.raises(IngestError, match="zone-plate"):
        ingest_files(stack.files, tmp_path / "t.zarr", zone_plate={**ZP, "central_stop_diameter_m": 1.0},
                     progress=False)


def test_default_start_converges_without_optics(tmp_path, stack):
    """No optics, no defocus in the store: the pupil from the mean pattern and a defocus chosen by trial
    reconstructions give an optical-density map that follows the truth (a flat-phase start gave ≈ 0.06)."""
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho

    store = ingest_files(stack.files[1:], tmp_path / "u.zarr", progress=False, dark=f"{stack.dark_file}:/dark")
    run_ptycho(store, PtychoParams(n_iter=40), progress=False)
    g = open_store(store)
    obj = g["results/ptycho/object"]
    px, org = obj.attrs["pixel_size_m"][0], obj.attrs["origin_m"][0]
    H, W = obj.shape[1:]
    yy = org[0] + np.arange(H)[:, None] * px[0]
    xx = org[1] + np.arange(W)[None, :] * px[1]
    od_true = -np.log(np.abs(stack.transmission(yy, xx, 707.0, "CR")) ** 2)
    ill = g["results/ptycho/illumination"][0]
    m = ill > 0.3 * ill.max()
    od = -np.log(np.abs(obj[0]) ** 2)
    assert np.corrcoef(od[m], od_true[m])[0, 1] > 0.9
