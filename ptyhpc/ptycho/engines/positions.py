"""Position refinement shared by the engines: the least-squares shift of each position and the scan model.

Source: the gradient position correction of Odstrčil et al., Opt. Express 26, 3108 (2018),
section 4.3 (also PtychoShelves' ``gradient_position_solver``; Zhang et al., Opt. Express 21,
13592 (2013)): per position, δ = Re Σ conj(P ∂O) Δψ / Σ|P ∂O|², Δψ the exit-wave update.
"""

from __future__ import annotations

import numpy as np

from ... import backend

__all__ = ["position_gradient", "refine_positions", "fit_affine", "affine_info"]


def position_gradient(patches, probes, dpsi, xp):
    """Least-squares sub-pixel shift (b, 2) in pixels that explains Δψ by moving the object patch.

    Parameters
    ----------
    patches : (b, ny, nx) complex
        Object patches O_j.
    probes : (b or 1, [m,] ny, nx) complex
        Probes at the positions (modes along axis 1).
    dpsi : (b, [m,] ny, nx) complex
        Exit-wave updates Δψ_j (PIE family) or χ_j (LSQ-ML).
    xp : module

    Returns
    -------
    (b, 2) float64, (y, x) pixels
        ∂ψ/∂r = P·∂O/∂r (central differences); δ_a = Re Σ conj(P ∂_a O) Δψ / Σ |P ∂_a O|².
        Positions are probe centres on the object, so moving the probe by +δ samples O(r + δ).
    """
    gy, gx = xp.gradient(patches, axis=(1, 2))
    out = np.zeros((patches.shape[0], 2))
    for a, g in enumerate((gy, gx)):
        if probes.ndim == 4:
            d = probes * g[:, None]
            num = xp.real(xp.sum(xp.conj(d) * dpsi, axis=(1, 2, 3)))
            den = xp.sum(xp.abs(d) ** 2, axis=(1, 2, 3))
        else:
            d = probes * g
            num = xp.real(xp.sum(xp.conj(d) * dpsi, axis=(1, 2)))
            den = xp.sum(xp.abs(d) ** 2, axis=(1, 2))
        out[:, a] = backend.to_host(num / xp.maximum(den, 1e-30))
    return out


def refine_positions(geom, shifts, start_px, *, step, max_shift_px, model, far_margin):
    """Move every position by its shift of one pass, in place on ``geom``.

    The mean shift is removed (a global translation is the object–probe
    ambiguity), the rest is scaled by ``step`` and clipped to
    ``max_shift_px``; ``model="affine"`` then replaces the positions by the
    least-squares affine map of the starting positions ``start_px`` that fits
    them (PtychoShelves' global geometry model, same paper, section 4.3).
    """
    n = geom.n_positions
    delta = step * (shifts - shifts.mean(axis=0))
    delta = np.clip(delta, -max_shift_px, max_shift_px)
    if model == "affine":
        affine = fit_affine(start_px, geom.positions_px + delta)
        delta = np.hstack([start_px, np.ones((n, 1))]) @ affine - geom.positions_px
    geom.move(np.arange(n), delta, far_margin=far_margin)


def fit_affine(start_px, target_px):
    """Least-squares affine map, target ≈ [start, 1] @ M: M (3, 2), rows A (2×2, transposed) and t."""
    design = np.hstack([start_px, np.ones((len(start_px), 1))])
    return np.linalg.lstsq(design, target_px, rcond=None)[0]


def affine_info(start_px, final_px):
    """{"A": (2, 2), "t_px": (2,)} of the affine map from the starting to the final positions."""
    m = fit_affine(start_px, final_px)
    return {"A": m[:2].T.copy(), "t_px": m[2].copy()}
