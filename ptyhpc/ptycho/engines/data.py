"""Data layout and the result record: measured amplitudes in FFT order, the starting probe, :class:`PtychoResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from ..propagators import FarField

__all__ = ["PtychoResult", "prepare_amplitudes", "probe_from_mean_pattern", "detector_layout"]


@dataclass
class PtychoResult:
    """Output of :func:`reconstruct` (host NumPy arrays).

    Attributes
    ----------
    object : (H, W) complex64
        Transmission function; phase in rad (positive for a positive potential).
    probe : (ny, nx) complex64, or (m, ny, nx) for m > 1 probe modes
        Real-space probe at the object plane, on the padded FFT grid.
    error : (n_iter,) float32
        Normalised amplitude error Σ(|Ψ| − √I)² / Σ I, per iteration, over measured pixels.
    illumination : (H, W) float32
        Σ_j |P_j|² on the object grid (where the object is constrained).
    pixel_size_m, origin_m : (float, float)
        Object pixel size and scan-frame (y, x) of pixel [0, 0], m.
    """

    object: np.ndarray
    probe: np.ndarray
    error: np.ndarray
    illumination: np.ndarray
    pixel_size_m: tuple
    origin_m: tuple
    info: dict = field(default_factory=dict)



def prepare_amplitudes(frames, fft_shape=None, mask=None, centred=True):
    """Centred diffraction patterns → measured amplitudes in FFT order, padded.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x)
        Intensities (counts), zero frequency at (det_y//2, det_x//2).
    fft_shape : (int, int), optional
        FFT grid, ≥ detector shape; extra pixels are unmeasured (left free).
        Defaults to the next fast FFT length of each axis.
    mask : ndarray of bool, (det_y, det_x), optional
        True where a pixel is measured (False for gaps, hot pixels).
    centred : bool
        Far-field patterns (zero frequency at the centre, shifted to FFT
        order here); False for near-field images, which are used as they are
        (``fft_shape`` must then equal the detector shape).

    Returns
    -------
    amplitudes : (n, *fft_shape) float32, √max(I, 0), FFT order; 0 on unmeasured pixels
    measured : (*fft_shape) bool, FFT order

    Raises
    ------
    ValueError
        ``fft_shape`` smaller than the detector (or, near field, different from it);
        ``mask`` not of the detector's shape.
    """
    frames = np.asarray(frames)
    n, dy, dx = frames.shape
    if fft_shape is None:
        fft_shape = (scipy.fft.next_fast_len(dy), scipy.fft.next_fast_len(dx)) if centred else (dy, dx)
    Ny, Nx = fft_shape
    if mask is not None and np.shape(mask) != (dy, dx):
        raise ValueError(f"mask shape {np.shape(mask)} differs from the detector {(dy, dx)}")
    meas_det = np.ones((dy, dx), bool) if mask is None else np.asarray(mask, bool)
    if not centred:
        if tuple(fft_shape) != (dy, dx):
            raise ValueError(f"near-field data are not padded: fft_shape {fft_shape} must equal {(dy, dx)}")
        amp = np.sqrt(np.maximum(frames, 0, dtype=np.float32))
        if mask is not None:
            amp *= meas_det
        return amp, meas_det.copy()
    if Ny < dy or Nx < dx:
        raise ValueError(f"fft_shape {fft_shape} is smaller than the detector {(dy, dx)}")
    # Padded so that the zero frequency stays at the centre pixel N//2, then ifftshifted: detector
    # pixel (r, c) lands at ((r − dy//2) mod Ny, (c − dx//2) mod Nx). The result is filled in place,
    # a block of frames at a time, so the only full-size array is the result (4 B per pixel; padding
    # then shifting held three copies, the peak memory of a reconstruction).
    rows = ((np.arange(dy) - dy // 2) % Ny)[:, None]
    cols = ((np.arange(dx) - dx // 2) % Nx)[None, :]
    amp = np.zeros((n, Ny, Nx), dtype=np.float32)
    for s in range(0, n, 64):
        block = np.sqrt(np.maximum(frames[s:s + 64], 0, dtype=np.float32))
        if mask is not None:
            block *= meas_det       # unmeasured pixels carry no data (and no counts in the totals)
        amp[s:s + 64, rows, cols] = block
    measured = np.zeros((Ny, Nx), dtype=bool)
    measured[rows, cols] = meas_det
    return amp, measured


def probe_from_mean_pattern(frames, propagator=None, fft_shape=None):
    """Initial probe when nothing else is known: the mean measured amplitude, flat phase, propagated back.

    Far field: P = fftshift(F⁻¹[√⟨I⟩]) (a focused probe with the measured
    spectrum's extent); near field: P = H⁻¹[√⟨I⟩] (the mean image back-propagated
    to the sample). Σ|P|² equals the mean counts per frame.

    Parameters
    ----------
    frames : (n, det_y, det_x)
    propagator : FarField or NearField, optional
    fft_shape : (int, int), optional
        Far field only: padded grid (see :func:`prepare_amplitudes`).

    Returns
    -------
    (Ny, Nx) complex64, centred at (Ny//2, Nx//2) for the far field.
    """
    prop = FarField() if propagator is None else propagator
    mean = np.mean(np.asarray(frames, dtype=np.float32), axis=0, keepdims=True)
    amp, _ = prepare_amplitudes(mean, fft_shape, centred=prop.centred_data)
    probe = prop.adjoint(amp[0].astype(np.complex64))
    if prop.centred_data:
        probe = np.fft.fftshift(probe)
    return probe.astype(np.complex64)

def detector_layout(image, det_shape, centred):
    """Inverse of :func:`prepare_amplitudes`' layout for one (Ny, Nx) image: FFT order, padded → detector."""
    if not centred:
        return image.copy()
    image = np.fft.fftshift(image)
    (Ny, Nx), (dy, dx) = image.shape, det_shape
    py0, px0 = Ny // 2 - dy // 2, Nx // 2 - dx // 2
    return image[py0:py0 + dy, px0:px0 + dx].copy()
