"""Electron probes from the convergence semi-angle and aberration coefficients.

Convention (abTEM's, also Krivanek's polar notation), with α = λ|k| and
φ the azimuth of k:

    χ(k) = (2π/λ) [ α²/2 (C10 + C12 cos 2(φ − φ12))
                  + α³/3 (C21 cos(φ − φ21) + C23 cos 3(φ − φ23))
                  + α⁴/4 C30 ]

so defocus alone gives χ = πλ C10 |k|², and C10 = −defocus. The probe in
Fourier space is A(k) exp(−iχ(k)) with A the condenser aperture
(Kirkland 2010, eqs. 3.42, 5.47). With the propagator of
:func:`ptyhpc.physics.propagate.fresnel_propagator` (exp(−iπλΔz|k|²)), a
probe of defocus Δf comes to a focus after propagating by +Δf.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .. import backend

__all__ = ["aberration_function", "electron_probe", "spatial_frequencies", "zone_plate_probe"]


def spatial_frequencies(shape, sampling, xp: ModuleType = np):
    """Spatial frequency grids (ky, kx) in FFT order, 1/m.

    Parameters
    ----------
    shape : (int, int)
        Array shape (ny, nx).
    sampling : (float, float)
        Real-space pixel size (dy, dx), m.

    Returns
    -------
    ky, kx : ndarray, float64, shapes (ny, 1) and (1, nx)
    """
    ky = xp.fft.fftfreq(shape[0], d=sampling[0])[:, None]
    kx = xp.fft.fftfreq(shape[1], d=sampling[1])[None, :]
    return ky, kx


def aberration_function(ky, kx, wavelength, *, C10=0.0, C12=0.0, phi12=0.0, C21=0.0, phi21=0.0,
                        C23=0.0, phi23=0.0, C30=0.0):
    """Aberration phase χ(k) in rad (convention in the module docstring).

    Parameters
    ----------
    ky, kx : ndarray
        Spatial frequencies, 1/m (broadcastable).
    wavelength : float
        m.
    C10, C12, C21, C23, C30 : float
        Aberration coefficients, m (C10 = −defocus).
    phi12, phi21, phi23 : float
        Azimuths, rad.

    Returns
    -------
    ndarray, float64
    """
    xp = backend.xp_of(ky)
    alpha = wavelength * xp.sqrt(ky**2 + kx**2)
    phi = xp.arctan2(ky, kx)
    chi = alpha**2 / 2 * (C10 + C12 * xp.cos(2 * (phi - phi12)))
    if C21 or C23:
        chi = chi + alpha**3 / 3 * (C21 * xp.cos(phi - phi21) + C23 * xp.cos(3 * (phi - phi23)))
    if C30:
        chi = chi + alpha**4 / 4 * C30
    return 2 * np.pi / wavelength * chi


def electron_probe(shape, sampling, wavelength, convergence_semiangle, *, defocus=0.0, Cs=0.0,
                   aberrations=None, intensity=1.0, xp: ModuleType = np, dtype=np.complex64):
    """Real-space electron probe, centred at pixel (ny//2, nx//2).

    Parameters
    ----------
    shape : (int, int)
        Probe window (ny, nx) in pixels, normally the detector shape.
    sampling : (float, float)
        Real-space pixel size (dy, dx), m (= 1 / (n · Δk) for a detector of n pixels of Δk).
    wavelength : float
        m.
    convergence_semiangle : float
        Condenser aperture semi-angle α, rad. Must be > 0.
    defocus : float
        m; enters as C10 = −defocus (abTEM's convention, see module docstring).
    Cs : float
        Spherical aberration C30, m.
    aberrations : dict, optional
        Further coefficients for :func:`aberration_function` (C12, phi12, C21, ...);
        a ``C10`` or ``C30`` here overrides ``defocus``/``Cs``.
    intensity : float
        Total intensity Σ|P|² of the returned probe (counts per pattern for a
        probe that models the data).
    xp : module
        numpy or cupy.
    dtype : complex dtype

    Returns
    -------
    ndarray, (ny, nx), ``dtype``

    Raises
    ------
    ValueError
        If the aperture passes no pixel or is cut by the window's Nyquist limit.
    """
    if not convergence_semiangle > 0:
        raise ValueError(f"convergence semi-angle must be > 0 rad, got {convergence_semiangle!r}")
    ky, kx = spatial_frequencies(shape, sampling, xp)
    coeffs = {"C10": -defocus, "C30": Cs}
    coeffs.update(aberrations or {})
    k = xp.sqrt(ky**2 + kx**2)
    k_cut = convergence_semiangle / wavelength
    # A one-pixel soft edge avoids the ringing of a hard aperture on a coarse grid.
    dk = min(1.0 / (shape[0] * sampling[0]), 1.0 / (shape[1] * sampling[1]))
    aperture = xp.clip((k_cut - k) / dk + 0.5, 0.0, 1.0)
    if float(aperture.sum()) == 0:
        raise ValueError("the probe aperture passes no detector pixel: check sampling and semi-angle")
    k_nyq = min(0.5 / sampling[0], 0.5 / sampling[1])
    if k_cut > k_nyq:
        raise ValueError(f"aperture radius {k_cut:.4g} 1/m exceeds the Nyquist frequency {k_nyq:.4g} 1/m")
    chi = aberration_function(ky, kx, wavelength, **coeffs)
    probe_k = aperture * xp.exp(-1j * chi)
    probe = xp.fft.fftshift(backend.ifft2(probe_k.astype(np.complex128)))
    probe *= np.sqrt(intensity / float(xp.sum(xp.abs(probe) ** 2)))
    return probe.astype(dtype)


def zone_plate_probe(shape, sampling, wavelength, outer_diameter, focal_length, *, central_stop_diameter=0.0,
                     defocus=0.0, intensity=1.0, xp: ModuleType = np, dtype=np.complex64):
    """X-ray probe of a Fresnel zone plate with a central stop, at ``defocus`` from its focus.

    The zone plate's pupil, seen from the focus, is an annulus of spatial
    frequencies k ∈ [d_cs/(2fλ), D/(2fλ)] (numerical aperture D/2f; Attwood,
    *Soft X-rays and EUV Radiation*, eq. 9.13); the probe at the focus is its
    Fourier transform, and ``defocus`` > 0 (downstream of the focus) applies
    the Fresnel propagator exp(−iπλΔz|k|²) (:func:`fresnel_propagator`).
    The order-sorting aperture is assumed to remove the other orders, as in
    seed 001's set-up.

    Parameters
    ----------
    shape : (int, int)
    sampling : (float, float)
        Sample-plane pixel, m.
    wavelength, outer_diameter, focal_length, central_stop_diameter, defocus : float
        m.
    intensity : float
        Σ|P|² of the result.

    Returns
    -------
    ndarray, ``shape``, ``dtype``, centred at (ny//2, nx//2).

    Raises
    ------
    ValueError
        Non-positive diameter or focal length, a stop not smaller than the
        zone plate, or a pupil beyond the grid's Nyquist frequency.
    """
    if not (outer_diameter > 0 and focal_length > 0):
        raise ValueError("outer_diameter and focal_length must be > 0 m")
    if not 0 <= central_stop_diameter < outer_diameter:
        raise ValueError("central_stop_diameter must be >= 0 and smaller than outer_diameter")
    ky, kx = spatial_frequencies(shape, sampling, xp)
    k = xp.sqrt(ky**2 + kx**2)
    k_out = outer_diameter / (2 * focal_length * wavelength)
    k_in = central_stop_diameter / (2 * focal_length * wavelength)
    if k_out > min(0.5 / sampling[0], 0.5 / sampling[1]):
        raise ValueError(f"zone-plate pupil radius {k_out:.4g} 1/m exceeds the Nyquist frequency of the grid")
    pupil = ((k <= k_out) & (k >= k_in)).astype(np.float64)
    if float(pupil.sum()) == 0:
        raise ValueError("the zone-plate pupil passes no pixel of this grid")
    probe_k = pupil * xp.exp(-1j * np.pi * wavelength * defocus * (ky**2 + kx**2))
    probe = xp.fft.fftshift(backend.ifft2(probe_k))
    probe *= np.sqrt(intensity / float(xp.sum(xp.abs(probe) ** 2)))
    return probe.astype(dtype)
