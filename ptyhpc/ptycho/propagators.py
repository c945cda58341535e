"""Sample-to-detector propagators as operators (forward, adjoint) for the engines.

``FarField``: Fraunhofer diffraction, a unitary FFT; the data are centred
diffraction patterns (zero frequency at det//2), shifted once by the engine.
``NearField``: free-space propagation over a distance (angular spectrum or
Fresnel), for near-field ptychography; the data are images in the detector
plane, not shifted. With a divergent beam, build it on the equivalent
parallel-beam geometry of :func:`ptyhpc.physics.fresnel_scaling`.

Both are unitary, so the adjoint is the inverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from .. import backend
from ..physics import angular_spectrum_propagator, fresnel_propagator

__all__ = ["FarField", "NearField"]


@dataclass
class FarField:
    """Far-field propagator Ψ = F[ψ] (unitary FFT, FFT order)."""

    centred_data: bool = field(default=True, init=False)

    def forward(self, psi):
        return backend.fft2(psi)

    def adjoint(self, wave):
        return backend.ifft2(wave)


@dataclass
class NearField:
    """Near-field propagator Ψ = F⁻¹[H · F[ψ]] over ``distance_m``.

    Parameters
    ----------
    shape : (int, int)
        Detector (= computation) grid.
    pixel_size_m : (float, float)
        Sample-plane pixel, m (the effective pixel in a cone beam).
    wavelength_m, distance_m : float
        m (effective distance in a cone beam).
    model : {"angular_spectrum", "fresnel"}
    xp : module
    """

    shape: tuple
    pixel_size_m: tuple
    wavelength_m: float
    distance_m: float
    model: str = "angular_spectrum"
    xp: ModuleType = np
    centred_data: bool = field(default=False, init=False)

    def __post_init__(self):
        make = {"angular_spectrum": angular_spectrum_propagator, "fresnel": fresnel_propagator}.get(self.model)
        if make is None:
            raise ValueError(f"unknown near-field model {self.model!r}; use 'angular_spectrum' or 'fresnel'")
        self.h = make(self.shape, self.pixel_size_m, self.wavelength_m, self.distance_m, xp=self.xp)
        self.h_conj = self.xp.conj(self.h)

    def forward(self, psi):
        return backend.ifft2(backend.fft2(psi) * self.h)

    def adjoint(self, wave):
        return backend.ifft2(backend.fft2(wave) * self.h_conj)
