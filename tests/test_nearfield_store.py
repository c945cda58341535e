"""Near-field scans through the store: the regime is recorded at ingest and honoured by ``run_ptycho``.

A simulated divergent-beam near-field scan (known object) is written as CXI, ingested with
``regime="near_field"`` and reconstructed by the pipeline; the same store relabelled far field (what
every store meant before the regime was recorded) must come out clearly worse. The real PETRA III P25
file checks what ingest records, and bad values must fail at the door.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr
from scipy import ndimage
from typer.testing import CliRunner

from ptyhpc import backend
from ptyhpc.cli import app
from ptyhpc.io import IngestError, StoreError, layout, open_store, read_propagation
from ptyhpc.io.energy import photon_wavelength
from ptyhpc.io.readers import ingest_files
from ptyhpc.io.scan import NearFieldWarning
from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho
from ptyhpc.ptycho import operators as ops
from ptyhpc.ptycho.metrics import phase_rmse
from ptyhpc.ptycho.propagators import NearField
from ptyhpc.sim import letter_phase_object

from test_readers import write_nxptycho

PETRA = Path(__file__).resolve().parents[1] / "data" / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
PETRA_FOCUS_TO_SAMPLE_M = 3.65e-3     # from the dataset's README (not in the CXI file)

# Simulated cone-beam geometry: M = (z1 + z2)/z1 = 100, so the equivalent parallel beam
# (Fresnel scaling) has a 100 nm pixel and z2/M = 3 mm, the set-up of tests/test_nearfield.py.
N, LAM = 64, 1e-10
DET_PIXEL, Z2, MAG = 10e-6, 0.3, 100.0
Z1 = Z2 / (MAG - 1)
PX_EFF, Z_EFF = DET_PIXEL / MAG, Z2 / MAG
#: rPIE settings of examples/petra_nearfield.py.
PARAMS = dict(engine="rpie", noise_model="amplitude", beta_object=1.0, beta_probe=1.0, alpha=0.1, backend="numpy")


def simulate_near_field(n_pos=40, seed=1):
    """Near-field holograms of a letter phase object with a diffuser-like probe (noise-free).

    Simulated on the equivalent parallel-beam geometry (pixel ``PX_EFF``, distance ``Z_EFF``),
    which is what the detector records in the cone beam up to the magnification.

    Returns
    -------
    frames : (n_pos, N, N) float32, photons (~1e4 per frame)
    positions : (n_pos, 2) float64, m, (y, x) probe on the sample
    truth : (H, W) complex64, on the grid of ``ScanGeometry.from_positions(positions, (N, N), PX_EFF)``
    geom : ScanGeometry
    """
    px = (PX_EFF, PX_EFF)
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, 24, (n_pos, 2)) * PX_EFF + N * PX_EFF
    geom = ops.ScanGeometry.from_positions(positions, (N, N), px)
    truth = np.exp(1j * letter_phase_object(geom.object_shape, 0.8, seed=2)).astype(np.complex64)
    # A diffuser (random phase, smooth amplitude) makes near-field ptychography well posed.
    yy, xx = np.mgrid[:N, :N] - N / 2
    probe = (np.exp(-(yy**2 + xx**2) / (2 * 18.0**2)) * np.exp(1j * rng.uniform(0, 2, (N, N)))).astype(np.complex64)
    prop = NearField((N, N), px, LAM, Z_EFF)
    probes = ops.shifted_probes(backend.fft2(probe), ops.shift_ramps(geom.frac, (N, N)))
    frames = np.abs(prop.forward(ops.exit_waves(truth, probes, geom.flat_index(np.arange(n_pos))))) ** 2
    frames *= 1e4 / frames.sum(axis=(1, 2)).mean()
    return frames.astype(np.float32), positions, truth, geom


def write_cxi(path, frames, positions_yx, *, pixel=DET_PIXEL, distance=Z2, wavelength=LAM):
    """A minimal CXI 1.6 file: sample translation = −probe position, detector axes along (y, x)."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["data"] = frames
        det["distance"] = distance
        det["x_pixel_size"] = det["y_pixel_size"] = pixel
        det["basis_vectors"] = np.array([[0.0, pixel, 0.0], [pixel, 0.0, 0.0]])   # slow = y, fast = x
        f["entry_1/instrument_1/source_1/wavelength"] = wavelength
        trans = np.zeros((len(positions_yx), 3))
        trans[:, 0], trans[:, 1] = -positions_yx[:, 1], -positions_yx[:, 0]
        f["entry_1/sample_1/geometry_1/translation"] = trans
    return Path(path)


