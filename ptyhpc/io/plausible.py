"""Plausibility of a scan's geometry at the door: errors for the impossible, warnings for the unusual.

Ranges (SI; documented in ``docs/reliability.md``). An *error* (:class:`~ptyhpc.io.validate.IngestError`)
is a value no instrument produces, usually a unit slip (keV typed as eV, nm or mm as m); a *warning*
(:class:`PlausibilityWarning`) is a value some instrument might produce but that is unusual enough to
check before hours of compute.

==========================  ======================  ======================================================
quantity                    error outside           warning outside
==========================  ======================  ======================================================
electron energy             1 keV – 3 MeV           20 keV – 1.3 MeV (TEM/STEM)
X-ray photon energy         10 eV – 1 MeV           100 eV – 100 keV
convergence semi-angle      (0, 0.5) rad            electrons ≤ 100 mrad, X-rays ≤ 50 mrad
detector distance (X-ray)   (0, 1000] m             1 cm – 40 m
scan step / far-field       ≤ 1 (probes could not   ≤ 0.5 (also :class:`ptyhpc.io.scan.NearFieldWarning`
window λz/p = 1/Δk          overlap in the window)  for the scan readers)
scan step / probe diameter  –                       ≤ 1 (neighbouring probes do not overlap; electrons with
                                                    a probe model: diameter max(2α|Δf|, 1.22 λ/α))
positions                   all identical           more than half of them repeated
tilt angles                 two within 1e-5 rad     two equal modulo 360° (the same projection twice)
counts (float data)         –                       not whole numbers (the Poisson noise model expects counts)
==========================  ======================  ======================================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .validate import IngestError

__all__ = ["PlausibilityWarning", "ENERGY_RANGES_EV", "check_geometry", "check_store_geometry", "check_angles",
           "warn_fractional_counts"]

#: radiation -> ((error low, error high), (warning low, warning high)), eV.
ENERGY_RANGES_EV = {"electron": ((1e3, 3e6), (20e3, 1.3e6)), "xray": ((10.0, 1e6), (100.0, 1e5))}
#: Semi-angle above which a value is impossible (rad), and the usual maxima per radiation.
SEMIANGLE_MAX_RAD = 0.5
SEMIANGLE_WARN_RAD = {"electron": 0.1, "xray": 0.05}
#: X-ray detector distance: error above, warning outside (m).
DISTANCE_MAX_M, DISTANCE_WARN_M = 1000.0, (0.01, 40.0)
#: Tilt angles closer than this are duplicates (rad).
ANGLE_DUPLICATE_RAD = 1e-5


_PLURAL = {"electron": "electrons", "xray": "X-rays"}


class PlausibilityWarning(UserWarning):
    """A value that is possible but unusual enough to check (the store is still written)."""


def _warn(msg: str) -> None:
    warnings.warn(msg, PlausibilityWarning, stacklevel=3)


def check_geometry(where, *, radiation: str, energy_eV: float, wavelength_m: float | None = None,
                   semiangle_rad: float | None = None, defocus_m: float | None = None,
                   distance_m: float | None = None, reciprocal_sampling_inv_m: Sequence[float] | None = None,
                   positions_m: np.ndarray | None = None, scan_step_m: float | None = None,
                   regime: str = "far_field", fields: dict | None = None) -> None:
    """Check one scan's geometry against :data:`ENERGY_RANGES_EV` and the table of the module.

    Parameters
    ----------
    where : str or path
        File (or file:entry), named in every message.
    radiation : {"electron", "xray"}
    energy_eV : float
        Beam energy (electron kinetic energy or photon energy), eV.
    wavelength_m : float, optional
        m; shown with the energy (a wavelength in nm shows up as an impossible energy).
    semiangle_rad, defocus_m : float, optional
        Probe model (rad, m).
    distance_m : float, optional
        Sample-to-detector distance, m (checked for X-rays).
    reciprocal_sampling_inv_m : (float, float), optional
        Δk per detector pixel, 1/m (far field: the window is 1/Δk).
    positions_m : ndarray (n, 2), optional
        Probe positions, m.
    scan_step_m : float, optional
        Nominal step, m (default: median nearest-neighbour distance of the positions).
    regime : {"far_field", "near_field"}
    fields : dict, optional
        quantity -> raw field name, for the messages (keys ``energy``, ``probe_semiangle``,
        ``distance``, ``positions``).

    Raises
    ------
    IngestError
        An impossible value.

    Warns
    -----
    PlausibilityWarning
        An unusual value.
    """
    f = fields or {}
    (lo, hi), (wlo, whi) = ENERGY_RANGES_EV[radiation]
    lam = "" if wavelength_m is None else f" (wavelength {wavelength_m:.4g} m)"
    name = f.get("energy", "beam energy")
    if not lo <= energy_eV <= hi:
        raise IngestError(f"{where}: {name}: {energy_eV:.6g} eV{lam} is impossible for {_PLURAL[radiation]} "
                          f"({lo:g}-{hi:g} eV); a unit slip (keV as eV, a wavelength in nm or Å instead of m)?")
    if not wlo <= energy_eV <= whi:
        _warn(f"{where}: {name}: {energy_eV:.6g} eV{lam} is unusual for {_PLURAL[radiation]} "
              f"(usually {wlo:g}-{whi:g} eV); check the units")
    if semiangle_rad is not None:
        name = f.get("probe_semiangle", "convergence semi-angle")
        if not 0 < semiangle_rad < SEMIANGLE_MAX_RAD:
            raise IngestError(f"{where}: {name}: {semiangle_rad:.4g} rad is impossible (0 < alpha < "
                              f"{SEMIANGLE_MAX_RAD} rad); mrad given as rad?")
        if semiangle_rad > SEMIANGLE_WARN_RAD[radiation]:
            _warn(f"{where}: {name}: {semiangle_rad * 1e3:.4g} mrad is unusually large for {_PLURAL[radiation]} "
                  f"(usually <= {SEMIANGLE_WARN_RAD[radiation] * 1e3:g} mrad)")
    if distance_m is not None and radiation == "xray":
        name = f.get("distance", "detector distance")
        if not 0 < distance_m <= DISTANCE_MAX_M:
            raise IngestError(f"{where}: {name}: {distance_m:.6g} m is impossible (0-{DISTANCE_MAX_M:g} m); "
                              "mm given as m?")
        if not DISTANCE_WARN_M[0] <= distance_m <= DISTANCE_WARN_M[1]:
            _warn(f"{where}: {name}: {distance_m:.6g} m is unusual (usually {DISTANCE_WARN_M[0]:g}-"
                  f"{DISTANCE_WARN_M[1]:g} m); check the units")
    if positions_m is not None:
        pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
        name = f.get("positions", "positions")
        if len(pos) > 1:
            unique = np.unique(pos, axis=0)
            if len(unique) == 1:
                raise IngestError(f"{where}: {name}: all {len(pos)} positions are identical ({pos[0].tolist()} m); "
                                  "a scan needs distinct probe positions")
            if len(unique) < len(pos) / 2:
                _warn(f"{where}: {name}: only {len(unique)} distinct positions of {len(pos)}")
            if scan_step_m is None:
                from .scan import estimate_scan_step  # noqa: PLC0415

                scan_step_m = estimate_scan_step(unique)
    if scan_step_m and regime == "far_field" and reciprocal_sampling_inv_m is not None:
        window = 1.0 / max(float(v) for v in reciprocal_sampling_inv_m)
        ratio = scan_step_m / window
        if ratio > 1:
            raise IngestError(f"{where}: scan step {scan_step_m:.4g} m is {ratio:.3g} times the far-field window "
                              f"1/dk = {window:.4g} m: neighbouring probes cannot overlap in it and the object "
                              "grid would be huge; a unit slip in the step or the detector sampling?")
        if ratio > 0.5 and radiation == "electron":
            _warn(f"{where}: scan step {scan_step_m:.4g} m is {ratio:.2f} of the far-field window {window:.4g} m; "
                  "overlap will be poor")
    if scan_step_m and semiangle_rad and wavelength_m and radiation == "electron":
        diameter = max(2 * semiangle_rad * abs(defocus_m or 0.0), 1.22 * wavelength_m / semiangle_rad)
        if scan_step_m > diameter:
            _warn(f"{where}: scan step {scan_step_m:.4g} m exceeds the probe diameter {diameter:.4g} m "
                  "(from the semi-angle and defocus): neighbouring probes do not overlap")


def check_angles(angles_rad: Sequence[float], names: Sequence) -> None:
    """Refuse duplicate tilt angles; warn on angles 360° apart.

    Raises
    ------
    IngestError
        Two angles within :data:`ANGLE_DUPLICATE_RAD`, naming both files.

    Warns
    -----
    PlausibilityWarning
        Two angles equal modulo 360° (the same projection twice).
    """
    a = np.asarray(angles_rad, dtype=np.float64)
    order = np.argsort(a)
    for i, j in zip(order[:-1], order[1:]):
        if abs(a[j] - a[i]) <= ANGLE_DUPLICATE_RAD:
            raise IngestError(f"{names[j]}: tilt angle {math.degrees(a[j]):.9g} deg duplicates "
                              f"{math.degrees(a[i]):.9g} deg in {names[i]} (within {ANGLE_DUPLICATE_RAD:g} rad)")
    wrapped = np.mod(a, 2 * np.pi)
    order = np.argsort(wrapped)
    for i, j in zip(order[:-1], order[1:]):
        if abs(wrapped[j] - wrapped[i]) <= ANGLE_DUPLICATE_RAD:
            _warn(f"{names[j]}: tilt angle {math.degrees(a[j]):.6g} deg is {math.degrees(a[i]):.6g} deg in "
                  f"{names[i]} plus a multiple of 360 deg: the same projection twice")
            return


def warn_fractional_counts(where, counts: np.ndarray, field: str = "counts") -> None:
    """Warn once when float counts are not whole numbers (scaled or corrected data).

    Warns
    -----
    PlausibilityWarning
        Naming the file, the field and an example value.
    """
    if counts.dtype.kind != "f" or not counts.size:
        return
    sample = np.asarray(counts).reshape(-1)[: 1 << 20]
    frac = np.isfinite(sample) & (sample != np.round(sample))
    if frac.any():
        example = float(sample[np.argmax(frac)])
        _warn(f"{where}: {field}: counts are not whole numbers (e.g. {example:.6g}); the Poisson noise model "
              "expects detector counts: if the data are scaled, use ptycho.noise_model 'amplitude'")


def check_store_geometry(where, radiation: str, geometry: dict, positions_m=None, *, distance_m=None,
                         regime: str = "far_field", fields: dict | None = None) -> None:
    """:func:`check_geometry` from a store ``geometry`` dict (:data:`ptyhpc.io.layout.GEOMETRY_KEYS`)."""
    check_geometry(where, radiation=radiation, energy_eV=geometry["beam_energy_eV"],
                   wavelength_m=geometry["wavelength_m"], semiangle_rad=geometry["convergence_semiangle_rad"],
                   defocus_m=geometry["defocus_m"], distance_m=distance_m,
                   reciprocal_sampling_inv_m=geometry["reciprocal_sampling_inv_m"], positions_m=positions_m,
                   scan_step_m=geometry["scan_step_m"] or None, regime=regime, fields=fields)
