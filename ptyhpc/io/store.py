"""Opening and reading a ptyhpc zarr v3 store; result arrays for the pipeline.

The layout and names are in :mod:`ptyhpc.io.layout`.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np
import zarr

from .checksum import result_codecs
from .layout import (DETECTOR_DISTANCE, DETECTOR_MASK, FOCUS_TO_SAMPLE, FRAMES, GEOMETRY_KEYS, POSITIONS,
                     PROPAGATION_REGIME, SCHEMA_VERSION, TILT_ANGLE, check_propagation)

__all__ = ["StoreError", "open_store", "read_geometry", "read_propagation", "n_items", "read_item", "read_mask",
           "require_result_array"]


class StoreError(ValueError):
    """The store is missing, not a ptyhpc store, incomplete, or inconsistent with a request."""


def open_store(path: str | PathLike, mode: str = "r") -> zarr.Group:
    """Open a complete ptyhpc store.

    Parameters
    ----------
    path : str or path-like
        Store directory written by :func:`ptyhpc.io.ingest`.
    mode : {"r", "r+", "a"}
        ``"r"`` read only; ``"r+"`` / ``"a"`` also allow writing results.
        Modes that would erase the store (``"w"``, ``"w-"``) are refused.

    Returns
    -------
    zarr.Group
        The root group.

    Raises
    ------
    StoreError
        Path missing or not a zarr v3 group; no ``ptyhpc_schema`` attribute
        (not a ptyhpc store); unknown schema version; ``ingest_complete``
        missing or false; a required array missing.
    ValueError
        Unsupported ``mode``.
    """
    if mode not in ("r", "r+", "a"):
        raise ValueError(f"mode must be 'r', 'r+' or 'a', got {mode!r}")
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        group = zarr.open_group(path, mode=mode, zarr_format=3)
    except Exception as err:  # zarr raises several types for "not a group"
        raise StoreError(f"{path}: not a zarr v3 group ({type(err).__name__}: {err})") from err
    attrs = group.attrs
    if "ptyhpc_schema" not in attrs:
        raise StoreError(f"{path}: not a ptyhpc store (no 'ptyhpc_schema' attribute)")
    if attrs["ptyhpc_schema"] != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: unknown store schema version {attrs['ptyhpc_schema']!r} "
            f"(this ptyhpc reads version {SCHEMA_VERSION})"
        )
    if attrs.get("ingest_complete") is not True:
        raise StoreError(f"{path}: incomplete ingest; re-run ptyhpc ingest")
    for name in (FRAMES, POSITIONS, TILT_ANGLE):
        if not isinstance(group.get(name), zarr.Array):
            raise StoreError(f"{path}: array {name!r} missing")
    return group


def open_results_store(path: str | Path, mode: str = "r+") -> zarr.Group:
    """Open a store for a stage that reads only earlier results (the tomography stage).

    A store that says it is a ptyhpc store (``ptyhpc_schema``) gets every check of
    :func:`open_store`; a zarr v3 group without that attribute (results written by
    another program, with the arrays the stage needs) is opened as it is.

    Raises
    ------
    StoreError
        As :func:`open_store`: path missing, not a zarr v3 group, unknown schema
        version, incomplete ingest.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        attrs = zarr.open_group(path, mode="r", zarr_format=3).attrs
    except Exception as err:  # zarr raises several types for "not a group"
        raise StoreError(f"{path}: not a zarr v3 group ({type(err).__name__}: {err})") from err
    if "ptyhpc_schema" in attrs:
        return open_store(path, mode=mode)
    return zarr.open_group(path, mode=mode, zarr_format=3)

def _where(group: zarr.Group) -> str:
    return str(group.store).removeprefix("file://")


def read_geometry(group: zarr.Group) -> dict:
    """The ``geometry`` root attribute.

    Returns
    -------
    dict
        Keys :data:`ptyhpc.io.layout.GEOMETRY_KEYS`, SI values (floats, lists
        of floats, ``dose_e_per_m2`` possibly None).

    Raises
    ------
    StoreError
        Attribute or one of its keys missing.
    """
    geometry = group.attrs.get("geometry")
    if not isinstance(geometry, dict):
        raise StoreError(f"{_where(group)}: root attribute 'geometry' missing")
    missing = [k for k in GEOMETRY_KEYS if k not in geometry]
    if missing:
        raise StoreError(f"{_where(group)}: geometry: missing key(s) {missing}")
    return dict(geometry)


def read_propagation(group: zarr.Group) -> dict:
    """The propagation regime of a store (:data:`ptyhpc.io.layout.PROPAGATION_REGIME` and friends).

    Returns
    -------
    dict
        ``regime`` (``"far_field"`` when the store has no such attribute: every
        store written before it existed is far field), ``focus_to_sample_m``
        (float or None: parallel beam), ``detector_distance_m`` (float, m, or
        None when the store has none, e.g. the per-item HDF5 ingests).

    Raises
    ------
    StoreError
        Unknown regime, or distances that are not finite and > 0 (message of
        :func:`ptyhpc.io.layout.check_propagation`, with the store's path).
    """
    attrs = group.attrs
    z2 = attrs.get(DETECTOR_DISTANCE)
    try:
        regime, z1 = check_propagation(attrs.get(PROPAGATION_REGIME), attrs.get(FOCUS_TO_SAMPLE), z2)
    except ValueError as exc:
        raise StoreError(f"{_where(group)}: {exc}") from None
    return {"regime": regime, "focus_to_sample_m": z1, "detector_distance_m": None if z2 is None else float(z2)}


