"""Image-quality figures of merit used by seed 001 (Figs. 3, 6): knife-edge width, sharpness, SNR.

Fourier ring correlation of two half-data reconstructions is
:func:`ptyhpc.ptycho.metrics.frc` / :func:`~ptyhpc.ptycho.metrics.frc_resolution`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knife_edge_width", "laplacian_variance", "snr"]


def knife_edge_width(profile, pixel_size_m: float, low: float = 0.2, high: float = 0.8) -> float:
    """Edge width between the ``low`` and ``high`` levels (20–80 %) of a line profile across one edge.

    The profile is normalised between the means of its first and last 15 %
    (the plateaus on each side); the crossings are found by linear
    interpolation on the monotone part around the steepest step.

    Parameters
    ----------
    profile : (n,) float
        Values along a line crossing one edge (either direction).
    pixel_size_m : float
        Sample spacing along the line, m.

    Returns
    -------
    float
        m.

    Raises
    ------
    ValueError
        Fewer than 8 samples or no step between the plateaus.
    """
    p = np.asarray(profile, float)
    if p.size < 8:
        raise ValueError("knife_edge_width: the profile needs >= 8 samples")
    m = max(1, int(0.15 * p.size))
    a, b = p[:m].mean(), p[-m:].mean()
    if abs(b - a) < 1e-12:
        raise ValueError("knife_edge_width: no step between the plateaus")
    q = (p - a) / (b - a)               # 0 -> 1 across the edge
    centre = int(np.argmin(np.abs(q - 0.5)))

    def crossing(level):
        # The crossing of ``level`` nearest the edge centre, by linear interpolation.
        i = np.nonzero((q[:-1] - level) * (q[1:] - level) <= 0)[0]
        if i.size == 0:
            raise ValueError(f"knife_edge_width: profile never reaches {level:.0%}")
        lo = int(i[np.argmin(np.abs(i - centre))])
        dq = q[lo + 1] - q[lo]
        return lo + ((level - q[lo]) / dq if dq else 0.0)

    return abs(crossing(high) - crossing(low)) * pixel_size_m


def laplacian_variance(image) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al., ICPR 2000), the sharpness measure of seed 001."""
    from scipy import ndimage  # noqa: PLC0415

    return float(np.var(ndimage.laplace(np.asarray(image, np.float64))))


def snr(image, region) -> float:
    """Mean over standard deviation of ``image`` inside ``region`` (seed 001: OD of the CNTs / its spread)."""
    v = np.asarray(image, float)[np.asarray(region, bool)]
    if v.size < 2:
        raise ValueError("snr: the region needs >= 2 pixels")
    return float(v.mean() / v.std())
