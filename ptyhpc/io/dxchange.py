"""Reader for tomography data in the Data Exchange HDF5 layout (APS; De Carlo et al. 2014,
J. Synchrotron Rad. 21, 1224).

Layout read here (the subset TomoPy's ``dxchange.read_aps_32id`` uses)::

    /exchange/data         (n_angles, n_rows, n_cols)  projections, counts
    /exchange/data_white   (n_flat, n_rows, n_cols)    flat fields (beam, no sample), optional
    /exchange/data_dark    (n_dark, n_rows, n_cols)    dark fields (no beam), optional
    /exchange/theta        (n_angles,)                 rotation angles, attribute ``units``
                                                       ("degrees" (the default when absent) or "radians")

Rows are detector rows, i.e. slices along the rotation axis; a row range can
be read alone, so slab tasks read only their own sinograms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike

import numpy as np

__all__ = ["read_dxchange", "DxchangeData", "DxchangeError"]

DATA = "exchange/data"
FLAT = "exchange/data_white"
DARK = "exchange/data_dark"
THETA = "exchange/theta"


class DxchangeError(ValueError):
    """The file is not a usable Data Exchange tomography file (message names the file and field)."""


@dataclass
class DxchangeData:
    """Projections, flat and dark fields and angles of a Data Exchange file.

    Attributes
    ----------
    data : ndarray of float32, shape (n_angles, n_rows, n_cols)
    flat, dark : ndarray of float32, shape (n_flat, n_rows, n_cols) / (n_dark, n_rows, n_cols), or None
    theta : ndarray of float64, shape (n_angles,)
        Radians.
    rows : (int, int)
        Detector rows read (start, stop).
    attrs : dict
        ``units`` and ``axes`` attributes of ``exchange/data`` where present.
    """

    data: np.ndarray
    flat: np.ndarray | None
    dark: np.ndarray | None
    theta: np.ndarray
    rows: tuple[int, int]
    attrs: dict = field(default_factory=dict)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _text(value.ravel()[0]) if value.size else ""
    return str(value)


def read_dxchange(path: str | PathLike, *, rows: tuple[int, int] | None = None) -> DxchangeData:
    """Read projections, flat/dark fields and angles from a Data Exchange HDF5 file.

    Parameters
    ----------
    path : str or path-like
        HDF5 file.
    rows : (int, int), optional
        Detector rows ``start:stop`` to read (all by default), from the
        projections and the flat and dark fields alike.

    Returns
    -------
    DxchangeData
        Angles in radians (converted from degrees unless ``exchange/theta``
        says ``units = "rad"``/``"radians"``).

    Raises
    ------
    DxchangeError
        Missing ``exchange/data`` or ``exchange/theta``, a projection stack
        that is not 3D, angles that do not match the projections or are not
        finite, flat/dark fields whose image shape differs, unknown angle
        units, or a row range outside the detector.
    OSError
        The file cannot be opened as HDF5.
    """
    import h5py  # noqa: PLC0415

    with h5py.File(path, "r") as f:
        for name in (DATA, THETA):
            if not isinstance(f.get(name), h5py.Dataset):
                raise DxchangeError(f"{path}: dataset {name!r} missing (not a Data Exchange tomography file)")
        dset = f[DATA]
        if dset.ndim != 3:
            raise DxchangeError(f"{path}: {DATA} must be (n_angles, n_rows, n_cols), got shape {dset.shape}")
        n_ang, n_rows, n_cols = dset.shape
        r0, r1 = (0, n_rows) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= r0 < r1 <= n_rows:
            raise DxchangeError(f"{path}: rows {rows} outside the detector's {n_rows} rows")
        data = np.asarray(dset[:, r0:r1, :], dtype=np.float32)
        attrs = {k: _text(dset.attrs[k]) for k in ("units", "axes", "description") if k in dset.attrs}
        theta_ds = f[THETA]
        theta = np.asarray(theta_ds[()], dtype=np.float64).ravel()
        units = _text(theta_ds.attrs.get("units", "degrees")).strip().lower()
        if units in ("degrees", "degree", "deg"):
            theta = np.deg2rad(theta)
        elif units not in ("radians", "radian", "rad"):
            raise DxchangeError(f"{path}: {THETA} has unknown units {units!r} (expected degrees or radians)")
        if theta.size != n_ang:
            raise DxchangeError(f"{path}: {THETA} has {theta.size} angles for {n_ang} projections in {DATA}")
        if not np.all(np.isfinite(theta)):
            raise DxchangeError(f"{path}: {THETA} has non-finite values")
        fields = {}
        for key, name in (("flat", FLAT), ("dark", DARK)):
            ds = f.get(name)
            if ds is None:
                fields[key] = None
                continue
            if ds.ndim not in (2, 3) or tuple(ds.shape[-2:]) != (n_rows, n_cols):
                raise DxchangeError(f"{path}: {name} has shape {ds.shape}, expected (n, {n_rows}, {n_cols})")
            arr = np.asarray(ds[..., r0:r1, :], dtype=np.float32)
            fields[key] = arr if arr.ndim == 3 else arr[None]
    return DxchangeData(data=data, flat=fields["flat"], dark=fields["dark"], theta=theta, rows=(r0, r1),
                        attrs=attrs)
