"""SIRT (simultaneous iterative reconstruction technique) for parallel-beam tilt series.

Update (Gregor & Benson 2008, IEEE TMI 27, 918, eq. (4); the normalisation
of ASTRA's ``SIRT`` / ``SIRT_CUDA``)::

    x ← x + C Aᵀ R (p − A x),   R = diag(1 / row sums of A),  C = diag(1 / column sums of A)

with zero in R or C where a sum is 0 (rays missing the grid, pixels no ray
crosses). All slices share A, so every slice of a slab is updated in one
sparse product per iteration.
"""

from __future__ import annotations

import numpy as np

from .fbp import _as_3d
from .projector import Projector

__all__ = ["sirt"]


def _inverse(s: np.ndarray) -> np.ndarray:
    out = np.zeros_like(s, dtype=np.float32)
    np.divide(1.0, s, out=out, where=s > 0)
    return out


def sirt(projections, angles, *, n_iter: int = 100, nonneg: bool = False,
         center: float | None = None, x0=None) -> np.ndarray:
    """SIRT reconstruction with ASTRA's row/column-sum normalisation.

    Parameters
    ----------
    projections : array_like of float, shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Line integrals (e.g. phase in rad); rows are slices along the tilt axis y.
    angles : array_like of float, shape (n_angles,)
        Radians, any order and range.
    n_iter : int
        Number of iterations (>= 0).
    nonneg : bool
        Clip the estimate at 0 after every update (positive potential).
    center : float, optional
        Detector column of the rotation axis, default ``(n_cols - 1) / 2``.
    x0 : array_like, optional
        Initial estimate with the shape of the result; default zeros.

    Returns
    -------
    ndarray of float32, shape (n_cols, n_cols) or (n_rows, n_cols, n_cols)
        Slices indexed ``[z, x]`` (3D ``[y, z, x]``) in projection units per
        pixel length, on the grid of :mod:`ptyhpc.tomo.projector` (``"strip"``
        model).

    Raises
    ------
    ValueError
        Bad shapes, complex input, mismatched angles, ``n_iter < 0`` or an
        ``x0`` of the wrong shape.

    Notes
    -----
    The iteration is deterministic and column-wise independent, so a slice
    comes out bit-identical whatever slab it is reconstructed in.
    """
    p, angles, single = _as_3d(projections, angles)
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    n_ang, n_rows, n = p.shape
    proj = Projector.cached(angles, n, center, kind="strip")
    R = _inverse(proj.row_sum)[:, None]
    C = _inverse(proj.col_sum)[:, None]
    # Slices as columns: (n_angles * n_cols, n_rows) and (n_cols**2, n_rows).
    b = np.ascontiguousarray(p.astype(np.float32).transpose(0, 2, 1).reshape(n_ang * n, n_rows))
    if x0 is None:
        x = np.zeros((n * n, n_rows), dtype=np.float32)
    else:
        x0 = np.asarray(x0, dtype=np.float32)
        want = (n, n) if single else (n_rows, n, n)
        if x0.shape != want:
            raise ValueError(f"x0 has shape {x0.shape}, expected {want}")
        x = np.ascontiguousarray(x0.reshape(n_rows, n * n).T)
    for _ in range(int(n_iter)):
        residual = b - proj.A @ x
        residual *= R
        update = proj.AT @ residual
        update *= C
        x += update
        if nonneg:
            np.maximum(x, 0.0, out=x)
    vol = np.ascontiguousarray(x.T.reshape(n_rows, n, n))
    return vol[0] if single else vol
