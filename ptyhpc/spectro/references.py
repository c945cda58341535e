"""Reference spectra for the chemical maps: CSV files or xraydb optical constants.

A reference file is a CSV with a header row ``energy_eV,mu_per_m`` and
optionally a third column ``delta``: μ is the linear attenuation coefficient
(1/m, so that OD = μ·t for a thickness t in m) and δ the refractive index
decrement (n = 1 − δ + iβ, μ = 4πβ/λ). Values are interpolated linearly onto
the stack's energies, which the file must cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.energy import photon_wavelength

__all__ = ["Reference", "read_reference", "xraydb_reference", "parse_reference_option", "load_references"]


@dataclass
class Reference:
    """One component's spectrum on the stack's energies.

    Attributes
    ----------
    name : str
    mu_per_m : (n_energies,) float64
        Linear attenuation coefficient, 1/m.
    delta : (n_energies,) float64 or None
        Refractive index decrement (None when the reference has none).
    source : str
        File or ``xraydb:FORMULA:DENSITY``.
    """

    name: str
    mu_per_m: np.ndarray
    delta: np.ndarray | None
    source: str


def read_reference(path, name: str, energies_eV) -> Reference:
    """Read a reference CSV and interpolate it onto ``energies_eV``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Missing header columns, non-finite values, energies not increasing, or
        a stack energy outside the file's range (message names the file and the energies).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference {name!r}: {path}: file not found")
    with path.open() as fh:
        header = [h.strip() for h in fh.readline().strip().split(",")]
    if header[:2] != ["energy_eV", "mu_per_m"] or len(header) > 3 or (len(header) == 3 and header[2] != "delta"):
        raise ValueError(f"reference {name!r}: {path}: header must be 'energy_eV,mu_per_m[,delta]', got {header}")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.shape[1] != len(header) or len(data) < 2 or not np.all(np.isfinite(data)):
        raise ValueError(f"reference {name!r}: {path}: needs >= 2 finite rows of {len(header)} columns")
    e = data[:, 0]
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"reference {name!r}: {path}: energy_eV must increase")
    want = np.asarray(energies_eV, float)
    outside = want[(want < e[0] - 1e-9) | (want > e[-1] + 1e-9)]
    if outside.size:
        raise ValueError(f"reference {name!r}: {path}: covers {e[0]:g}-{e[-1]:g} eV, but the stack has "
                         f"{', '.join(f'{v:g}' for v in outside)} eV")
    delta = np.interp(want, e, data[:, 2]) if data.shape[1] == 3 else None
    return Reference(name, np.interp(want, e, data[:, 1]), delta, str(path))


def xraydb_reference(name: str, formula: str, density_g_cm3: float, energies_eV) -> Reference:
    """Reference from xraydb (Chantler tables) for a compound of given density, g/cm³.

    Tabulated atomic cross-sections carry the absorption edges but no
    near-edge (NEXAFS/white-line) structure; use measured references there.

    Raises
    ------
    ValueError
        Unknown formula or a density that is not > 0.
    """
    import xraydb  # noqa: PLC0415

    if not density_g_cm3 > 0:
        raise ValueError(f"reference {name!r}: density must be > 0 g/cm3, got {density_g_cm3}")
    e = np.asarray(energies_eV, float)
    try:
        delta, beta = (np.atleast_1d(np.asarray(v, float)) for v in xraydb.xray_delta_beta(formula, density_g_cm3, e)[:2])
    except Exception as exc:  # noqa: BLE001  (xraydb raises plain errors for bad formulas)
        raise ValueError(f"reference {name!r}: xraydb cannot evaluate {formula!r}: {exc}") from None
    mu = 4 * np.pi * beta / np.array([photon_wavelength(v) for v in e])
    return Reference(name, np.array(mu), np.array(delta), f"xraydb:{formula}:{density_g_cm3}")


def parse_reference_option(text: str, base: Path | None = None) -> tuple[str, str]:
    """``NAME=FILE`` or ``NAME=xraydb:FORMULA:DENSITY`` → (name, source); FILE relative to ``base``.

    Raises
    ------
    ValueError
        No ``=`` or an empty name.
    """
    name, sep, src = str(text).partition("=")
    if not sep or not name.strip() or not src.strip():
        raise ValueError(f"--reference {text!r}: expected NAME=FILE or NAME=xraydb:FORMULA:DENSITY_G_CM3")
    src = src.strip()
    if not src.startswith("xraydb:") and base is not None and not Path(src).is_absolute():
        src = str(Path(base) / src)
    return name.strip(), src


def load_references(specs: dict, energies_eV) -> list[Reference]:
    """References from ``{name: source}`` (file path or ``xraydb:FORMULA:DENSITY``), in the order given.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`read_reference` / :func:`xraydb_reference`; a malformed xraydb source.
    """
    out = []
    for name, src in specs.items():
        src = str(src)
        if src.startswith("xraydb:"):
            parts = src.split(":")
            if len(parts) != 3:
                raise ValueError(f"reference {name!r}: {src!r}: expected xraydb:FORMULA:DENSITY_G_CM3")
            out.append(xraydb_reference(name, parts[1], float(parts[2]), energies_eV))
        else:
            out.append(read_reference(src, name, energies_eV))
    return out
