"""Bragg-ptychography geometry: measurement, reconstruction and laboratory frames.

Frames (the seed is Nat. Commun. 12, 7059 (2021), doi:10.1038/s41467-021-27224-5,
"the seed" below; its Fig. 2a):

* **laboratory / sample frame (x, y, z)**, orthonormal, metres. The film surface
  is the (x, y) plane and its normal z is parallel to Q_hkl (specular
  reflection, as the seed's (220) reflection). The scattering plane is (y, z);
  the rocking axis is x. Incident and exit unit wave vectors:
  k̂_i = (0, cos θ_B, −sin θ_B), k̂_f = (0, cos θ_B, sin θ_B), so
  Q = k_f − k_i = |Q| ẑ with |Q| = 4π sin θ_B / λ (Bragg's law).
* **measurement frame (q1, q2, q3)**: detector pixel columns, rows, and
  rocking-angle index. With pixel pitch p at distance D and wavenumber
  k = 2π/λ, the steps are b1 = (k p / D) x̂, b2 = (k p / D) ê2 (both in
  the detector plane, ⊥ k_f) and b3 = |Q| Δθ ŷ (a rotation δθ about x moves
  the reciprocal-lattice point by |Q| δθ along y).
* **reconstruction frame (r1, r2, r3)**: the orthonormal frame of the
  detector plane and the exit beam, r1 ∥ x̂, r2 ∥ ê2 = (0, −sin θ_B, cos θ_B),
  r3 ∥ k̂_f, as the seed's "modified 3D Fourier transform" (Methods,
  "angular up-sampling", and its refs. 40 and 69).
  Voxel sizes follow from the conjugation b_a · r_a = 2π/N_a:
  δ1 = λD/(N1 p), δ2 = λD/(N2 p), δ3 = λ/(2 N3 Δθ sin θ_B cos θ_B), the
  last being the seed's window relation R3 = N3 δ3 = λ/(2 Δθ sin θ_B cos θ_B)
  (Methods, text above eq. 2). Because b3 is not ⊥ r2, the transform carries
  a shear phase, see :func:`ptyhpc.bragg.operators.bragg_fftn`.

Arrays in the reconstruction frame are indexed ``[..., i1, i2, i3]``; voxel
``n`` sits at lab position ``lab_matrix @ (voxel_size * (n - origin))``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BraggGeometry", "SamplingWarning", "max_rocking_step", "probe_width_for_step", "plan"]


class SamplingWarning(UserWarning):
    """The rocking-curve step violates the seed's sampling relation (eq. 12)."""


def max_rocking_step(wavelength_m: float, bragg_angle_rad: float, probe_width_m: float,
                     thickness_m: float) -> float:
    """Largest rocking step that holds the illuminated volume in the window.

    Seed eq. (12): Δθ ≤ λ / (2 cos θ_B [T cos 2θ_B + W cos θ_B]).

    Parameters
    ----------
    wavelength_m : float
        X-ray wavelength λ, m.
    bragg_angle_rad : float
        Bragg angle θ_B, rad.
    probe_width_m : float
        Beam width W along p1 (in the scattering plane, ⊥ k_i), m.
    thickness_m : float
        Film thickness T, m.

    Returns
    -------
    float
        Δθ_max, rad.

    Raises
    ------
    ValueError
        Non-positive wavelength, width or a Bragg angle outside (0, π/2).
    """
    _check(wavelength_m, bragg_angle_rad)
    if probe_width_m <= 0 or thickness_m < 0:
        raise ValueError("probe width must be > 0 and thickness >= 0")
    th = bragg_angle_rad
    return wavelength_m / (2 * np.cos(th) * (thickness_m * np.cos(2 * th) + probe_width_m * np.cos(th)))


def probe_width_for_step(wavelength_m: float, bragg_angle_rad: float, rocking_step_rad: float,
                         thickness_m: float) -> float:
    """Widest probe that a rocking step Δθ can hold, seed eq. (2).

    W = λ / (2 Δθ cos² θ_B) − T cos 2θ_B / cos θ_B, m (the inverse of
    :func:`max_rocking_step`).

    Raises
    ------
    ValueError
        Non-positive wavelength or step, Bragg angle outside (0, π/2).
    """
    _check(wavelength_m, bragg_angle_rad)
    if rocking_step_rad <= 0:
        raise ValueError("rocking step must be > 0")
    th = bragg_angle_rad
    return wavelength_m / (2 * rocking_step_rad * np.cos(th) ** 2) - thickness_m * np.cos(2 * th) / np.cos(th)


