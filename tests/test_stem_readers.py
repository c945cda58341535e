"""4D-STEM readers: tiny MIB (single, quad), EMPAD and ARINA files written in the vendors' layouts, read back
through rosettasciio and through ptyhpc's ingest; errors for truncated files, scan shapes, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from _stem_files import write_arina, write_empad, write_mib
from ptyhpc.cli import app
from ptyhpc.io import IngestError, open_store
from ptyhpc.io.readers import detect_format, ingest_files
from ptyhpc.stem.calibration import Calibration, load_calibration

CAL = dict(beam_energy_eV=200e3, convergence_semiangle_rad=0.02, scan_step_m=5e-11,
           reciprocal_sampling_inv_m=2e8)


def _frames(shape, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).poisson(5, shape).astype(dtype)


def _check_store(store, expect, scan_shape, fmt):
    g = open_store(store)
    assert g.attrs["scan_shape"] == list(scan_shape)
    assert g.attrs["source_format"] == fmt
    got = np.asarray(g["frames"][0])
    np.testing.assert_array_equal(got, expect.reshape(got.shape))
    geo = g.attrs["geometry"]
    assert geo["convergence_semiangle_rad"] == 0.02 and geo["reciprocal_sampling_inv_m"] == [2e8, 2e8]
    pos = np.asarray(g["positions"][0])
    np.testing.assert_allclose(pos[scan_shape[1] + 1], [5e-11, 5e-11])
    dose = g.attrs["stem"]["dose_e_per_m2"][0]
    np.testing.assert_allclose(dose, expect.sum(dtype=np.float64) / (np.prod(scan_shape) * 5e-11 ** 2))
    return g


@pytest.mark.parametrize("quad", [False, True])
def test_mib_through_rosettasciio_and_ingest(tmp_path, quad):
    from rsciio.quantumdetector import file_reader

    frames = _frames((12, 16, 20))
    mib = write_mib(tmp_path / "scan.mib", frames, quad=quad, scan_x=4)
    ref = file_reader(str(mib))[0]["data"]  # rosettasciio's own reading of the layout
    assert ref.shape == (3, 4, 16, 20)
    np.testing.assert_array_equal(ref.reshape(12, 16, 20), frames)
    assert detect_format(mib) == "mib"
    store = ingest_files([mib], tmp_path / "s.zarr", calibration=Calibration(**CAL), progress=False)
    _check_store(store, np.asarray(ref), (3, 4), "mib")


def test_empad_and_arina(tmp_path):
    from rsciio.arina import file_reader as arina_reader
    from rsciio.empad import file_reader as empad_reader

    fe = np.random.default_rng(1).random((3, 4, 128, 128)).astype(np.float32)
    xml = write_empad(tmp_path, fe, high_voltage_eV=200e3, fov_m=4 * 5e-11)
    np.testing.assert_array_equal(empad_reader(str(xml))[0]["data"], fe)
    cal = {k: v for k, v in CAL.items() if k not in ("beam_energy_eV", "scan_step_m")}  # the XML has them
    g = _check_store(ingest_files([xml], tmp_path / "e.zarr", fmt="empad", calibration=Calibration(**cal),
                                  progress=False), fe, (3, 4), "empad")
    assert g.attrs["stem"]["calibration_fields"][0]["beam_energy_eV"].startswith("xml")

    fa = _frames((9, 16, 16), seed=2)
    master = write_arina(tmp_path, fa, per_file=4, wavelength_A=0.025079)  # 200 kV
    np.testing.assert_array_equal(arina_reader(str(master))[0]["data"].reshape(fa.shape), fa)
    cal = {k: v for k, v in CAL.items() if k != "beam_energy_eV"}
    g = _check_store(ingest_files([master], tmp_path / "a.zarr", calibration=Calibration(**cal), progress=False),
                     fa, (3, 3), "arina")
    assert abs(g.attrs["geometry"]["beam_energy_eV"] - 200e3) < 100


def test_multi_scan_store_and_cli(tmp_path):
    files = [write_mib(tmp_path / f"t{k}.mib", _frames((6, 8, 8), seed=k), scan_x=3) for k in range(2)]
    (tmp_path / "cal.yaml").write_text("beam_energy_eV: 300000\nconvergence_semiangle_rad: 0.025\n"
                                       "scan_step_m: 1.0e-10\ntilt_angles_rad: [0.2, -0.1]\n")
    r = CliRunner().invoke(app, ["ingest", *map(str, files), "-o", str(tmp_path / "m.zarr"), "--format", "mib",
                                 "--calibration", str(tmp_path / "cal.yaml"), "--reciprocal-sampling-inv-m", "3e8"])
    assert r.exit_code == 0, r.output
    g = open_store(tmp_path / "m.zarr")
    assert g["frames"].shape == (2, 6, 8, 8) and g.attrs["scan_shape"] == [2, 3]
    np.testing.assert_allclose(g["tilt_angle"][:], [-0.1, 0.2])  # sorted by angle: file t1 first
    np.testing.assert_array_equal(g["frames"][0], _frames((6, 8, 8), seed=1))


def test_errors_name_file_and_field(tmp_path):
    frames = _frames((12, 8, 8))
    mib = write_mib(tmp_path / "s.mib", frames, scan_x=4)
    cal = Calibration(**CAL)
    with pytest.raises(IngestError, match=r"missing calibration convergence_semiangle_rad.*--calibration"):
        ingest_files([mib], tmp_path / "x.zarr", calibration=Calibration(beam_energy_eV=2e5, scan_step_m=1e-10,
                     reciprocal_sampling_inv_m=1e8), progress=False)
    with pytest.raises(IngestError, match="mismatched scan shape.*scan_shape \\[4, 4\\]"):
        ingest_files([mib], tmp_path / "x.zarr", calibration=cal.merged({"scan_shape": [4, 4]}), progress=False)
    data = mib.read_bytes()
    cut = tmp_path / "cut.mib"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(IngestError, match="cut.mib: truncated"):
        ingest_files([cut], tmp_path / "x.zarr", fmt="mib", calibration=cal.merged({"scan_shape": [3, 4]}),
                     progress=False)
    short = tmp_path / "short.mib"
    short.write_bytes(data[: len(data) // 12 * 10])  # 10 whole frames of 12
    with pytest.raises(IngestError, match="short.mib: truncated: holds 10 complete frames.*needs 12"):
        ingest_files([short], tmp_path / "x.zarr", fmt="mib", calibration=cal.merged({"scan_shape": [3, 4]}),
                     progress=False)
    with pytest.raises(IngestError, match="convergence_semiangle_rad = 20.0 is implausible"):
        load_calibration(None, convergence_semiangle_rad=20.0)  # mrad given as rad
    (tmp_path / "bad.yaml").write_text("beam_energy: 200000\n")
    with pytest.raises(IngestError, match="bad.yaml: beam_energy: Extra inputs"):
        load_calibration(tmp_path / "bad.yaml")
    assert not (tmp_path / "x.zarr").exists()


def test_uncompressed_store_same_frames(tmp_path):
    """``compress=False`` writes ``frames`` without a codec; the frames and the store are the same otherwise."""
    from ptyhpc.stem.ingest import ingest_stem

    frames = _frames((12, 16, 20))
    mib = write_mib(tmp_path / "scan.mib", frames, scan_x=4)
    cal = Calibration(**CAL)
    raw = ingest_stem([mib], tmp_path / "raw.zarr", calibration=cal, progress=False, compress=False)
    g = _check_store(raw, frames, (3, 4), "mib")
    assert g["frames"].compressors == ()
    assert open_store(ingest_stem([mib], tmp_path / "z.zarr", calibration=cal, progress=False))["frames"].compressors
