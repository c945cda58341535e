"""Unit strings of raw files (NeXus/UDUNITS spellings) converted to SI.

Only the dimensions the readers need are known: length (→ m), energy (→ eV,
the store's one non-SI unit, named in its field), angle (→ rad). Unknown or
wrong-dimension unit strings raise :class:`~ptyhpc.io.validate.IngestError`
rather than being guessed. (pint would do this too; it is not a dependency of
ptyhpc and these tables are all the readers need.)
"""

from __future__ import annotations

import math

import numpy as np

from .validate import IngestError

__all__ = ["LENGTH", "ENERGY", "ANGLE", "to_si", "unit_factor"]

LENGTH = "length"
ENERGY = "energy"
ANGLE = "angle"

_E_CHARGE = 1.602176634e-19  # C, exact (SI 2019): 1 eV in J

#: Factor from the unit to the store's unit of that dimension (m, eV, rad).
_FACTORS = {
    LENGTH: {"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0,
             "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6,
             "micrometre": 1e-6, "micrometer": 1e-6, "nm": 1e-9, "nanometre": 1e-9, "nanometer": 1e-9,
             "pm": 1e-12, "A": 1e-10, "Å": 1e-10, "Angstrom": 1e-10, "angstrom": 1e-10, "Ang": 1e-10},
    ENERGY: {"eV": 1.0, "keV": 1e3, "MeV": 1e6, "GeV": 1e9, "J": 1.0 / _E_CHARGE},
    ANGLE: {"rad": 1.0, "radian": 1.0, "radians": 1.0, "mrad": 1e-3, "urad": 1e-6, "µrad": 1e-6,
            "deg": math.pi / 180, "degree": math.pi / 180, "degrees": math.pi / 180, "°": math.pi / 180},
}
_SI_NAME = {LENGTH: "m", ENERGY: "eV", ANGLE: "rad"}


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def unit_factor(units, dimension: str, where: str) -> float:
    """Factor converting ``units`` to the store unit of ``dimension``.

    Parameters
    ----------
    units : str or bytes
        Unit string, e.g. ``"um"``, ``"keV"``, ``"mrad"`` (HDF5 attributes may be bytes).
    dimension : {"length", "energy", "angle"}
    where : str
        ``"<file>: <field>"`` for the error message.

    Returns
    -------
    float
        Multiply a value in ``units`` by this to get m, eV or rad.

    Raises
    ------
    IngestError
        Unknown unit, or a unit of another dimension (e.g. ``"eV"`` for a length).
    """
    if isinstance(units, bytes):
        units = units.decode(errors="replace")
    if isinstance(units, np.ndarray) and units.size == 1:
        units = units.ravel()[0]
        units = units.decode(errors="replace") if isinstance(units, bytes) else str(units)
    u = str(units).strip()
    table = _FACTORS[dimension]
    if u in table:
        return table[u]
    for other, tab in _FACTORS.items():
        if u in tab:
            raise IngestError(f"{where}: units {u!r} are {_a(other)}, expected {_a(dimension)} "
                              f"(e.g. {_SI_NAME[dimension]!r})")
    raise IngestError(f"{where}: unknown units {u!r} for a {dimension}; known: {', '.join(table)}")


def to_si(value, units, dimension: str, where: str) -> np.ndarray:
    """``value`` (any shape) in ``units`` converted to m, eV or rad, as float64.

    Raises
    ------
    IngestError
        Bad units (see :func:`unit_factor`), a value that is not numeric, or
        non-finite values.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise IngestError(f"{where}: not a number ({value!r})") from err
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise IngestError(f"{where}: {bad} non-finite value(s) (NaN/inf)")
    return arr * unit_factor(units, dimension, where)
