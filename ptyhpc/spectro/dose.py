"""Overlap, exposure counts and radiation dose of a ptychographic scan (seed 001, eqs. (1)–(5), Fig. 7).

Seed 001 (soft X-ray spectro-ptychography of BN, CNT and permalloy):

- overlap ratio O = 1 − d/2r (eq. 1; Bunk et al., Ultramicroscopy 108, 481 (2008)),
  d the step, 2r the beam diameter;
- area of two overlapping circles of radius R at distance d (eq. 2),
  A = 2R² arccos(d/2R) − (d/2)(4R² − d²)^½;
- weight factor k = Σ_{i,j} A(d_ij)/(πR²) over the raster neighbours d_ij = d·(i² + j²)^½
  with |i|, |j| ≤ 2R/d (eqs. 3–5): how many times the dose of one exposure a point receives
  (k ≈ πR²/d² for d ≪ R: 78 at d = 0.2R).

The exposure map counts, for any measured positions (raster, spiral, random),
how many beam discs cover each point (Fig. 7(c, d)).

Dose (Howells et al., J. Electron Spectrosc. Relat. Phenom. 170, 4 (2009), eq. 1,
and the supporting information of Mille et al. (2022) used by seed 001): the
energy absorbed per unit mass,

    D = N E (1 − e^{−OD}) / (ρ t A)    [Gy = J/kg],

N photons of energy E incident on area A, OD = μt the optical density of a
layer of thickness t and density ρ; for OD ≪ 1 this is the familiar
D = (μ/ρ) N E / A. With overlapping exposures multiply by the exposure count.
"""

from __future__ import annotations

import numpy as np
from scipy.constants import e as _E_CHARGE

__all__ = ["overlap_ratio", "overlap_area", "weight_factor", "exposure_map", "dose_gray", "weight_factor_figure"]


def overlap_ratio(step_m: float, diameter_m: float) -> float:
    """O = 1 − d/2r (seed 001 eq. 1); negative when the spots do not touch."""
    return 1.0 - step_m / diameter_m


def overlap_area(d, radius):
    """Area shared by two circles of radius R at centre distance d (seed 001 eq. 2), 0 for d ≥ 2R.

    Parameters
    ----------
    d : float or ndarray
        Centre distance(s), same unit as ``radius``.
    radius : float

    Returns
    -------
    float or ndarray, unit²
    """
    d = np.minimum(np.abs(np.asarray(d, float)), 2 * radius)
    return 2 * radius**2 * np.arccos(d / (2 * radius)) - d / 2 * np.sqrt(4 * radius**2 - d**2)


def weight_factor(step, radius) -> float:
    """k = Σ A(d_ij)/πR² over raster neighbours |i|, |j| ≤ 2R/d (seed 001 eqs. 3–5), own spot included.

    Returns
    -------
    float
        ≈ 78 at step = 0.2R, 1 at step ≥ 2R.
    """
    n = int(np.ceil(2 * radius / step))
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    return float(overlap_area(step * np.hypot(i, j), radius).sum() / (np.pi * radius**2))


def exposure_map(positions_m, diameter_m: float, pixel_size_m, origin_m, shape) -> np.ndarray:
    """How many beam discs (diameter ``diameter_m``) cover each pixel of a grid.

    Parameters
    ----------
    positions_m : (n, 2) float
        Beam centres (y, x), m (any scan pattern).
    diameter_m : float
    pixel_size_m : (float, float)
    origin_m : (float, float)
        (y, x) of pixel [0, 0], m.
    shape : (int, int)

    Returns
    -------
    (H, W) uint16
    """
    y = origin_m[0] + np.arange(shape[0]) * pixel_size_m[0]
    x = origin_m[1] + np.arange(shape[1]) * pixel_size_m[1]
    r2 = (diameter_m / 2) ** 2
    out = np.zeros(shape, np.uint16)
    for py, px in np.asarray(positions_m, float):
        iy = np.nonzero(np.abs(y - py) <= diameter_m / 2)[0]
        ix = np.nonzero(np.abs(x - px) <= diameter_m / 2)[0]
        if iy.size and ix.size:
            inside = (y[iy, None] - py) ** 2 + (x[None, ix] - px) ** 2 <= r2
            out[iy[0]:iy[-1] + 1, ix[0]:ix[-1] + 1] += inside.astype(np.uint16)
    return out


def dose_gray(od, thickness_m, density_kg_m3: float, photons: float, energy_eV: float, area_m2: float):
    """Absorbed dose D = N E (1 − e^{−OD}) / (ρ t A), Gy (Howells 2009; module docstring).

    Parameters
    ----------
    od : float or ndarray
        Optical density of the layer.
    thickness_m : float or ndarray
        Layer thickness, m (> 0).
    density_kg_m3 : float
    photons : float
        Photons incident on ``area_m2`` (one exposure; multiply by the exposure count for overlapping scans).
    energy_eV : float
    area_m2 : float

    Returns
    -------
    float or ndarray, Gy

    Raises
    ------
    ValueError
        Non-positive density, area or thickness.
    """
    t = np.asarray(thickness_m, float)
    if not density_kg_m3 > 0 or not area_m2 > 0 or np.any(t <= 0):
        raise ValueError("dose_gray: density, area and thickness must be > 0")
    absorbed = photons * energy_eV * _E_CHARGE * (1 - np.exp(-np.asarray(od, float)))
    return absorbed / (density_kg_m3 * t * area_m2)


def weight_factor_figure(path, *, d_over_r=None) -> None:
    """Fig. 7(b) of seed 001: k against d/R on a log scale, written as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    d_over_r = np.linspace(0.1, 2.0, 96) if d_over_r is None else np.asarray(d_over_r)
    k = [weight_factor(v, 1.0) for v in d_over_r]
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=120)
    ax.semilogy(d_over_r, k)
    ax.axvline(0.2, color="0.6", lw=0.8, ls=":")
    ax.annotate(f"k = {weight_factor(0.2, 1.0):.0f} at d = 0.2R", (0.2, weight_factor(0.2, 1.0)),
                xytext=(0.5, 40), arrowprops={"arrowstyle": "->"})
    ax.set_xlabel("d / R (step / beam radius)")
    ax.set_ylabel("weight factor k")
    ax.set_title("Dose weight of overlapping exposures (seed 001, eq. 5)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