def truth_on_result_grid(truth, geom, pixel_size_m, origin_m, shape):
    """The true object sampled (bilinear) on a result's grid, any pixel size (m) and origin (m)."""
    iy = (origin_m[0] + np.arange(shape[0]) * pixel_size_m[0] - geom.origin_m[0]) / geom.pixel_size_m[0]
    ix = (origin_m[1] + np.arange(shape[1]) * pixel_size_m[1] - geom.origin_m[1]) / geom.pixel_size_m[1]
    coords = np.meshgrid(iy, ix, indexing="ij")
    part = [ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in (truth.real, truth.imag)]
    return (part[0] + 1j * part[1]).astype(np.complex64)


def store_phase_error(store):
    """Item 0 of a store's results: object, pixel (m), origin (m), illumination, final data error."""
    g = open_store(store)
    obj = g[layout.PTYCHO_OBJECT]
    recon, illum = obj[0], g[layout.PTYCHO_ILLUMINATION][0]
    # An X-ray scan is a one-item energy stack: one (y, x) pixel and origin per item.
    px, origin = obj.attrs["pixel_size_m"][0], obj.attrs["origin_m"][0]
    return recon, px, origin, illum, float(g[layout.PTYCHO_ERROR][0, -1])


@pytest.fixture(scope="module")
def sim_cxi(tmp_path_factory):
    frames, positions, truth, geom = simulate_near_field()
    path = write_cxi(tmp_path_factory.mktemp("nf") / "sim_nearfield.cxi", frames, positions)
    return path, frames, positions, truth, geom


def test_simulated_near_field_store_reconstructs_and_far_field_is_worse(tmp_path, sim_cxi):
    """Store regime near_field → phase RMSE 0.0031 rad (measured); the same store as far field → 0.20 rad.

    150 rPIE iterations each (data error 2.2e-4 against 0.038). Also checks that the pipeline took
    the Fresnel-scaled pixel and distance from the store (a parallel-beam reading would give a
    10 µm pixel).
    """
    cxi, _, _, truth, geom = sim_cxi
    near = ingest_files([cxi], tmp_path / "near.zarr", fmt="cxi", regime="near_field", focus_to_sample_m=Z1,
                        progress=False)
    far = tmp_path / "far.zarr"
    shutil.copytree(near, far)
    root = zarr.open_group(far, mode="r+")
    # What the store said before the regime was recorded: far field, no focus distance.
    root.attrs.update({layout.PROPAGATION_REGIME: layout.FAR_FIELD, layout.FOCUS_TO_SAMPLE: None})

    errors = {}
    for store in (near, far):
        run_ptycho(store, PtychoParams(n_iter=150, **PARAMS), progress=False)
        recon, px, origin, illum, data_err = store_phase_error(store)
        region = illum > 0.3 * illum.max()
        ref = truth_on_result_grid(truth, geom, px, origin, recon.shape)
        errors[store.stem] = (phase_rmse(recon, ref, region), data_err)

    res = open_store(near)[layout.PTYCHO].attrs
    assert res["propagation_regime"] == "near_field" and res["propagator"] == "angular_spectrum"
    assert res["pixel_size_m"] == [pytest.approx([PX_EFF, PX_EFF], rel=1e-12)]
    assert res["propagation_distance_m"] == pytest.approx(Z_EFF, rel=1e-12)
    assert res["magnification"] == pytest.approx(MAG, rel=1e-12)
    assert res["focus_to_sample_m"] == pytest.approx(Z1, rel=1e-12)
    assert open_store(near)[layout.PTYCHO_OBJECT].attrs["propagation_regime"] == "near_field"
    assert open_store(far)[layout.PTYCHO].attrs["propagation_regime"] == "far_field"

    (near_rmse, near_err), (far_rmse, far_err) = errors["near"], errors["far"]
    print(f"phase RMSE near {near_rmse:.4f} rad, far {far_rmse:.4f} rad; data error near {near_err:.4g}, "
          f"far {far_err:.4g}")
    assert near_rmse < 0.02, errors                          # measured 0.0031 rad
    assert far_rmse > max(0.1, 10 * near_rmse), errors      # measured 0.20 rad
    assert far_err > 20 * near_err, errors                   # measured 0.038 against 2.2e-4


