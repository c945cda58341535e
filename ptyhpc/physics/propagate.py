"""Wave propagation: Fresnel (angular-spectrum, paraxial) and far field.

The FFT is unitary with the exp(−2πi k·r) sign of NumPy and abTEM
(:mod:`ptyhpc.backend`), so intensity is conserved between planes.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .. import backend
from .probe import spatial_frequencies

__all__ = ["fresnel_propagator", "propagate", "far_field", "far_field_adjoint"]


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
