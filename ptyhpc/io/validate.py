"""Validation of raw input files before and during ingest.

Per-file structural checks (file exists, is HDF5, has the datasets and
attributes) are made by the readers (:func:`ptyhpc.io.hdf5_tilt.read_scan_metadata`,
which with :func:`~ptyhpc.io.hdf5_tilt.validate_files` checks a whole series),
raising :class:`~ptyhpc.io.errors.IngestError`. This module holds the checks of
the counts themselves and the checks across the files of one series; it
imports no reader (no import cycle).
Every message starts with ``<file>: <field>:`` so the user can find the culprit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from .errors import IngestError

if TYPE_CHECKING:
    from .hdf5_tilt import ScanMetadata

__all__ = [
    "IngestError",
    "SUPPORTED_DTYPES",
    "check_counts",
    "check_frames_dataset",
    "check_series",
]

#: Raw dtypes the store accepts for ``frames``.
SUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "uint32", "int16", "int32", "float32", "float64")
)

# Relative tolerance when comparing float metadata between files: the values
# are written by the same instrument software, so anything beyond rounding is
# a real difference.
_RTOL = 1e-9
# Angles closer than this (rad) count as duplicates.
_ANGLE_ATOL = 1e-9


def check_frames_dataset(path, data) -> tuple[int, tuple[int, int]]:
    """Shape and dtype of a scan's frames dataset (CXI-like readers: NXptycho, generic HDF5).

    Parameters
    ----------
    path : path-like
        The file, for the message.
    data : h5py.Dataset
        (n, det_y, det_x) or (scan_y, scan_x, det_y, det_x) frames.

    Returns
    -------
    n : int
        Number of frames.
    det_shape : (int, int)

    Raises
    ------
    IngestError
        Not 3D/4D, an empty axis, or a dtype outside :data:`SUPPORTED_DTYPES`.
    """
    if data.ndim not in (3, 4) or 0 in data.shape:
        raise IngestError(f"{path}: {data.name}: expected (n, det_y, det_x) or (scan_y, scan_x, det_y, det_x), "
                          f"got shape {data.shape}")
    if data.dtype not in SUPPORTED_DTYPES:
        raise IngestError(f"{path}: {data.name}: unsupported dtype {data.dtype}")
    return int(np.prod(data.shape[:-2])), tuple(int(v) for v in data.shape[-2:])


def check_counts(path: str | PathLike, counts: np.ndarray, field: str = "entry/data/counts") -> None:
    """Check that counts are finite and non-negative.

    Parameters
    ----------
    path : str or path-like
        File the counts came from (used in the message only).
    counts : ndarray
        Any shape, any supported dtype.
    field : str
        Dataset name used in the message.

    Raises
    ------
    IngestError
        NaN/inf in float data, or negative values (float or signed integer).
    """
    if counts.dtype.kind == "f":
        bad = ~np.isfinite(counts)
        if bad.any():
            raise IngestError(
                f"{path}: {field}: {int(bad.sum())} non-finite value(s) (NaN/inf), "
                f"first at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
            )
    if counts.dtype.kind in "fi" and counts.size:
        low = counts.min()
        if low < 0:
            raise IngestError(f"{path}: {field}: negative value(s) (minimum {low}); counts must be >= 0")


_SHAPES = (("scan_shape", "scan shape"), ("detector_shape", "detector shape"), ("dtype", "dtype"))

# (ScanMetadata attribute, raw attribute name for the message)
_COMPARED = (
    ("beam_energy_eV", "beam_energy_eV"),
    ("convergence_semiangle_rad", "convergence_semiangle_mrad"),
    ("defocus_m", "nominal_defocus_A"),
    ("Cs_m", "Cs_A/Cs_mm"),
    ("reciprocal_sampling_inv_m", "detector_sampling_inv_A"),
    ("scan_origin_m", "scan_origin_A"),
    ("scan_step_m", "scan_step_A"),
    ("dose_e_per_m2", "dose_e_per_A2"),
)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=_RTOL, atol=0.0))


def check_series(metas: Sequence[ScanMetadata]) -> None:
    """Check that the files of one tilt series can go into one store.

    Parameters
    ----------
    metas : sequence of ScanMetadata
        One per file, as returned by :func:`ptyhpc.io.hdf5_tilt.read_scan_metadata`.

    Raises
    ------
    IngestError
        No files; scan shape, detector shape, dtype or any metadata other than
        the tilt angle differing from the first file (floats compared with
        rtol 1e-9); two files with the same tilt angle.
    """
    if len(metas) == 0:
        raise IngestError("no input files given")
    ref = metas[0]
    for m in metas[1:]:
        for attr, field in _SHAPES:
            if getattr(m, attr) != getattr(ref, attr):
                raise IngestError(
                    f"{m.path}: entry/data/counts: {field} {getattr(m, attr)} differs from "
                    f"{getattr(ref, attr)} in {ref.path}"
                )
        for attr, raw_field in _COMPARED:
            if not _close(getattr(m, attr), getattr(ref, attr)):
                raise IngestError(
                    f"{m.path}: entry/instrument/{raw_field}: differs from {ref.path} "
                    f"({attr} {getattr(m, attr)!r} vs {getattr(ref, attr)!r})"
                )
    order = sorted(range(len(metas)), key=lambda k: metas[k].tilt_angle_rad)
    for a, b in zip(order[:-1], order[1:]):
        if abs(metas[b].tilt_angle_rad - metas[a].tilt_angle_rad) <= _ANGLE_ATOL:
            raise IngestError(
                f"{metas[b].path}: entry/instrument/tilt_angle_deg: duplicate angle "
                f"{math.degrees(metas[b].tilt_angle_rad):.9g} deg, also in {metas[a].path}"
            )
