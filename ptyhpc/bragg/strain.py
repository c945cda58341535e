"""Strain and lattice tilts from the phase of ρ (seed eqs. 14, 15), and phase-vortex location.

Seed (Nat. Commun. 12, 7059 (2021)), eq. (14), with z ∥ Q_hkl:

    ε_zz = |Q|⁻¹ ∂φ/∂z,   ω_x = arcsin(|Q|⁻¹ ∂φ/∂y),   ω_y = arcsin(|Q|⁻¹ ∂φ/∂x)

and the wrap-free derivative of eq. (15),
∂φ/∂r_a = arg{exp[iφ(r)] exp[−iφ(r − δ_a)]}/δ_a, used here in its
centred form arg{ρ(r + δ_a) ρ*(r − δ_a)}/(2δ_a) (the same formula over
two steps, so the derivative sits on the voxel). Derivatives are taken
along the orthonormal reconstruction axes r1, r2, r3 and rotated into the
lab frame with ``geometry.lab_matrix`` (∇_lab φ = M ∇_r φ), so no
interpolation of the phase is needed.
"""

from __future__ import annotations

import numpy as np

from .geometry import BraggGeometry

__all__ = ["phase_gradient", "strain_tilt", "vortex_map", "locate_vortex_line"]


def phase_gradient(rho, geometry: BraggGeometry, valid=None):
    """Wrap-free phase gradient in the lab frame (seed eq. 15), rad/m.

    Parameters
    ----------
    rho : ndarray, (S1, S2, S3) complex
        Density on the reconstruction-frame grid of ``geometry``.
    geometry : BraggGeometry
    valid : ndarray (S1, S2, S3) bool or None
        Where ρ is meaningful; a voxel gets a gradient only if both
        neighbours along every axis are valid (else NaN).

    Returns
    -------
    ndarray, (S1, S2, S3, 3) float64
        (∂φ/∂x, ∂φ/∂y, ∂φ/∂z), NaN on the grid border and outside ``valid``.
    """
    rho = np.asarray(rho)
    d = geometry.voxel_size
    grads = np.full(rho.shape + (3,), np.nan)
    ok = np.ones(rho.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    good = ok.copy()
    for a in range(3):
        fwd = [slice(None)] * 3
        bwd = [slice(None)] * 3
        mid = [slice(None)] * 3
        fwd[a], bwd[a], mid[a] = slice(2, None), slice(None, -2), slice(1, -1)
        g = np.full(rho.shape, np.nan)
        g[tuple(mid)] = np.angle(rho[tuple(fwd)] * np.conj(rho[tuple(bwd)])) / (2 * d[a])
        grads[..., a] = g
        nb = np.zeros(rho.shape, dtype=bool)
        nb[tuple(mid)] = ok[tuple(fwd)] & ok[tuple(bwd)]
        good &= nb
    lab = grads @ geometry.lab_matrix.T
    lab[~good] = np.nan
    return lab


def strain_tilt(rho, geometry: BraggGeometry, valid=None):
    """ε_zz, ω_x, ω_y (seed eq. 14) from ρ: three (S1, S2, S3) float64 arrays (strain, rad, rad; NaN outside)."""
    g = phase_gradient(rho, geometry, valid) / geometry.q_norm
    ezz = g[..., 2]
    wx = np.arcsin(np.clip(g[..., 1], -1, 1))
    wy = np.arcsin(np.clip(g[..., 0], -1, 1))
    return ezz, wx, wy


def vortex_map(rho, axis: int = 0):
    """Winding number of the phase around each plaquette ⊥ ``axis``: (…) int, ±1 at a phase vortex.

    Sum of wrapped phase differences around the 4 edges of each plaquette of
    the two other axes, divided by 2π (a dislocation line ∥ ``axis`` with
    Q·b = 2π gives ±1, seed text on phase vortices).
    """
    r = np.moveaxis(np.asarray(rho), axis, 0)
    a, b, c, d = r[:, :-1, :-1], r[:, 1:, :-1], r[:, 1:, 1:], r[:, :-1, 1:]
    w = (np.angle(b * np.conj(a)) + np.angle(c * np.conj(b)) + np.angle(d * np.conj(c))
         + np.angle(a * np.conj(d)))
    return np.rint(w / (2 * np.pi)).astype(int)


def locate_vortex_line(rho, valid=None, axis: int = 0):
    """Mean position (voxels, in the two axes ⊥ ``axis``) of the phase vortices of ρ.

    Plaquette (i, j) is centred at (i + ½, j + ½). Only plaquettes whose four
    corners are ``valid`` count. Returns (2,) float64, or NaN when none is found.
    """
    w = vortex_map(rho, axis)
    if valid is not None:
        v = np.moveaxis(np.asarray(valid, bool), axis, 0)
        w = w * (v[:, :-1, :-1] & v[:, 1:, :-1] & v[:, 1:, 1:] & v[:, :-1, 1:])
    idx = np.argwhere(w != 0)
    if len(idx) == 0:
        return np.array([np.nan, np.nan])
    return idx[:, 1:].mean(axis=0) + 0.5
