"""Reader for CXI files (Coherent X-ray Imaging format, Maia et al., J. Appl. Cryst. 45, 1084 (2012)).

Reads the first entry's frames, mask, scan translations and detector
geometry. Scan positions are expressed along the detector's array axes
(slow = y, fast = x) from the ``basis_vectors``, so the object array has the
orientation of the detector images.

Defaults of CXI 1.6 (Maia 2012 and the CXI 1.6 format description) that the
reader applies: the wavelength is hc/E from ``source_1/energy`` (J) when
``source_1/wavelength`` is absent; without ``basis_vectors`` the detector is
perpendicular to the beam with basis ``[[0, -y_pixel_size, 0],
[-x_pixel_size, 0, 0]]`` (slow axis along −y, fast along −x of the CXI frame),
from ``detector_1/x_pixel_size`` and ``y_pixel_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers compression filters used by facility files)
import numpy as np

from .validate import IngestError

__all__ = ["CXIScan", "read_cxi", "is_cxi", "read_cxi_scan"]

_DET = "entry_1/instrument_1/detector_1"


@dataclass
class CXIScan:
    """One CXI scan.

    Attributes
    ----------
    frames : (n, det_y, det_x) ndarray, raw dtype
    measured : (det_y, det_x) bool
        False where the CXI mask flags a bad pixel.
    positions_m : (n, 2) float64
        Sample position along the detector (slow, fast) axes, m, in the sample plane.
    pixel_size_m : (float, float)
        Detector pixel (slow, fast), m.
    distance_m : float
        Sample-to-detector distance, m.
    wavelength_m : float
    """

    frames: np.ndarray
    measured: np.ndarray
    positions_m: np.ndarray
    pixel_size_m: tuple
    distance_m: float
    wavelength_m: float


def _need(f, name, path):
    if name not in f:
        raise IngestError(f"{path}: {name}: missing")
    return f[name]


_SRC = "entry_1/instrument_1/source_1"
_EV = 1.602176634e-19  # J per eV (CXI energies are in J)


def _wavelength(f, path) -> tuple[float, str]:
    """λ from ``source_1/wavelength``, else hc/E from ``source_1/energy`` (J); (value, field read)."""
    from ..physics.wavelength import photon_wavelength  # noqa: PLC0415

    if f"{_SRC}/wavelength" in f:
        return float(f[f"{_SRC}/wavelength"][()]), f"{_SRC}/wavelength"
    if f"{_SRC}/energy" in f:
        energy_J = float(np.asarray(f[f"{_SRC}/energy"][()]).ravel()[0])
        if not (np.isfinite(energy_J) and energy_J > 0):
            raise IngestError(f"{path}: {_SRC}/energy: must be a finite photon energy > 0 J, got {energy_J}")
        return photon_wavelength(energy_J / _EV), f"{_SRC}/energy"
    raise IngestError(f"{path}: {_SRC}/wavelength: missing (and no {_SRC}/energy in J to derive it from)")


def _basis_vectors(f, path) -> np.ndarray:
    """(2, 3) basis (slow, fast) in m: the file's, or the CXI 1.6 default from the pixel sizes."""
    name = f"{_DET}/basis_vectors"
    if name in f:
        basis = f[name][...].astype(np.float64)
        # CXI stores (2, 3), possibly one per frame (n, 2, 3); some writers store the transpose (3, 2).
        if basis.ndim == 3:
            if not np.allclose(basis, basis[:1]):
                raise IngestError(f"{path}: {name}: per-frame basis vectors differ (a moving detector is "
                                  "not supported)")
            basis = basis[0]
        return basis.T if basis.shape == (3, 2) else basis
    px = []
    for axis in ("y", "x"):
        field = f"{_DET}/{axis}_pixel_size"
        if field not in f:
            raise IngestError(f"{path}: {name}: missing, and {field} (for the CXI default) missing too")
        px.append(float(f[field][()]))
    return np.array([[0.0, -px[0], 0.0], [-px[1], 0.0, 0.0]])