def test_petra_cxi_ingest_records_near_field_and_reconstructs(tmp_path):
    """The real PETRA III P25 scan via ``ptyhpc ingest --regime near_field --focus-to-sample-m 3.65e-3``."""
    store = tmp_path / "petra.zarr"
    out = CliRunner().invoke(app, ["ingest", str(PETRA), "-o", str(store), "--format", "cxi",
                                   "--regime", "near_field", "--focus-to-sample-m", "3.65e-3"])
    assert out.exit_code == 0, out.output
    assert "near_field" in out.output and "warning" not in out.output
    g = open_store(store)
    assert g.attrs["propagation_regime"] == "near_field"
    assert g.attrs["focus_to_sample_m"] == PETRA_FOCUS_TO_SAMPLE_M
    assert g.attrs["detector_distance_m"] == pytest.approx(1.12, rel=1e-6)
    assert g.attrs["source_fields"][0]["regime"] == "given"
    assert read_propagation(g) == {"regime": "near_field", "focus_to_sample_m": PETRA_FOCUS_TO_SAMPLE_M,
                                   "detector_distance_m": pytest.approx(1.12, rel=1e-6)}
    # 10 iterations: the pipeline must reduce the data error as the direct near-field reconstruction
    # does (tests/test_nearfield.py: 0.0268 → 0.0111 in 30); far field does not reduce it at all.
    run_ptycho(store, PtychoParams(n_iter=10, **PARAMS), progress=False)
    g = open_store(store)
    mag = (PETRA_FOCUS_TO_SAMPLE_M + 1.12) / PETRA_FOCUS_TO_SAMPLE_M
    assert g[layout.PTYCHO_OBJECT].attrs["pixel_size_m"] == [pytest.approx([55e-6 / mag] * 2, rel=1e-6)]
    err = g[layout.PTYCHO_ERROR][0]
    assert err[-1] < 0.6 * err[0], err[[0, -1]]      # measured 0.0268 → 0.0136


def test_petra_far_field_ingest_warns_but_keeps_far_field(tmp_path):
    """No file says near field; the geometry heuristic warns (never switches)."""
    with pytest.warns(NearFieldWarning, match=r"0\.60 of the far-field field of view"):
        ingest_files([PETRA], tmp_path / "ff.zarr", progress=False)
    assert read_propagation(open_store(tmp_path / "ff.zarr"))["regime"] == "far_field"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NearFieldWarning)   # stating the regime silences it
        ingest_files([PETRA], tmp_path / "nf.zarr", regime="near_field", progress=False)
    assert read_propagation(open_store(tmp_path / "nf.zarr"))["focus_to_sample_m"] is None   # parallel beam


