"""Weak/strong-phase 4D-STEM simulation of a known crystal, for the ground-truth tests (single slice).

The specimen is a projected potential written as a phase φ(r) = Σ_a w_a
exp(−|r − r_a|²/(2σ²)) (rad; a 2D crystal with a two-atom basis, or random
atoms), transmission t = exp(iφ); the probe is :func:`ptyhpc.physics.probe.electron_probe`
(aperture α, defocus). Each frame is |FFT[P(r − r_p) t(r)]|², the pattern
centred on the detector, scaled to the dose (e⁻/Å² × step²) and Poisson-sampled.

Lab frame = detector frame. The scan is rotated by ``scan_rotation_rad`` θ: a
scan-frame vector v is R(θ)v in the lab, so a scan-frame momentum transfer k
lands at detector (col, row) = centre + R(θ)k/Δk (docs/stem.md); with
``transpose`` the detector axes are swapped afterwards. A descan shifts the
whole pattern by a linear function of the scan position. The truth is φ at
the scan positions, evaluated analytically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..physics.probe import electron_probe
from ..physics.wavelength import electron_wavelength

__all__ = ["StemSim", "simulate_4dstem", "crystal_atoms", "phase_at", "drift_series"]


@dataclass
class StemSim:
    """Parameters (SI) of :func:`simulate_4dstem`."""

    energy_eV: float = 200e3
    semiangle_rad: float = 0.025
    det_px: int = 64
    dx_m: float = 0.2e-10            # lab pixel of the simulation window (Δk = 1/(det_px dx))
    scan_shape: tuple = (32, 32)
    step_m: float = 0.4e-10
    scan_rotation_rad: float = 0.0
    transpose: bool = False
    defocus_m: float = 0.0
    dose_e_per_A2: float | None = None  # None: noise-free, frames of unit total intensity
    descan_px_per_step: tuple = (0.0, 0.0)  # pattern shift (rows, cols) per scan step along (y, x)
    lattice_m: float = 3.0e-10
    sigma_m: float = 0.35e-10
    weights_rad: tuple = (0.30, 0.15)
    seed: int = 0

    @property
    def wavelength_m(self) -> float:
        return electron_wavelength(self.energy_eV)

    @property
    def dk(self) -> float:
        return 1.0 / (self.det_px * self.dx_m)


def crystal_atoms(extent_m: float, lattice_m: float, weights) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of a square lattice with a basis at (0, 0) and (½, ½) covering [−extent, extent]²: (n, 2) (y, x), (n,)."""
    n = int(np.ceil(extent_m / lattice_m)) + 1
    g = np.arange(-n, n + 1) * lattice_m
    yy, xx = np.meshgrid(g, g, indexing="ij")
    a = np.stack([yy.ravel(), xx.ravel()], 1)
    b = a + lattice_m / 2
    return np.concatenate([a, b]), np.concatenate([np.full(len(a), weights[0]), np.full(len(b), weights[1])])


