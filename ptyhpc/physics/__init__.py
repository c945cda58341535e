"""Physics: wavelengths, interaction constant, probes, propagators."""

from .wavelength import electron_wavelength, interaction_constant, photon_wavelength, transmission_function
from .probe import aberration_function, electron_probe, zone_plate_probe
from .propagate import (angular_spectrum_propagator, far_field, far_field_adjoint, fresnel_propagator,
                        fresnel_scaling, propagate)

__all__ = [
    "electron_wavelength",
    "photon_wavelength",
    "interaction_constant",
    "transmission_function",
    "electron_probe",
    "aberration_function",
    "zone_plate_probe",
    "fresnel_propagator",
    "angular_spectrum_propagator",
    "fresnel_scaling",
    "propagate",
    "far_field",
    "far_field_adjoint",
]
