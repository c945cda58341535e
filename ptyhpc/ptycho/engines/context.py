"""What a mini-batch step sees: the data, the geometry, the data term and the engine's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

__all__ = ["BatchContext"]


@dataclass
class BatchContext:
    """Fixed for one :func:`~ptyhpc.ptycho.engines.reconstruct` call; handed to every batch step.

    Attributes
    ----------
    geom : ScanGeometry
        Positions (refined in place by the loop when position correction is on).
    amp : (n, Ny, Nx) float32
        Measured amplitudes √I, propagator order, 0 on unmeasured pixels.
    meas_w : (Ny, Nx) float32 or None
        1 on measured pixels, 0 elsewhere; None when all are measured.
    prop : FarField or NearField
    noise_model : {"poisson", "amplitude"}
    floor : float
        Smallest model intensity of the Poisson factor, counts.
    subpixel : {"fourier", "bilinear", "none"}
    bg, ratio : (Ny, Nx) float32 or None
        Incoherent background (counts) and the accumulator of its update.
    xp : module
    alpha, beta_object, beta_probe : float
        PIE step rule (α = 1 for ePIE).
    state : dict
        The engine's own per-reconstruction state (LSQ-ML: the counted pixels
        and the scan illumination; mPIE: velocities), instead of caches on
        the geometry.
    """

    geom: object
    amp: object
    meas_w: object
    prop: object
    noise_model: str
    floor: float
    subpixel: str
    bg: object
    ratio: object
    xp: ModuleType = np
    alpha: float = 0.5
    beta_object: float = 0.1
    beta_probe: float = 0.1
    momentum: tuple = (0.9, 0.5)
    state: dict = field(default_factory=dict)
