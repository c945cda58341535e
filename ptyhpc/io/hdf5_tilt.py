"""Reader for per-angle 4D-STEM HDF5 files (the CNT tilt-series format).

One file per tilt angle::

    entry/data/counts      (scan_y, scan_x, ky, kx), counts, zero frequency at (ky//2, kx//2)
    entry/instrument       attributes
        beam_energy_eV              float
        convergence_semiangle_mrad  float
        nominal_defocus_A           float (abTEM convention: C10 = -defocus)
        detector_sampling_inv_A     (dky, dkx), 1/Å per detector pixel
        scan_origin_A               (y, x), Å
        scan_step_A                 float, Å
        tilt_angle_deg              float, rotation about ``tilt_axis``
        tilt_axis                   "y" (the only axis supported)
        dose_e_per_A2               float, optional
        Cs_A or Cs_mm               float, optional (0 when absent)

Everything is converted to SI (eV, m, rad, 1/m, e/m²) on reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters facility files use)
import numpy as np

from .errors import IngestError
from .validate import SUPPORTED_DTYPES, check_counts, check_series

__all__ = ["ScanMetadata", "read_scan_metadata", "read_counts", "scan_positions", "read_number", "validate_files"]

COUNTS = "entry/data/counts"
INSTRUMENT = "entry/instrument"

_ANGSTROM = 1e-10


@dataclass(frozen=True)
class ScanMetadata:
    """Metadata of one raw scan, in SI units.

    Attributes
    ----------
    path : Path
        File it was read from.
    beam_energy_eV : float
        Beam energy, eV.
    convergence_semiangle_rad : float
        Probe-forming aperture semi-angle, rad.
    defocus_m : float
        Nominal defocus, m (C10 = -defocus).
    Cs_m : float
        Spherical aberration C30, m (0 when the file gives none).
    reciprocal_sampling_inv_m : tuple of float
        (dky, dkx), 1/m per detector pixel.
    scan_origin_m : tuple of float
        (y, x) of raster point (0, 0), m.
    scan_step_m : float
        Raster step, m (same in y and x).
    tilt_angle_rad : float
        Tilt angle about ``tilt_axis``, rad.
    tilt_axis : str
        ``"y"``.
    dose_e_per_m2 : float or None
        Dose, electrons per m², None when the file gives none.
    scan_shape : tuple of int
        (scan_y, scan_x).
    detector_shape : tuple of int
        (det_y, det_x).
    dtype : numpy.dtype
        Raw dtype of the counts.
    """

    path: Path
    beam_energy_eV: float
    convergence_semiangle_rad: float
    defocus_m: float
    Cs_m: float
    reciprocal_sampling_inv_m: tuple[float, float]
    scan_origin_m: tuple[float, float]
    scan_step_m: float
    tilt_angle_rad: float
    tilt_axis: str
    dose_e_per_m2: float | None
    scan_shape: tuple[int, int]
    detector_shape: tuple[int, int]
    dtype: np.dtype

    @property
    def n_positions(self) -> int:
        """Number of probe positions, scan_y * scan_x."""
        return self.scan_shape[0] * self.scan_shape[1]


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise IngestError(f"{path}: cannot open as HDF5 ({err})") from err


def _counts_dataset(path: Path, f: h5py.File) -> h5py.Dataset:
    obj = f.get(COUNTS)
    if obj is None:
        raise IngestError(f"{path}: {COUNTS}: missing dataset")
    if not isinstance(obj, h5py.Dataset):
        raise IngestError(f"{path}: {COUNTS}: is a group, expected a dataset")
    if obj.ndim != 4:
        raise IngestError(f"{path}: {COUNTS}: expected 4D (scan_y, scan_x, ky, kx), got shape {obj.shape}")
    if obj.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise IngestError(f"{path}: {COUNTS}: unsupported dtype {obj.dtype} (supported: {names})")
    if 0 in obj.shape:
        raise IngestError(f"{path}: {COUNTS}: empty, shape {obj.shape}")
    return obj


def read_number(path: Path, attrs, name: str, *, size: int = 1, positive: bool = False, required: bool = True):
    """Attribute ``name`` as a float (size 1) or tuple of floats, checked finite."""
    field = f"{path}: {INSTRUMENT}/{name}"
    if name not in attrs:
        if required:
            raise IngestError(f"{field}: missing")
        return None
    try:
        value = np.asarray(attrs[name], dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise IngestError(f"{field}: not a number ({attrs[name]!r})") from err
    if value.size != size:
        raise IngestError(f"{field}: expected {size} value(s), got {value.size}")
    if not np.all(np.isfinite(value)):
        raise IngestError(f"{field}: not finite ({value.tolist()})")
    if positive and not np.all(value > 0):
        raise IngestError(f"{field}: must be > 0, got {value.tolist()}")
    return float(value[0]) if size == 1 else tuple(float(v) for v in value)


def read_scan_metadata(path: str | PathLike) -> ScanMetadata:
    """Read and check the metadata of one raw file, without reading the counts.

    Parameters
    ----------
    path : str or path-like
        HDF5 file in the format described in the module docstring.

    Returns
    -------
    ScanMetadata
        SI units.

    Raises
    ------
    IngestError
        File missing or not HDF5; ``entry/data/counts`` missing, not 4D, empty
        or of an unsupported dtype; a required attribute missing, not a finite
        number, of the wrong length or non-positive where it must be positive;
        ``tilt_axis`` other than ``"y"``.
    """
    path = Path(path)
    with _open(path) as f:
        counts = _counts_dataset(path, f)
        inst = f.get(INSTRUMENT)
        if not isinstance(inst, h5py.Group):
            raise IngestError(f"{path}: {INSTRUMENT}: missing group")
        a = inst.attrs

        if "tilt_axis" not in a:
            raise IngestError(f"{path}: {INSTRUMENT}/tilt_axis: missing")
        axis = a["tilt_axis"]
        axis = axis.decode() if isinstance(axis, bytes) else str(axis)
        if axis != "y":
            raise IngestError(
                f"{path}: {INSTRUMENT}/tilt_axis: {axis!r} not supported (only rotation about 'y' is)"
            )
        if "Cs_A" in a and "Cs_mm" in a:
            raise IngestError(f"{path}: {INSTRUMENT}/Cs_A, Cs_mm: give one of them, not both")
        if "Cs_mm" in a:
            cs_m = read_number(path, a, "Cs_mm") * 1e-3
        else:
            cs_m = (read_number(path, a, "Cs_A", required=False) or 0.0) * _ANGSTROM
        dose = read_number(path, a, "dose_e_per_A2", required=False)
        if dose is not None and dose < 0:
            raise IngestError(f"{path}: {INSTRUMENT}/dose_e_per_A2: must be >= 0, got {dose}")

        return ScanMetadata(
            path=path,
            beam_energy_eV=read_number(path, a, "beam_energy_eV", positive=True),
            convergence_semiangle_rad=read_number(path, a, "convergence_semiangle_mrad", positive=True) * 1e-3,
            defocus_m=read_number(path, a, "nominal_defocus_A") * _ANGSTROM,
            Cs_m=cs_m,
            reciprocal_sampling_inv_m=tuple(
                v / _ANGSTROM for v in read_number(path, a, "detector_sampling_inv_A", size=2, positive=True)
            ),
            scan_origin_m=tuple(v * _ANGSTROM for v in read_number(path, a, "scan_origin_A", size=2)),
            scan_step_m=read_number(path, a, "scan_step_A", positive=True) * _ANGSTROM,
            tilt_angle_rad=math.radians(read_number(path, a, "tilt_angle_deg")),
            tilt_axis=axis,
            dose_e_per_m2=None if dose is None else dose / _ANGSTROM**2,
            scan_shape=(int(counts.shape[0]), int(counts.shape[1])),
            detector_shape=(int(counts.shape[2]), int(counts.shape[3])),
            dtype=np.dtype(counts.dtype),
        )


def read_counts(path: str | PathLike) -> np.ndarray:
    """Read the diffraction patterns of one file, scan raster flattened.

    Parameters
    ----------
    path : str or path-like
        HDF5 file in the format described in the module docstring.

    Returns
    -------
    ndarray, shape (scan_y * scan_x, det_y, det_x), raw dtype
        Position ``i * scan_x + j`` is raster point (i, j) (row-major, y slow);
        patterns centred (zero frequency at (det_y//2, det_x//2)).

    Raises
    ------
    IngestError
        Structural problems (as :func:`read_scan_metadata`), NaN/inf or negative values.
    """
    path = Path(path)
    with _open(path) as f:
        ds = _counts_dataset(path, f)
        try:
            counts = ds[()]
        except OSError as err:   # a damaged chunk or a failing compression filter
            raise IngestError(f"{path}: {COUNTS}: cannot read ({err})") from None
    check_counts(path, counts, COUNTS)
    sy, sx, dy, dx = counts.shape
    return counts.reshape(sy * sx, dy, dx)


def scan_positions(meta: ScanMetadata) -> np.ndarray:
    """Probe positions of the scan raster.

    Parameters
    ----------
    meta : ScanMetadata

    Returns
    -------
    ndarray, shape (scan_y * scan_x, 2), float64, m
        (y, x) of raster point (i, j) at row ``i * scan_x + j``:
        ``scan_origin_m + (i * scan_step_m, j * scan_step_m)``.
    """
    i, j = np.indices(meta.scan_shape, dtype=np.float64)
    pos = np.stack([i.ravel(), j.ravel()], axis=1) * meta.scan_step_m
    return pos + np.asarray(meta.scan_origin_m, dtype=np.float64)


def validate_files(files: Iterable[str | PathLike]) -> list[ScanMetadata]:
    """Read and check the metadata of every file of a tilt series, then the series as a whole.

    Parameters
    ----------
    files : iterable of path-like
        Raw HDF5 files, one per tilt angle, in any order.

    Returns
    -------
    list of ScanMetadata
        In the order given.

    Raises
    ------
    IngestError
        Any per-file problem (see :func:`read_scan_metadata`) or cross-file problem
        (see :func:`ptyhpc.io.validate.check_series`).
    """
    metas = [read_scan_metadata(f) for f in files]
    check_series(metas)
    return metas
