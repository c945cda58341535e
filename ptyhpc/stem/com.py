"""Centre-of-mass imaging: descan removal, scan–detector rotation and transpose, DPC and iCOM.

Convention (docs/stem.md): arrays are (row, col) = (y, x). With the detector
frame as rosettasciio returns it and the transpose (if any) undone, a
scan-frame momentum transfer k = (k_x, k_y) lands at detector
(col, row) = centre + R(θ) k / Δk, R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]];
so a measured CoM vector d = (com_x, com_y) (pixels) is k = R(−θ) d Δk in the
scan frame.

Physics: for a thin specimen the first moment of the diffraction pattern is
⟨k⟩ = (1/2π) (∇φ ⊛ |P|²)(r_p) (spatial frequency, 1/m; exp(−2πik·r) Fourier
convention), with φ the specimen phase (Waddell & Chapman, Optik 54, 83 (1979);
Lazić et al., Ultramicroscopy 160, 265 (2016)). DPC here is the beam deflection
λ⟨k⟩ (rad); iCOM integrates 2π⟨k⟩ by Fourier integration (mirror-extended to make
the field periodic) into the phase (rad).

Rotation: a gradient field is curl-free, so θ (and the transpose) minimise
the mean squared curl of the rotated CoM field (as py4DSTEM and LiberTEM do);
curl cannot tell θ from θ + π (the field's sign), and the phase's sign flips
with it. The branch is resolved physically: atoms attract the electrons, so
the phase peaks where the annular dark field does (positive correlation of
iCOM with ADF); without an ADF image, the phase of atoms is positively skewed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["remove_descan", "to_scan_frame", "curl_rms", "RotationFit", "find_rotation", "icom", "dpc"]


def remove_descan(com_y: np.ndarray, com_x: np.ndarray, weights: np.ndarray | None = None):
    """Subtract a least-squares plane a + b·row + c·col from each CoM component (the descan, and the offset).

    Parameters
    ----------
    com_y, com_x : ndarray (scan_y, scan_x)
    weights : ndarray (scan_y, scan_x), optional
        e.g. the total counts (noisy low-count frames weigh less).

    Returns
    -------
    com_y, com_x : ndarray (scan_y, scan_x) float64
    planes : ndarray (2, 3)
        (a, b, c) of each component, pixels and pixels per scan step.
    """
    sy, sx = com_y.shape
    iy, ix = np.meshgrid(np.arange(sy), np.arange(sx), indexing="ij")
    a = np.stack([np.ones(sy * sx), iy.ravel(), ix.ravel()], 1)
    w = np.ones(sy * sx) if weights is None else np.sqrt(np.maximum(np.asarray(weights, float).ravel(), 0))
    out, planes = [], []
    for c in (com_y, com_x):
        coef, *_ = np.linalg.lstsq(a * w[:, None], np.asarray(c, float).ravel() * w, rcond=None)
        out.append(c - (a @ coef).reshape(sy, sx))
        planes.append(coef)
    return out[0], out[1], np.array(planes)


def to_scan_frame(com_y, com_x, theta: float, transpose: bool = False):
    """Detector CoM (rows, cols) → scan-frame (k_y, k_x) in the same units: undo the transpose, rotate by −θ."""
    cy, cx = (com_x, com_y) if transpose else (com_y, com_x)
    c, s = np.cos(theta), np.sin(theta)
    kx = c * cx + s * cy
    ky = -s * cx + c * cy
    return ky, kx


def curl_rms(ky, kx, q_max: float = 0.5, wiener: bool = True) -> float:
    """Solenoidal (curl) fraction of a field: Σ|q_x K̂_y − q_y K̂_x|²/|q|² / Σ|K̂|² over |q| ≤ q_max (cycles/step).

    Spectral, on the mirror-extended field (as :func:`icom`), so the curl of
    every spatial frequency counts with the weight of its amplitude rather
    than |q|² (finite differences would let the aliased high frequencies
    decide); 0 for a gradient field, scale-free.
    """
    ey, ex = _mirror(np.asarray(ky, float), np.asarray(kx, float))
    qy = np.fft.fftfreq(ey.shape[0])[:, None]
    qx = np.fft.fftfreq(ey.shape[1])[None, :]
    q2 = qy**2 + qx**2
    keep = (q2 <= q_max**2) & (q2 > 0)
    fy, fx = np.fft.fft2(ey), np.fft.fft2(ex)
    sol = np.abs(qx * fy - qy * fx) ** 2 / np.where(q2 > 0, q2, 1)
    tot = np.abs(fy) ** 2 + np.abs(fx) ** 2
    if wiener:
        # Weigh each frequency by its signal fraction (shot noise is white: its power is the median).
        noise = np.median(tot[keep])
        w = np.clip(tot - 2 * noise, 0, None) / np.where(tot > 0, tot, 1)
        sol, tot = sol * w, tot * w
    return float(np.sqrt(sol[keep].sum() / max(tot[keep].sum(), 1e-300)))


def _mirror(ky, kx):
    """Even extension of φ: k_y odd in y / even in x, k_x even in y / odd in x; shape (2 sy, 2 sx)."""
    ey = np.block([[ky, ky[:, ::-1]], [-ky[::-1], -ky[::-1, ::-1]]])
    ex = np.block([[kx, -kx[:, ::-1]], [kx[::-1], -kx[::-1, ::-1]]])
    return ey, ex


@dataclass
class RotationFit:
    """Result of :func:`find_rotation`: θ (rad, in [−π, π)), transpose, and the curl of each candidate."""

    scan_rotation_rad: float
    transpose: bool
    curl: float
    curl_other_parity: float
    branch_score: float


def _best_theta(com_y, com_x, transpose):
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    grid = np.deg2rad(np.arange(0, 180, 2.0))
    curls = [curl_rms(*to_scan_frame(com_y, com_x, t, transpose)) for t in grid]
    t0 = grid[int(np.argmin(curls))]
    res = minimize_scalar(lambda t: curl_rms(*to_scan_frame(com_y, com_x, t, transpose)),
                          bounds=(t0 - np.deg2rad(2.5), t0 + np.deg2rad(2.5)), method="bounded",
                          options={"xatol": 1e-5})
    return float(res.x), float(res.fun)


def find_rotation(com_y, com_x, step_m=(1.0, 1.0), adf: np.ndarray | None = None) -> RotationFit:
    """Scan rotation θ and detector transpose from a CoM field (descan already removed).

    Parameters
    ----------
    com_y, com_x : ndarray (scan_y, scan_x)
        CoM in detector pixels, detector frame.
    step_m : (float, float)
        Scan step (y, x); only its ratio matters.
    adf : ndarray (scan_y, scan_x), optional
        Annular dark-field image resolving the 180° branch (see module docstring).

    Returns
    -------
    RotationFit
    """
    fits = {tr: _best_theta(com_y, com_x, tr) for tr in (False, True)}
    tr = min(fits, key=lambda k: fits[k][1])
    theta, c = fits[tr]
    # 180° branch: the phase of atoms is positive.
    ky, kx = to_scan_frame(com_y, com_x, theta, tr)
    phase = icom(ky, kx, step_m)
    if adf is not None:
        score = float(np.corrcoef(phase.ravel(), np.asarray(adf, float).ravel())[0, 1])
    else:
        d = phase - phase.mean()
        score = float(np.mean(d**3) / (np.mean(d**2) ** 1.5 + 1e-300))
    if score < 0:
        theta += np.pi
    theta = float((theta + np.pi) % (2 * np.pi) - np.pi)
    return RotationFit(theta, tr, c, fits[not tr][1], abs(score))


def icom(ky, kx, step_m=(1.0, 1.0)) -> np.ndarray:
    """Integrate a scan-frame CoM field ⟨k⟩ (1/m) into the phase φ (rad) with ∇φ = 2π⟨k⟩.

    Fourier integration φ̂(q) = −i (q_y K̂_y + q_x K̂_x) / |q|² on the field
    mirror-extended to (2·scan_y, 2·scan_x) (k_x odd in x, even in y; k_y the
    reverse), so no periodic seam is imposed; the mean phase is set to 0.

    Parameters
    ----------
    ky, kx : ndarray (scan_y, scan_x)
        Spatial frequency, 1/m (CoM pixels × Δk).
    step_m : (float, float)
        Scan step (y, x), m.

    Returns
    -------
    ndarray (scan_y, scan_x) float64, rad
    """
    ky = np.asarray(ky, float)
    kx = np.asarray(kx, float)
    sy, sx = ky.shape
    ey, ex = _mirror(ky, kx)
    qy = np.fft.fftfreq(2 * sy, step_m[0])[:, None]
    qx = np.fft.fftfreq(2 * sx, step_m[1])[None, :]
    q2 = qy**2 + qx**2
    q2[0, 0] = 1.0
    ph = -1j * (qy * np.fft.fft2(ey) + qx * np.fft.fft2(ex)) / q2
    ph[0, 0] = 0
    out = np.fft.ifft2(ph).real[:sy, :sx]
    return out - out.mean()


def dpc(ky, kx, wavelength_m: float):
    """Beam deflection (rad) in the scan frame: λ⟨k⟩ (y, x)."""
    return wavelength_m * np.asarray(ky), wavelength_m * np.asarray(kx)
