"""Ingest a tilt series of raw HDF5 files (:mod:`ptyhpc.io.hdf5_tilt`) into a ptyhpc zarr v3 store."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec, BloscShuffle

from .checksum import FRAMES_CONFIG, checked
from .errors import IngestError
from .hdf5_tilt import ScanMetadata, read_counts, scan_positions, validate_files
from .layout import GEOMETRY_KEYS, POSITIONS, SCHEMA_VERSION, TILT_ANGLE
from .plausible import check_angles, check_store_geometry, warn_fractional_counts
from .safe_write import check_target
from .writer import (MAX_POSITIONS_PER_CHUNK, FramesLayout, StorePlan, WholeArray, commit_store, frames_chunking,
                     item_blocks, partial_path, read_ahead, write_store)

__all__ = ["ingest", "geometry_from_metadata", "frames_chunking", "partial_path", "commit_store", "read_ahead",
           "MAX_POSITIONS_PER_CHUNK", "frames_codecs"]

#: Raw fields of the per-angle files, named in plausibility messages.
_FIELDS = {"energy": "entry/instrument/beam_energy_eV",
           "probe_semiangle": "entry/instrument/convergence_semiangle_mrad",
           "positions": "entry/instrument/scan_step_A"}


def frames_codecs() -> list:
    """Codecs of ``frames`` in tilt-series and energy-stack stores: Blosc zstd, bit shuffle, crc32c checksum."""
    return checked(BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.bitshuffle))


def geometry_from_metadata(meta: ScanMetadata) -> dict:
    """The store's ``geometry`` attribute (keys :data:`~ptyhpc.io.layout.GEOMETRY_KEYS`, SI, JSON types)."""
    from ptyhpc.physics.wavelength import electron_wavelength  # noqa: PLC0415  (keep reading independent of physics)

    geometry = {
        "beam_energy_eV": float(meta.beam_energy_eV),
        "wavelength_m": float(electron_wavelength(meta.beam_energy_eV)),
        "convergence_semiangle_rad": float(meta.convergence_semiangle_rad),
        "defocus_m": float(meta.defocus_m),
        "Cs_m": float(meta.Cs_m),
        "reciprocal_sampling_inv_m": [float(v) for v in meta.reciprocal_sampling_inv_m],
        "scan_step_m": float(meta.scan_step_m),
        "scan_origin_m": [float(v) for v in meta.scan_origin_m],
        "dose_e_per_m2": None if meta.dose_e_per_m2 is None else float(meta.dose_e_per_m2),
    }
    assert tuple(geometry) == GEOMETRY_KEYS
    return geometry


def ingest(
    files: Iterable[str | PathLike],
    store_path: str | PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Validate raw per-angle HDF5 files and write them into a new zarr v3 store.

    All files' metadata are checked before anything is written; the store is
    written by :func:`ptyhpc.io.writer.write_store` (built aside, renamed into
    place once complete), so a failure never leaves a store that looks usable.

    Parameters
    ----------
    files : iterable of path-like
        One HDF5 file per tilt angle (format of :mod:`ptyhpc.io.hdf5_tilt`), any order.
    store_path : path-like
        Directory of the store to create.
    overwrite : bool
        Replace an existing ``store_path`` (only after the new store is complete).
    progress : bool
        Show a rich progress bar over files.

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        ``store_path`` exists and ``overwrite`` is False; no files; any
        problem found by :func:`~ptyhpc.io.hdf5_tilt.validate_files` or, while
        copying, by :func:`~ptyhpc.io.hdf5_tilt.read_counts` (NaN/inf,
        negative counts, file changed since validation).

    Notes
    -----
    Store contents (names from :mod:`ptyhpc.io.layout`), items sorted by
    increasing tilt angle:

    - ``frames`` (n_items, n_positions, det_y, det_x), raw dtype, Blosc zstd
      with bit shuffle, chunks/shards from :func:`~ptyhpc.io.writer.frames_chunking`.
    - ``positions`` (n_items, n_positions, 2) float64 m, attribute ``axes = ["y", "x"]``.
    - ``tilt_angle`` (n_items,) float64 rad.
    - root attributes ``ptyhpc_schema``, ``kind``, ``radiation``, ``geometry``,
      ``source_files``, ``ingest_complete``.
    """
    files = [Path(f) for f in files]
    store_path = Path(store_path)
    check_target(store_path, overwrite, files)   # safe overwrite: only a ptyhpc store, never an input
    if not files:
        raise IngestError("no input files given")

    metas = sorted(validate_files(files), key=lambda m: m.tilt_angle_rad)
    ref = metas[0]
    n, n_pos = len(metas), ref.n_positions
    # Plausibility at the door (io/plausible): errors for the impossible, warnings for the unusual.
    check_store_geometry(ref.path, "electron", geometry_from_metadata(ref), scan_positions(ref), fields=_FIELDS)
    check_angles([m.tilt_angle_rad for m in metas], [m.path for m in metas])
    chunks, shards = frames_chunking(n_pos, ref.detector_shape)
    attrs = {"ptyhpc_schema": SCHEMA_VERSION, "kind": "tilt_series", "radiation": "electron",
             "geometry": geometry_from_metadata(ref), "source_files": [str(m.path.resolve()) for m in metas]}
    arrays = [
        WholeArray(POSITIONS, np.stack([scan_positions(m) for m in metas]), (n, n_pos, 2),
                   {"axes": ["y", "x"], "units": "m"}, ("item", "position", "axis")),
        WholeArray(TILT_ANGLE, np.array([m.tilt_angle_rad for m in metas], dtype=np.float64), (n,),
                   {"units": "rad", "axis": ref.tilt_axis}, ("item",)),
    ]

    def check(block, counts):
        meta = metas[block[0]]
        if counts.shape != (n_pos, *ref.detector_shape) or counts.dtype != ref.dtype:
            raise IngestError(f"{meta.path}: entry/data/counts: changed since validation")
        if block[0] == 0:
            warn_fractional_counts(meta.path, counts, "entry/data/counts")

    plan = StorePlan(attrs=attrs, arrays=arrays, blocks=item_blocks(n, n_pos),
                     frames=FramesLayout((n, n_pos, *ref.detector_shape), ref.dtype, chunks, shards, frames_codecs(),
                                         FRAMES_CONFIG),
                     load=lambda block: read_counts(metas[block[0]].path), check=check)
    return write_store(store_path, plan, overwrite=overwrite, progress=progress)
