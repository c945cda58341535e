"""Tilt series of 4D-STEM scans of a few nanocrystals, for the 3D ED tests (:mod:`ptyhpc.ed3d`).

Kinematic model, written as Merlin ``.mib`` files (one per tilt) that :mod:`ptyhpc.stem.readers`
reads, with ``tilts.csv`` (``file,tilt_deg``) and ``calib.yaml``.

Geometry (the conventions of ``docs/ed3d.md``): lab frame (x, y, z) = (scan x = detector column,
scan y = detector row, beam). The tilt axis is the scan y axis; at tilt θ the specimen is rotated by
R_y(θ) = [[cos θ, 0, sin θ], [0, 1, 0], [−sin θ, 0, cos θ]] about the scan centre, so a particle at
(x, y, z) is seen at x' = x_c + (x − x_c) cos θ + z sin θ, y' = y (plus the scan drift of that tilt), and a
reciprocal-lattice vector g (crystal frame = lab frame at θ = 0) is at R_y(θ)·g. A reflection is
excited with weight exp(−s²/2σ_s²), s its excitation error on the Ewald sphere of the incident wave
k0 = (0, 0, 1/λ), σ_s from the particle size and the beam convergence; its spot lands at detector
(col, row) = centre + (g_x, g_y)/Δk. The beam centre wanders from frame to frame (a descan ramp plus
jitter). A probe at a particle pixel sees the transmitted beam attenuated and the particle's spots
weighted by its projected thickness (a sphere); an amorphous support adds a diffuse halo; Poisson noise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ED3DTruth", "simulate_ed3d", "write_ed3d_series", "cell_matrix", "rotation_y"]


def cell_matrix(a, b, c, alpha_deg, beta_deg, gamma_deg) -> np.ndarray:
    """Direct basis (3, 3), columns a, b, c (same unit as the lengths); a along x, b in the xy plane."""
    al, be, ga = np.radians([alpha_deg, beta_deg, gamma_deg])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = np.sqrt(c * c - cx * cx - cy * cy)
    return np.array([[a, b * np.cos(ga), cx], [0.0, b * np.sin(ga), cy], [0.0, 0.0, cz]])


def rotation_y(theta_rad: float) -> np.ndarray:
    """R_y(θ) acting on (x, y, z) column vectors (right-handed rotation about +y)."""
    c, s = np.cos(theta_rad), np.sin(theta_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass
class ED3DTruth:
    """Ground truth of :func:`simulate_ed3d` (lengths in m unless named otherwise).

    ``positions_px`` (n_particles, n_tilts, 2): (row, col) of each particle's projected centre in
    each scan's own frame (drift included); ``direct_basis_m`` (n_particles, 3, 3): columns a, b, c
    in the lab frame at tilt 0; ``beam_centre_px`` (n_tilts, n_positions, 2) (row, col).
    """

    tilt_deg: np.ndarray
    frames: np.ndarray                    # (n_tilts, scan_y*scan_x, det, det) uint16
    calibration: dict
    cell: tuple                           # a, b, c (m), alpha, beta, gamma (deg)
    direct_basis_m: np.ndarray
    positions_px: np.ndarray
    radius_px: float
    drift_px: np.ndarray                  # (n_tilts, 2)
    beam_centre_px: np.ndarray
    dose_e_per_A2_per_scan: float
    scan_shape: tuple = field(default=(24, 24))


def simulate_ed3d(*, scan_shape=(24, 24), det: int = 48, tilts_deg=None, n_particles: int = 3,
                  cell=(5.2e-10, 6.1e-10, 7.3e-10, 90.0, 101.0, 90.0), step_m: float = 1.5e-9,
                  dk_inv_m: float = 4.5e8, beam_energy_eV: float = 200e3, alpha_rad: float = 1e-3,
                  radius_px: float = 3.2, beam_counts: float = 1000.0, g_max_inv_m: float = 0.95e10,
                  drift_step_px: float = 0.2, seed: int = 0) -> ED3DTruth:
    """Simulate the tilt series (frames in memory; :func:`write_ed3d_series` writes the files).

    Parameters
    ----------
    scan_shape : (int, int)
    det : int
        Detector side (px).
    tilts_deg : array, optional
        Default 20 tilts −19° … +19° in 2° steps.
    n_particles : int
        Up to 3 isolated spheres at fixed places (each its own random orientation of ``cell``).
    cell : (a, b, c, alpha, beta, gamma)
        m and degrees.
    step_m, dk_inv_m, beam_energy_eV, alpha_rad : float
        Scan step, reciprocal sampling per detector pixel, beam energy, convergence semi-angle.
    radius_px : float
        Particle radius in scan pixels.
    beam_counts : float
        Electrons per frame (= counts; counting detector).
    g_max_inv_m : float
        Highest reflection |g| simulated.
    drift_step_px : float
        RMS scan drift between consecutive tilts (scan px, random walk).
    seed : int
    """
    from ..physics.wavelength import electron_wavelength  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    tilts = np.arange(-19.0, 20.0, 2.0) if tilts_deg is None else np.asarray(tilts_deg, float)
    sy, sx = scan_shape
    lam = electron_wavelength(beam_energy_eV)
    A = cell_matrix(*cell)
    B = np.linalg.inv(A).T  # reciprocal basis (columns a*, b*, c*), 1/m
    n_max = int(np.ceil(g_max_inv_m * np.linalg.norm(A, axis=0).max())) + 1
    h = np.stack(np.meshgrid(*[np.arange(-n_max, n_max + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, 1)]
    g_cryst = h @ B.T
    keep = np.linalg.norm(g_cryst, axis=1) <= g_max_inv_m
    h, g_cryst = h[keep], g_cryst[keep]
    # Structure factor of a 3-atom basis (no systematic absences), Debye-Waller-like fall-off.
    basis = np.array([[0.0, 0.0, 0.0], [0.31, 0.22, 0.41], [0.63, 0.71, 0.18]])
    F = np.exp(2j * np.pi * h @ basis.T) @ np.array([1.0, 0.8, 0.6])
    Ig = np.abs(F) ** 2 * np.exp(-(np.linalg.norm(g_cryst, axis=1) * 2.5e-10) ** 2)
    places = np.array([[7.0, 7.0, 2.0], [12.5, 16.5, -3.0], [17.5, 7.5, 3.0]])[:n_particles]  # (row, col, z) px
    U = np.stack([_random_rotation(rng) for _ in range(n_particles)])
    sigma_s = np.hypot(1.0 / (2 * 2 * radius_px * step_m), 0.0)  # ~ 1/(2·diameter)
    drift = np.vstack([[0.0, 0.0], np.cumsum(rng.normal(0, drift_step_px, (len(tilts) - 1, 2)), 0)])
    yy, xx = np.divmod(np.arange(sy * sx), sx)
    xc = (sx - 1) / 2
    descan = np.stack([0.02 * (yy - sy / 2) + 0.01 * (xx - sx / 2), -0.015 * (yy - sy / 2) + 0.02 * (xx - sx / 2)], 1)
    rows = np.arange(det, dtype=float)
    sig_px = 0.8
    frames = np.zeros((len(tilts), sy * sx, det, det), np.uint16)
    positions = np.zeros((n_particles, len(tilts), 2))
    centres = np.zeros((len(tilts), sy * sx, 2))
    rr = np.hypot(*np.meshgrid(rows - det / 2, rows - det / 2, indexing="ij"))
    halo = 0.15 * np.exp(-rr / 6.0)  # amorphous support, counts per pixel per frame
    for t, th_deg in enumerate(tilts):
        th = np.radians(th_deg)
        R = rotation_y(th)
        centre = np.array([det / 2 + 0.4, det / 2 - 0.3]) + descan + rng.normal(0, 0.15, (sy * sx, 2))
        centres[t] = centre
        thick = np.zeros((n_particles, sy * sx))
        spot_pos, spot_w = [], []
        for p in range(n_particles):
            r0, c0, z0 = places[p]
            pos = np.array([r0, xc + (c0 - xc) * np.cos(th) + z0 * np.sin(th)]) + drift[t]
            positions[p, t] = pos
            d2 = ((yy - pos[0]) ** 2 + (xx - pos[1]) ** 2) / radius_px ** 2
            thick[p] = np.sqrt(np.clip(1 - d2, 0, None))
            g = g_cryst @ (R @ U[p]).T
            s = 1 / lam - np.linalg.norm(g + [0, 0, 1 / lam], axis=1)
            w = Ig * np.exp(-s ** 2 / (2 * sigma_s ** 2))
            on = w > 1e-3 * Ig.max()
            spot_pos.append(np.stack([g[on, 1], g[on, 0]], 1) / dk_inv_m)  # (row, col) offsets
            spot_w.append(w[on])
        total = thick.sum(0)
        mean = np.empty((sy * sx, det, det))
        # transmitted beam (attenuated by the particles) and the halo, every frame
        gy = np.exp(-(rows[None] - centre[:, :1]) ** 2 / (2 * sig_px ** 2))
        gx = np.exp(-(rows[None] - centre[:, 1:]) ** 2 / (2 * sig_px ** 2))
        direct = beam_counts * np.clip(1 - 0.35 * total, 0.2, 1) / (2 * np.pi * sig_px ** 2)
        mean[:] = direct[:, None, None] * gy[:, :, None] * gx[:, None, :] + halo
        for p in range(n_particles):
            idx = np.nonzero(thick[p] > 0)[0]
            if not len(idx) or not len(spot_w[p]):
                continue
            w = spot_w[p] / spot_w[p].sum() * 0.3 * beam_counts / (2 * np.pi * sig_px ** 2)
            py = np.exp(-(rows[None, None] - (centre[idx, None, :1] + spot_pos[p][None, :, :1])) ** 2 / (2 * sig_px ** 2))
            px = np.exp(-(rows[None, None] - (centre[idx, None, 1:] + spot_pos[p][None, :, 1:])) ** 2 / (2 * sig_px ** 2))
            mean[idx] += thick[p][idx, None, None] * np.einsum("fsi,s,fsj->fij", py, w, px, optimize=True)
        frames[t] = np.minimum(rng.poisson(mean), 65535)
    A_lab = np.einsum("pij,jk->pik", U, A)
    return ED3DTruth(tilts, frames, {
        "beam_energy_eV": beam_energy_eV, "convergence_semiangle_rad": alpha_rad, "scan_step_m": step_m,
        "reciprocal_sampling_inv_m": dk_inv_m, "scan_shape": [sy, sx], "counts_per_electron": 1.0,
        "scan_rotation_rad": 0.0, "detector_transpose": False},
        tuple(cell), A_lab, positions, radius_px, drift, centres,
        beam_counts / (step_m * 1e10) ** 2, tuple(scan_shape))


def write_mib(path, frames) -> Path:
    """(n, h, w) uint16 frames, in rosettasciio's orientation, as a single-chip Merlin .mib (rows stored bottom-up)."""
    path = Path(path)
    n, h, w = frames.shape
    with open(path, "wb") as f:
        for i in range(n):
            head = ",".join(["MQ1", f"{i + 1:06d}", "00384", "01", f"{w:04d}", f"{h:04d}", "U16", "   1x1", "01",
                             "2026-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "1.000000E+1", "5.110000E+2",
                             "2026-01-01T00:00:00.000000000Z", "1000000ns", "0"]) + ","
            f.write(head.encode().ljust(384, b" "))
            f.write(np.ascontiguousarray(frames[i, ::-1]).astype(">u2").tobytes())
    return path


def write_ed3d_series(folder, truth: ED3DTruth) -> dict:
    """Write ``scan_NNN.mib`` per tilt (files in acquisition order, shuffled angles are not needed),
    ``tilts.csv`` (``file,tilt_deg``) and ``calib.yaml`` into ``folder``; returns their paths."""
    import yaml  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for t, fr in enumerate(truth.frames):
        files.append(write_mib(folder / f"scan_{t:03d}.mib", fr))
    with open(folder / "tilts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "tilt_deg"])
        for p, a in zip(files, truth.tilt_deg):
            w.writerow([p.name, f"{a:.4f}"])
    (folder / "calib.yaml").write_text(yaml.safe_dump(truth.calibration))
    return {"files": files, "tilts": folder / "tilts.csv", "calibration": folder / "calib.yaml"}
