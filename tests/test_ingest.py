"""Ingest of per-angle HDF5 files into the zarr store, validation, store access."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from ptyhpc.io import (
    IngestError,
    StoreError,
    ingest,
    n_items,
    open_store,
    read_counts,
    read_geometry,
    read_item,
    read_scan_metadata,
    require_result_array,
)
from ptyhpc.io.layout import FRAMES, GEOMETRY_KEYS, POSITIONS, PTYCHO_OBJECT, SCHEMA_VERSION, TILT_ANGLE
from ptyhpc.physics.wavelength import electron_wavelength

CNT = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"


def _raw_counts(path):
    with h5py.File(path, "r") as f:
        return f["entry/data/counts"][()]


def _leftovers(store: Path):
    return sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name))


def test_round_trip(make_tilt_files, tmp_path):
    angles = [20.0, -10.0, 0.0, 35.0]
    files = make_tilt_files(angles_deg=angles, scan=(4, 5), det=(16, 12))
    store = ingest(files, tmp_path / "s.zarr", progress=False)
    assert store == tmp_path / "s.zarr"
    assert _leftovers(store) == ["s.zarr"]

    g = open_store(store)
    order = np.argsort(angles)
    assert n_items(g) == 4
    assert g.attrs["ptyhpc_schema"] == SCHEMA_VERSION
    assert g.attrs["kind"] == "tilt_series"
    assert g.attrs["radiation"] == "electron"
    assert g.attrs["ingest_complete"] is True
    assert g.attrs["source_files"] == [str(files[k].resolve()) for k in order]
    np.testing.assert_allclose(g[TILT_ANGLE][:], np.radians(np.sort(angles)), rtol=0, atol=1e-15)

    frames = g[FRAMES]
    assert frames.dtype == np.uint16
    assert frames.shape == (4, 20, 16, 12)
    assert frames.shards == (1, 20, 16, 12)
    assert frames.chunks == (1, 20, 16, 12)  # 20 positions <= 64: one chunk per shard
    for item, k in enumerate(order):
        np.testing.assert_array_equal(frames[item], _raw_counts(files[k]).reshape(20, 16, 12))

    pos = g[POSITIONS]
    assert pos.dtype == np.float64 and pos.shape == (4, 20, 2)
    assert pos.attrs["axes"] == ["y", "x"]
    i, j = 2, 3  # raster point (row 2, column 3) -> flat index 2 * 5 + 3
    np.testing.assert_allclose(pos[1, i * 5 + j], [10e-10 + i * 1.5e-10, 10e-10 + j * 1.5e-10], rtol=1e-12)

    geo = read_geometry(g)
    assert tuple(geo) == GEOMETRY_KEYS
    assert geo["beam_energy_eV"] == 60000.0
    assert geo["wavelength_m"] == pytest.approx(electron_wavelength(60000.0), rel=1e-12)
    assert geo["wavelength_m"] == pytest.approx(4.8661e-12, rel=1e-4)
    assert geo["convergence_semiangle_rad"] == pytest.approx(0.025)
    assert geo["defocus_m"] == pytest.approx(200e-10)
    assert geo["Cs_m"] == 0.0
    assert geo["reciprocal_sampling_inv_m"] == pytest.approx([1e10 / 48, 1e10 / 48])
    assert geo["scan_step_m"] == pytest.approx(1.5e-10)
    assert geo["scan_origin_m"] == pytest.approx([1e-9, 1e-9])
    assert geo["dose_e_per_m2"] == pytest.approx(1500e20)

    f0, p0 = read_item(g, 0)
    assert f0.dtype == np.float32 and f0.shape == (20, 16, 12)
    assert p0.dtype == np.float64 and p0.shape == (20, 2)
    np.testing.assert_array_equal(f0, _raw_counts(files[order[0]]).reshape(20, 16, 12).astype(np.float32))
    with pytest.raises(IndexError):
        read_item(g, 4)


def test_chunks_are_a_block_of_positions(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2, scan=(10, 10), det=(8, 8))
    g = open_store(ingest(files, tmp_path / "s.zarr", progress=False))
    assert g[FRAMES].shards == (1, 100, 8, 8)
    assert g[FRAMES].chunks == (1, 50, 8, 8)


def test_float_data_and_optional_cs(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2, dtype=np.float32, Cs_mm=1.2, dose_e_per_A2=None)
    g = open_store(ingest(files, tmp_path / "s.zarr", progress=False))
    assert g[FRAMES].dtype == np.float32
    geo = read_geometry(g)
    assert geo["Cs_m"] == pytest.approx(1.2e-3)
    assert geo["dose_e_per_m2"] is None


def test_reader_flattens_row_major(make_tilt_files):
    (path,) = make_tilt_files(n_angles=1, scan=(3, 4), det=(6, 6))
    raw = _raw_counts(path)
    counts = read_counts(path)
    assert counts.shape == (12, 6, 6)
    np.testing.assert_array_equal(counts[1 * 4 + 2], raw[1, 2])
    meta = read_scan_metadata(path)
    assert meta.scan_shape == (3, 4) and meta.detector_shape == (6, 6) and meta.n_positions == 12
    assert meta.tilt_angle_rad == pytest.approx(math.radians(-30.0))


# --- bad input: each message names the file and the field ---------------------------------------


def _set_attr(path, name, value):
    with h5py.File(path, "r+") as f:
        inst = f["entry/instrument"]
        if value is None:
            del inst.attrs[name]
        else:
            inst.attrs[name] = value


def _expect_error(files, tmp_path, *fragments):
    store = tmp_path / "bad.zarr"
    with pytest.raises(IngestError) as info:
        ingest(files, store, progress=False)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert not store.exists()
    assert _leftovers(store) == []
    return str(info.value)


def test_missing_file(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    files[1].unlink()
    _expect_error(files, tmp_path, "tilt_001.h5", "not found")


def test_not_hdf5(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    files[0].write_text("not hdf5")
    _expect_error(files, tmp_path, "tilt_000.h5", "not an HDF5 file")


def test_missing_dataset(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    with h5py.File(files[1], "r+") as f:
        del f["entry/data/counts"]
    _expect_error(files, tmp_path, "tilt_001.h5", "entry/data/counts", "missing")


def test_missing_attribute(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=3)
    _set_attr(files[2], "beam_energy_eV", None)
    _expect_error(files, tmp_path, "tilt_002.h5: entry/instrument/beam_energy_eV: missing")


def test_missing_angle(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    _set_attr(files[0], "tilt_angle_deg", None)
    _expect_error(files, tmp_path, "tilt_000.h5", "entry/instrument/tilt_angle_deg", "missing")


def test_non_finite_angle(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    _set_attr(files[1], "tilt_angle_deg", np.nan)
    _expect_error(files, tmp_path, "tilt_001.h5", "tilt_angle_deg", "not finite")


def test_wrong_ndim(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    with h5py.File(files[1], "r+") as f:
        del f["entry/data/counts"]
        f["entry/data/counts"] = np.zeros((16, 16, 16), np.uint16)
    _expect_error(files, tmp_path, "tilt_001.h5", "entry/data/counts", "4D")


def test_unknown_dtype(make_tilt_files, tmp_path):
    counts = np.ones((2, 4, 4, 16, 16), np.complex64)
    files = make_tilt_files(n_angles=2, counts=counts)
    _expect_error(files, tmp_path, "tilt_000.h5", "entry/data/counts", "unsupported dtype complex64")


def test_nan_in_float_data_fails_during_copy(make_tilt_files, tmp_path):
    counts = np.ones((3, 4, 4, 16, 16), np.float32)
    counts[2, 1, 1, 3, 3] = np.nan
    files = make_tilt_files(n_angles=3, counts=counts)
    # Metadata pass succeeds; the NaN is only seen while copying the last item,
    # after the partial store exists: it must be removed.
    _expect_error(files, tmp_path, "tilt_002.h5", "entry/data/counts", "non-finite")


def test_negative_counts(make_tilt_files, tmp_path):
    counts = np.ones((2, 4, 4, 16, 16), np.int16)
    counts[0, 0, 0, 0, 0] = -3
    files = make_tilt_files(n_angles=2, counts=counts)
    _expect_error(files, tmp_path, "tilt_000.h5", "entry/data/counts", "negative")


def test_mismatched_detector_shape(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2, det=(16, 16))
    other = make_tilt_files(n_angles=1, det=(16, 18), angles_deg=[45.0])
    _expect_error(files + other, tmp_path, "raw1/tilt_000.h5", "detector shape", "(16, 18)")


def test_mismatched_scan_shape(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2, scan=(4, 4))
    other = make_tilt_files(n_angles=1, scan=(4, 5), angles_deg=[45.0])
    _expect_error(files + other, tmp_path, "raw1/tilt_000.h5", "scan shape")


def test_mismatched_beam_energy(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=3)
    _set_attr(files[1], "beam_energy_eV", 80000.0)
    _expect_error(files, tmp_path, "tilt_001.h5", "entry/instrument/beam_energy_eV", "differs", "tilt_000.h5")


def test_metadata_equal_within_rtol(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2)
    _set_attr(files[1], "scan_step_A", 1.5 * (1 + 1e-12))
    ingest(files, tmp_path / "s.zarr", progress=False)


def test_duplicate_angles(make_tilt_files, tmp_path):
    files = make_tilt_files(angles_deg=[0.0, 5.0, 0.0])
    _expect_error(files, tmp_path, "tilt_002.h5", "tilt_000.h5", "tilt_angle_deg", "duplicate")


def test_tilt_axis_x_not_supported(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=2, tilt_axis="x")
    _expect_error(files, tmp_path, "tilt_000.h5", "entry/instrument/tilt_axis", "not supported")


def test_no_files(tmp_path):
    with pytest.raises(IngestError, match="no input files"):
        ingest([], tmp_path / "s.zarr", progress=False)


# --- store handling --------------------------------------------------------------------------


def test_overwrite(make_tilt_files, tmp_path):
    store = tmp_path / "s.zarr"
    ingest(make_tilt_files(n_angles=2), store, progress=False)
    with pytest.raises(IngestError, match="already exists"):
        ingest(make_tilt_files(n_angles=3), store, progress=False)
    assert n_items(open_store(store)) == 2
    ingest(make_tilt_files(n_angles=3), store, overwrite=True, progress=False)
    assert n_items(open_store(store)) == 3
    assert _leftovers(store) == ["s.zarr"]


def test_failed_overwrite_keeps_old_store(make_tilt_files, tmp_path):
    store = tmp_path / "s.zarr"
    ingest(make_tilt_files(n_angles=2), store, progress=False)
    bad = make_tilt_files(n_angles=2)
    _set_attr(bad[0], "scan_step_A", None)
    with pytest.raises(IngestError):
        ingest(bad, store, overwrite=True, progress=False)
    assert n_items(open_store(store)) == 2
    assert _leftovers(store) == ["s.zarr"]


def test_open_store_rejects_incomplete(make_tilt_files, tmp_path):
    store = ingest(make_tilt_files(n_angles=2), tmp_path / "s.zarr", progress=False)
    zarr.open_group(store, mode="r+").attrs["ingest_complete"] = False
    with pytest.raises(StoreError, match="incomplete ingest; re-run ptyhpc ingest"):
        open_store(store)
    del zarr.open_group(store, mode="r+").attrs["ingest_complete"]
    with pytest.raises(StoreError, match="incomplete ingest"):
        open_store(store)


def test_open_store_rejects_others(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a zarr v3 group"):
        open_store(tmp_path / "empty")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a ptyhpc store"):
        open_store(tmp_path / "plain.zarr")
    zarr.open_group(tmp_path / "future.zarr", mode="w").attrs["ptyhpc_schema"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="unknown store schema version"):
        open_store(tmp_path / "future.zarr")


def test_require_result_array(make_tilt_files, tmp_path):
    store = ingest(make_tilt_files(n_angles=2), tmp_path / "s.zarr", progress=False)
    g = open_store(store, mode="r+")
    attrs = {"pixel_size_m": 1e-10, "origin_m": (0.0, 1e-10)}
    a = require_result_array(g, PTYCHO_OBJECT, (2, 8, 8), np.complex64, chunks=(1, 8, 8), attrs=attrs)
    a[1] = 1 + 2j
    b = require_result_array(open_store(store, "r+"), PTYCHO_OBJECT, (2, 8, 8), "complex64", chunks=(1, 8, 8),
                             attrs=attrs)
    assert b[1, 0, 0] == 1 + 2j and b[0, 0, 0] == 0
    assert b.attrs["origin_m"] == [0.0, 1e-10]
    with pytest.raises(StoreError, match="shape"):
        require_result_array(g, PTYCHO_OBJECT, (2, 9, 8), np.complex64, chunks=(1, 9, 8))
    with pytest.raises(StoreError, match="dtype"):
        require_result_array(g, PTYCHO_OBJECT, (2, 8, 8), np.float32, chunks=(1, 8, 8))
    with pytest.raises(StoreError, match="pixel_size_m"):
        require_result_array(g, PTYCHO_OBJECT, (2, 8, 8), np.complex64, chunks=(1, 8, 8),
                             attrs={"pixel_size_m": 2e-10})
    with pytest.raises(StoreError, match="group"):
        require_result_array(g, "results/ptycho", (2,), np.uint8, chunks=(2,))


@pytest.mark.skipif(not (CNT / "tilt_000.h5").exists(), reason="CNT data set not present")
def test_ingest_two_cnt_files(tmp_path):
    files = [CNT / "tilt_012.h5", CNT / "tilt_000.h5"]
    g = open_store(ingest(files, tmp_path / "cnt.zarr", progress=False))
    assert g[FRAMES].shape == (2, 400, 122, 122)
    assert g[FRAMES].shards == (1, 400, 122, 122) and g[FRAMES].chunks == (1, 50, 122, 122)
    np.testing.assert_allclose(g[TILT_ANGLE][:], np.radians([-60.0, 0.0]), atol=1e-12)
    frames, pos = read_item(g, 1)
    np.testing.assert_array_equal(frames, _raw_counts(files[0]).reshape(400, 122, 122))
    step = 28 / 19 * 1e-10
    np.testing.assert_allclose(pos[-1], [10e-10 + 19 * step, 10e-10 + 19 * step], rtol=1e-12)
    geo = read_geometry(g)
    assert geo["reciprocal_sampling_inv_m"] == pytest.approx([1e10 / 48] * 2)
    assert math.isclose(geo["dose_e_per_m2"], 1500e20)
