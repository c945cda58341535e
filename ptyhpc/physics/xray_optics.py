"""X-ray focusing optics and the defocus sign of each radiation.

Defocus conventions (one per radiation; the store records which one its
``geometry.defocus_m`` follows in the root attribute ``defocus_convention``):

``"electron"``
    abTEM/Krivanek: C10 = −defocus, probe(k) = A(k) exp(+iπλ·defocus·|k|²); a
    positive defocus is a beam still *converging* onto the sample (the focus
    lies ``defocus`` downstream of the sample). Every electron store, and every
    store written before the attribute existed (the X-ray HDF5 energy-stack
    format of :mod:`ptyhpc.io.energy` included), means this.
``"xray"``
    Distance of the sample *downstream* of the focus (Δz > 0: a diverging
    beam, the usual set-up of a defocused zone plate): the probe is the focal
    field propagated by +Δz with :func:`ptyhpc.physics.fresnel_propagator`,
    probe(k) = A(k) exp(−iπλΔz|k|²). X-ray stores ingested from CXI, NXptycho
    or generic files (``ingest --defocus``) use it. The same number therefore
    gives mirror-image wavefront curvature in the two conventions.

A zone plate of outer diameter D and outer zone width Δr has focal length
f = DΔr/λ and numerical aperture NA = D/(2f) = λ/(2Δr) (Attwood, *Soft
X-rays and EUV Radiation* (1999), eqs. 9.13, 9.17); a central stop of
diameter d removes the pupil's centre, so the illuminated cone is the
annulus NA·d/D ≤ θ ≤ NA. A beam defocused by Δz has a diameter ≈ 2·NA·|Δz|.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from .probe import electron_probe, zone_plate_probe

__all__ = ["ZonePlate", "DEFOCUS_CONVENTIONS", "defocus_convention", "xray_probe", "defocused_beam_diameter"]

DEFOCUS_CONVENTIONS = ("electron", "xray")


@dataclass(frozen=True)
class ZonePlate:
    """A Fresnel zone plate with a central stop (lengths in m).

    Attributes
    ----------
    outer_diameter_m : float
        D, > 0.
    outer_zone_width_m : float
        Δr, > 0 (sets the resolution and, with D, the focal length).
    central_stop_diameter_m : float
        d, 0 <= d < D.

    Raises
    ------
    ValueError
        A value out of range (message names the field).
    """

    outer_diameter_m: float
    outer_zone_width_m: float
    central_stop_diameter_m: float = 0.0

    def __post_init__(self):
        for name in ("outer_diameter_m", "outer_zone_width_m"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"zone plate {name} must be a finite number > 0 m, got {v!r}")
        if not (np.isfinite(self.central_stop_diameter_m) and 0 <= self.central_stop_diameter_m < self.outer_diameter_m):
            raise ValueError(f"zone plate central_stop_diameter_m must be >= 0 and smaller than outer_diameter_m "
                             f"({self.outer_diameter_m}), got {self.central_stop_diameter_m!r}")

    def focal_length(self, wavelength_m: float) -> float:
        """f = DΔr/λ, m."""
        return self.outer_diameter_m * self.outer_zone_width_m / wavelength_m

    def numerical_aperture(self, wavelength_m: float) -> float:
        """NA = λ/(2Δr) (the probe's convergence semi-angle), rad."""
        return wavelength_m / (2 * self.outer_zone_width_m)

    def to_dict(self) -> dict:
        return {"type": "zone_plate", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ZonePlate":
        return cls(float(d["outer_diameter_m"]), float(d["outer_zone_width_m"]),
                   float(d.get("central_stop_diameter_m", 0.0) or 0.0))


def defocus_convention(attrs) -> str:
    """The defocus convention of a store (root attributes): ``"electron"`` when it does not say (older stores)."""
    conv = attrs.get("defocus_convention", "electron")
    if conv not in DEFOCUS_CONVENTIONS:
        raise ValueError(f"defocus_convention {conv!r} is not one of {DEFOCUS_CONVENTIONS}")
    return conv


def defocused_beam_diameter(numerical_aperture: float, defocus_m: float) -> float:
    """Geometric diameter 2·NA·|Δz| of a beam ``defocus_m`` away from its focus, m."""
    return 2.0 * numerical_aperture * abs(defocus_m)


def xray_probe(shape, sampling, wavelength, *, defocus_m: float = 0.0, optics: ZonePlate | None = None,
               semiangle_rad: float | None = None, intensity: float = 1.0, xp: ModuleType = np,
               dtype=np.complex64):
    """X-ray probe at the sample, ``defocus_m`` downstream of the focus (``"xray"`` convention).

    Parameters
    ----------
    shape : (int, int)
        Probe window, pixels.
    sampling : (float, float)
        Sample-plane pixel (dy, dx), m.
    wavelength : float
        m.
    defocus_m : float
        Sample downstream of the focus, m (negative: upstream).
    optics : ZonePlate, optional
        Zone-plate pupil (annulus with the central stop). Without it a full
        circular pupil of ``semiangle_rad``.
    semiangle_rad : float, optional
        Convergence semi-angle when ``optics`` is None, rad.
    intensity : float
        Σ|P|² of the result.

    Returns
    -------
    ndarray, ``shape``, ``dtype``, centred at (ny//2, nx//2).

    Raises
    ------
    ValueError
        Neither ``optics`` nor ``semiangle_rad``; a pupil beyond the grid's Nyquist limit.
    """
    if optics is not None:
        return zone_plate_probe(shape, sampling, wavelength, optics.outer_diameter_m,
                                optics.focal_length(wavelength),
                                central_stop_diameter=optics.central_stop_diameter_m, defocus=defocus_m,
                                intensity=intensity, xp=xp, dtype=dtype)
    if semiangle_rad is None:
        raise ValueError("an X-ray probe model needs the zone plate (optics) or a convergence semi-angle")
    # electron_probe's defocus is C10 = −defocus (a converging beam): the X-ray Δz is its negative.
    return electron_probe(shape, sampling, wavelength, semiangle_rad, defocus=-defocus_m, intensity=intensity,
                          xp=xp, dtype=dtype)
