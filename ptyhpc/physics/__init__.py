"""Physics: wavelengths, interaction constant, probes, propagators."""

from .wavelength import electron_wavelength, interaction_constant, transmission_function
from .probe import electron_probe, aberration_function
from .propagate import (angular_spectrum_propagator, far_field, far_field_adjoint, fresnel_propagator,
                        fresnel_scaling, propagate)

__all__ = [
    "electron_wavelength",
    "interaction_constant",
    "transmission_function",
    "electron_probe",
    "aberration_function",
    "fresnel_propagator",
    "angular_spectrum_propagator",
    "fresnel_scaling",
    "propagate",
    "far_field",
    "far_field_adjoint",
]