def phase_at(points: np.ndarray, atoms, weights, sigma: float) -> np.ndarray:
    """φ at points (..., 2) (y, x) m: Σ w exp(−d²/2σ²) over atoms within 5σ."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    near = cKDTree(flat).sparse_distance_matrix(cKDTree(atoms), 5 * sigma, output_type="coo_matrix")
    vals = np.exp(-near.data**2 / (2 * sigma**2)) * np.asarray(weights)[near.col]
    return np.bincount(near.row, vals, minlength=len(flat)).reshape(pts.shape[:-1])


def _rot(t: float) -> np.ndarray:
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def simulate_4dstem(p: StemSim) -> dict:
    """Simulate a 4D-STEM raster scan.

    Returns
    -------
    dict
        ``frames`` (scan_y·scan_x, det, det) uint16 (with dose) or float32;
        ``phase`` (scan_y, scan_x) float64 truth at the scan positions (rad);
        ``calibration`` dict of the :mod:`ptyhpc.stem.calibration` keys; ``adf_truth`` none.
    """
    rng = np.random.default_rng(p.seed)
    sy, sx = p.scan_shape
    n = p.det_px
    lam = p.wavelength_m
    # Scan positions in the lab frame: (x, y)_lab = R(θ) (x, y)_scan, centred on the origin.
    iy, ix = np.meshgrid(np.arange(sy) - (sy - 1) / 2, np.arange(sx) - (sx - 1) / 2, indexing="ij")
    xy_scan = np.stack([ix.ravel(), iy.ravel()], 1) * p.step_m
    xy_lab = xy_scan @ _rot(p.scan_rotation_rad).T
    pos_lab = xy_lab[:, ::-1]  # (y, x)
    extent = np.abs(pos_lab).max() + n * p.dx_m
    atoms, weights = crystal_atoms(extent + 6 * p.sigma_m, p.lattice_m, p.weights_rad)
    # Object on a lab grid holding every window.
    m = int(np.ceil(2 * extent / p.dx_m)) + 4
    g = (np.arange(m) - m // 2) * p.dx_m
    gy, gx = np.meshgrid(g, g, indexing="ij")
    phi = phase_at(np.stack([gy, gx], -1), atoms, weights, p.sigma_m)
    t = np.exp(1j * phi).astype(np.complex64)
    probe = electron_probe((n, n), (p.dx_m, p.dx_m), lam, p.semiangle_rad, defocus=p.defocus_m, dtype=np.complex128)
    import scipy.fft as sfft  # noqa: PLC0415

    probe_k = np.fft.fft2(np.fft.ifftshift(probe)).astype(np.complex64)
    kf = np.fft.fftfreq(n, p.dx_m).astype(np.float32)
    ky, kx = np.meshgrid(kf, kf, indexing="ij")
    rr = ((np.arange(n) - n // 2) * p.dx_m).astype(np.float32)
    ry, rx = np.meshgrid(rr, rr, indexing="ij")
    frames = np.empty((sy * sx, n, n), np.float32)
    idx = pos_lab / p.dx_m + m // 2
    i0 = np.floor(idx).astype(int)
    frac = ((idx - i0) * p.dx_m).astype(np.float32)
    dsy, dsx = p.descan_px_per_step
    for k in range(0, sy * sx, 256):
        sl = slice(k, min(k + 256, sy * sx))
        ramp = np.exp(np.complex64(-2j * np.pi) * (ky[None] * frac[sl, 0, None, None] + kx[None] * frac[sl, 1, None, None]))
        pr = np.fft.fftshift(sfft.ifft2(probe_k[None] * ramp), axes=(-2, -1))
        win = np.stack([t[a - n // 2:a + n // 2, b - n // 2:b + n // 2] for a, b in i0[sl]])
        exit_ = pr * win
        # Descan: a linear phase shifts the whole pattern by (dy, dx) pixels.
        if dsy or dsx:
            dy = (dsy * p.dk * iy.ravel()[sl]).astype(np.float32)
            dx = (dsx * p.dk * ix.ravel()[sl]).astype(np.float32)
            exit_ *= np.exp(np.complex64(2j * np.pi) * (ry[None] * dy[:, None, None] + rx[None] * dx[:, None, None]))
        frames[sl] = np.abs(np.fft.fftshift(sfft.fft2(exit_, norm="ortho"), axes=(-2, -1))) ** 2
    frames /= frames.sum(axis=(1, 2), keepdims=True).mean()
    if p.transpose:
        frames = np.ascontiguousarray(frames.transpose(0, 2, 1))
    if p.dose_e_per_A2 is not None:
        per_frame = p.dose_e_per_A2 * (p.step_m * 1e10) ** 2
        frames = rng.poisson(frames * per_frame).astype(np.uint16)
    truth = phase_at(pos_lab.reshape(sy, sx, 2), atoms, weights, p.sigma_m)
    cal = {"beam_energy_eV": p.energy_eV, "convergence_semiangle_rad": p.semiangle_rad, "scan_step_m": p.step_m,
           "reciprocal_sampling_inv_m": p.dk, "scan_shape": [sy, sx]}
    return {"frames": frames, "phase": truth, "calibration": cal}


def drift_series(n_frames: int, shape=(96, 96), *, dose_counts: float = 2.0, drift_px=(0.37, -0.23),
                 jitter_px: float = 0.3, seed: int = 3) -> dict:
    """An image series of random atoms (an ADF-like image, 1 px = 0.2 Å) drifting linearly plus jitter.

    Returns ``images`` (n, ny, nx) Poisson counts (mean ``dose_counts`` per pixel on the
    background-and-atoms image), ``shifts`` (n, 2) (y, x) px of each image with respect to image 0,
    ``truth`` (ny, nx) the noise-free image 0.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    pad = 16
    atoms = rng.uniform(-pad, max(ny, nx) + pad, (int(0.02 * (ny + 2 * pad) * (nx + 2 * pad)), 2))
    shifts = np.arange(n_frames)[:, None] * np.asarray(drift_px) + rng.normal(0, jitter_px, (n_frames, 2))
    shifts -= shifts[0]
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    imgs = []
    truth = 0.2 + phase_at(np.stack([yy, xx], -1).astype(float), atoms, np.ones(len(atoms)), 1.2)
    for s in shifts:
        # Image k shows the specimen moved by +s: intensity(r) = truth(r − s).
        pts = np.stack([yy - s[0], xx - s[1]], -1)
        img = 0.2 + phase_at(pts, atoms, np.ones(len(atoms)), 1.2)
        imgs.append(rng.poisson(img / img.mean() * dose_counts))
    return {"images": np.asarray(imgs, np.float32), "shifts": shifts, "truth": truth}
