"""Simulated far-field ptychography scans with a known object (for tests and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .. import backend
from ..physics import electron_probe, electron_wavelength
from ..ptycho import operators as ops

__all__ = ["SimulatedScan", "letter_phase_object", "simulate_scan"]


@dataclass
class SimulatedScan:
    """A simulated scan: data, the truth and the geometry used to make it."""

    frames: np.ndarray        # (n, det, det) float32 counts, centred
    positions_m: np.ndarray   # (n, 2) float64
    object: np.ndarray        # (H, W) complex64, true transmission
    probe: np.ndarray         # (det, det) complex64, true probe
    pixel_size_m: tuple
    origin_m: tuple
    wavelength_m: float
    convergence_semiangle_rad: float
    defocus_m: float


def letter_phase_object(shape, max_phase=0.5, seed=0):
    """A weak phase object: an asymmetric "L" plus smooth random texture, rad.

    The "L" makes a transposed or mirrored reconstruction obvious.
    Returns (H, W) float32 phase.
    """
    rng = np.random.default_rng(seed)
    H, W = shape
    phase = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    phase /= np.abs(phase).max()
    ell = np.zeros(shape)
    ell[H // 4: 3 * H // 4, W // 3: W // 3 + W // 10] = 1.0
    ell[3 * H // 4 - H // 10: 3 * H // 4, W // 3: 2 * W // 3] = 1.0
    phase = 0.4 * phase + ndimage.gaussian_filter(ell, 1.0)
    return (max_phase * phase / np.abs(phase).max()).astype(np.float32)


def simulate_scan(*, det=64, scan=(12, 12), step_px=3.0, energy_eV=60e3, convergence_semiangle=25e-3,
                  defocus=150e-10, pixel_size_m=0.4e-10, dose_per_position=None, max_phase=0.5,
                  seed=0) -> SimulatedScan:
    """Simulate a raster scan of :func:`letter_phase_object` with an electron probe.

    Parameters
    ----------
    det : int
        Detector (= probe window) size, pixels.
    scan : (int, int)
        Raster shape.
    step_px : float
        Scan step in object pixels (non-integer steps exercise sub-pixel shifts).
    dose_per_position : float, optional
        Mean counts per pattern; Poisson noise when given, noise-free otherwise.

    Returns
    -------
    SimulatedScan
    """
    rng = np.random.default_rng(seed)
    lam = electron_wavelength(energy_eV)
    px = (pixel_size_m, pixel_size_m)
    iy, ix = np.mgrid[:scan[0], :scan[1]]
    # Small random jitter so positions are not on a perfect lattice (raster grid pathology).
    pos_px = np.stack([iy.ravel(), ix.ravel()], 1) * step_px + rng.uniform(-0.3, 0.3, (iy.size, 2))
    positions = (pos_px + det) * pixel_size_m
    geom = ops.ScanGeometry.from_positions(positions, (det, det), px)
    phase = letter_phase_object(geom.object_shape, max_phase, seed)
    obj = np.exp(1j * phase).astype(np.complex64)
    probe = electron_probe((det, det), px, lam, convergence_semiangle, defocus=defocus,
                           intensity=1.0 if dose_per_position is None else dose_per_position)
    idx = np.arange(geom.n_positions)
    probes = ops.shifted_probes(backend.fft2(probe), ops.shift_ramps(geom.frac, (det, det)))
    psi_k = backend.fft2(ops.exit_waves(obj, probes, geom.flat_index(idx)))
    intensity = np.fft.fftshift(np.abs(psi_k) ** 2, axes=(-2, -1))
    if dose_per_position is not None:
        intensity = rng.poisson(intensity).astype(np.float32)
    return SimulatedScan(intensity.astype(np.float32), positions, obj, probe, geom.pixel_size_m,
                         geom.origin_m, lam, convergence_semiangle, defocus)
