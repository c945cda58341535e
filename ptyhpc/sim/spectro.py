"""Simulated soft X-ray spectro-ptychography: an energy stack written as CXI 1.6 files, one per item.

The specimen is a set of materials, each a thickness map t_m(y, x) with
optical constants n = 1 − δ + iβ from xraydb (Chantler tables, which carry
the real absorption edges) plus, optionally, a synthetic near-edge resonance
(a Lorentz oscillator, so that δ and β stay Kramers–Kronig consistent, to
mimic white lines such as B 1s→π* at 192 eV or the Fe L3 line at 707 eV) and
a dichroic part of β (XMCD for circular, XLD for linear polarisation) that
follows a per-material orientation map. The exit wave of a thin specimen is

    O(r; E) = exp(−i k Σ_m (δ_m − iβ_m) t_m(r)),   k = 2π/λ,

so OD = −ln|O|² = Σ_m μ_m t_m with μ = 4πβ/λ, and the phase φ = −k Σ_m δ_m t_m.
The probe is a zone plate with a central stop, ``defocus_m`` downstream of
its focus (:func:`ptyhpc.physics.xray_optics.xray_probe`); the zone plate is
refocused for every energy (the defocus stays the same, as in a STXM).
Counts are Poisson with a dark pedestal; dark frames are written too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..io.energy import photon_wavelength
from ..physics.xray_optics import ZonePlate, xray_probe

__all__ = ["Material", "SpectroSim", "default_materials", "fermat_spiral", "raster_scan", "simulate_energy_stack",
           "write_reference_csv", "LABEL_SIGN"]

_EV = 1.602176634e-19

#: Sign of the dichroic term per polarisation label (circular: right +, left −; linear: horizontal +, vertical −).
LABEL_SIGN = {"CR": 1.0, "C+": 1.0, "CL": -1.0, "C-": -1.0, "LH": 1.0, "LV": -1.0}


@dataclass
class Material:
    """One component of the simulated specimen.

    Attributes
    ----------
    name : str
    formula : str
        Chemical formula for xraydb (e.g. ``"Fe"``, ``"C8H8"``).
    density_g_cm3 : float
    shape : callable
        ``(y, x) -> thickness`` in m, arrays of m.
    resonance : (E0_eV, fwhm_eV, beta_peak) or None
        Synthetic Lorentz resonance added to β (δ from the same oscillator).
    dichroism : float
        Relative dichroic amplitude a: β_± = β (1 ± a·L(E)·orientation), L the resonance's
        normalised Lorentzian (1 at E0). 0: none.
    orientation : callable or None
        ``(y, x) -> ±1`` (magnetisation along the beam for XMCD, bond axis for XLD); None: +1.
    """

    name: str
    formula: str
    density_g_cm3: float
    shape: object
    resonance: tuple | None = None
    dichroism: float = 0.0
    orientation: object = None

    def lorentz(self, energy_eV):
        """(Re, Im) of the normalised oscillator (Im = 1 at E0), zeros without a resonance."""
        if self.resonance is None:
            return 0.0, 0.0
        e0, fwhm, _ = self.resonance
        z = (fwhm / 2) / (e0 - np.asarray(energy_eV, float) - 1j * fwhm / 2)
        return z.real, z.imag

    def delta_beta(self, energy_eV):
        """Isotropic (δ, β) at ``energy_eV`` (scalar or array)."""
        e = np.atleast_1d(np.asarray(energy_eV, float))
        d, b = _xraydb_delta_beta(self.formula, self.density_g_cm3, tuple(e.tolist()))
        if self.resonance is not None:
            re, im = self.lorentz(e)
            peak = self.resonance[2]
            # Below E0 a Lorentz oscillator raises n (δ falls), above it lowers n: δ_res = −peak·Re.
            d, b = d - peak * re, b + peak * im
        return (d, b) if np.ndim(energy_eV) else (float(d[0]), float(b[0]))


@functools.lru_cache(maxsize=1024)
def _xraydb_delta_beta(formula: str, density: float, energies_eV: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(δ, β) arrays at ``energies_eV`` (one xraydb call; cached: the simulator asks per window)."""
    import xraydb  # noqa: PLC0415

    d, b = xraydb.xray_delta_beta(formula, density, np.asarray(energies_eV, float))[:2]
    return np.atleast_1d(np.asarray(d, float)), np.atleast_1d(np.asarray(b, float))


def _soft_box(y, x, y0, y1, x0, x1, edge):
    y, x = np.broadcast_arrays(y, x)
    inside = np.minimum(np.minimum(y - y0, y1 - y), np.minimum(x - x0, x1 - x))
    return np.clip(inside / edge + 0.5, 0.0, 1.0)


def _soft_disc(y, x, cy, cx, r, edge):
    return np.clip((r - np.hypot(y - cy, x - cx)) / edge + 0.5, 0.0, 1.0)