def _polarisation(f, path) -> str | None:
    """Label in ``source_1/polarization`` (not in CXI 1.6; e.g. "CR", "CL", "LH", "LV"), or None."""
    ds = f.get(f"{_SRC}/polarization")
    if ds is None:
        return None
    value = ds[()]
    value = value.decode() if isinstance(value, bytes) else str(value)
    if not value.strip():
        raise IngestError(f"{path}: {_SRC}/polarization: empty label")
    return value.strip()


def read_cxi(path: str | PathLike) -> CXIScan:
    """Read a CXI ptychography scan.

    A sample translation t moves the sample; in the detector's array frame
    (unit axis vectors b̂_slow, b̂_fast from ``basis_vectors``) the probe then
    sits at −t·b̂ on the sample, which is the position returned.

    Raises
    ------
    IngestError
        Missing file or field, or inconsistent shapes (message names the field).
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise IngestError(f"{path}: not an HDF5/CXI file ({exc})") from None
    with f:
        frames = _need(f, f"{_DET}/data", path)[...]
        if frames.ndim != 3:
            raise IngestError(f"{path}: {_DET}/data: expected (n, det_y, det_x), got {frames.shape}")
        mask = f[f"{_DET}/mask"][...] if f"{_DET}/mask" in f else np.zeros(frames.shape[1:], np.uint32)
        trans = _need(f, "entry_1/sample_1/geometry_1/translation", path)[...].astype(np.float64)
        if trans.shape != (frames.shape[0], 3):
            raise IngestError(f"{path}: entry_1/sample_1/geometry_1/translation: expected ({frames.shape[0]}, 3), "
                              f"got {trans.shape}")
        basis = _basis_vectors(f, path)
        if basis.shape != (2, 3):
            raise IngestError(f"{path}: {_DET}/basis_vectors: expected (2, 3) or (3, 2), got {basis.shape}")
        pixel = tuple(float(np.linalg.norm(b)) for b in basis)
        distance = float(_need(f, f"{_DET}/distance", path)[()])
        wavelength, wfield = _wavelength(f, path)
    for name, value in (("distance", distance), ("wavelength", wavelength)):
        field = f"{_DET}/distance" if name == "distance" else wfield
        if not (np.isfinite(value) and value > 0):
            raise IngestError(f"{path}: {field}: must be a finite number > 0 (m), got {value}")
    if not all(np.isfinite(p) and p > 0 for p in pixel):
        raise IngestError(f"{path}: {_DET}/basis_vectors: pixel sizes {pixel} must be finite and > 0")
    if not np.all(np.isfinite(trans)):
        raise IngestError(f"{path}: entry_1/sample_1/geometry_1/translation: non-finite value(s)")
    if mask.shape != frames.shape[1:]:
        raise IngestError(f"{path}: {_DET}/mask: shape {mask.shape} differs from the frames' {frames.shape[1:]}")
    unit = basis / np.array(pixel)[:, None]
    positions = -trans @ unit.T
    return CXIScan(frames, mask == 0, positions, pixel, distance, wavelength)


def is_cxi(path: str | PathLike) -> bool:
    """True when ``path`` is an HDF5 file with a root ``cxi_version`` (CXI, Maia 2012)."""
    try:
        with h5py.File(path, "r") as f:
            return "cxi_version" in f
    except (OSError, ValueError):
        return False


def read_cxi_scan(path: str | PathLike, *, probe_semiangle_rad: float | None = None,
                  defocus_m: float | None = None, regime: str | None = None,
                  focus_to_sample_m: float | None = None):
    """A CXI scan as a :class:`ptyhpc.io.scan.Scan` for :func:`ptyhpc.io.scan.ingest_scans`.

    Positions, pixel, distance and wavelength are exactly those of
    :func:`read_cxi` (CXI is SI by definition); the photon energy is hc/λ.
    The CXI ``mask`` (non-zero = bad) becomes the scan's measured mask.

    Parameters
    ----------
    path : path-like
    probe_semiangle_rad, defocus_m : float, optional
        Probe model for the ptycho stage (a CXI file has none), rad and m.
    regime : {"far_field", "near_field"}, optional
        Propagation regime; CXI 1.6 has no field for it (``detector_1/distance``
        is the same sample-to-detector distance in both). Default far field.
    focus_to_sample_m : float, optional
        Near field with a divergent beam: focus-to-sample distance z1, m (not
        in CXI either; e.g. 3.65e-3 for the PETRA III P25 scan).

    Returns
    -------
    Scan
        ``radiation="xray"``, ``source_format="cxi"``.

    Raises
    ------
    IngestError
        As :func:`read_cxi`; ``source_1/energy`` disagreeing with the wavelength by more than 0.1 %;
        an unknown ``regime``; ``focus_to_sample_m`` not a finite number > 0, or given for the far field.
    """
    from ..physics.wavelength import photon_wavelength  # noqa: PLC0415
    from .scan import Scan, scan_propagation  # noqa: PLC0415

    path = Path(path)
    cxi = read_cxi(path)
    energy_eV = photon_wavelength(1.0) / cxi.wavelength_m  # hc/λ in eV (λ(1 eV) = hc/e)
    with h5py.File(path, "r") as f:
        src = f.get("entry_1/instrument_1/source_1/energy")
        has_wavelength = "entry_1/instrument_1/source_1/wavelength" in f
        has_basis = f"{_DET}/basis_vectors" in f
        polarisation = _polarisation(f, path)
        if isinstance(src, h5py.Dataset) and has_wavelength:
            given = float(src[()]) / 1.602176634e-19  # CXI energies are in J
            if not (np.isfinite(given) and abs(given - energy_eV) <= 1e-3 * energy_eV):
                raise IngestError(f"{path}: entry_1/instrument_1/source_1/energy: {given:.6g} eV disagrees with "
                                  f"the wavelength's hc/λ = {energy_eV:.6g} eV")
    frames = cxi.frames
    return Scan(
        path=path, source_format="cxi", load_frames=lambda: frames, n_positions=int(frames.shape[0]),
        detector_shape=tuple(int(v) for v in frames.shape[1:]), dtype=np.dtype(frames.dtype),
        positions_m=cxi.positions_m, radiation="xray", energy_eV=float(energy_eV), wavelength_m=cxi.wavelength_m,
        distance_m=cxi.distance_m, pixel_size_m=tuple(cxi.pixel_size_m),
        measured=None if cxi.measured.all() else cxi.measured,
        probe_semiangle_rad=probe_semiangle_rad, defocus_m=defocus_m, polarisation=polarisation or "unknown",
        fields={"frames": f"{_DET}/data", "positions": "entry_1/sample_1/geometry_1/translation",
                **({"wavelength": "entry_1/instrument_1/source_1/wavelength", "energy": "hc/wavelength"}
                   if has_wavelength else {"wavelength": "hc/energy", "energy": "entry_1/instrument_1/source_1/energy"}),
                "distance": f"{_DET}/distance",
                "pixel_size": f"{_DET}/basis_vectors" if has_basis else f"{_DET}/x_pixel_size, y_pixel_size",
                **({"mask": f"{_DET}/mask"} if not cxi.measured.all() else {}),
                **({"polarisation": f"{_SRC}/polarization"} if polarisation else {}),
                **({"probe_semiangle": "given"} if probe_semiangle_rad is not None else {}),
                **({"defocus": "given"} if defocus_m is not None else {}),
                **({"regime": "given"} if regime is not None else {}),
                **({"focus_to_sample": "given"} if focus_to_sample_m is not None else {})},
        **scan_propagation(path, regime, focus_to_sample_m, cxi.distance_m),
    )
