"""SART and CGLS for parallel-beam tilt series (SIRT is in :mod:`ptyhpc.tomo.sirt`).

SART (Andersen & Kak 1984, Ultrasonic Imaging 6, 81, eq. (5)) updates after
each projection angle ``a`` in turn::

    x ← x + λ C_a A_aᵀ R_a (p_a − A_a x),  R_a = 1 / row sums of A_a,  C_a = 1 / column sums of A_a

one sweep over all angles being one iteration (ASTRA's ``SART`` counts single
projections instead: ASTRA's ``n_iter × n_angles`` is our ``n_iter``). The
angles are visited in a fixed, well-spread order (golden-ratio sequence over
the sorted angles), so results are reproducible.

CGLS (conjugate gradients on the normal equations Aᵀ A x = Aᵀ p; Björck
1996, *Numerical Methods for Least Squares Problems*, alg. 7.4.1) minimises
‖A x − p‖ over the Krylov space; each slice (column) has its own step
lengths, so slices are independent as in SIRT. Early stopping
(``n_iter``) regularises noisy data.

Both share SIRT's strip projector (:class:`ptyhpc.tomo.Projector`) and its
array-module handling (NumPy or CuPy input).
"""

from __future__ import annotations

import numpy as np

from ..backend import xp_of
from .projector import _inverse
from .sirt import _finish, _setup, _sirt_step

__all__ = ["sart", "cgls", "angle_order"]


def angle_order(angles) -> np.ndarray:
    """SART visiting order: indices of ``angles`` such that consecutive angles are far apart.

    The k-th visited angle is the one at fraction ``frac(k φ)`` (φ the golden ratio) of
    the list sorted modulo π, which spreads consecutive projections over the range.

    Returns
    -------
    ndarray of int, shape (n_angles,)
        A permutation of ``range(n_angles)``.
    """
    angles = np.asarray(angles, dtype=np.float64).ravel()
    n = angles.size
    by_angle = np.argsort(np.mod(angles, np.pi), kind="stable")
    golden = np.argsort(np.mod(np.arange(n) * (np.sqrt(5) - 1) / 2, 1.0), kind="stable")
    # golden[k] = rank of k in the golden sequence; invert to visit rank order
    visit = np.empty(n, dtype=np.int64)
    visit[golden] = np.arange(n)
    return by_angle[visit]


def _blocks(proj, xp):
    """Per-angle (A_a, A_aᵀ, 1/row sums, 1/column sums), cached on the projector."""
    key = ("sart_blocks", xp.__name__)
    if key not in proj._device:
        A, _ = proj.matrices(np)
        n = proj.n_cols
        blocks = []
        for a in range(proj.n_angles):
            Aa = A[a * n:(a + 1) * n]                       # CSR row block (a copy, once)
            col = np.asarray(Aa.sum(axis=0), dtype=np.float32).ravel()
            row = np.asarray(Aa.sum(axis=1), dtype=np.float32).ravel()
            if xp is not np:
                import cupyx.scipy.sparse as csp  # noqa: PLC0415  (only reached with CuPy arrays)

                Aa_x, AaT_x = csp.csr_matrix(Aa), csp.csr_matrix(Aa.T.tocsr())
            else:
                Aa_x, AaT_x = Aa, Aa.T                       # CSC view: no second copy
            blocks.append((Aa_x, AaT_x, _inverse(xp.asarray(row))[:, None], _inverse(xp.asarray(col))[:, None]))
        proj._device[key] = blocks
    return proj._device[key]


