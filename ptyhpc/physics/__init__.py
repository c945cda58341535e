"""Physics: wavelengths, interaction constant, probes, propagators."""

from .wavelength import electron_wavelength, interaction_constant, transmission_function
from .probe import electron_probe, aberration_function
from .propagate import fresnel_propagator, propagate, far_field, far_field_adjoint

__all__ = [
    "electron_wavelength",
    "interaction_constant",
    "transmission_function",
    "electron_probe",
    "aberration_function",
    "fresnel_propagator",
    "propagate",
    "far_field",
    "far_field_adjoint",
]
