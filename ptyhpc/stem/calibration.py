"""Calibration of a 4D-STEM scan: the quantities a detector file may lack, from YAML or flags, checked once.

Keys (SI; docs/stem.md):

``beam_energy_eV``                 electron kinetic energy, eV
``convergence_semiangle_rad``      probe convergence semi-angle α, rad
``scan_step_m``                    scan step (one value, or [y, x]), m
``reciprocal_sampling_inv_m``      detector pixel in spatial frequency, 1/m (one value, or [ky, kx])
``scan_shape``                     [scan_y, scan_x] when the file does not hold it
``scan_rotation_rad``              scan-detector rotation when known (else found from the CoM)
``detector_transpose``             bool, detector axes swapped with respect to the scan (else found)
``counts_per_electron``            detector counts per electron (1 for counting detectors)
``defocus_m``                      probe defocus, m (optional)
``tilt_angles_rad``                one per file of a multi-scan acquisition (optional)
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..io.validate import IngestError

__all__ = ["Calibration", "load_calibration", "REQUIRED"]

#: Keys every STEM ingest needs from the file or the user.
REQUIRED = ("beam_energy_eV", "convergence_semiangle_rad", "scan_step_m", "reciprocal_sampling_inv_m")

# Plausible ranges (generous): a value outside is almost always a unit mistake (mrad for rad, Å for m).
_RANGES = {
    "beam_energy_eV": (1e3, 3e6, "eV (1 keV .. 3 MeV; 200 kV is 2e5)"),
    "convergence_semiangle_rad": (1e-5, 0.2, "rad (0.01 .. 200 mrad; 20 mrad is 0.02)"),
    "scan_step_m": (1e-13, 1e-5, "m (0.001 Å .. 10 µm; 0.5 Å is 5e-11)"),
    "reciprocal_sampling_inv_m": (1e5, 1e12, "1/m per detector pixel (0.1 mrad at 200 kV is 4e7)"),
    "counts_per_electron": (1e-3, 1e5, "counts per electron"),
}


class Calibration(BaseModel):
    """User-given calibration of a 4D-STEM scan (every field optional until :meth:`require`)."""

    model_config = ConfigDict(extra="forbid")

    beam_energy_eV: float | None = None
    convergence_semiangle_rad: float | None = None
    scan_step_m: tuple[float, float] | None = None
    reciprocal_sampling_inv_m: tuple[float, float] | None = None
    scan_shape: tuple[int, int] | None = None
    scan_rotation_rad: float | None = None
    detector_transpose: bool | None = None
    counts_per_electron: float = 1.0
    defocus_m: float | None = None
    tilt_angles_rad: list[float] | None = None

    @field_validator("scan_step_m", "reciprocal_sampling_inv_m", mode="before")
    @classmethod
    def _pair(cls, v):
        if v is None:
            return v
        if isinstance(v, (int, float)):
            return (float(v), float(v))
        return v

    @field_validator("scan_shape", mode="before")
    @classmethod
    def _shape(cls, v):
        if v is not None and (len(v) != 2 or any(int(n) != n or n < 1 for n in v)):
            raise ValueError(f"expected [scan_y, scan_x] of positive integers, got {v!r}")
        return v

    def merged(self, other: "Calibration | dict | None") -> "Calibration":
        """This calibration with the fields that ``other`` sets (not None) replacing ours."""
        if other is None:
            return self
        if isinstance(other, dict):
            other = Calibration(**other)
        update = {k: v for k, v in other.model_dump(exclude_unset=True).items() if v is not None}
        return self.model_copy(update=update)

    def check(self, where: str) -> "Calibration":
        """Plausibility of every value given; ``IngestError`` naming ``where`` and the key."""
        for key, (lo, hi, hint) in _RANGES.items():
            v = getattr(self, key)
            if v is None:
                continue
            for x in (v if isinstance(v, tuple) else (v,)):
                if not (math.isfinite(x) and lo <= x <= hi):
                    raise IngestError(f"{where}: calibration {key} = {v} is implausible; expected {hint}")
        for key in ("scan_rotation_rad", "defocus_m"):
            v = getattr(self, key)
            if v is not None and not math.isfinite(v):
                raise IngestError(f"{where}: calibration {key} = {v} is not finite")
        return self

    def require(self, where: str, keys=REQUIRED) -> "Calibration":
        """Raise ``IngestError`` naming the missing keys and how to give them."""
        missing = [k for k in keys if getattr(self, k) is None]
        if missing:
            flags = ", ".join("--" + k.replace("_", "-") for k in missing)
            raise IngestError(f"{where}: missing calibration {', '.join(missing)}: this file does not carry it; "
                              f"give it in --calibration FILE.yaml (keys {', '.join(missing)}) or with {flags}")
        return self.check(where)


def load_calibration(path: str | PathLike | None = None, **flags) -> Calibration:
    """A :class:`Calibration` from a YAML file, overridden by the non-None ``flags`` (same key names).

    Raises
    ------
    IngestError
        File missing or not YAML, unknown keys, values of the wrong type or implausible.
    """
    import yaml  # noqa: PLC0415

    data = {}
    where = "calibration"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise IngestError(f"{path}: calibration file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise IngestError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise IngestError(f"{path}: expected a mapping of calibration keys")
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        cal = Calibration(**data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise IngestError(f"{where}: {errs}") from None
    return cal.check(where)
