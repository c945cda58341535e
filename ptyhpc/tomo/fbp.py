"""Filtered backprojection for parallel-beam tilt series with arbitrary angles.

f(x, z) = Σ_i w_i q_i(center + x cos θ_i + z sin θ_i),  q_i = p_i * h

with h the band-limited ramp filter of Kak & Slaney (1988), *Principles of
Computerized Tomographic Imaging*, eq. (3.61), optionally apodised, and
w_i the angular interval each projection stands for (eq. (3.62) has π/K for
K uniform angles).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from .projector import Projector

__all__ = ["fbp", "ramp_filter", "angular_weights", "FILTERS"]

#: Accepted filter names (aliases map to the same window).
FILTERS = ("ramp", "ram-lak", "shepp-logan", "cosine", "hamming", "hann", "hanning", None)


def angular_weights(angles) -> np.ndarray:
    """Angular interval (rad) represented by each projection.

    Angles are taken modulo π (θ and θ + π see the same lines) and sorted on
    that circle; each projection gets half the distance to each neighbour.
    The widest gap is the missing wedge of a limited range (e.g. ±60°): it
    is capped at the median spacing, so the two projections at the ends of
    the range do not get the whole wedge, while a uniform set over 180°
    gets π/K everywhere, the standard FBP weight (Kak & Slaney eq. 3.62).

    Parameters
    ----------
    angles : array_like of float, shape (n_angles,)
        Radians, any order.

    Returns
    -------
    ndarray of float64, shape (n_angles,)
        Weights in radians, in the order of ``angles``.

    Raises
    ------
    ValueError
        Empty angle list.
    """
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size == 0:
        raise ValueError("angles is empty")
    if angles.size == 1:
        return np.array([np.pi])
    phi = np.mod(angles, np.pi)
    order = np.argsort(phi, kind="stable")
    s = phi[order]
    gaps = np.append(np.diff(s), np.pi - (s[-1] - s[0]))   # cyclic: gaps[i] lies after s[i]
    positive = gaps[gaps > 1e-12]
    typical = np.median(positive) if positive.size else np.pi
    widest = int(np.argmax(gaps))
    gaps[widest] = min(gaps[widest], typical)               # the missing wedge, if any
    w = np.empty_like(s)
    w[order] = (gaps + np.roll(gaps, 1)) / 2
    return w


def ramp_filter(n_pad: int, filter_name: str | None = "ramp") -> np.ndarray:
    """Frequency response of the apodised ramp filter for ``n_pad`` samples.

    The ramp is the FFT of the band-limited spatial kernel of Kak & Slaney
    eq. (3.61) (h(0) = 1/4, h(k) = -1/(π k)² for odd k, 0 for even k; unit
    detector spacing), which avoids the DC offset of a sampled |f|. The
    windows are functions of the frequency f in cycles/pixel (|f| ≤ 1/2):
    shepp-logan sinc(f), cosine cos(π f), hamming 0.54 + 0.46 cos(2π f),
    hann (0.5 + 0.5 cos(2π f)), as in scikit-image's ``iradon``.

    Parameters
    ----------
    n_pad : int
        Even FFT length (the padded detector width).
    filter_name : str or None
        One of :data:`FILTERS`; None gives an all-pass filter (plain
        backprojection).

    Returns
    -------
    ndarray of float64, shape (n_pad // 2 + 1,)
        Real response for ``scipy.fft.rfft`` ordering.

    Raises
    ------
    ValueError
        Unknown filter name.
    """
    if filter_name not in FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}; use one of {FILTERS}")
    if filter_name is None:
        return np.ones(n_pad // 2 + 1)
    k = np.concatenate([np.arange(0, n_pad // 2 + 1), np.arange(n_pad // 2 - 1, 0, -1)])
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = scipy.fft.rfft(h).real
    f = scipy.fft.rfftfreq(n_pad)
    if filter_name == "shepp-logan":
        response *= np.sinc(f)
    elif filter_name == "cosine":
        response *= np.cos(np.pi * f)
    elif filter_name == "hamming":
        response *= 0.54 + 0.46 * np.cos(2 * np.pi * f)
    elif filter_name in ("hann", "hanning"):
        response *= 0.5 + 0.5 * np.cos(2 * np.pi * f)
    return response


def _as_3d(projections, angles):
    p = np.asarray(projections)
    if p.ndim not in (2, 3):
        raise ValueError(f"projections must be (n_angles, n_cols) or (n_angles, n_rows, n_cols), got {p.shape}")
    if np.iscomplexobj(p):
        raise ValueError("projections must be real (take the phase first)")
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size != p.shape[0]:
        raise ValueError(f"{angles.size} angles for {p.shape[0]} projections")
    single = p.ndim == 2
    return (p[:, None, :] if single else p), angles, single


def fbp(projections, angles, *, filter_name: str | None = "ramp", center: float | None = None) -> np.ndarray:
    """Filtered backprojection of parallel-beam projections.

    Parameters
    ----------
    projections : array_like of float, shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Line integrals (e.g. phase in rad); rows are slices along the tilt axis y.
    angles : array_like of float, shape (n_angles,)
        Tilt angles in radians; any order, spacing and range (each projection is
        weighted by :func:`angular_weights`).
    filter_name : {"ramp", "ram-lak", "shepp-logan", "cosine", "hamming", "hann"} or None
        Apodisation of the ramp filter; None backprojects unfiltered.
    center : float, optional
        Detector column of the rotation axis, default ``(n_cols - 1) / 2``.

    Returns
    -------
    ndarray of float32, shape (n_cols, n_cols) or (n_rows, n_cols, n_cols)
        Slices indexed ``[z, x]`` (3D: ``[y, z, x]``), in projection units per
        pixel length. A uniform 180° set reproduces the object's value
        (a disk of value 1 comes back ≈ 1 inside).

    Raises
    ------
    ValueError
        Bad shapes, complex input, mismatched angles or an unknown filter.

    Notes
    -----
    Each projection is zero-padded to at least twice its width before the
    FFT so that the circular convolution does not wrap around (Kak & Slaney,
    sec. 3.3.3). Backprojection uses linear interpolation on the detector
    (the transpose of the ``"linear"`` projector), Kak & Slaney eq. (3.62).
    """
    p, angles, single = _as_3d(projections, angles)
    n_ang, n_rows, n = p.shape
    n_pad = max(64, int(2 ** np.ceil(np.log2(2 * n))))
    spectrum = scipy.fft.rfft(p.astype(np.float64), n=n_pad, axis=-1)
    spectrum *= ramp_filter(n_pad, filter_name)
    q = scipy.fft.irfft(spectrum, n=n_pad, axis=-1)[..., :n]
    q *= angular_weights(angles)[:, None, None]
    proj = Projector.cached(angles, n, center, kind="linear")
    vol = proj.adjoint(q.astype(np.float32))
    return vol[0] if single else vol
