"""Simulated 3D Bragg-ptychography data of a thin crystalline film with a known displacement field.

The film occupies 0 ≤ z ≤ T in the lab frame (z ∥ Q_hkl, specular reflection).
Its displacement along Q (the only component the phase sees, φ = Q·u, seed
eq. 1 and text) is the sum of

* an implanted region y > y_b with uniform strain ε0 (default 3×10⁻⁴, the
  order of the seed's He-implanted layer), smoothed over ``w_b``:
  u_z = ε(y) z, ε(y) = ε0 (1 + tanh((y − y_b)/w_b))/2, so ε_zz = ε(y) and
  the lattice tilt about x is ∂u_z/∂y = ε'(y) z;
* an edge dislocation with line along x through (y_d, z_d) and Burgers
  vector b ẑ (|b| = d_hkl = 2π/|Q| by default, so φ winds by 2π): the
  isotropic-elastic solution for a straight edge dislocation (Hirth & Lothe,
  Theory of Dislocations, 2nd ed. (1982), ch. 3: u_x of a line along z with
  Burgers vector along x), rotated so its x → our z, y → −y: u_z = b/2π [atan2(−Y, Z) − Y Z / (2(1−ν)(Y² + Z²))],
  Y = y − y_d, Z = z − z_d.

The probe is a KB-like focus: the transverse field is the inverse FT of a
soft-edged rectangular aperture (NA_1, NA_2) with a defocus phase, so it has
side lobes, times a smooth real-space window that makes it compact; it is
invariant along k̂_i (seed Methods). Data are simulated on a rocking grid
fine enough to hold the whole illuminated volume (seed eq. 12) and then
decimated to a coarser measured step, as in the seed's experiment; Poisson
noise optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backend
from .geometry import BraggGeometry
from .operators import ProbeOperator, ScanFrame, predicted_intensity, shear_phase

__all__ = ["FilmModel", "BraggDataset", "make_probe", "probe_grid", "simulate"]


@dataclass
class FilmModel:
    """Analytic thin film: support, displacement, strain and tilt (lab frame, SI units).

    Parameters
    ----------
    thickness_m : float
    q_norm : float
        |Q_hkl|, rad/m.
    strain : float
        ε0 of the implanted region.
    boundary_y_m, boundary_width_m : float
        y_b and w_b of the implanted region.
    dislocation_yz_m : (float, float) or None
        (y_d, z_d) of the dislocation line (∥ x).
    burgers_m : float or None
        |b|; default d_hkl = 2π/|Q|.
    poisson_ratio : float
        ν (0.28, tungsten).
    """

    thickness_m: float
    q_norm: float
    strain: float = 3e-4
    boundary_y_m: float = 0.0
    boundary_width_m: float = 40e-9
    dislocation_yz_m: tuple | None = None
    burgers_m: float | None = None
    poisson_ratio: float = 0.28

    def support(self, lab):
        """1 inside the film, 0 outside: lab (…, 3) m → (…) float64."""
        z = lab[..., 2]
        return ((z >= 0) & (z <= self.thickness_m)).astype(np.float64)

    def eps(self, y):
        return self.strain * 0.5 * (1 + np.tanh((y - self.boundary_y_m) / self.boundary_width_m))

    def displacement_z(self, lab):
        """u_z (m) at lab points (…, 3)."""
        y, z = lab[..., 1], lab[..., 2]
        u = self.eps(y) * z
        if self.dislocation_yz_m is not None:
            b = self.burgers_m if self.burgers_m is not None else 2 * np.pi / self.q_norm
            yy, zz = y - self.dislocation_yz_m[0], z - self.dislocation_yz_m[1]
            r2 = np.maximum(yy**2 + zz**2, 1e-30)
            u = u + b / (2 * np.pi) * (np.arctan2(-yy, zz) - yy * zz / (2 * (1 - self.poisson_ratio) * r2))
        return u

    def density(self, lab):
        """ρ = S exp(i Q·u) at lab points (…, 3), complex128."""
        return self.support(lab) * np.exp(1j * self.q_norm * self.displacement_z(lab))

    def strain_tilt(self, lab, h=1e-10):
        """Analytic (ε_zz, ω_x, ω_y) at lab points (…, 3) by central differences of u_z with step h (m).

        ε_zz = ∂u_z/∂z, ω_x = arcsin(∂u_z/∂y), ω_y = arcsin(∂u_z/∂x) (seed eq. 14 with φ = |Q| u_z).
        """
        out = []
        for axis in (2, 1, 0):
            e = np.zeros(3)
            e[axis] = h
            out.append((self.displacement_z(lab + e) - self.displacement_z(lab - e)) / (2 * h))
        ezz, gy, gx = out
        return ezz, np.arcsin(np.clip(gy, -1, 1)), np.arcsin(np.clip(gx, -1, 1))


def probe_grid(geometry: BraggGeometry, scan: ScanFrame | None = None, spacing_m=None, margin: int = 2):
    """Transverse probe grid (shape, spacing) that covers every window voxel of ``geometry``.

    Spacing defaults to (δ1, δ3 |sin 2θ_B|) (the transverse step of r1 and r3; r3 dominates t2).
    """
    d = geometry.voxel_size
    if spacing_m is None:
        spacing_m = (d[0], d[2] * abs(np.sin(2 * geometry.bragg_angle_rad)))
    spacing = np.asarray(spacing_m, dtype=np.float64)
    corners = np.stack(np.meshgrid(*[[0, n - 1] for n in geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    t = (corners * d) @ geometry.transverse_matrix.T
    span = np.abs(t[:, None, :] - t[None, :, :]).max(axis=(0, 1))
    shape = tuple(int(2 * np.ceil(s / sp) + 2 * margin + 1) for s, sp in zip(span, spacing))
    return shape, tuple(float(s) for s in spacing)


def make_probe(shape, spacing_m, wavelength_m, na=(0.6e-3, 0.5e-3), defocus_m=0.0, edge=0.1,
               window_m=None, dtype=np.complex64):
    """Transverse probe P⊥ (M1, M2) with side lobes: IFT of a soft rectangular aperture.

    P⊥ = IFT[A(f) exp(iπλΔf|f|²)] (Fresnel transfer function of the defocus Δf,
    Goodman, Introduction to Fourier Optics, ch. 4) times a smooth window
    exp(−(t/window)^4). A(f) = Π_k σ((NA_k/λ − |f_k|)/(edge NA_k/λ)), σ the
    logistic function. Peak amplitude 1.

    Parameters
    ----------
    shape : (int, int)
    spacing_m : (float, float)
    wavelength_m : float
    na : (float, float)
        Numerical apertures (half-angles), rad.
    defocus_m : float
    edge : float
        Relative softness of the aperture edge.
    window_m : (float, float) or None
        Real-space half-widths of the compact window; default 0.4 × grid extent.
    """
    m1, m2 = shape
    f1 = np.fft.fftfreq(m1, spacing_m[0])[:, None]
    f2 = np.fft.fftfreq(m2, spacing_m[1])[None, :]
    a = 1.0
    for f, n in ((f1, na[0]), (f2, na[1])):
        c = n / wavelength_m
        a = a * 1 / (1 + np.exp(-(c - np.abs(f)) / (edge * c)))
    spec = a * np.exp(1j * np.pi * wavelength_m * defocus_m * (f1**2 + f2**2))
    p = np.fft.fftshift(np.fft.ifft2(spec))
    t1 = (np.arange(m1) - m1 // 2)[:, None] * spacing_m[0]
    t2 = (np.arange(m2) - m2 // 2)[None, :] * spacing_m[1]
    if window_m is None:
        window_m = (0.4 * m1 * spacing_m[0], 0.4 * m2 * spacing_m[1])
    p = p * np.exp(-((t1 / window_m[0]) ** 4) - (t2 / window_m[1]) ** 4)
    return (p / np.abs(p).max()).astype(dtype)


@dataclass
class BraggDataset:
    """Simulated scan. ``data`` is centred (q = 0 at index N//2 of every axis), measured angles only.

    Attributes
    ----------
    geometry : BraggGeometry
        Measured grid (coarse rocking step).
    data : ndarray, (J, N1, N2, n3) float32
        Counts (Poisson) or noise-free intensities.
    mask : ndarray, (N1, N2, n3) bool
        True = measured pixel (False: gaps, hot pixels).
    positions_m : ndarray, (J, 3) float64
        Beam points on the film mid-plane, lab frame, m.
    film : FilmModel
    probe : ndarray, (M1, M2) complex64
        True transverse probe on ``probe_spacing_m`` (photon-scaled).
    probe_spacing_m : (float, float)
    sim_upsampling : int
        Ratio of the simulation's rocking step to the measured one's inverse.
    """

    geometry: BraggGeometry
    data: np.ndarray
    mask: np.ndarray
    positions_m: np.ndarray
    film: FilmModel
    probe: np.ndarray
    probe_spacing_m: tuple
    sim_upsampling: int
    info: dict = field(default_factory=dict)


def simulate(*, wavelength_m=1.54e-10, bragg_angle_deg=43.5, detector_distance_m=1.4, pixel_size_m=275e-6,
             det_shape=(32, 32), n_angles=10, rocking_step_rad=None, sim_upsampling=3, thickness_m=150e-9,
             strain=3e-4, dislocation=True, scan_shape=(4, 4), scan_step_m=(60e-9, 80e-9), na=(0.6e-3, 0.5e-3),
             defocus_m=0.0, counts_per_position=None, gap_columns=(), seed=0, xp=np) -> BraggDataset:
    """Simulate a thin-film Bragg-ptychography scan (see module docstring).

    Parameters
    ----------
    wavelength_m, bragg_angle_deg, detector_distance_m, pixel_size_m : float
        λ (m), θ_B (degrees), D (m), binned pixel p (m). Defaults: 8 keV,
        W(220) (θ_B ≈ 43.5°), 1.4 m, 5×5-binned 55 µm pixels.
    det_shape : (int, int)
    n_angles : int
        Measured rocking angles n3.
    rocking_step_rad : float or None
        Measured step; default makes the measured window R3 = 1/3 of the
        window that holds the full probe (so ×3 up-sampling is needed).
    sim_upsampling : int
        Data are simulated at step/sim_upsampling and decimated.
    thickness_m, strain, dislocation
        Film; the dislocation sits at (y, z) = (−60 nm, T/2).
    scan_shape, scan_step_m
        Raster of beam points in (x, y) on the film mid-plane z = T/2.
    counts_per_position : float or None
        Mean total counts per position (measured planes); None = noise-free.
    gap_columns : sequence of int
        Detector columns masked out (module gap), left free in the solver.

    Returns
    -------
    BraggDataset
    """
    theta = np.deg2rad(bragg_angle_deg)
    n1, n2 = det_shape
    if rocking_step_rad is None:
        # measured window R3 = 0.4 × N1 δ1: the probe's central lobe fits, its side lobes do not
        d12 = wavelength_m * detector_distance_m / pixel_size_m
        rocking_step_rad = wavelength_m / (2 * 0.4 * d12 * np.sin(theta) * np.cos(theta))
    geom = BraggGeometry(wavelength_m, theta, detector_distance_m, pixel_size_m, rocking_step_rad,
                         (n1, n2, n_angles))
    fine = geom.upsampled(sim_upsampling)
    film = FilmModel(thickness_m, geom.q_norm, strain=strain, boundary_y_m=0.0,
                     dislocation_yz_m=(-60e-9, thickness_m / 2) if dislocation else None)
    sy, sx = scan_shape
    xs = (np.arange(sx) - (sx - 1) / 2) * scan_step_m[0]
    ys = (np.arange(sy) - (sy - 1) / 2) * scan_step_m[1]
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pos = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, thickness_m / 2)], -1)

    scan = ScanFrame.from_positions(fine, pos)
    pshape, pspacing = probe_grid(fine)
    probe = make_probe(pshape, pspacing, wavelength_m, na=na, defocus_m=defocus_m)
    op = ProbeOperator(fine, pshape, pspacing, xp=xp)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in scan.object_shape], indexing="ij"), -1) + scan.origin
    rho = film.density(fine.r_to_lab(grid)).astype(np.complex64)
    shear = shear_phase(fine, xp)
    h = backend.to_host(predicted_intensity(xp.asarray(rho), xp.asarray(probe), scan, op, shear,
                                            np.arange(len(pos))))
    h = np.fft.fftshift(h, axes=(-3, -2, -1))
    off = fine.shape[2] // 2 - sim_upsampling * (n_angles // 2)
    meas = h[..., off::sim_upsampling][..., :n_angles]
    scale = 1.0
    if counts_per_position is not None:
        scale = counts_per_position / meas.sum(axis=(1, 2, 3)).mean()
        meas = np.random.default_rng(seed).poisson(meas * scale).astype(np.float32)
    else:
        meas = meas.astype(np.float32)
    mask = np.ones((n1, n2, n_angles), dtype=bool)
    for c in gap_columns:
        mask[c, :, :] = False
    meas = meas * mask
    probe_scaled = (probe * np.sqrt(scale)).astype(np.complex64)
    return BraggDataset(geom, meas, mask, pos, film, probe_scaled, pspacing, sim_upsampling,
                        info={"fine_shape": fine.shape, "scale": scale, "probe_shape": pshape})
