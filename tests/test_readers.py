"""Readers into the store: CXI (the real PETRA III scan), NeXus NXptycho, generic HDF5; dark/flat/mask; CLI."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ptyhpc.cli import app
from ptyhpc.io import IngestError, open_store, read_item
from ptyhpc.io.cxi import read_cxi
from ptyhpc.io.energy import photon_wavelength
from ptyhpc.io.readers import detect_format, ingest_files
from ptyhpc.io.store import read_mask
from ptyhpc.physics import electron_wavelength

ROOT = Path(__file__).resolve().parents[1]
PETRA = ROOT / "data" / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
E_CHARGE = 1.602176634e-19


def _leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name))


def _ds(group, name, data, units=None, **attrs):
    ds = group.create_dataset(name, data=data)
    if units is not None:
        ds.attrs["units"] = units
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


def _nx(parent, name, nx_class):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def write_nxptycho(path, frames, translation_xy, *, energy=(12.4, "keV"), probe="x-ray",
                   pixel=((75.0, "um"), (55.0, "um")), distance=(5200.0, "mm"), pixel_mask=None,
                   translation_units="m", positioners=False, drop=(), entry="entry"):
    """An NXptycho file written with h5py following the application definition.

    ``translation_xy`` (n, 2) or raster (scan_y, scan_x, 2): the sample translation (x, y) in
    ``translation_units``; ``pixel`` ((y value, units), (x value, units)); ``drop``: fields to leave out.
    """
    mode = "a" if Path(path).exists() else "w"
    with h5py.File(path, mode) as f:
        e = _nx(f, entry, "NXentry")
        e["definition"] = "NXptycho"
        inst = _nx(e, "instrument", "NXinstrument")
        if "probe" not in drop:
            _nx(inst, "source", "NXsource")["probe"] = probe
        beam = _nx(inst, "beam", "NXbeam")
        if "incident_energy" not in drop:
            _ds(beam, "incident_energy", energy[0], None if "energy_units" in drop else energy[1])
        det = _nx(inst, "detector", "NXdetector")
        _ds(det, "data", frames)
        _ds(det, "y_pixel_size", pixel[0][0], pixel[0][1])
        _ds(det, "x_pixel_size", pixel[1][0], pixel[1][1])
        if "distance" not in drop:
            _ds(det, "distance", distance[0], distance[1])
        if pixel_mask is not None:
            _ds(det, "pixel_mask", pixel_mask)
        sample = _nx(e, "sample", "NXsample")
        t = np.asarray(translation_xy)
        if positioners:
            for axis, col in (("x", 0), ("y", 1)):
                pos = _nx(sample, f"sample_{axis}", "NXpositioner")
                pos["name"] = f"sample_{axis}"
                _ds(pos, "value", t[..., col], translation_units)
        else:
            tr = _nx(sample, "transformations", "NXtransformations")
            for axis, col, vec in (("x", 0, (1.0, 0.0, 0.0)), ("y", 1, (0.0, 1.0, 0.0))):
                _ds(tr, f"sample_{axis}", t[..., col], translation_units, vector=np.array(vec),
                    transformation_type="translation", depends_on=".")
        data = _nx(e, "data", "NXdata")
        data.attrs["signal"] = "data"
        data["data"] = h5py.SoftLink(det["data"].name)
    return Path(path)


# --- CXI: the real PETRA III P25 scan ------------------------------------------------------------


def test_cxi_petra_into_store_matches_read_cxi(tmp_path):
    assert detect_format(PETRA) == "cxi"
    store = ingest_files([PETRA], tmp_path / "petra.zarr", progress=False)
    g = open_store(store)
    ref = read_cxi(PETRA)
    assert g.attrs["kind"] == "energy_stack" and g.attrs["radiation"] == "xray" and g.attrs["source_format"] == "cxi"
    assert g["frames"].shape == (1, 200, 100, 100) and g["frames"].dtype == ref.frames.dtype
    # Positions, wavelength, distance, pixel: exactly read_cxi's (SI), nothing rescaled on the way.
    np.testing.assert_array_equal(g["positions"][0], ref.positions_m)
    assert g["wavelength_m"][0] == ref.wavelength_m == g.attrs["geometry"]["wavelength_m"]
    assert g.attrs["detector_distance_m"] == ref.distance_m
    assert tuple(g.attrs["detector_pixel_size_m"]) == ref.pixel_size_m
    assert ref.pixel_size_m == pytest.approx((55e-6, 55e-6), rel=1e-6)
    assert ref.distance_m == pytest.approx(1.12, rel=1e-6) and ref.wavelength_m == pytest.approx(9.7949e-11, rel=1e-4)
    # Photon energy hc/λ, and the file's own energy (J) agrees: 12.66 keV (README).
    with h5py.File(PETRA) as f:
        energy_file_eV = float(f["entry_1/instrument_1/source_1/energy"][()]) / E_CHARGE
    assert g["photon_energy_eV"][0] == pytest.approx(energy_file_eV, rel=1e-6)
    assert photon_wavelength(g["photon_energy_eV"][0]) == pytest.approx(ref.wavelength_m, rel=1e-12)
    dk = g["reciprocal_sampling_inv_m"][0]
    np.testing.assert_allclose(dk, np.array(ref.pixel_size_m) / (ref.wavelength_m * ref.distance_m), rtol=1e-12)
    # The CXI mask is the store's detector mask; measured counts are exactly the file's, bad pixels 0.
    np.testing.assert_array_equal(g["detector_mask"][...], ref.measured)
    assert (~ref.measured).sum() > 0
    np.testing.assert_array_equal(read_mask(g), ref.measured)
    frames = g["frames"][0]
    np.testing.assert_array_equal(frames[:, ref.measured], ref.frames[:, ref.measured])
    assert not frames[:, ~ref.measured].any()
    assert g.attrs["preprocessing"] == {"mask_from_file": "entry_1/instrument_1/detector_1/mask"}


# --- NeXus NXptycho -------------------------------------------------------------------------------


def test_nxptycho_round_trip_exact(tmp_path):
    rng = np.random.default_rng(1)
    sy, sx, dy, dx = 3, 4, 12, 10  # non-square detector and raster: a transpose cannot pass
    frames = rng.poisson(7.0, (sy, sx, dy, dx)).astype(np.uint16)
    t = rng.uniform(-2e-6, 2e-6, (sy, sx, 2))  # sample translation (x, y), m
    bad = np.zeros((dy, dx), np.uint32)
    bad[2, 7] = 1   # hot pixel
    bad[:, 5] = 4   # a gap column
    path = write_nxptycho(tmp_path / "scan.nxs", frames, t, pixel_mask=bad)
    assert detect_format(path) == "nexus"
    g = open_store(ingest_files([path], tmp_path / "s.zarr", progress=False))
    assert g.attrs["kind"] == "energy_stack" and g.attrs["source_format"] == "nexus"
    assert g["frames"].dtype == np.uint16
    measured = bad == 0
    got = g["frames"][0]
    np.testing.assert_array_equal(got[:, measured], frames.reshape(-1, dy, dx)[:, measured])  # row-major raster
    assert not got[:, ~measured].any()
    np.testing.assert_array_equal(g["detector_mask"][...], measured)
    # Probe position (y, x) = −(sample translation), exactly.
    np.testing.assert_array_equal(g["positions"][0], -t.reshape(-1, 2)[:, ::-1])
    # Units converted to SI: 12.4 keV, 75 µm (y) × 55 µm (x), 5200 mm.
    assert g["photon_energy_eV"][0] == pytest.approx(12400.0, rel=1e-15)
    assert g["wavelength_m"][0] == pytest.approx(photon_wavelength(12400.0), rel=1e-15)
    np.testing.assert_allclose(g.attrs["detector_pixel_size_m"], [75e-6, 55e-6], rtol=1e-15)
    assert g.attrs["detector_distance_m"] == pytest.approx(5.2, rel=1e-15)
    assert g.attrs["source_fields"][0]["energy"] == "/entry/instrument/beam/incident_energy"


def test_nxptycho_positioners_nm_and_several_entries(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "stack.nxs"
    t = rng.uniform(-500, 500, (6, 2))  # nm
    for k, e_keV in enumerate((0.71, 0.70)):  # two energies, two entries, written out of order
        write_nxptycho(path, rng.poisson(3.0, (6, 8, 8)).astype(np.uint32), t, energy=(e_keV * 1e3, "eV"),
                       translation_units="nm", positioners=True, entry=f"entry{k}")
    g = open_store(ingest_files([path], tmp_path / "s.zarr", progress=False))
    assert g["photon_energy_eV"][...].tolist() == pytest.approx([700.0, 710.0])
    assert [s.endswith(e) for s, e in zip(g.attrs["source_files"], ("entry1", "entry0"))] == [True, True]
    np.testing.assert_allclose(g["positions"][0], -t[:, ::-1] * 1e-9, rtol=1e-14)


@pytest.mark.parametrize("case, match", [
    ("no units", "incident_energy: no 'units' attribute"),
    ("energy as length", "incident_energy: units 'mm' are a length, expected an energy"),
    ("unknown units", "distance: unknown units 'furlong'"),
    ("count mismatch", "sample_x: 5 positions for 6 frames"),
    ("nan position", "sample_y: 1 non-finite value"),
    ("no probe", "NXsource/probe: missing"),
    ("no distance", "detector/distance: missing"),
    ("not nxptycho", "format not recognised"),
    ("bad frames", "data: expected (n, det_y, det_x)"),
    ("zero energy", "incident_energy: must be > 0"),
])
def test_nxptycho_errors_name_file_and_field(tmp_path, case, match):
    frames = np.ones((6, 8, 8), np.uint16)
    t = np.zeros((6, 2))
    kw = {}
    if case == "no units":
        kw["drop"] = ("energy_units",)
    elif case == "energy as length":
        kw["energy"] = (12.0, "mm")
    elif case == "unknown units":
        kw["distance"] = (1.0, "furlong")
    elif case == "count mismatch":
        t = np.zeros((5, 2))
    elif case == "nan position":
        t[3, 1] = np.nan
    elif case == "no probe":
        kw["drop"] = ("probe",)
    elif case == "no distance":
        kw["drop"] = ("distance",)
    elif case == "bad frames":
        frames = np.ones((6, 8), np.uint16)
    elif case == "zero energy":
        kw["energy"] = (0.0, "eV")
    path = write_nxptycho(tmp_path / "bad.nxs", frames, t, **kw)
    if case == "not nxptycho":
        with h5py.File(path, "r+") as f:
            del f["entry/definition"]
            f["entry/definition"] = "NXtomo"
    store = tmp_path / "s.zarr"
    with pytest.raises(IngestError, match=re.escape(match)) as err:
        ingest_files([path], store, progress=False)
    assert "bad.nxs" in str(err.value)
    assert _leftovers(store) == []  # nothing half-written


# --- generic HDF5 ---------------------------------------------------------------------------------


def _generic_file(path, frames, pos_y, pos_x, *, pos_units="m"):
    with h5py.File(path, "w") as f:
        _ds(f, "scan_0042/raw/pilatus300k/images_ptycho", frames)
        m = f.create_group("scan_0042/motors/piezo")
        _ds(m, "fine_vertical", pos_y, pos_units)
        _ds(m, "fine_horizontal", pos_x, pos_units)
        _ds(f, "scan_0042/mono/E", 8.1, "keV")
        f["scan_0042/calib/det_dist"] = 7.12                         # no units attribute: spec gives them
        f["scan_0042/calib/dark_stack"] = np.zeros((2, *frames.shape[-2:]), np.uint16)
    return path


def _spec(tmp_path, **changes):
    spec = {
        "frames": "/scan_0042/raw/pilatus300k/images_ptycho",
        "positions_y": "/scan_0042/motors/piezo/fine_vertical",
        "positions_x": "/scan_0042/motors/piezo/fine_horizontal",
        "energy": "/scan_0042/mono/E",
        "distance": {"path": "/scan_0042/calib/det_dist", "units": "m"},
        "pixel_size": {"value": [172, 172], "units": "um"},
    }
    spec.update(changes)
    spec = {k: v for k, v in spec.items() if v is not None}
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(spec))
    return out


def test_generic_unusual_paths_round_trip_exact(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.poisson(20.0, (15, 9, 11)).astype(np.uint16)
    y, x = rng.uniform(-1e-5, 1e-5, (2, 15))
    path = _generic_file(tmp_path / "beamline.h5", frames, y, x)
    g = open_store(ingest_files([path], tmp_path / "s.zarr", spec=_spec(tmp_path), progress=False))
    assert g.attrs["source_format"] == "generic" and g.attrs["kind"] == "energy_stack"
    np.testing.assert_array_equal(g["frames"][0], frames)
    np.testing.assert_array_equal(g["positions"][0], np.stack([y, x], 1))
    assert g["photon_energy_eV"][0] == pytest.approx(8100.0, rel=1e-15)
    assert g.attrs["detector_distance_m"] == 7.12
    np.testing.assert_allclose(g.attrs["detector_pixel_size_m"], [172e-6, 172e-6], rtol=1e-15)
    assert g.attrs["preprocessing"] == {}
    # Motor positions of the sample (positions_are: sample) in µm from the spec: probe = −value.
    path2 = _generic_file(tmp_path / "b2.h5", frames, y * 1e6, x * 1e6, pos_units="um")
    g2 = open_store(ingest_files([path2], tmp_path / "s2.zarr", spec=_spec(tmp_path, positions_are="sample"),
                                 progress=False))
    np.testing.assert_allclose(g2["positions"][0], -np.stack([y, x], 1), rtol=1e-14)


@pytest.mark.parametrize("change, match", [
    ({"frames": "/scan_0042/raw/nope"}, r"/scan_0042/raw/nope: missing dataset \(spec key 'frames'\)"),
    ({"distance": "/scan_0042/calib/det_dist"}, "det_dist: no 'units' attribute; give the units in the spec"),
    ({"energy": {"path": "/scan_0042/mono/E", "units": "eV"}}, "'units' attribute 'keV' contradicts the spec's 'eV'"),
    ({"pixel_size": {"value": 1, "units": "keV"}}, "spec 'pixel_size': units 'keV' are an energy"),
    ({"positions_x": "/scan_0042/calib/dark_stack"}, "dark_stack"),
    ({"wavelength": 1e-10}, "give exactly one of 'energy' and 'wavelength'"),
    ({"frame": "/x"}, "frame: Extra inputs are not permitted"),
])
def test_generic_spec_errors(tmp_path, change, match):
    frames = np.ones((4, 8, 8), np.uint16)
    path = _generic_file(tmp_path / "beamline.h5", frames, np.zeros(4), np.zeros(4))
    with pytest.raises(IngestError, match=match):
        ingest_files([path], tmp_path / "s.zarr", spec=_spec(tmp_path, **change), progress=False)
    assert _leftovers(tmp_path / "s.zarr") == []


def test_nan_in_counts_leaves_nothing_and_overwrite_keeps_old_store(tmp_path):
    frames = np.ones((4, 8, 8), np.float32)
    path = _generic_file(tmp_path / "ok.h5", frames, np.zeros(4), np.arange(4) * 1e-7)
    store = ingest_files([path], tmp_path / "s.zarr", spec=_spec(tmp_path), progress=False)
    frames[2, 3, 3] = np.nan
    bad = _generic_file(tmp_path / "nan.h5", frames, np.zeros(4), np.arange(4) * 1e-7)
    with pytest.raises(IngestError, match=r"nan.h5: /scan_0042/raw/pilatus300k/images_ptycho: 1 non-finite"):
        ingest_files([bad], store, spec=_spec(tmp_path), overwrite=True, progress=False)
    assert _leftovers(store) == ["s.zarr"]
    assert open_store(store).attrs["ingest_complete"] is True
    # A NaN on a masked (bad) pixel is not data: masked pixels are stored as 0.
    mask_file = tmp_path / "mask.h5"
    with h5py.File(mask_file, "w") as f:
        m = np.zeros((8, 8), np.uint8)
        m[3, 3] = 1
        f["pixel_mask"] = m
    g = open_store(ingest_files([bad], tmp_path / "m.zarr", spec=_spec(tmp_path), mask=f"{mask_file}:/pixel_mask",
                                progress=False))
    assert g["frames"][0, 2, 3, 3] == 0 and not g["detector_mask"][3, 3]
    assert g.attrs["preprocessing"]["mask"]["bad_values"] == "nonzero"


# --- dark / flat ----------------------------------------------------------------------------------


def test_dark_subtraction_exact(tmp_path):
    rng = np.random.default_rng(4)
    n, dy, dx = 10, 16, 12
    dark_mean = rng.integers(2, 40, (dy, dx)).astype(np.float64)
    # Five dark frames whose mean is exactly dark_mean (integers ±2 around it).
    darks = np.stack([dark_mean + d for d in (-2, -1, 0, 1, 2)]).astype(np.uint16)
    signal = rng.poisson(30.0, (n, dy, dx))
    frames = (signal + rng.integers(0, 40, (n, dy, dx))).astype(np.uint16)  # some below the dark: clipped
    path = _generic_file(tmp_path / "scan.h5", frames, np.zeros(n), np.arange(n) * 1e-7)
    with h5py.File(path, "r+") as f:
        del f["scan_0042/calib/dark_stack"]
        f["scan_0042/calib/dark_stack"] = darks
    expected = np.maximum(frames.astype(np.int64) - dark_mean.astype(np.int64), 0).astype(np.uint16)
    assert (frames.astype(np.int64) < dark_mean).any()  # the clip is exercised

    # Dark inside the scan file, named in the spec.
    g = open_store(ingest_files([path], tmp_path / "a.zarr", spec=_spec(tmp_path, dark="/scan_0042/calib/dark_stack"),
                                progress=False))
    assert g["frames"].dtype == np.uint16
    np.testing.assert_array_equal(g["frames"][0], expected)
    info = g.attrs["preprocessing"]["dark"]
    assert info["n_frames"] == 5 and info["source"].endswith("scan.h5:/scan_0042/calib/dark_stack")
    assert info["mean_counts"] == pytest.approx(dark_mean.mean())

    # Dark in a separate file (FILE with a single image dataset), float frames keep the fraction.
    dark_file = tmp_path / "dark.h5"
    with h5py.File(dark_file, "w") as f:
        f["entry/dark"] = np.stack([dark_mean + 0.25, dark_mean - 0.25])
    fpath = _generic_file(tmp_path / "f.h5", frames.astype(np.float32) + 0.5, np.zeros(n), np.arange(n) * 1e-7)
    g = open_store(ingest_files([fpath], tmp_path / "b.zarr", spec=_spec(tmp_path), dark=str(dark_file),
                                progress=False))
    assert g["frames"].dtype == np.float32
    np.testing.assert_array_equal(g["frames"][0], np.maximum(frames + 0.5 - dark_mean, 0).astype(np.float32))

    # Flat field: gain = mean(F − D)/(F − D); a dead pixel (flat ≤ dark) leaves the mask.
    flat = 100.0 + rng.uniform(-20, 20, (dy, dx))
    flat[0, 0] = 0.0
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["flat"] = (flat + dark_mean)[None]
    g = open_store(ingest_files([fpath], tmp_path / "c.zarr", spec=_spec(tmp_path), dark=f"{dark_file}:/entry/dark",
                                flat=f"{tmp_path / 'flat.h5'}:flat", progress=False))
    good = np.ones((dy, dx), bool)
    good[0, 0] = False
    np.testing.assert_array_equal(g["detector_mask"][...], good)
    gain = np.where(good, flat[good].mean() / np.where(good, flat, 1), 0)
    np.testing.assert_allclose(g["frames"][0], np.maximum(frames + 0.5 - dark_mean, 0) * gain, rtol=1e-6)
    assert g.attrs["preprocessing"]["flat"]["n_bad_pixels"] == 1


def test_dark_errors(tmp_path):
    frames = np.ones((4, 8, 8), np.uint16)
    path = _generic_file(tmp_path / "scan.h5", frames, np.zeros(4), np.arange(4) * 1e-7)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["small"] = np.zeros((3, 4, 4))
        f["other"] = np.zeros((8, 8))
    spec = _spec(tmp_path)
    with pytest.raises(IngestError, match=r"d.h5: small: dark: shape \(3, 4, 4\), expected"):
        ingest_files([path], tmp_path / "s.zarr", spec=spec, dark=f"{tmp_path / 'd.h5'}:small", progress=False)
    with pytest.raises(IngestError, match="2 2D/3D numeric datasets"):
        ingest_files([path], tmp_path / "s.zarr", spec=spec, dark=str(tmp_path / "d.h5"), progress=False)
    with pytest.raises(IngestError, match="file not found"):
        ingest_files([path], tmp_path / "s.zarr", spec=spec, dark=str(tmp_path / "none.h5"), progress=False)
    assert _leftovers(tmp_path / "s.zarr") == []


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_ingest_formats_and_errors(tmp_path, make_tilt_files):
    runner = CliRunner()
    rng = np.random.default_rng(5)
    nxs = write_nxptycho(tmp_path / "scan.nxs", rng.poisson(5.0, (6, 8, 8)).astype(np.uint16), np.arange(12.0).reshape(6, 2) * 1e-7)  # distinct positions (all equal are refused)
    with h5py.File(nxs, "r+") as f:
        f["entry/instrument/detector/dark"] = np.full((3, 8, 8), 1, np.uint16)
    r = runner.invoke(app, ["ingest", str(nxs), "-o", str(tmp_path / "a.zarr"), "--dark", f"{nxs}:/entry/instrument/detector/dark"])
    assert r.exit_code == 0, r.output
    g = open_store(tmp_path / "a.zarr")
    assert g.attrs["source_format"] == "nexus" and g.attrs["preprocessing"]["dark"]["n_frames"] == 3
    with h5py.File(nxs) as f:
        raw = f["entry/instrument/detector/data"][()]
    np.testing.assert_array_equal(g["frames"][0], np.maximum(raw.astype(int) - 1, 0))
    # ":path" names a dataset inside the (first) raw file itself.
    r = runner.invoke(app, ["ingest", str(nxs), "-o", str(tmp_path / "a2.zarr"), "--dark", ":/entry/instrument/detector/dark"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(open_store(tmp_path / "a2.zarr")["frames"][...], g["frames"][...])

    frames = np.ones((4, 8, 8), np.uint16)
    gen = _generic_file(tmp_path / "g.h5", frames, np.zeros(4), np.arange(4) * 1e-7)
    spec = _spec(tmp_path)
    r = runner.invoke(app, ["ingest", str(gen), "-o", str(tmp_path / "b.zarr"), "--spec", str(spec),
                            "--probe-semiangle", "0.002", "--defocus", "1e-4"])
    assert r.exit_code == 0, r.output
    geom = open_store(tmp_path / "b.zarr").attrs["geometry"]
    assert geom["convergence_semiangle_rad"] == 0.002 and geom["defocus_m"] == 1e-4

    r = runner.invoke(app, ["ingest", str(PETRA), "-o", str(tmp_path / "c.zarr"), "--format", "cxi"])
    assert r.exit_code == 0, r.output
    tilt = make_tilt_files(n_angles=2)
    r = runner.invoke(app, ["ingest", *map(str, tilt), "-o", str(tmp_path / "d.zarr"), "--format", "auto"])
    assert r.exit_code == 0, r.output
    assert open_store(tmp_path / "d.zarr").attrs["kind"] == "tilt_series"

    for args, msg in [
        ([str(gen)], "format not recognised"),
        ([str(gen), "--format", "generic"], "--format generic needs --spec"),
        ([str(nxs), "--format", "bogus"], "--format must be one of"),
        ([str(nxs), "--spec", str(spec)], "missing dataset"),  # a spec means generic; its paths are not in this file
        ([str(tilt[0]), "--dark", str(gen)], "--dark: not supported for hdf5-tilt"),
        ([str(nxs), "--format", "cxi"], "scan.nxs: entry_1/instrument_1/detector_1/data: missing"),
    ]:
        r = runner.invoke(app, ["ingest", *args, "-o", str(tmp_path / "e.zarr")])
        assert r.exit_code == 2, (args, r.output)
        assert "".join(msg.split()) in "".join(r.output.split()), (args, r.output)  # rich wraps long lines
        assert not (tmp_path / "e.zarr").exists()


# --- a reconstruction through the store -----------------------------------------------------------


@pytest.mark.parametrize("sign", [-1, +1], ids=["nexus-convention", "wrong-sign-control"])
def test_simulated_nxptycho_reconstructs_through_store(tmp_path, sign):
    """Simulated electron scan → NXptycho file → store → ptycho stage → phase error against the truth.

    The file holds sample translations t = −positions (NeXus: the transformation moves the
    sample). Read with the right convention the reconstruction reaches the bound; the control
    writes +positions and must not, so the bound proves the positions' sign and axes.
    """
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho
    from ptyhpc.ptycho.metrics import phase_rmse
    from ptyhpc.sim.ptycho import simulate_scan

    sim = simulate_scan(det=64, scan=(10, 10), step_px=4.0, dose_per_position=1e6, seed=0)
    lam = electron_wavelength(60e3)
    dk = 1.0 / (64 * sim.pixel_size_m[0])
    z = 0.1  # camera length, m; pixel p = Δk λ z
    p_um = dk * lam * z * 1e6
    path = write_nxptycho(tmp_path / "sim.nxs", sim.frames.astype(np.uint32), sign * sim.positions_m[:, ::-1],
                          energy=(60.0, "keV"), probe="electron", pixel=((p_um, "um"), (p_um, "um")),
                          distance=(z * 1e3, "mm"))
    store = ingest_files([path], tmp_path / "sim.zarr", probe_semiangle_rad=sim.convergence_semiangle_rad,
                         defocus_m=sim.defocus_m, progress=False)
    g = open_store(store)
    assert g.attrs["kind"] == "tilt_series" and g.attrs["radiation"] == "electron"
    frames, positions = read_item(g, 0)
    if sign == -1:
        np.testing.assert_array_equal(positions, sim.positions_m)
        np.testing.assert_array_equal(frames, sim.frames)  # counts are integers: exact through uint32
    run_ptycho(store, PtychoParams(n_iter=60, backend="numpy"), progress=False)
    g = open_store(store)
    obj = g["results/ptycho/object"]
    if sign == -1:  # the store's object grid is the simulation's
        assert obj.shape[1:] == sim.object.shape
        np.testing.assert_allclose(obj.attrs["origin_m"], sim.origin_m, rtol=1e-12)
    ill = g["results/ptycho/illumination"][0]
    region = ill > 0.3 * ill.max()
    rmse = phase_rmse(obj[0], sim.object, region)
    print(f"phase RMSE {rmse:.4f} rad (sign {sign:+d})")
    bound = 0.05  # rad; measured 0.031 (flat start 0.15, wrong sign 0.18+)
    if sign == -1:
        assert rmse < bound, rmse
    else:
        assert rmse > 2 * bound, rmse


def test_detector_mask_reaches_the_engine(tmp_path):
    """Hot pixels and a gap column flagged by NXdetector/pixel_mask: stored as 0 and flagged in the store.

    The ptycho stage passes the store's mask to ``reconstruct`` (``use_detector_mask``, default on):
    the masked scan reaches the bound of the clean one; with the mask switched off the zeroed pixels
    count as measured zeros and the error grows.
    """
    import ptyhpc.pipeline.ptycho_stage as stage
    from ptyhpc.ptycho.metrics import phase_rmse
    from ptyhpc.sim.ptycho import simulate_scan

    sim = simulate_scan(det=64, scan=(10, 10), step_px=4.0, dose_per_position=1e6, seed=0)
    frames = sim.frames.astype(np.uint32)
    bad = np.zeros((64, 64), np.uint8)
    idx = np.random.default_rng(0).integers(0, 64, (40, 2))
    bad[idx[:, 0], idx[:, 1]] = 1
    bad[:, 20] = 1
    frames[:, bad.astype(bool)] = 60000  # hot / garbage values
    p_um = 1.0 / (64 * sim.pixel_size_m[0]) * electron_wavelength(60e3) * 0.1 * 1e6
    path = write_nxptycho(tmp_path / "s.nxs", frames, -sim.positions_m[:, ::-1], energy=(60.0, "keV"), probe="electron",
                          pixel=((p_um, "um"), (p_um, "um")), distance=(100.0, "mm"), pixel_mask=bad)
    rmse = {}
    for use_mask in (True, False):
        store = ingest_files([path], tmp_path / f"{use_mask}.zarr", probe_semiangle_rad=sim.convergence_semiangle_rad,
                             defocus_m=sim.defocus_m, progress=False)
        g = open_store(store)
        assert not g["frames"][0][:, bad.astype(bool)].any()
        np.testing.assert_array_equal(read_mask(g), bad == 0)
        stage.run_ptycho(store, stage.PtychoParams(n_iter=60, backend="numpy", use_detector_mask=use_mask),
                         progress=False)
        g = open_store(store)
        ill = g["results/ptycho/illumination"][0]
        rmse[use_mask] = phase_rmse(g["results/ptycho/object"][0], sim.object, ill > 0.3 * ill.max())
    print(f"phase RMSE with mask {rmse[True]:.4f} rad, without {rmse[False]:.4f} rad")
    assert rmse[True] < 0.05  # measured 0.033 (clean scan 0.031)
    assert rmse[False] > rmse[True]  # measured 0.046
