"""Ingest a tilt series of raw HDF5 files into a ptyhpc zarr v3 store."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np
import zarr
from rich.progress import Progress
from zarr.codecs import BloscCodec, BloscShuffle

from .checksum import FRAMES_CONFIG, checked, result_codecs
from .hdf5_tilt import ScanMetadata, read_counts, scan_positions
from .layout import FRAMES, GEOMETRY_KEYS, POSITIONS, SCHEMA_VERSION, TILT_ANGLE
from .plausible import check_angles, check_store_geometry, warn_fractional_counts
from .safe_write import check_target
from .validate import IngestError, validate_files

__all__ = ["ingest", "geometry_from_metadata", "frames_chunking", "partial_path", "commit_store"]

#: Raw fields of the per-angle files, named in plausibility messages.
_FIELDS = {"energy": "entry/instrument/beam_energy_eV",
           "probe_semiangle": "entry/instrument/convergence_semiangle_mrad",
           "positions": "entry/instrument/scan_step_A"}

#: Upper bound on positions per inner chunk of ``frames``.
MAX_POSITIONS_PER_CHUNK = 64


def frames_chunking(n_positions: int, det_shape: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and shard shapes of ``frames``.

    One shard per item; inner chunks of a block of positions with full frames.
    Zarr requires the shard to be a whole number of chunks, so the block is
    the largest divisor of ``n_positions`` not above
    :data:`MAX_POSITIONS_PER_CHUNK` (50 for a 20 x 20 scan).

    Returns
    -------
    chunks, shards : tuple of int
        ``(1, block, det_y, det_x)`` and ``(1, n_positions, det_y, det_x)``.
    """
    block = max(d for d in range(1, min(n_positions, MAX_POSITIONS_PER_CHUNK) + 1) if n_positions % d == 0)
    return (1, block, *det_shape), (1, n_positions, *det_shape)


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ingest(
    files: Iterable[str | PathLike],
    store_path: str | PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Validate raw per-angle HDF5 files and write them into a new zarr v3 store.

    All files' metadata are checked before anything is written. The store is
    built in a sibling directory ``<store>.partial-<pid>`` and renamed to
    ``store_path`` only once complete (``ingest_complete = True``), so a
    failure never leaves a store that looks usable.

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
        problem found by :func:`~ptyhpc.io.validate.validate_files` or, while
        copying, by :func:`~ptyhpc.io.hdf5_tilt.read_counts` (NaN/inf,
        negative counts, file changed since validation).

    Notes
    -----
    Store contents (names from :mod:`ptyhpc.io.layout`), items sorted by
    increasing tilt angle:

    - ``frames`` (n_items, n_positions, det_y, det_x), raw dtype, Blosc zstd
      with bit shuffle, chunks/shards from :func:`frames_chunking`.
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

    store_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(store_path)
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs.update(
            {
                "ptyhpc_schema": SCHEMA_VERSION,
                "kind": "tilt_series",
                "radiation": "electron",
                "geometry": geometry_from_metadata(ref),
                "source_files": [str(m.path.resolve()) for m in metas],
            }
        )
        frames = root.create_array(
            FRAMES,
            shape=(n, n_pos, *ref.detector_shape),
            dtype=ref.dtype,
            chunks=chunks,
            shards=shards,
            compressors=checked(BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.bitshuffle)),
            config=FRAMES_CONFIG,
            fill_value=0,
            dimension_names=("item", "position", "det_y", "det_x"),
        )
        root.create_array(
            POSITIONS,
            compressors=result_codecs(), data=np.stack([scan_positions(m) for m in metas]),
            chunks=(n, n_pos, 2),
            attributes={"axes": ["y", "x"], "units": "m"},
            dimension_names=("item", "position", "axis"),
        )
        root.create_array(
            TILT_ANGLE,
            compressors=result_codecs(), data=np.array([m.tilt_angle_rad for m in metas], dtype=np.float64),
            chunks=(n,),
            attributes={"units": "rad", "axis": ref.tilt_axis},
            dimension_names=("item",),
        )

        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task("ingest", total=n)
            for k, (meta, counts) in enumerate(zip(metas, read_ahead(lambda m: read_counts(m.path), metas))):
                bar.update(task, description=f"ingest {meta.path.name}")
                if counts.shape != (n_pos, *ref.detector_shape) or counts.dtype != ref.dtype:
                    raise IngestError(f"{meta.path}: entry/data/counts: changed since validation")
                if k == 0:
                    warn_fractional_counts(meta.path, counts, "entry/data/counts")
                frames[k] = counts
                bar.advance(task)

        root.attrs["ingest_complete"] = True
        commit_store(tmp, store_path, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    return store_path


def read_ahead(load, items):
    """Yield ``load(item)`` for each of ``items`` in order, loading the next one in a thread meanwhile.

    Ingest reads item k+1 while item k is compressed and written: h5py and Blosc release the GIL,
    and the copy becomes write-bound.
    """
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(load, items[0]) if len(items) else None
        for k in range(len(items)):
            result = pending.result()
            if k + 1 < len(items):
                pending = reader.submit(load, items[k + 1])
            yield result


def partial_path(store_path: Path) -> Path:
    """The sibling folder a store is built in before :func:`commit_store` renames it into place.

    Any leftover of an earlier crashed run of a process with the same pid is removed, and so are the
    build folders of killed ingests of the same store (:func:`ptyhpc.io.safe_write.clean_stale_for`).
    """
    from .safe_write import clean_stale_for  # noqa: PLC0415

    clean_stale_for(store_path)
    tmp = store_path.with_name(f"{store_path.name}.partial-{os.getpid()}")
    _remove(tmp)
    return tmp


def commit_store(tmp: Path, store_path: Path, overwrite: bool) -> None:
    """Rename the complete store ``tmp`` to ``store_path`` (the last step of every ingest).

    :func:`ptyhpc.io.safe_write.replace_store`: with ``overwrite`` the old
    store is moved aside under its run lock and deleted only once the new one
    is in place; without it a store created meanwhile by another ingest is kept.
    """
    from .safe_write import replace_store  # noqa: PLC0415

    replace_store(tmp, store_path, overwrite)