def test_generic_spec_and_nexus_carry_the_regime(tmp_path, sim_cxi):
    _, frames, positions, _, _ = sim_cxi
    counts = np.round(frames).astype(np.uint32)
    h5 = tmp_path / "scan.h5"
    with h5py.File(h5, "w") as f:
        f["data/frames"] = counts
        f["data/pos_y"], f["data/pos_x"] = positions[:, 0], positions[:, 1]
    spec = {"frames": "/data/frames", "positions_y": "/data/pos_y", "positions_x": "/data/pos_x",
            "positions_units": "m", "wavelength": LAM, "distance": Z2, "pixel_size": DET_PIXEL,
            "regime": "near_field", "focus_to_sample": {"value": Z1 * 1e3, "units": "mm"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    g = open_store(ingest_files([h5], tmp_path / "generic.zarr", spec=path, progress=False))
    assert read_propagation(g)["regime"] == "near_field"
    assert g.attrs["focus_to_sample_m"] == pytest.approx(Z1, rel=1e-12)
    # The command line overrides the spec.
    g = open_store(ingest_files([h5], tmp_path / "generic2.zarr", spec=path, focus_to_sample_m=2e-3, progress=False))
    assert g.attrs["focus_to_sample_m"] == 2e-3

    nxs = write_nxptycho(tmp_path / "scan.nxs", counts, -positions[:, ::-1],
                         energy=(photon_wavelength(1.0) / LAM, "eV"), pixel=((10.0, "um"), (10.0, "um")),
                         distance=(Z2, "m"))
    g = open_store(ingest_files([nxs], tmp_path / "nexus.zarr", regime="near_field", focus_to_sample_m=Z1,
                                progress=False))
    assert read_propagation(g) == {"regime": "near_field", "focus_to_sample_m": Z1, "detector_distance_m": Z2}
    assert np.allclose(g[layout.POSITIONS][0], positions, rtol=0, atol=1e-15)
    # Without the option NeXus stays far field, as before.
    g = open_store(ingest_files([nxs], tmp_path / "nexus_ff.zarr", progress=False))
    assert "focus_to_sample_m" in g.attrs and read_propagation(g)["regime"] == "far_field"


@pytest.mark.parametrize("regime, focus, match", [
    ("nearfield", None, r"--regime must be one of far_field, near_field, got 'nearfield'"),
    ("Near_Field", 1e-3, r"got 'Near_Field'"),
    ("near_field", 0.0, r"focus_to_sample_m: must be a finite distance > 0 \(m\), got 0\.0"),
    ("near_field", -3.65e-3, r"focus_to_sample_m: must be a finite distance > 0"),
    ("near_field", float("nan"), r"focus_to_sample_m: must be a finite distance > 0"),
    ("near_field", float("inf"), r"focus_to_sample_m: must be a finite distance > 0"),
    (None, 3.65e-3, r"only used in the near field.*--regime near_field"),
    ("far_field", 3.65e-3, r"only used in the near field"),
])
def test_bad_regime_values_fail_at_the_door(tmp_path, regime, focus, match):
    with pytest.raises(IngestError, match=match):
        ingest_files([PETRA], tmp_path / "s.zarr", regime=regime, focus_to_sample_m=focus, progress=False)
    assert not (tmp_path / "s.zarr").exists()
    assert issubclass(IngestError, ValueError)


def test_bad_regime_values_in_specs_stores_and_layout(tmp_path, make_tilt_files, sim_cxi):
    # The layout's own check (ValueError), also for the sample-to-detector distance.
    assert layout.check_propagation() == ("far_field", None)
    assert layout.check_propagation("near_field", 2e-3, 1.0) == ("near_field", 2e-3)
    with pytest.raises(ValueError, match="unknown regime 'fraunhofer'"):
        layout.check_propagation("fraunhofer")
    with pytest.raises(ValueError, match="detector_distance_m: must be a finite distance > 0"):
        layout.check_propagation("near_field", None, -1.0)
    with pytest.raises(ValueError, match="needs detector_distance_m"):
        layout.check_propagation("near_field", None, None)
    with pytest.raises(ValueError, match="expected a distance in m, got '3mm'"):
        layout.check_propagation("near_field", "3mm", 1.0)
    # Generic spec: pydantic names the key.
    spec = {"frames": "/f", "positions": "/p", "wavelength": LAM, "distance": Z2, "pixel_size": DET_PIXEL,
            "regime": "holography"}
    with pytest.raises(IngestError, match=r"regime: Input should be 'far_field' or 'near_field'"):
        ingest_files([sim_cxi[0]], tmp_path / "g.zarr", spec=spec, progress=False)
    # hdf5-tilt files are far-field 4D-STEM: the options are refused.
    with pytest.raises(IngestError, match="--regime: not supported for hdf5-tilt"):
        ingest_files(make_tilt_files(n_angles=1), tmp_path / "t.zarr", regime="near_field", progress=False)
    # A store edited to a bad regime: the ptycho stage refuses it, naming the attribute.
    store = ingest_files([PETRA], tmp_path / "p.zarr", regime="near_field", progress=False)
    zarr.open_group(store, mode="r+").attrs[layout.PROPAGATION_REGIME] = "nearfield"
    with pytest.raises(StoreError, match="propagation_regime: unknown regime 'nearfield'"):
        run_ptycho(store, PtychoParams(n_iter=1, **PARAMS), progress=False)
    zarr.open_group(store, mode="r+").attrs.update({layout.PROPAGATION_REGIME: "near_field",
                                                    layout.FOCUS_TO_SAMPLE: 0})
    with pytest.raises(StoreError, match="focus_to_sample_m: must be a finite distance > 0"):
        read_propagation(open_store(store))
    # Near-field images are not padded.
    zarr.open_group(store, mode="r+").attrs[layout.FOCUS_TO_SAMPLE] = PETRA_FOCUS_TO_SAMPLE_M
    with pytest.raises(ValueError, match="fft_size 128: near-field data are not padded"):
        run_ptycho(store, PtychoParams(n_iter=1, fft_size=128, **PARAMS), progress=False)


def test_cli_rejects_bad_regime(tmp_path):
    out = CliRunner().invoke(app, ["ingest", str(PETRA), "-o", str(tmp_path / "s.zarr"), "--regime", "nearfield"])
    assert out.exit_code != 0 and "--regime must be one of far_field, near_field" in " ".join(out.output.split())
    out = CliRunner().invoke(app, ["ingest", str(PETRA), "-o", str(tmp_path / "s.zarr"), "--focus-to-sample-m",
                                   "3.65e-3"])
    assert out.exit_code != 0 and "--regime near_field" in " ".join(out.output.split())
    assert not (tmp_path / "s.zarr").exists()


def test_recipe_input_carries_the_ingest_options(tmp_path):
    """``ptyhpc run --stages ingest`` with the PETRA scan: format, regime and focus distance from the recipe's
    ``input`` reach the store; a focus distance without the near field is refused at the door."""
    recipe = tmp_path / "petra.yaml"
    recipe.write_text(f"input:\n  files: [{PETRA}]\n  format: cxi\n  regime: near_field\n"
                      f"  focus_to_sample_m: 3.65e-3\nstore: petra.zarr\n")
    out = CliRunner().invoke(app, ["run", str(recipe), "--stages", "ingest"])
    assert out.exit_code == 0, out.output
    g = open_store(tmp_path / "petra.zarr")
    assert g.attrs["propagation_regime"] == "near_field"
    assert g.attrs["focus_to_sample_m"] == PETRA_FOCUS_TO_SAMPLE_M
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"input:\n  files: [{PETRA}]\n  format: cxi\n  focus_to_sample_m: 3.65e-3\nstore: bad.zarr\n")
    out = CliRunner().invoke(app, ["run", str(bad), "--stages", "ingest"])
    assert out.exit_code != 0 and "focus_to_sample_m" in out.output
    assert not (tmp_path / "bad.zarr").exists()
