"""The reader registry (ptyhpc.io.readers): each reader's sniff accepts its own fixture and rejects every
other reader's; auto-detection names exactly one format or fails naming the file; read() gives Scans."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from _stem_files import write_arina, write_empad, write_mib
from test_readers import write_nxptycho
from ptyhpc.io import IngestError
from ptyhpc.io import readers
from ptyhpc.io.scan import Scan

ROOT = Path(__file__).resolve().parents[1]
PETRA = ROOT / "data" / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
STEM_CAL = dict(beam_energy_eV=200e3, convergence_semiangle_rad=0.02, scan_step_m=5e-11, reciprocal_sampling_inv_m=2e8)


def _xray_file(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/counts", data=np.ones((2, 3, 8, 8), np.uint32))
        f.create_group("entry/instrument").attrs.update({
            "photon_energy_eV": 700.0, "polarisation": "C+", "detector_distance_m": 0.5,
            "detector_pixel_size_m": [30e-6, 30e-6], "probe_semiangle_rad": 5e-3, "defocus_m": 5e-6,
            "scan_origin_m": [0.0, 0.0], "scan_step_m": 60e-9})
    return path


def _dxchange_file(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=np.ones((3, 4, 5), np.float32))
        f.create_dataset("exchange/theta", data=np.array([0.0, 60.0, 120.0]))
    return path


@pytest.fixture
def fixtures(tmp_path, make_tilt_files) -> dict[str, tuple[Path, dict]]:
    """One small file per sniffable format, with the options its read() needs."""
    rng = np.random.default_rng(0)
    (tmp_path / "empad").mkdir()
    (tmp_path / "arina").mkdir()
    pos = np.stack(np.meshgrid(np.arange(3.0), np.arange(2.0)), -1).reshape(-1, 2) * 1e-7
    return {
        "hdf5-tilt": (make_tilt_files(n_angles=1)[0], {}),
        "energy-stack": (_xray_file(tmp_path / "xray.h5"), {}),
        "cxi": (PETRA, {}),
        "nexus": (write_nxptycho(tmp_path / "nx.h5", rng.poisson(5, (6, 8, 8)).astype(np.uint16), pos), {}),
        "mib": (write_mib(tmp_path / "s.mib", rng.poisson(5, (6, 8, 8)).astype(np.uint16), scan_x=3),
                {"calibration": STEM_CAL}),
        "empad": (write_empad(tmp_path / "empad", rng.random((2, 2, 128, 128)).astype(np.float32),
                              high_voltage_eV=200e3, fov_m=2 * 5e-11),
                  {"calibration": {k: v for k, v in STEM_CAL.items() if k not in ("beam_energy_eV", "scan_step_m")}}),
        "dxchange": (_dxchange_file(tmp_path / "tomo.h5"), {}),
        "arina": (write_arina(tmp_path / "arina", rng.poisson(5, (4, 8, 8)).astype(np.uint16), per_file=3,
                              wavelength_A=0.025079),
                  {"calibration": {k: v for k, v in STEM_CAL.items() if k != "beam_energy_eV"}}),
    }


def test_every_registered_reader_has_a_fixture(fixtures):
    assert set(readers.READERS) - set(fixtures) == {"generic"}   # generic is chosen by --spec, never sniffed


def test_sniff_accepts_own_fixture_and_rejects_the_others(fixtures):
    for name, reader in readers.READERS.items():
        for other, (path, _) in fixtures.items():
            assert reader.sniff(path) == (name == other), f"{name}.sniff({other} fixture)"
    for name, (path, _) in fixtures.items():
        assert readers.detect_format(path) == name


def test_read_gives_scans_whose_frames_match_their_shape(fixtures):
    for name, (path, options) in fixtures.items():
        if name == "dxchange":
            with pytest.raises(IngestError, match=f"{path}: Data Exchange files hold tomography projections"):
                readers.read_files([path], **options)
            continue
        scans = readers.read_files([path], fmt=name, **options)
        assert scans and all(isinstance(s, Scan) for s in scans), name
        frames = scans[0].load_frames()
        assert frames.shape == (scans[0].n_positions, *scans[0].detector_shape), name
        assert np.asarray(scans[0].positions_m).shape == (scans[0].n_positions, 2), name


def test_auto_detection_errors_name_the_file(tmp_path, fixtures, monkeypatch):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a detector file")
    with pytest.raises(IngestError, match=f"{junk}: not an HDF5 file"):
        readers.detect_format(junk)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(IngestError, match=f"{empty}: format not recognised.*--format generic --spec"):
        readers.detect_format(empty)
    greedy = type("Greedy", (), {"NAME": "greedy", "sniff": staticmethod(lambda path: True)})
    monkeypatch.setitem(readers.READERS, "greedy", greedy)
    path = fixtures["cxi"][0]
    with pytest.raises(IngestError, match=f"{path}: matches several formats \\(cxi, greedy\\)"):
        readers.detect_format(path)


def test_options_a_reader_cannot_take_are_refused_naming_the_flag(fixtures, tmp_path):
    path, _ = fixtures["mib"]
    with pytest.raises(IngestError, match=r"--zone-plate-\*: not supported for 4D-STEM files \(mib\)"):
        readers.ingest_files([path], tmp_path / "s.zarr", calibration=STEM_CAL, zone_plate={"outer_diameter_m": 1e-4},
                             progress=False)
    path, _ = fixtures["energy-stack"]
    with pytest.raises(IngestError, match="--dark: not supported for energy-stack files"):
        readers.ingest_files([path], tmp_path / "e.zarr", dark="x.h5:/d", progress=False)
