"""SIRT (simultaneous iterative reconstruction technique) for parallel-beam tilt series.

Update (Gregor & Benson 2008, IEEE TMI 27, 918, eq. (4); the normalisation
of ASTRA's ``SIRT`` / ``SIRT_CUDA``)::

    x ← x + λ C Aᵀ R (p − A x),   R = diag(1 / row sums of A),  C = diag(1 / column sums of A)

with zero in R or C where a sum is 0 (rays missing the grid, pixels no ray
crosses), so an angular range with a missing wedge needs no special
normalisation: only measured rays enter R, and C counts only the measured
angles of each pixel. All slices share A, so every slice of a slab is
updated in one sparse product per iteration. A support restricts the
unknowns to a mask: the iteration is then SIRT for the columns of A in the
support, whose row sums are ``A @ mask``.
"""

from __future__ import annotations

import numpy as np

from ..backend import xp_of
from .fbp import _as_3d
from .projector import Projector, _inverse

__all__ = ["sirt"]


def _setup(projections, angles, center, x0, support):
    """Common input handling of the iterative methods.

    Returns (proj, b, x, mask, shape info): b (n_angles*n, n_rows) and x (n*n, n_rows)
    float32 columns on the projections' array module, mask (n*n, 1 or n_rows) float32 or None.
    """
    p, angles, single = _as_3d(projections, angles)
    xp = xp_of(p)
    n_ang, n_rows, n = p.shape
    proj = Projector.cached(angles, n, center, kind="strip")
    b = xp.ascontiguousarray(p.astype(xp.float32).transpose(0, 2, 1).reshape(n_ang * n, n_rows))
    want = (n, n) if single else (n_rows, n, n)
    if x0 is None:
        x = xp.zeros((n * n, n_rows), dtype=xp.float32)
    else:
        x0 = xp.asarray(x0, dtype=xp.float32)
        if x0.shape != want:
            raise ValueError(f"x0 has shape {x0.shape}, expected {want}")
        x = xp.ascontiguousarray(x0.reshape(n_rows, n * n).T)
    mask = None
    if support is not None:
        s = xp.asarray(support)
        if s.dtype != bool:
            raise ValueError(f"support must be a boolean mask, got dtype {s.dtype}")
        if s.shape == (n, n):
            mask = s.reshape(n * n, 1).astype(xp.float32)
        elif s.shape == want:
            mask = xp.ascontiguousarray(s.reshape(n_rows, n * n).T).astype(xp.float32)
        else:
            raise ValueError(f"support has shape {s.shape}, expected {(n, n)} or {want}")
        x *= mask
    return proj, b, x, mask, single, (n_rows, n)


def _finish(x, single, n_rows, n):
    xp = xp_of(x)
    vol = xp.ascontiguousarray(x.T.reshape(n_rows, n, n))
    return vol[0] if single else vol


def sirt(projections, angles, *, n_iter: int = 100, nonneg: bool = False,
         center: float | None = None, x0=None, support=None, relaxation: float = 1.0):
    """SIRT reconstruction with ASTRA's row/column-sum normalisation.

    Parameters
    ----------
    projections : array_like of float (NumPy or CuPy), shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Line integrals (e.g. phase in rad); rows are slices along the tilt axis y.
    angles : array_like of float, shape (n_angles,)
        Radians, any order and range (a missing wedge is fine, see the module notes).
    n_iter : int
        Number of iterations (>= 0).
    nonneg : bool
        Clip the estimate at 0 after every update (positive potential).
    center : float, optional
        Detector column of the rotation axis, default ``(n_cols - 1) / 2``.
    x0 : array_like, optional
        Initial estimate with the shape of the result; default zeros.
    support : array_like of bool, shape (n_cols, n_cols) or the result's shape, optional
        Pixels allowed to be non-zero (e.g. a disk or the sample's envelope);
        the others stay 0.
    relaxation : float
        λ in (0, 2); 1 is ASTRA's default and the value of every internal use.

    Returns
    -------
    ndarray of float32, shape (n_cols, n_cols) or (n_rows, n_cols, n_cols)
        Slices indexed ``[z, x]`` (3D ``[y, z, x]``) in projection units per
        pixel length, on the grid of :mod:`ptyhpc.tomo.projector` (``"strip"``
        model), on the array module of ``projections``.

    Raises
    ------
    ValueError
        Bad shapes, complex input, mismatched angles, ``n_iter < 0``, a
        relaxation outside (0, 2), or an ``x0`` or ``support`` of the wrong shape.

    Notes
    -----
    The iteration is deterministic and column-wise independent, so a slice
    comes out bit-identical whatever slab it is reconstructed in. Cost per
    iteration: two sparse products (≈ 2.6 non-zeros per pixel and angle).
    """
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if not 0 < relaxation < 2:
        raise ValueError(f"relaxation must be in (0, 2), got {relaxation}")
    proj, b, x, mask, single, (n_rows, n) = _setup(projections, angles, center, x0, support)
    xp = xp_of(b)
    A, AT = proj.matrices(xp)
    R, C = proj.sums(xp)
    R = R[:, None]
    C = C[:, None]
    if mask is not None:
        R = _inverse(A @ mask)       # row sums of the support's columns
        C = C * mask
    if relaxation != 1.0:
        C = C * np.float32(relaxation)
    for _ in range(int(n_iter)):
        _sirt_step(x, A, AT, R, C, b, nonneg, xp)
    return _finish(x, single, n_rows, n)


def _sirt_step(x, A, AT, R, C, b, nonneg, xp):
    """In place x += C · Aᵀ (R · (b − A x)), then clip at 0 if ``nonneg`` (SIRT; SART per angle block)."""
    residual = b - A @ x
    residual *= R
    update = AT @ residual
    update *= C
    x += update
    if nonneg:
        xp.maximum(x, 0.0, out=x)
