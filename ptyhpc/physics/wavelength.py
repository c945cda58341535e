"""Electron and photon wavelengths, and the interaction constant.

Sources: Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed. (2010),
eq. (2.5) for the electron wavelength and eq. (5.6) for the interaction constant; λ = hc/E for photons.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.constants import c, e, h, m_e

__all__ = ["electron_wavelength", "photon_wavelength", "wavelength_function", "energy_from_wavelength",
           "interaction_constant", "transmission_function"]


def electron_wavelength(energy_eV: float) -> float:
    """Relativistic de Broglie wavelength of an electron.

    λ = h / sqrt(2 m0 e E (1 + e E / (2 m0 c²)))   (Kirkland 2010, eq. 2.5)

    Parameters
    ----------
    energy_eV : float
        Kinetic energy (accelerating voltage × e), eV. Must be > 0.

    Returns
    -------
    float
        Wavelength in metres (0.048661 Å at 60 keV, 0.025079 Å at 200 keV).

    Raises
    ------
    ValueError
        Non-positive or non-finite energy.
    """
    if not (math.isfinite(energy_eV) and energy_eV > 0):
        raise ValueError(f"beam energy must be a positive number of eV, got {energy_eV!r}")
    E = e * energy_eV
    return h / math.sqrt(2.0 * m_e * E * (1.0 + E / (2.0 * m_e * c**2)))


def interaction_constant(energy_eV: float) -> float:
    """Relativistic interaction constant σ, in rad / (V·m).

    σ = 2π m e λ / h²  with the relativistic mass m = m0 (1 + eE / (m0 c²))
    (Kirkland 2010, eq. 5.6). The transmission function of a thin specimen
    is t = exp(+iσ V_proj) with V_proj the projected potential in V·m, so a
    positive potential gives a positive phase.

    Parameters
    ----------
    energy_eV : float
        Beam energy, eV.

    Returns
    -------
    float
        σ in rad/(V·m); 1.1361e-3 rad/(V·Å) = 1.1361e7 rad/(V·m) at 60 keV.
    """
    lam = electron_wavelength(energy_eV)
    m = m_e * (1.0 + e * energy_eV / (m_e * c**2))
    return 2.0 * math.pi * m * e * lam / h**2


def transmission_function(projected_potential, energy_eV, dtype=None):
    """Thin-specimen transmission t = exp(+iσ V_proj) (Kirkland 2010, eq. 5.5).

    Parameters
    ----------
    projected_potential : ndarray of float
        V_proj in V·m (any shape; numpy or cupy).
    energy_eV : float
        Beam energy, eV.
    dtype : complex dtype, optional
        Default complex64.

    Returns
    -------
    ndarray of complex, same shape: a positive potential gives a positive phase.
    """
    import numpy as np  # noqa: PLC0415

    from ..backend import xp_of  # noqa: PLC0415

    xp = xp_of(projected_potential)
    sigma = interaction_constant(energy_eV)
    return xp.exp(1j * sigma * projected_potential).astype(dtype or np.complex64)


def photon_wavelength(energy_eV: float) -> float:
    """Photon wavelength λ = hc/E.

    Parameters
    ----------
    energy_eV : float
        Photon energy, eV (> 0).

    Returns
    -------
    float
        m (1.2398 nm at 1 keV).

    Raises
    ------
    ValueError
        Non-positive or non-finite energy.
    """
    if not (np.isfinite(energy_eV) and energy_eV > 0):
        raise ValueError(f"photon energy must be a positive number of eV, got {energy_eV!r}")
    return h * c / (e * float(energy_eV))


def wavelength_function(radiation: str):
    """λ(E) for ``radiation``: :func:`photon_wavelength` for ``"xray"``, else :func:`electron_wavelength`."""
    return photon_wavelength if radiation == "xray" else electron_wavelength


def energy_from_wavelength(radiation: str, wavelength: float) -> float:
    """The energy (eV) whose wavelength (m) is ``wavelength``: hc/λ for photons, λ(E) inverted for electrons."""
    from scipy.optimize import brentq  # noqa: PLC0415

    lam_of = wavelength_function(radiation)
    if radiation == "xray":
        return lam_of(1.0) / wavelength
    # λ(E) is monotonic: invert numerically (1 eV … 10 MeV covers every electron microscope).
    return float(brentq(lambda e: lam_of(e) - wavelength, 1.0, 1e7, rtol=1e-14))
