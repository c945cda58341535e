"""Whole chunks of a 4D-STEM ``frames`` array read straight from their shard files into one reused buffer.

zarr-python's read path (async event loop, sharding index objects, a fresh
array per chunk, buffer copies) costs about twice the Blosc decompression of
the same bytes (docs/stem.md, Benchmarks). The map-reduce reads whole inner
chunks only, in order, from a local store, so it can do the little that is
needed itself: read a shard's index once (zarr v3 sharding, index at the end,
checked with its CRC32C), ``readinto`` a chunk's bytes, and decompress them
with Blosc (numcodecs, the library zarr calls) into the same buffer every
time. Only the layout the ingest writes is read this way: a ``frames`` array
whose metadata is anything else (other codecs, index at the start, a remote
store) is read through zarr, with the same result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["ChunkReader"]

_EMPTY = 2**64 - 1
_DTYPES = {"uint8", "uint16", "uint32", "int16", "int32", "float32", "float64"}


def _fast_layout(meta: dict):
    """``(inner_chunk_shape, shard_shape, compressed, separator)`` if the metadata is the ingest's layout, else None."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("data_type") not in _DTYPES or len(meta["shape"]) != 4 \
                or meta.get("storage_transformers"):
            return None
        if meta["chunk_grid"]["name"] != "regular" or meta["chunk_key_encoding"]["name"] != "default":
            return None
        sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        (codec,) = meta["codecs"]
        if codec["name"] != "sharding_indexed":
            return None
        cfg = codec["configuration"]
        if cfg.get("index_location", "end") != "end":
            return None
        if [c["name"] for c in cfg["index_codecs"]] != ["bytes", "crc32c"]:
            return None
        if cfg["index_codecs"][0].get("configuration", {}).get("endian", "little") != "little":
            return None
        inner = cfg["codecs"]
        if inner[0]["name"] != "bytes" or inner[0].get("configuration", {}).get("endian", "little") != "little":
            return None
        names = [c["name"] for c in inner[1:]]
        if names not in ([], ["blosc"]):
            return None
        chunk, shard = tuple(cfg["chunk_shape"]), tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        if chunk[0] != 1 or shard[0] != 1 or chunk[2:] != shard[2:] or shard[1] % chunk[1]:
            return None
        if tuple(meta["shape"][2:]) != chunk[2:]:
            return None
        return chunk, shard, bool(names), sep
    except (KeyError, TypeError, ValueError, IndexError):
        return None


class ChunkReader:
    """Reads whole inner chunks of ``frames[item]`` into a reused buffer.

    Parameters
    ----------
    array_path : path-like
        The ``frames`` array of a local store (``STORE/frames``).

    Notes
    -----
    :meth:`read` returns a view of the reader's buffer: it is overwritten by
    the next call. Memory: one chunk of frames plus one chunk of compressed
    bytes. ``fast`` tells whether the shard files are read directly (the
    ingest's layout) or through zarr.
    """

    def __init__(self, array_path):
        import zarr  # noqa: PLC0415

        self.path = Path(array_path)
        self.array = zarr.open_array(self.path, mode="r")
        self.chunk = int(self.array.chunks[1])
        self.dtype = np.dtype(self.array.dtype)
        meta_file = self.path / "zarr.json"
        layout = _fast_layout(json.loads(meta_file.read_text())) if meta_file.is_file() else None
        self.fast = layout is not None and self.dtype.byteorder in "=<|"
        self._index = {}
        self._fh = (None, None)
        if self.fast:
            chunk, shard, self.compressed, self.sep = layout
            self.per_shard = shard[1] // chunk[1]
            self.frame_shape = tuple(chunk[2:])
            self.fill = np.asarray(self.array.fill_value, self.dtype)
            self._buf = np.empty((self.chunk, *self.frame_shape), self.dtype)
            self._cbuf = bytearray()

    def close(self):
        if self._fh[1] is not None:
            self._fh[1].close()
        self._fh = (None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _shard(self, item: int, k: int):
        """(open file, offsets, lengths) of shard k of item, or None where the shard was never written."""
        key = (item, k)
        if self._fh[0] != key:
            self.close()
            name = self.sep.join(["c", str(item), str(k), "0", "0"])
            p = self.path / name if self.sep == "." else self.path.joinpath(*name.split("/"))
            fh = open(p, "rb", buffering=0) if p.is_file() else None  # noqa: SIM115 (kept open across chunks)
            self._fh = (key, fh)
            if fh is not None and key not in self._index:
                n = self.per_shard * 16 + 4
                size = os.fstat(fh.fileno()).st_size
                raw = os.pread(fh.fileno(), n, size - n)
                import google_crc32c  # noqa: PLC0415 (zarr's own dependency for this check)

                if len(raw) != n or np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
                    raise OSError(f"{p}: shard index checksum mismatch (corrupt or truncated shard)")
                self._index[key] = np.frombuffer(raw[:-4], "<u8").reshape(self.per_shard, 2)
        fh = self._fh[1]
        return None if fh is None else (fh, self._index[key])

    def read(self, item: int, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of ``item``, (stop - start, det_y, det_x) in the store's dtype.

        ``start`` must be a multiple of the chunk length and ``stop - start`` at
        most one chunk (ValueError otherwise). The result is a view of a reused
        buffer (copy it to keep it); through zarr it is a fresh array.
        """
        n = stop - start
        if start % self.chunk or not 0 < n <= self.chunk:
            raise ValueError(f"{self.path}: read [{start}, {stop}) is not within one chunk of {self.chunk} frames")
        if not self.fast:
            return np.asarray(self.array[item, start:stop])
        j = start // self.chunk
        shard = self._shard(item, j // self.per_shard)
        out = self._buf
        full = out.nbytes
        off, length = (_EMPTY, _EMPTY) if shard is None else (int(v) for v in shard[1][j % self.per_shard])
        if off == _EMPTY:
            out[:n] = self.fill
            return out[:n]
        fd = shard[0].fileno()
        if not self.compressed:
            if length != full:
                raise OSError(f"{self.path}: chunk {j} holds {length} bytes, expected {full}")
            got = os.preadv(fd, [memoryview(out).cast("B")], off)
        else:
            from numcodecs import blosc  # noqa: PLC0415

            if len(self._cbuf) < length:
                self._cbuf = bytearray(length)
            view = memoryview(self._cbuf)[:length]
            got = os.preadv(fd, [view], off)
            if got == length:
                # Blosc header: bytes 4-8 are the decompressed size (little-endian uint32).
                if int.from_bytes(view[4:8], "little") != full:
                    raise OSError(f"{self.path}: chunk {j} decompresses to the wrong size")
                blosc.decompress(view, out)
                got = full
        if got != full:
            raise OSError(f"{self.path}: chunk {j} is truncated")
        return out[:n]
