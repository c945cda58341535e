"""The direct shard reader of the 4D-STEM map-reduce: the same frames as zarr, or zarr itself, or a clear error."""

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from ptyhpc.stem.chunkread import ChunkReader


def _frames(path, data, chunk, shard, compress=True, **kw):
    root = zarr.open_group(path, mode="w")
    a = root.create_array("frames", shape=data.shape, dtype=data.dtype, chunks=(1, chunk, *data.shape[2:]),
                          shards=(1, shard, *data.shape[2:]) if shard else None,
                          compressors=BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle)
                          if compress else None, **kw)
    return a


def _read_all(r, item, n):
    return np.concatenate([r.read(item, a, min(a + r.chunk, n)).copy() for a in range(0, n, r.chunk)])


@pytest.mark.parametrize("compress", [True, False])
def test_same_frames_as_zarr_with_partial_and_empty_chunks(tmp_path, compress):
    rng = np.random.default_rng(0)
    data = rng.poisson(3.0, (2, 100, 9, 7)).astype(np.uint16)  # 100 = 3 shards of 4 chunks of 8, the last partial
    a = _frames(tmp_path / "s.zarr", data, 8, 32, compress)
    a[0] = data[0]
    a[1, :40] = data[1, :40]  # item 1: shards 2 and 3 never written (fill value)
    with ChunkReader(tmp_path / "s.zarr" / "frames") as r:
        assert r.fast
        np.testing.assert_array_equal(_read_all(r, 0, 100), data[0])
        got = _read_all(r, 1, 100)
        np.testing.assert_array_equal(got[:40], data[1, :40])
        assert not got[40:].any()
        with pytest.raises(ValueError, match="within one chunk"):
            r.read(0, 4, 12)


def test_other_layouts_are_read_through_zarr(tmp_path):
    data = np.arange(2 * 30 * 4 * 5, dtype=np.float32).reshape(2, 30, 4, 5)
    a = _frames(tmp_path / "u.zarr", data, 7, None)  # unsharded
    a[...] = data
    with ChunkReader(tmp_path / "u.zarr" / "frames") as r:
        assert not r.fast
        np.testing.assert_array_equal(_read_all(r, 1, 30), data[1])


def test_corrupt_shard_index_names_the_file(tmp_path):
    data = np.ones((1, 16, 4, 4), np.uint16)
    a = _frames(tmp_path / "c.zarr", data, 4, 16)
    a[...] = data
    shard = tmp_path / "c.zarr" / "frames" / "c" / "0" / "0" / "0" / "0"
    b = bytearray(shard.read_bytes())
    b[-10] ^= 0xFF  # inside the index, before its checksum
    shard.write_bytes(bytes(b))
    with ChunkReader(tmp_path / "c.zarr" / "frames") as r, pytest.raises(OSError, match=r"c/0/0/0/0.*checksum"):
        r.read(0, 0, 4)


def test_virtual_diffraction_on_counts_equals_float_path():
    """The integer sum/max of raw counts (raw_ok) gives the same bits as the float32 path it replaced."""
    from ptyhpc.stem.virtual import VirtualDiffraction

    rng = np.random.default_rng(1)
    for dtype, hi in ((np.uint16, 65535), (np.int16, 30000), (np.uint32, 2**20), (np.float32, 1e4)):
        raw = rng.integers(0, hi, (300, 6, 5)).astype(dtype)
        vd = VirtualDiffraction()
        got = vd.process(raw, np.arange(300), None, None, np)
        ref = raw.astype(np.float32)
        assert got["sum"].dtype == np.float64 and got["max"].dtype == np.float32
        np.testing.assert_array_equal(got["sum"], ref.sum(0, dtype=np.float64))
        np.testing.assert_array_equal(got["max"], ref.max(0))


@pytest.mark.parametrize("compress", [True, False])
def test_the_ingest_layout_takes_the_direct_path(tmp_path, compress):
    """If the ingest's layout changes, the map-reduce silently falls back to zarr's 3x dearer read: catch it here."""
    from _stem_files import write_mib

    from ptyhpc.stem.calibration import Calibration
    from ptyhpc.stem.ingest import ingest_stem

    frames = np.random.default_rng(2).poisson(2.0, (12 * 10, 16, 16)).astype(np.uint16)
    mib = write_mib(tmp_path / "s.mib", frames, scan_x=10)
    cal = Calibration(beam_energy_eV=200e3, convergence_semiangle_rad=0.02, scan_step_m=5e-11,
                      reciprocal_sampling_inv_m=0.02 / 2.508e-12 / 2)
    store = ingest_stem([mib], tmp_path / "s.zarr", calibration=cal, progress=False, compress=compress,
                        chunk_bytes=7 * frames[0].nbytes, shard_bytes=28 * frames[0].nbytes)
    with ChunkReader(store / "frames") as r:
        assert r.fast
        np.testing.assert_array_equal(_read_all(r, 0, 120), r.array[0])
