"""Checksummed arrays and cheap presence checks of chunks.

Every array ptyhpc writes carries the zarr v3 ``crc32c`` codec as its last
bytes-to-bytes codec (:func:`checked`): zarr verifies it whenever a chunk is
decoded and raises ``ValueError("Stored and computed checksum do not match")``
on damaged bytes, so a flipped or overwritten chunk is never decoded into
values. Sharded arrays (``frames``) get it on every inner chunk; their shard
index has its own crc32c. Stores written before checksums existed have no
such codec and still read (their damage is found only when it breaks the
decompressor).

A deleted chunk is not an error to zarr: it reads as the fill value. The
stages therefore check that the chunks of the items they consume exist
(:func:`missing_item_chunks`, one ``stat`` per chunk), and ``ptyhpc verify``
(:mod:`ptyhpc.io.verify`) checks everything.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

__all__ = ["FRAMES_CONFIG", "checked", "result_codecs", "has_checksum", "storage_chunks", "chunk_path",
           "item_chunk_keys",
           "missing_item_chunks", "is_checksum_error"]


#: Array config of ``frames`` at ingest: every item's shard is written, an all-zero one too, so that a
#: shard missing from the store is always damage (and an item without counts is named as such).
FRAMES_CONFIG = {"write_empty_chunks": True}


def checked(*compressors) -> tuple:
    """``compressors`` followed by the crc32c checksum codec, for ``create_array(compressors=...)``."""
    return (*compressors, Crc32cCodec())


def result_codecs() -> tuple:
    """Codecs of result arrays: Zstandard (level 3) and crc32c."""
    return checked(ZstdCodec(level=3))


def has_checksum(arr: zarr.Array) -> bool:
    """True when the array's chunks (inner chunks of a sharded array) carry a crc32c checksum."""
    codecs = list(arr.metadata.codecs)
    inner = getattr(codecs[0], "codecs", None) if codecs else None
    return any(isinstance(c, Crc32cCodec) for c in (inner if inner is not None else codecs))


def storage_chunks(arr: zarr.Array) -> tuple[int, ...]:
    """Shape of one stored object (the shard of a sharded array, else the chunk)."""
    return tuple(arr.shards) if arr.shards is not None else tuple(arr.chunks)


def _root_path(arr: zarr.Array) -> Path:
    return Path(str(arr.store).removeprefix("file://"))


def chunk_path(arr: zarr.Array, coords: tuple[int, ...]) -> Path:
    """File of the stored chunk (or shard) at grid ``coords`` of a local store."""
    return _root_path(arr) / arr.path / arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def item_chunk_keys(arr: zarr.Array, item: int) -> list[tuple[int, ...]]:
    """Grid coordinates of every stored chunk holding item ``item`` (axis 0 is the item axis)."""
    size = storage_chunks(arr)
    grid = [-(-int(n) // int(c)) for n, c in zip(arr.shape, size)]
    return [(int(item) // size[0], *rest) for rest in itertools.product(*[range(g) for g in grid[1:]])]


def missing_item_chunks(arr: zarr.Array, item: int) -> list[str]:
    """Stored chunks of item ``item`` that are absent from the store (they would read as the fill value).

    Returns
    -------
    list of str
        ``"<array>/<chunk key>"`` of each missing chunk; empty when all exist.
    """
    return [f"{arr.path}/{arr.metadata.encode_chunk_key(k)}" for k in item_chunk_keys(arr, item)
            if not chunk_path(arr, k).exists()]


def is_checksum_error(exc: BaseException) -> bool:
    """True for zarr's crc32c mismatch."""
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()