def _check(wavelength_m, bragg_angle_rad):
    if not wavelength_m > 0:
        raise ValueError(f"wavelength must be > 0, got {wavelength_m}")
    if not 0 < bragg_angle_rad < np.pi / 2:
        raise ValueError(f"Bragg angle must be in (0, pi/2) rad, got {bragg_angle_rad}")


@dataclass(frozen=True)
class BraggGeometry:
    """Geometry of one 3D Bragg-ptychography scan.

    Parameters
    ----------
    wavelength_m : float
        λ, m.
    bragg_angle_rad : float
        θ_B, rad, in (0, π/2).
    detector_distance_m : float
        Sample–detector distance D, m (far field assumed).
    pixel_size_m : float
        Detector pixel pitch p, m (square pixels; binned pitch if binned).
    rocking_step_rad : float
        Angular step Δθ of the reconstruction grid, rad (the measured step
        divided by the up-sampling factor when virtual angles are inserted).
    shape : (int, int, int)
        (N1, N2, N3): detector columns, rows and rocking angles of the grid.

    Raises
    ------
    ValueError
        Non-positive lengths/step, θ_B outside (0, π/2), shape not 3 positive ints.
    """

    wavelength_m: float
    bragg_angle_rad: float
    detector_distance_m: float
    pixel_size_m: float
    rocking_step_rad: float
    shape: tuple = field(default=(32, 32, 16))

    def __post_init__(self):
        _check(self.wavelength_m, self.bragg_angle_rad)
        if not (self.detector_distance_m > 0 and self.pixel_size_m > 0 and self.rocking_step_rad > 0):
            raise ValueError("detector distance, pixel size and rocking step must be > 0")
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive ints, got {self.shape}")
        object.__setattr__(self, "shape", shape)

    # -- physics ---------------------------------------------------------
    @property
    def q_norm(self) -> float:
        """|Q_hkl| = 4π sin θ_B / λ, rad/m (Bragg's law)."""
        return 4 * np.pi * np.sin(self.bragg_angle_rad) / self.wavelength_m

    @property
    def k_in(self) -> np.ndarray:
        """Unit incident wave vector k̂_i in the lab frame, (3,)."""
        t = self.bragg_angle_rad
        return np.array([0.0, np.cos(t), -np.sin(t)])

    @property
    def k_out(self) -> np.ndarray:
        """Unit exit wave vector k̂_f in the lab frame, (3,)."""
        t = self.bragg_angle_rad
        return np.array([0.0, np.cos(t), np.sin(t)])

    @property
    def lab_matrix(self) -> np.ndarray:
        """Columns = unit vectors of r1, r2, r3 in the lab frame, (3, 3), orthonormal."""
        t = self.bragg_angle_rad
        e1 = np.array([1.0, 0.0, 0.0])
        e2 = np.array([0.0, -np.sin(t), np.cos(t)])
        return np.stack([e1, e2, self.k_out], axis=1)

    @property
    def q_steps(self) -> np.ndarray:
        """Measurement-frame step vectors b1, b2, b3 as rows, lab frame, rad/m, (3, 3)."""
        k = 2 * np.pi / self.wavelength_m
        c = k * self.pixel_size_m / self.detector_distance_m
        m = self.lab_matrix
        return np.stack([c * m[:, 0], c * m[:, 1], self.q_norm * self.rocking_step_rad * np.array([0, 1.0, 0])])

    @property
    def voxel_size(self) -> np.ndarray:
        """(δ1, δ2, δ3), m: λD/(N1 p), λD/(N2 p), λ/(2 N3 Δθ sin θ_B cos θ_B)."""
        n1, n2, n3 = self.shape
        lam, t = self.wavelength_m, self.bragg_angle_rad
        d12 = lam * self.detector_distance_m / self.pixel_size_m
        d3 = lam / (2 * n3 * self.rocking_step_rad * np.sin(t) * np.cos(t))
        return np.array([d12 / n1, d12 / n2, d3])

    @property
    def window_m(self) -> np.ndarray:
        """Window (R1, R2, R3) = N · δ, m."""
        return np.asarray(self.shape) * self.voxel_size

    @property
    def shear(self) -> float:
        """Shear κ of the modified 3D FFT: q·r = 2π(m1n1/N1 + m2n2/N2 + m3n3/N3 + κ m3n2/N3).

        κ = (b3 · r̂2) δ2 N3 / 2π = −tan θ_B δ2/δ3, with n2 counted from the window centre.
        """
        b3 = self.q_steps[2]
        return float(b3 @ self.lab_matrix[:, 1] * self.voxel_size[1] * self.shape[2] / (2 * np.pi))

    @property
    def transverse_matrix(self) -> np.ndarray:
        """Rows: probe-frame unit vectors p_x = x̂ and p_⊥ = (0, sin θ, cos θ) in r-frame coordinates, (2, 3).

        Both are ⊥ k̂_i; the probe is invariant along k̂_i (seed Methods).
        """
        t = self.bragg_angle_rad
        p_perp = np.array([0.0, np.sin(t), np.cos(t)])
        lab_rows = np.stack([np.array([1.0, 0, 0]), p_perp])
        return lab_rows @ self.lab_matrix

    # -- frame transforms ----------------------------------------------
    def r_to_lab(self, r_index) -> np.ndarray:
        """Reconstruction-frame voxel coordinates (…, 3) → lab positions (…, 3), m."""
        r = np.asarray(r_index, dtype=np.float64) * self.voxel_size
        return r @ self.lab_matrix.T

    def lab_to_r(self, lab_m) -> np.ndarray:
        """Lab positions (…, 3), m → reconstruction-frame voxel coordinates (…, 3)."""
        return (np.asarray(lab_m, dtype=np.float64) @ self.lab_matrix) / self.voxel_size

    def q_vectors(self) -> np.ndarray:
        """q of every measurement-grid point in the lab frame, (N1, N2, N3, 3), rad/m, centred."""
        m = [np.arange(n) - n // 2 for n in self.shape]
        g = np.stack(np.meshgrid(*m, indexing="ij"), axis=-1).astype(np.float64)
        return g @ self.q_steps

    def upsampled(self, factor: int) -> "BraggGeometry":
        """Geometry with ``factor`` × more rocking angles at Δθ/factor (virtual angles, seed eq. 13)."""
        if int(factor) < 1:
            raise ValueError("up-sampling factor must be >= 1")
        n1, n2, n3 = self.shape
        return BraggGeometry(self.wavelength_m, self.bragg_angle_rad, self.detector_distance_m,
                             self.pixel_size_m, self.rocking_step_rad / factor, (n1, n2, n3 * int(factor)))

    def as_dict(self) -> dict:
        """JSON-able summary (SI units) for store attributes."""
        return {"wavelength_m": self.wavelength_m, "bragg_angle_rad": self.bragg_angle_rad,
                "detector_distance_m": self.detector_distance_m, "pixel_size_m": self.pixel_size_m,
                "rocking_step_rad": self.rocking_step_rad, "shape": list(self.shape),
                "q_norm_per_m": self.q_norm, "voxel_size_m": self.voxel_size.tolist(),
                "lab_matrix": self.lab_matrix.tolist()}


def plan(wavelength_m: float, bragg_angle_rad: float, probe_width_m: float, thickness_m: float,
         rocking_step_rad: float | None = None, warn: bool = True) -> dict:
    """Sampling plan for a scan: the largest rocking step and the up-sampling it needs.

    Applies seed eqs. (2) and (12). When ``rocking_step_rad`` is given and
    exceeds the eq. (12) bound, a :class:`SamplingWarning` is issued and the
    up-sampling factor (number of virtual angles + 1 per measured step, seed
    eq. 13) that restores the condition is returned.

    Parameters
    ----------
    wavelength_m, bragg_angle_rad, probe_width_m, thickness_m : float
        λ (m), θ_B (rad), full probe width W including the side lobes to be
        reconstructed (m), film thickness T (m).
    rocking_step_rad : float, optional
        Measured rocking step, rad.
    warn : bool
        Issue the warning (default True).

    Returns
    -------
    dict
        ``max_step_rad`` (eq. 12), ``window_r3_m`` = T cos2θ/sinθ + W/tanθ
        (seed Methods), and when a step is given ``covered_width_m`` (eq. 2),
        ``satisfied`` and ``upsampling`` (smallest integer factor ≥ 1 that
        satisfies eq. 12).
    """
    th = bragg_angle_rad
    dmax = max_rocking_step(wavelength_m, th, probe_width_m, thickness_m)
    out = {"max_step_rad": float(dmax),
           "window_r3_m": float(thickness_m * np.cos(2 * th) / np.sin(th) + probe_width_m / np.tan(th))}
    if rocking_step_rad is not None:
        up = int(np.ceil(rocking_step_rad / dmax - 1e-12))
        out.update(covered_width_m=float(probe_width_for_step(wavelength_m, th, rocking_step_rad, thickness_m)),
                   satisfied=bool(rocking_step_rad <= dmax), upsampling=max(up, 1))
        if warn and rocking_step_rad > dmax:
            warnings.warn(f"rocking step {rocking_step_rad:.3e} rad exceeds the sampling bound "
                          f"{dmax:.3e} rad (seed eq. 12) for W={probe_width_m:.3e} m, T={thickness_m:.3e} m; "
                          f"the illuminated volume aliases unless up-sampled by >= {max(up, 1)} (eq. 13)",
                          SamplingWarning, stacklevel=2)
    return out