def default_materials(*, fe_nm: float = 30.0, ps_nm: float = 300.0, edge_m: float = 15e-9) -> list[Material]:
    """Permalloy-like Fe rod (L3 edge, synthetic white line at 707 eV, XMCD ±) on a polystyrene disc.

    The rod (0.60 × 0.20 µm) is magnetised +1 for x < 0 and −1 for x > 0; the
    disc (radius 0.25 µm) is centred at (y, x) = (0.17, 0.12) µm. Lengths are
    in the scan frame (the probe positions), m.
    """
    def rod(y, x):
        return fe_nm * 1e-9 * _soft_box(y, x, -0.10e-6, 0.10e-6, -0.30e-6, 0.30e-6, edge_m)

    def disc(y, x):
        return ps_nm * 1e-9 * _soft_disc(y, x, 0.17e-6, 0.12e-6, 0.25e-6, edge_m)

    return [
        Material("Fe", "Fe", 7.87, rod, resonance=(707.0, 2.0, 4.0e-3), dichroism=0.25,
                 orientation=lambda y, x: np.where(x < 0, 1.0, -1.0)),
        Material("PS", "C8H8", 1.05, disc),
    ]


def fermat_spiral(n: int, step_m: float, centre=(0.0, 0.0)) -> np.ndarray:
    """Fermat-spiral scan (Huang et al., Opt. Express 22, 12634 (2014)), (n, 2) (y, x) m, mean step ≈ ``step_m``."""
    k = np.arange(n, dtype=np.float64)
    c = step_m / np.sqrt(np.pi)
    r, t = c * np.sqrt(k + 0.5), k * np.deg2rad(137.508)
    return np.stack([r * np.sin(t), r * np.cos(t)], 1) + np.asarray(centre)


def raster_scan(shape, step_m: float, centre=(0.0, 0.0)) -> np.ndarray:
    """Raster scan of ``shape`` (rows, cols) points, (n, 2) (y, x) m, centred."""
    i, j = np.indices(shape, dtype=np.float64)
    pos = np.stack([i.ravel() - (shape[0] - 1) / 2, j.ravel() - (shape[1] - 1) / 2], 1) * step_m
    return pos + np.asarray(centre)


@dataclass
class SpectroSim:
    """What :func:`simulate_energy_stack` wrote and the truth behind it."""

    files: list
    dark_file: Path
    references: dict            # name -> CSV path (energy_eV, mu_per_m, delta), isotropic
    materials: list
    items: list                 # (energy_eV, polarisation) per file
    positions_m: np.ndarray     # (n, 2) nominal probe positions (what the files say)
    drift_m: np.ndarray         # (n_items, 2) true specimen drift per item
    optics: ZonePlate
    defocus_m: float
    detector_distance_m: float
    detector_pixel_m: float
    photons: float
    extra: dict = field(default_factory=dict)

    def thickness(self, y, x) -> np.ndarray:
        """True thickness maps (n_materials, *y.shape), m, at scan-frame coordinates (no drift)."""
        return np.stack([m.shape(y, x) for m in self.materials])

    def transmission(self, y, x, energy_eV, polarisation="unknown") -> np.ndarray:
        """True complex transmission O(y, x; E, polarisation) (no drift)."""
        return _transmission(self.materials, y, x, energy_eV, polarisation)


def _transmission(materials, y, x, energy_eV, polarisation):
    lam = photon_wavelength(energy_eV)
    k = 2 * np.pi / lam
    phase = np.zeros(np.broadcast(y, x).shape, np.complex128)
    sign = LABEL_SIGN.get(polarisation, 0.0)
    for m in materials:
        d, b = m.delta_beta(energy_eV)
        t = m.shape(y, x)
        bb = b
        if m.dichroism and sign:
            orient = 1.0 if m.orientation is None else m.orientation(y, x)
            bb = b * (1 + sign * m.dichroism * m.lorentz(energy_eV)[1] * orient)
        phase = phase + k * t * (d - 1j * bb)
    return np.exp(-1j * phase)


def write_reference_csv(path, material: Material, energies_eV) -> Path:
    """Reference spectrum file ``energy_eV,mu_per_m,delta`` (μ = 4πβ/λ) of ``material``."""
    e = np.asarray(energies_eV, float)
    d, b = material.delta_beta(e)
    mu = 4 * np.pi * b / np.array([photon_wavelength(v) for v in e])
    path = Path(path)
    np.savetxt(path, np.stack([e, mu, d], 1), delimiter=",", header="energy_eV,mu_per_m,delta", comments="",
               fmt="%.10g")
    return path


