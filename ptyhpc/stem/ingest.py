"""Write 4D-STEM scans (:class:`~ptyhpc.stem.readers.StemScan`) into a store, block by block.

A raster scan is one store item: ``frames[item]`` holds its ``scan_y·scan_x``
frames in raster order (x fastest), the root attribute ``scan_shape`` gives
(scan_y, scan_x); a multi-scan acquisition (tilt or time series) is a
multi-item store with one ``scan_shape``. Layout and attributes:
:mod:`ptyhpc.io.layout` (section 4D-STEM) and docs/stem.md.

Memory: one shard of frames (≤ :data:`SHARD_BYTES`) is read while the previous
one is compressed and written; never the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec, BloscShuffle

from ..io.errors import IngestError
from ..io.layout import (DETECTOR_MASK, FAR_FIELD, GEOMETRY_KEYS, POSITIONS, PROPAGATION_REGIME, SCAN_SHAPE,
                         SCHEMA_VERSION, STEM_ATTRS, TILT_ANGLE)
from ..io.writer import FramesLayout, StorePlan, WholeArray, write_store
from .calibration import Calibration
from .readers import StemScan, read_stem_file, sniff_stem_format

__all__ = ["ingest_stem", "stem_chunking", "raster_positions", "CHUNK_BYTES", "SHARD_BYTES"]

#: Target bytes of one inner chunk and of one shard of ``frames``.
CHUNK_BYTES = 8 << 20
SHARD_BYTES = 128 << 20


def stem_chunking(n_positions: int, det_shape, itemsize: int, chunk_bytes: int = CHUNK_BYTES,
                  shard_bytes: int = SHARD_BYTES) -> tuple[tuple, tuple]:
    """Chunk and shard shapes of a STEM ``frames`` array: ``(1, c, dy, dx)``, ``(1, s, dy, dx)``, s a multiple of c.

    Chunks of about :data:`CHUNK_BYTES` (the unit an analysis block reads),
    shards of about :data:`SHARD_BYTES` (the unit the ingest writes).
    """
    frame = int(np.prod(det_shape)) * itemsize
    c = int(min(n_positions, max(1, chunk_bytes // frame)))
    s = c * int(min(-(-n_positions // c), max(1, shard_bytes // (c * frame))))
    return (1, c, *det_shape), (1, s, *det_shape)


def _check_together(scans: Sequence[StemScan]) -> None:
    ref = scans[0]
    for s in scans[1:]:
        for attr in ("scan_shape", "detector_shape", "dtype"):
            if tuple(np.atleast_1d(getattr(s, attr))) != tuple(np.atleast_1d(getattr(ref, attr))):
                raise IngestError(f"{s.name}: {attr} {getattr(s, attr)} differs from {getattr(ref, attr)} in "
                                  f"{ref.name}; one store holds scans of one shape")
        for key in ("beam_energy_eV", "reciprocal_sampling_inv_m", "scan_step_m", "convergence_semiangle_rad"):
            a, b = getattr(s.calibration, key), getattr(ref.calibration, key)
            if not np.allclose(a, b, rtol=1e-6):
                raise IngestError(f"{s.name}: {key} {a} differs from {b} in {ref.name}")


def ingest_stem(files: Sequence[str | PathLike], store_path: str | PathLike, *, fmt: str = "auto",
                calibration: Calibration | None = None, overwrite: bool = False, progress: bool = True,
                chunk_bytes: int = CHUNK_BYTES, shard_bytes: int = SHARD_BYTES, compress: bool = True) -> Path:
    """Read 4D-STEM files (one scan each) and write them into a new store.

    Parameters
    ----------
    files : sequence of path-like
        One scan per file (``.mib``, EMPAD ``.xml``, ARINA ``*_master.h5``); several
        files make a multi-item store, items in file order unless the calibration
        gives ``tilt_angles_rad`` (then sorted by angle).
    store_path : path-like
    fmt : {"auto", "mib", "empad", "arina"}
        ``auto``: from each file's content (:func:`~ptyhpc.stem.readers.sniff_stem_format`).
    calibration : Calibration, optional
        What the files lack (:mod:`ptyhpc.stem.calibration`); the user's values win.
    overwrite, progress : bool
    chunk_bytes, shard_bytes : int
        Target sizes of a chunk and a shard of ``frames`` (:func:`stem_chunking`).
    compress : bool
        Blosc lz4 + bitshuffle on ``frames`` (default). False stores them raw:
        more disk, no decompression on every analysis pass (docs/stem.md).

    Returns
    -------
    Path

    Raises
    ------
    IngestError
        Unknown format, reader errors (truncated file, mismatched scan shape),
        missing or implausible calibration, scans that cannot share a store,
        negative or non-finite counts (found while copying; nothing is left at
        ``store_path``), store exists without ``overwrite``.
    """
    store_path = Path(store_path)
    files = [Path(f) for f in files]
    if not files:
        raise IngestError("no input files given")
    if (store_path.exists() or store_path.is_symlink()) and not overwrite:
        raise IngestError(f"{store_path}: store already exists; pass overwrite=True (--overwrite) to replace it")
    scans = _read_scans(files, fmt, calibration or Calibration())
    ref = scans[0]
    cal = ref.calibration
    sy, sx = ref.scan_shape
    n, n_pos, det = len(scans), ref.n_positions, tuple(ref.detector_shape)
    step = tuple(float(v) for v in cal.scan_step_m)
    pos = raster_positions(n_pos, sx, step)
    geometry = _geometry(cal, pos, sx, step)
    chunks, shards = stem_chunking(n_pos, det, ref.dtype.itemsize, chunk_bytes, shard_bytes)
    attrs = {
        "ptyhpc_schema": SCHEMA_VERSION, "kind": "tilt_series", "radiation": "electron",
        "geometry": geometry, "source_files": [str(s.path.resolve()) for s in scans],
        "source_format": ref.source_format, "source_fields": [s.fields for s in scans],
        PROPAGATION_REGIME: FAR_FIELD, "preprocessing": {}, SCAN_SHAPE: [int(sy), int(sx)],
    }
    arrays = [
        WholeArray(POSITIONS, np.broadcast_to(pos, (n, n_pos, 2)).copy(), (n, n_pos, 2),
                   {"axes": ["y", "x"], "units": "m"}, ("item", "position", "axis"), compressors="auto"),
        WholeArray(TILT_ANGLE, np.array([s.tilt_angle_rad for s in scans]), (n,), {"units": "rad", "axis": "y"},
                   ("item",), compressors="auto"),
        WholeArray(DETECTOR_MASK, np.ones(det, bool), det, None, ("det_y", "det_x"), compressors="auto"),
    ]
    totals = np.zeros(n)

    def add_total(block, data):
        totals[block[0]] += float(data.sum(dtype=np.float64))

    def finish() -> dict:
        dose = (totals / cal.counts_per_electron / (n_pos * step[0] * step[1])).tolist()
        return {"geometry": {**geometry, "dose_e_per_m2": dose[0]}, STEM_ATTRS: {
            "scan_step_m": list(step), "scan_rotation_rad": cal.scan_rotation_rad,
            "detector_transpose": cal.detector_transpose, "counts_per_electron": cal.counts_per_electron,
            "dose_e_per_m2": dose, "calibration_fields": [s.fields for s in scans]}}

    compressors = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle) if compress else None
    plan = StorePlan(attrs=attrs, arrays=arrays, label="ingest 4D-STEM",
                     blocks=[(k, a, min(a + shards[1], n_pos)) for k in range(n) for a in range(0, n_pos, shards[1])],
                     frames=FramesLayout((n, n_pos, *det), ref.dtype, chunks, shards, compressors),
                     load=lambda block: _checked_block(scans[block[0]], block, det), check=add_total, finish=finish)
    return write_store(store_path, plan, overwrite=overwrite, progress=progress)


def _checked_block(scan: StemScan, block, det) -> np.ndarray:
    """Frames ``block`` = (item, start, stop) of ``scan``, checked (shape, finite, ≥ 0; EMPAD's noise clipped)."""
    _, a, z = block
    data = scan.read_block(a, z)
    if data.shape != (z - a, *det):
        raise IngestError(f"{scan.name}: frames {a}:{z}: read shape {data.shape}, expected "
                          f"{(z - a, *det)} (file changed or truncated while reading)")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise IngestError(f"{scan.name}: frames {a}:{z}: NaN or inf counts")
    if data.dtype.kind in "fi" and (data < 0).any():
        # EMPAD frames are background-subtracted floats: clip the small negative noise, as recorded.
        if scan.source_format != "empad":
            raise IngestError(f"{scan.name}: frames {a}:{z}: negative counts")
        np.maximum(data, 0, out=data)
    return data


def raster_positions(n_positions: int, scan_x: int, step_m) -> np.ndarray:
    """Probe positions (n, 2) float64 (y, x), m, of a raster scan in raster order (x fastest), origin 0."""
    iy, ix = np.divmod(np.arange(n_positions), scan_x)
    return np.stack([iy * step_m[0], ix * step_m[1]], axis=1).astype(np.float64)


def _read_scans(files: list[Path], fmt: str, calibration: Calibration) -> list[StemScan]:
    """Every file read (format by sniffing for ``auto``), calibrated, checked together, in item order."""
    angles = calibration.tilt_angles_rad
    if angles is not None and len(angles) != len(files):
        raise IngestError(f"calibration tilt_angles_rad: {len(angles)} angles for {len(files)} files")
    scans = []
    for k, f in enumerate(files):
        kind = fmt
        if fmt == "auto":
            kind = sniff_stem_format(f)
            if kind is None:
                raise IngestError(f"{f}: not a recognised 4D-STEM file (MIB, EMPAD XML, ARINA master); "
                                  "name it with --format mib|empad|arina")
        scan = read_stem_file(f, kind, calibration)
        scan.calibration.require(str(f))
        scan.tilt_angle_rad = 0.0 if angles is None else float(angles[k])
        scans.append(scan)
    _check_together(scans)
    if angles is not None:
        scans.sort(key=lambda s: s.tilt_angle_rad)
    return scans


def _geometry(cal: Calibration, pos: np.ndarray, scan_x: int, step: tuple) -> dict:
    """The root ``geometry`` (:data:`~ptyhpc.io.layout.GEOMETRY_KEYS`); the dose is added once the frames are summed."""
    from ..io.scan import estimate_scan_step  # noqa: PLC0415
    from ..physics.wavelength import electron_wavelength  # noqa: PLC0415

    n_pos = len(pos)
    geometry = {
        "beam_energy_eV": float(cal.beam_energy_eV),
        "wavelength_m": float(electron_wavelength(cal.beam_energy_eV)),
        "convergence_semiangle_rad": float(cal.convergence_semiangle_rad),
        "defocus_m": None if cal.defocus_m is None else float(cal.defocus_m),
        "Cs_m": 0.0,
        "reciprocal_sampling_inv_m": [float(v) for v in cal.reciprocal_sampling_inv_m],
        "scan_step_m": estimate_scan_step(pos[: min(n_pos, 4 * scan_x)]) if n_pos > 1 else step[0],
        "scan_origin_m": [0.0, 0.0],
        "dose_e_per_m2": None,
    }
    assert tuple(geometry) == GEOMETRY_KEYS
    return geometry