def n_items(group: zarr.Group) -> int:
    """Number of items (tilt angles) in the store."""
    return int(group[FRAMES].shape[0])


def read_item(group: zarr.Group, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames and positions of item ``i``.

    Parameters
    ----------
    group : zarr.Group
        From :func:`open_store`.
    i : int
        Item index, 0 <= i < n_items (items are in increasing tilt angle).

    Returns
    -------
    frames : ndarray, shape (n_positions, det_y, det_x), float32
        Centred diffraction patterns (raw counts converted to float32).
    positions : ndarray, shape (n_positions, 2), float64, m
        (y, x) probe positions in the scan frame.

    Raises
    ------
    IndexError
        ``i`` out of range.
    StoreError
        A damaged chunk (checksum mismatch, undecodable bytes).
    """
    n = n_items(group)
    if not 0 <= i < n:
        raise IndexError(f"item {i} out of range; the store has {n} items")
    try:
        frames = np.asarray(group[FRAMES][i], dtype=np.float32)
        positions = np.asarray(group[POSITIONS][i], dtype=np.float64)
    except ValueError as exc:   # crc32c mismatch or undecodable bytes: never read damaged data as counts
        raise StoreError(f"{_where(group)}: item {i}: {FRAMES}/{POSITIONS}: damaged chunk ({exc}); run "
                         "ptyhpc verify, re-ingest from the source files") from exc
    return frames, positions


def read_mask(group: zarr.Group) -> np.ndarray | None:
    """The store's detector mask, for ``reconstruct(mask=...)``.

    Returns
    -------
    ndarray of bool, (det_y, det_x), or None
        True where a pixel is measured; None when the store has no
        ``detector_mask`` (stores written before it existed) or every pixel is measured.
    """
    arr = group.get(DETECTOR_MASK)
    if not isinstance(arr, zarr.Array):
        return None
    mask = np.asarray(arr[...], dtype=bool)
    return None if mask.all() else mask


def _json_normal(value):
    # Attributes come back from JSON (tuples as lists), so compare in that form.
    return json.loads(json.dumps(value))


def require_result_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
    fill_value=0,
    attrs: dict | None = None,
) -> zarr.Array:
    """Create a result array, or return the existing one when it matches.

    Used so that a rerun of a stage resumes into the arrays of the previous run.

    Parameters
    ----------
    group : zarr.Group
        Root group opened writable (``open_store(path, "r+")``).
    name : str
        Path below the root, e.g. :data:`ptyhpc.io.layout.PTYCHO_OBJECT`;
        parent groups are created as needed.
    shape : tuple of int
    dtype : numpy dtype-like
    chunks : tuple of int
        Chunk shape (inner chunk shape when ``shards`` is given).
    shards : tuple of int, optional
        Shard shape, a multiple of ``chunks``.
    fill_value : scalar
        Value of unwritten elements.
    attrs : dict, optional
        JSON-serialisable attributes, written on creation. When the array
        already exists the given attributes must equal the stored ones.

    Returns
    -------
    zarr.Array

    Raises
    ------
    StoreError
        ``name`` exists but is a group, or an array with another shape or
        dtype, or with other values for the given ``attrs``.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    parent_path, _, leaf = name.strip("/").rpartition("/")
    parent = group.require_group(parent_path) if parent_path else group
    existing = parent.get(leaf)
    if existing is None:
        return parent.create_array(
            leaf,
            shape=shape,
            dtype=dtype,
            chunks=tuple(chunks),
            shards=None if shards is None else tuple(shards),
            fill_value=fill_value,
            attributes=_json_normal(attrs or {}),
            compressors=result_codecs(),   # crc32c: damaged chunks raise on read instead of decoding
        )
    where = f"{_where(group)}: {name}"
    if not isinstance(existing, zarr.Array):
        raise StoreError(f"{where}: exists and is a group, expected an array")
    if tuple(existing.shape) != shape or np.dtype(existing.dtype) != dtype:
        raise StoreError(
            f"{where}: exists with shape {tuple(existing.shape)} dtype {existing.dtype}, "
            f"requested shape {shape} dtype {dtype}; delete it or use another store"
        )
    for key, value in (attrs or {}).items():
        stored = existing.attrs.get(key)
        if stored != _json_normal(value):
            raise StoreError(
                f"{where}: attribute {key!r} is {stored!r} in the store, requested {value!r}; "
                "the existing result was made with other settings; delete it or use another store"
            )
    return existing
