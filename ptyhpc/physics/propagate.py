"""Wave propagation: Fresnel (angular-spectrum, paraxial) and far field.

The FFT is unitary with the exp(−2πi k·r) sign of NumPy and abTEM
(:mod:`ptyhpc.backend`), so intensity is conserved between planes.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .. import backend
from .probe import spatial_frequencies

__all__ = ["fresnel_propagator", "angular_spectrum_propagator", "fresnel_scaling", "propagate", "far_field",
           "far_field_adjoint"]


def fresnel_propagator(shape, sampling, wavelength, dz, xp: ModuleType = np, dtype=np.complex64):
    """Paraxial free-space propagator H(k) = exp(−iπλΔz|k|²) in FFT order.

    Kirkland 2010, eq. 6.90 (the sign matches abTEM's, so a probe of
    defocus Δf focuses after propagating by +Δf).

    Parameters
    ----------
    shape : (int, int)
    sampling : (float, float)
        Real-space pixel size, m.
    wavelength, dz : float
        m; dz > 0 propagates downstream (along the beam).

    Returns
    -------
    ndarray, ``shape``, ``dtype``
    """
    ky, kx = spatial_frequencies(shape, sampling, xp)
    return xp.exp(-1j * np.pi * wavelength * dz * (ky**2 + kx**2)).astype(dtype)


def angular_spectrum_propagator(shape, sampling, wavelength, dz, xp: ModuleType = np, dtype=np.complex64):
    """Exact free-space propagator exp(2πiΔz(√(1/λ² − |k|²) − 1/λ)) in FFT order.

    Goodman, *Introduction to Fourier Optics*, 3rd ed., eq. (3-74), without the
    constant phase exp(2πiΔz/λ); evanescent components (|k| > 1/λ) are
    set to zero. Same sign convention as :func:`fresnel_propagator`, which is
    its paraxial limit.
    """
    ky, kx = spatial_frequencies(shape, sampling, xp)
    arg = 1.0 / wavelength**2 - (ky**2 + kx**2)
    root = xp.sqrt(xp.maximum(arg, 0.0))
    # 1/λ − √(1/λ² − k²) computed as k² / (1/λ + √·) to avoid cancellation at small k.
    delta = (ky**2 + kx**2) / (1.0 / wavelength + root)
    h = xp.exp(-2j * np.pi * dz * delta) * (arg > 0)
    return h.astype(dtype)


def fresnel_scaling(pixel_size_m, focus_to_sample_m, sample_to_detector_m):
    """Equivalent parallel-beam geometry of a point-source (cone-beam) set-up.

    Fresnel scaling theorem (Paganin, *Coherent X-Ray Optics* (2006),
    eqs. 2.41–2.44): a sample at z1 from the focus, detector at z2 behind
    the sample, is equivalent to plane-wave illumination with the detector
    pixel demagnified by M = (z1 + z2)/z1 and the propagation distance
    z_eff = z2 / M; the spherical phase factor is absorbed by the probe.

    Parameters
    ----------
    pixel_size_m : float or (float, float)
        Detector pixel, m.
    focus_to_sample_m, sample_to_detector_m : float
        z1, z2 in m (> 0).

    Returns
    -------
    effective_pixel_m : float or tuple
        Δ / M.
    effective_distance_m : float
        z2 / M.
    magnification : float

    Raises
    ------
    ValueError
        Non-positive distances.
    """
    if not (focus_to_sample_m > 0 and sample_to_detector_m > 0):
        raise ValueError("focus-to-sample and sample-to-detector distances must be > 0 m")
    m = (focus_to_sample_m + sample_to_detector_m) / focus_to_sample_m
    if np.ndim(pixel_size_m):
        eff = tuple(float(p) / m for p in pixel_size_m)
    else:
        eff = float(pixel_size_m) / m
    return eff, sample_to_detector_m / m, m


def propagate(wave, dz, sampling, wavelength):
    """Propagate ``wave`` (..., ny, nx) by ``dz`` metres (Fresnel, paraxial)."""
    xp = backend.xp_of(wave)
    h = fresnel_propagator(wave.shape[-2:], sampling, wavelength, dz, xp=xp, dtype=wave.dtype)
    return backend.ifft2(backend.fft2(wave) * h)


def far_field(exit_wave):
    """Far-field (Fraunhofer) wave of ``exit_wave`` (..., ny, nx): unitary FFT, FFT order."""
    return backend.fft2(exit_wave)


def far_field_adjoint(wave_k):
    """Adjoint (= inverse, the FFT being unitary) of :func:`far_field`."""
    return backend.ifft2(wave_k)