def sart(projections, angles, *, n_iter: int = 10, nonneg: bool = False, center: float | None = None,
         x0=None, support=None, relaxation: float = 0.5):
    """SART reconstruction (one projection angle at a time).

    Parameters
    ----------
    projections : array_like of float (NumPy or CuPy), shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Line integrals; rows are slices along the tilt axis y.
    angles : array_like of float, shape (n_angles,)
        Radians, any order and range.
    n_iter : int
        Sweeps over all angles (>= 0). One sweep does about what 5-20 SIRT
        iterations do.
    nonneg : bool
        Clip at 0 after every angle's update.
    center : float, optional
        Rotation-axis column, default ``(n_cols - 1) / 2``.
    x0, support
        As in :func:`ptyhpc.tomo.sirt`.
    relaxation : float
        λ in (0, 2); 0.5 damps the inconsistencies of noisy data.

    Returns
    -------
    ndarray of float32, shape (n_cols, n_cols) or (n_rows, n_cols, n_cols)
        As :func:`ptyhpc.tomo.sirt`.

    Raises
    ------
    ValueError
        As :func:`ptyhpc.tomo.sirt`.
    """
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if not 0 < relaxation < 2:
        raise ValueError(f"relaxation must be in (0, 2), got {relaxation}")
    proj, b, x, mask, single, (n_rows, n) = _setup(projections, angles, center, x0, support)
    xp = xp_of(b)
    blocks = _blocks(proj, xp)
    lam = np.float32(relaxation)
    prepared = []
    for a, (Aa, AaT, R, C) in enumerate(blocks):
        ba = b[a * n:(a + 1) * n]
        if mask is not None:
            R = _inverse(Aa @ mask)
            C = C * mask
        prepared.append((Aa, AaT, R, C * lam, ba))
    order = angle_order(proj.angles)
    for _ in range(int(n_iter)):
        for a in order:
            Aa, AaT, R, C, ba = prepared[a]
            _sirt_step(x, Aa, AaT, R, C, ba, nonneg, xp)
    return _finish(x, single, n_rows, n)


def cgls(projections, angles, *, n_iter: int = 20, center: float | None = None, x0=None, support=None):
    """CGLS least-squares reconstruction (conjugate gradients on the normal equations).

    Parameters
    ----------
    projections : array_like of float (NumPy or CuPy), shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Line integrals; rows are slices along the tilt axis y.
    angles : array_like of float, shape (n_angles,)
        Radians, any order and range.
    n_iter : int
        Iterations (>= 0); CGLS converges much faster than SIRT, and on
        noisy data the error against the object grows again after some tens
        of iterations (semi-convergence), so ``n_iter`` is the regulariser.
    center : float, optional
        Rotation-axis column, default ``(n_cols - 1) / 2``.
    x0, support
        As in :func:`ptyhpc.tomo.sirt`. No non-negativity: a clipped Krylov
        iteration is not CGLS any more (use SIRT or SART for that).

    Returns
    -------
    ndarray of float32, shape (n_cols, n_cols) or (n_rows, n_cols, n_cols)
        As :func:`ptyhpc.tomo.sirt`.

    Raises
    ------
    ValueError
        As :func:`ptyhpc.tomo.sirt`.
    """
    if int(n_iter) < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    proj, b, x, mask, single, (n_rows, n) = _setup(projections, angles, center, x0, support)
    xp = xp_of(b)
    A, AT = proj.matrices(xp)
    r = b - A @ x
    s = AT @ r
    if mask is not None:
        s *= mask
    p = s.copy()
    # float64 reductions: the step lengths then hardly depend on how many slices share a product
    gamma = (s * s).sum(axis=0, dtype=xp.float64)
    tiny = np.finfo(np.float64).tiny
    for _ in range(int(n_iter)):
        q = A @ p
        qq = (q * q).sum(axis=0, dtype=xp.float64)
        # a converged (or empty) slice has gamma = 0: alpha = 0 keeps it unchanged
        alpha = xp.where(qq > tiny, gamma / xp.maximum(qq, tiny), 0.0).astype(xp.float32)
        x += alpha * p
        r -= alpha * q
        s = AT @ r
        if mask is not None:
            s *= mask
        gamma_new = (s * s).sum(axis=0, dtype=xp.float64)
        beta = xp.where(gamma > tiny, gamma_new / xp.maximum(gamma, tiny), 0.0).astype(xp.float32)
        p *= beta
        p += s
        gamma = gamma_new
    return _finish(x, single, n_rows, n)