def simulate_energy_stack(folder, items=((700.0, "CR"), (705.0, "CR"), (707.0, "CR"), (707.0, "CL"),
                                         (712.0, "CR")), *,
                          materials: list[Material] | None = None, det: int = 64, pixel_at_first_m: float = 20e-9,
                          detector_pixel_m: float = 30e-6, optics: ZonePlate | None = None,
                          defocus_m: float = 9.9e-6, positions_m=None, photons: float = 2e6,
                          dark_counts: float = 3.0, drift_m=None, seed: int = 0, basis_vectors: bool = False,
                          wavelength_field: bool = False) -> SpectroSim:
    """Write an energy stack as CXI 1.6 files (one per (energy, polarisation) item) and references.

    Parameters
    ----------
    folder : path
        Created if needed; gets ``item_KKK.cxi``, ``dark.h5`` (``/dark``: 20 dark frames) and
        ``ref_<name>.csv`` per material.
    items : sequence of (float, str)
        (photon energy eV, polarisation label: CR/CL, C+/C-, LH/LV or any other = no dichroism).
    materials : list of Material, optional
        Default :func:`default_materials`.
    det : int
        Detector side, pixels.
    pixel_at_first_m : float
        Object pixel λz/(Np) at the first item's energy, m (sets the distance z).
    detector_pixel_m : float
    optics : ZonePlate, optional
        Default D = 160 µm, Δr = 35 nm, stop 60 µm (NA 0.025 at 700 eV).
    defocus_m : float
        Sample downstream of the focus, m (9.9 µm: a 0.5 µm annular spot at NA 0.025).
    positions_m : (n, 2) array, optional
        Probe positions (y, x), m; default a 64-point Fermat spiral of 0.1 µm step.
    photons : float
        Counts per pattern through vacuum.
    dark_counts : float
        Mean dark pedestal per pixel (Poisson), added to every frame.
    drift_m : (n_items, 2) array, optional
        True specimen shift per item (the files keep the nominal positions).
    basis_vectors : bool
        Write ``basis_vectors`` (default: omit them and write x/y_pixel_size, CXI's default geometry).
    wavelength_field : bool
        Write ``source_1/wavelength`` too (default: ``source_1/energy`` in J only).

    Returns
    -------
    SpectroSim
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    materials = default_materials() if materials is None else materials
    optics = optics or ZonePlate(160e-6, 35e-9, 60e-6)
    pos = fermat_spiral(64, 0.1e-6) if positions_m is None else np.asarray(positions_m, float)
    drift = np.zeros((len(items), 2)) if drift_m is None else np.asarray(drift_m, float)
    rng = np.random.default_rng(seed)
    lam0 = photon_wavelength(items[0][0])
    distance = pixel_at_first_m * det * detector_pixel_m / lam0
    half = det // 2
    files = []
    for k, (energy, pol) in enumerate(items):
        lam = photon_wavelength(energy)
        px = lam * distance / (det * detector_pixel_m)
        probe = xray_probe((det, det), (px, px), lam, defocus_m=defocus_m, optics=optics, intensity=photons)
        grid = (np.arange(det) - half) * px
        frames = np.empty((len(pos), det, det), np.uint32)
        for j, (py, pxx) in enumerate(pos):
            yy = (py - drift[k, 0]) + grid[:, None]
            xx = (pxx - drift[k, 1]) + grid[None, :]
            psi = probe * _transmission(materials, yy, xx, energy, pol)
            far = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(psi), norm="ortho"))
            frames[j] = rng.poisson(np.abs(far) ** 2) + rng.poisson(dark_counts, (det, det))
        path = folder / f"item_{k:03d}.cxi"
        with h5py.File(path, "w") as f:
            f["cxi_version"] = 160
            src = f.create_group("entry_1/instrument_1/source_1")
            src["energy"] = energy * _EV
            if wavelength_field:
                src["wavelength"] = lam
            src["polarization"] = pol
            d = f.create_group("entry_1/instrument_1/detector_1")
            d.create_dataset("data", data=frames, chunks=(1, det, det), compression="gzip")
            d["distance"] = distance
            if basis_vectors:
                d["basis_vectors"] = np.array([[0.0, -detector_pixel_m, 0.0], [-detector_pixel_m, 0.0, 0.0]])
            else:
                d["x_pixel_size"] = detector_pixel_m
                d["y_pixel_size"] = detector_pixel_m
            # CXI translations move the sample; with the default basis the probe sits at +t (see io.cxi).
            f["entry_1/sample_1/geometry_1/translation"] = np.stack([pos[:, 1], pos[:, 0], np.zeros(len(pos))], 1)
        files.append(path)
    dark_file = folder / "dark.h5"
    with h5py.File(dark_file, "w") as f:
        f["dark"] = rng.poisson(dark_counts, (20, det, det)).astype(np.uint32)
    energies = [e for e, _ in items]
    grid_e = np.arange(min(energies) - 5.0, max(energies) + 5.0 + 1e-9, 0.25)
    refs = {m.name: write_reference_csv(folder / f"ref_{m.name}.csv", m, grid_e) for m in materials}
    return SpectroSim(files, dark_file, refs, materials, list(items), pos, drift, optics, defocus_m, distance,
                      detector_pixel_m, photons)
