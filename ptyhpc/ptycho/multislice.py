"""Multislice ptychography (3PIE) and post-acquisition focusing.

Forward model: the multislice model of 3PIE (Maiden, Humphry & Rodenburg,
J. Opt. Soc. Am. A 29, 1606 (2012); the multislice method of Cowley &
Moodie, Acta Cryst. 10, 609 (1957)); equation numbers of the 3PIE paper
are not quoted because they were not checked here. A thick object is S
thin slices of transmission functions O_s separated by free space of
thickness Δz. For scan position j, with the probe P_j (already shifted to
the position) as the wave incident on slice 0::

    ψ_{0,j} = P_j · O_0(r + c_j)                       exit wave of slice 0
    P_{s,j} = F⁻¹[ H_Δz · F[ψ_{s−1,j}] ]              incident wave of slice s
    ψ_{s,j} = P_{s,j} · O_s(r + c_j)                   exit wave of slice s
    Ψ_j     = F[ψ_{S−1,j}],  I_j = |Ψ_j|²              far-field diffraction pattern

with the paraxial Fresnel propagator H_Δz(k) = exp(−iπλΔz|k|²)
(:func:`ptyhpc.physics.fresnel_propagator`, Kirkland 2010 eq. 6.90) or the
angular-spectrum one. Positive Δz is downstream: slice 0 is where the beam
enters.

Reconstruction (the 3PIE update of Maiden et al. 2012): the far-field
update gives a new exit wave of the last slice; going up the stack, the
difference Δψ_s updates slice s (object step conj(P_s)Δψ_s) and, through
the adjoint, the incident wave P_s (conj(O_s)Δψ_s), which back-propagated
by −Δz is the exit-wave difference of slice s − 1; at slice 0 it updates
the probe. Here the updates of a mini-batch of positions are summed before
they are applied and normalised as in rPIE (Maiden, Johnson & Li, Optica 4,
736 (2017), eqs. (4)–(5)), exactly as :func:`ptyhpc.ptycho.reconstruct`
does for one slice; with S = 1 the two engines take the same steps.

Post-acquisition focusing (seed 000): :func:`focal_series` propagates a
reconstructed exit wave or object to a list of planes with the same
propagators and scores the sharpness of each (:func:`sharpness`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

import numpy as np

from .. import backend
from ..physics import angular_spectrum_propagator, fresnel_propagator
from . import operators as ops
from .engines import illumination, modulus_factor, prepare_amplitudes
from .propagators import FarField

__all__ = ["MultisliceOperator", "MultisliceResult", "reconstruct_multislice", "split_object",
           "FocalSeries", "focal_series", "sharpness"]

#: Positions per chunk of array work inside a mini-batch (cache blocking only, as in engines.py).
_CHUNK = 8

_PROPAGATORS = {"fresnel": fresnel_propagator, "angular_spectrum": angular_spectrum_propagator}


@dataclass
class MultisliceOperator:
    """Multislice exit wave of a batch of probe positions, with its adjoints.

    Parameters
    ----------
    shape : (int, int)
        Probe window (ny, nx), pixels (the FFT grid).
    pixel_size_m : (float, float)
        Object pixel (dy, dx), m.
    wavelength_m : float
        m.
    slice_thickness_m : float
        Δz between consecutive slices, m (> 0).
    model : {"fresnel", "angular_spectrum"}
        Free-space propagator between slices.
    xp : module
        numpy or cupy.

    Notes
    -----
    The map (O_0 … O_{S−1}, P) ↦ ψ_{S−1} is linear in the probe and in each
    slice separately. :meth:`forward` evaluates it, :meth:`adjoint_probe` is
    the adjoint of the linear map P ↦ ψ_{S−1} (slices fixed), and
    :meth:`linearized` / :meth:`adjoint` are the Jacobian with respect to all
    slices and the probe and its adjoint, the back-propagation of 3PIE
    (Maiden et al. 2012, without their step normalisation).

    Raises
    ------
    ValueError
        Non-positive wavelength or slice thickness, unknown model.
    """

    shape: tuple
    pixel_size_m: tuple
    wavelength_m: float
    slice_thickness_m: float
    model: str = "fresnel"
    xp: ModuleType = np
    h: object = field(init=False, repr=False)
    h_conj: object = field(init=False, repr=False)

    def __post_init__(self):
        if not self.wavelength_m > 0:
            raise ValueError(f"wavelength_m must be > 0, got {self.wavelength_m!r}")
        if not self.slice_thickness_m > 0:
            raise ValueError(f"slice_thickness_m must be > 0, got {self.slice_thickness_m!r}")
        make = _PROPAGATORS.get(self.model)
        if make is None:
            raise ValueError(f"unknown propagator model {self.model!r}; use one of {tuple(_PROPAGATORS)}")
        self.h = make(tuple(self.shape), self.pixel_size_m, self.wavelength_m, self.slice_thickness_m,
                      xp=self.xp)
        self.h_conj = self.xp.conj(self.h)

    def propagate(self, wave):
        """One slice downstream: F⁻¹[H_Δz F[wave]], (..., ny, nx)."""
        return backend.ifft2(backend.fft2(wave) * self.h)

    def back_propagate(self, wave):
        """Adjoint of :meth:`propagate` (its inverse for the Fresnel propagator): one slice upstream."""
        return backend.ifft2(backend.fft2(wave) * self.h_conj)

    def forward(self, patches, probes):
        """Exit waves through the slice stack.

        Parameters
        ----------
        patches : (S, b, ny, nx) complex
            Object patches of every slice at every position of the batch.
        probes : (b, ny, nx) complex
            Probes incident on slice 0 (already shifted to their positions).

        Returns
        -------
        exit_wave : (b, ny, nx)
            ψ_{S−1}, exit wave of the last slice.
        incident : list of S arrays (b, ny, nx)
            P_s, the wave incident on each slice (needed by the adjoint).
        """
        incident = [probes]
        psi = probes * patches[0]
        for s in range(1, patches.shape[0]):
            incident.append(self.propagate(psi))
            psi = incident[s] * patches[s]
        return psi, incident

    def adjoint_probe(self, wave, patches):
        """Adjoint of P ↦ ψ_{S−1} at fixed slices: conj(O_0) · B[conj(O_1) · B[…conj(O_{S−1}) · wave]].

        ``wave`` (b, ny, nx); returns (b, ny, nx).
        """
        g = wave
        for s in range(patches.shape[0] - 1, 0, -1):
            g = self.back_propagate(self.xp.conj(patches[s]) * g)
        return self.xp.conj(patches[0]) * g

    def linearized(self, patches, probes, d_patches, d_probes):
        """Jacobian of the exit wave applied to (δO_s patches, δP): δψ_{S−1}, (b, ny, nx).

        Product rule through the stack: δψ_s = δP_s O_s + P_s δO_s with
        δP_s = propagate(δψ_{s−1}) and δP_0 = ``d_probes``.
        """
        psi, incident = probes * patches[0], probes
        d_psi = d_probes * patches[0] + probes * d_patches[0]
        for s in range(1, patches.shape[0]):
            incident, d_inc = self.propagate(psi), self.propagate(d_psi)
            psi = incident * patches[s]
            d_psi = d_inc * patches[s] + incident * d_patches[s]
        return d_psi

    def adjoint(self, chi, patches, incident):
        """Adjoint of :meth:`linearized`: back-propagation of an exit-wave difference.

        Parameters
        ----------
        chi : (b, ny, nx)
            Exit-wave difference of the last slice.
        patches : (S, b, ny, nx)
        incident : list of S (b, ny, nx)
            From :meth:`forward`.

        Returns
        -------
        d_patches : (S, b, ny, nx)
            conj(P_s) g_s, the gradient for each slice's patch.
        d_probes : (b, ny, nx)
            conj(O_0) g_0, the gradient for the incident probe.
        """
        xp = self.xp
        d_patches = xp.empty(patches.shape, dtype=np.result_type(chi.dtype, patches.dtype))
        g = chi
        for s in range(patches.shape[0] - 1, -1, -1):
            d_patches[s] = xp.conj(incident[s]) * g
            g = xp.conj(patches[s]) * g
            if s > 0:
                g = self.back_propagate(g)
        return d_patches, g


@dataclass
class MultisliceResult:
    """Output of :func:`reconstruct_multislice` (host NumPy arrays).

    Attributes
    ----------
    objects : (S, H, W) complex64
        Transmission function of each slice, slice 0 upstream (where the beam
        enters); phase in rad.
    probe : (ny, nx) complex64
        Probe incident on slice 0, on the FFT grid, centred at (ny//2, nx//2).
    error : (n_iter,) float32
        Σ(|Ψ| − √I)² / Σ I over measured pixels, per iteration.
    illumination : (H, W) float32
        Σ_j |P_j|² on the object grid at slice 0.
    pixel_size_m, origin_m : (float, float)
        Object pixel and scan-frame (y, x) of pixel [0, 0], m.
    slice_thickness_m : float
        Δz, m; slice s lies at s·Δz below the probe plane.
    """

    objects: np.ndarray
    probe: np.ndarray
    error: np.ndarray
    illumination: np.ndarray
    pixel_size_m: tuple
    origin_m: tuple
    slice_thickness_m: float
    info: dict = field(default_factory=dict)


def split_object(obj, n_slices):
    """Spread a single-slice object evenly over ``n_slices`` slices: O_s = |O|^{1/S} exp(i arg(O)/S).

    The product of the slices equals ``obj`` (the projection approximation
    of a thin multislice stack), so a single-slice reconstruction is a
    starting point for 3PIE. The phase is not unwrapped: start from a
    weak-phase object (|arg O| < π).

    Parameters
    ----------
    obj : (H, W) complex
    n_slices : int
        ≥ 1.

    Returns
    -------
    (n_slices, H, W) complex64
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    xp = backend.xp_of(obj)
    one = xp.abs(obj) ** (1.0 / n_slices) * xp.exp(1j * xp.angle(obj) / n_slices)
    return xp.broadcast_to(one, (n_slices,) + obj.shape).astype(np.complex64)


def reconstruct_multislice(frames, positions_m, probe, pixel_size_m, *, n_slices, slice_thickness_m,
                           wavelength_m, n_iter=30, batch_size=32, alpha=0.5, beta_object=0.1, beta_probe=0.1,
                           probe_update_start=2, noise_model="poisson", mask=None, probe_fourier_mask=None,
                           origin_m=None, object_shape=None, object_init=None, propagator_model="fresnel",
                           seed=0, xp: ModuleType = np,
                           callback: Callable[[int, float], None] | None = None) -> MultisliceResult:
    """Reconstruct S object slices and the probe from one scan with 3PIE, mini-batched.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x)
        Diffraction patterns (counts), centred (zero frequency at det//2).
    positions_m : ndarray, (n, 2) float
        Probe centres (y, x) in the scan frame, m.
    probe : ndarray, (Ny, Nx) complex
        Initial probe incident on slice 0 (the entrance plane), on the FFT
        grid, centred at N//2; Σ|P|² sets the intensity scale. A probe known
        at another plane is moved there with :func:`ptyhpc.physics.propagate`.
    pixel_size_m : (float, float)
        Object pixel = 1 / (N · Δk) for an FFT grid of N pixels of Δk, m.
    n_slices : int
        S ≥ 1 slices.
    slice_thickness_m : float
        Δz between slices, m (> 0).
    wavelength_m : float
        m.
    n_iter : int
        Passes over all positions.
    batch_size : int
        Positions per mini-batch (random order each pass, fixed by ``seed``).
    alpha : float
        rPIE regularisation α ∈ (0, 1] of the object and probe steps
        (Maiden et al. 2017, eqs. 4–5); 1 is the ePIE/3PIE normalisation.
    beta_object, beta_probe : float
        Step sizes (as :func:`ptyhpc.ptycho.reconstruct`). Each slice takes
        β_object / S: every slice is updated from the whole exit-wave
        difference, so the S updates add up in the exit wave (with full steps
        on every slice 6 slices diverged on the CNT data at β = 0.5).
    probe_update_start : int
        First iteration (0-based) that updates the probe.
    noise_model : {"poisson", "amplitude"}
        Data term of the exit-wave update, as in :func:`ptyhpc.ptycho.reconstruct`:
        Poisson-likelihood gradient F⁻¹[(I/|Ψ|² − 1)Ψ] (Thibault &
        Guizar-Sicairos, New J. Phys. 14, 063004 (2012), eq. 19) or the
        modulus projection F⁻¹[√I Ψ/|Ψ|] − ψ.
    mask : ndarray of bool, (det_y, det_x), optional
        Measured detector pixels.
    probe_fourier_mask : ndarray, (Ny, Nx), FFT order, optional
        Multiplies the probe's spectrum after each probe update (the
        condenser aperture, slightly enlarged).
    origin_m, object_shape : optional
        Force the object grid (see :meth:`ScanGeometry.from_positions`).
    object_init : ndarray, (H, W) or (S, H, W) complex, optional
        Starting slices; a single (H, W) object (e.g. a single-slice
        :class:`~ptyhpc.ptycho.PtychoResult.object`) is spread over the slices
        with :func:`split_object`. Default: ones.
    propagator_model : {"fresnel", "angular_spectrum"}
    seed : int
    xp : module
        numpy or cupy; the result comes back as NumPy.
    callback : callable(iteration, error), optional

    Returns
    -------
    MultisliceResult

    Raises
    ------
    ValueError
        Bad counts of slices, thickness, wavelength, α, noise model, or
        mismatched shapes.
    """
    if int(n_slices) != n_slices or n_slices < 1:
        raise ValueError(f"n_slices must be an integer >= 1, got {n_slices!r}")
    n_slices = int(n_slices)
    if noise_model not in ("poisson", "amplitude"):
        raise ValueError(f"unknown noise_model {noise_model!r}; use 'poisson' or 'amplitude'")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    frames = np.asarray(frames)
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if frames.ndim != 3 or positions_m.shape != (len(frames), 2):
        raise ValueError(f"frames (n, dy, dx) and positions (n, 2) expected, got {frames.shape} and "
                         f"{positions_m.shape}")
    if probe.ndim != 2:
        raise ValueError(f"probe must be (Ny, Nx) (one mode), got shape {probe.shape}")
    fft_shape = tuple(probe.shape)
    op = MultisliceOperator(fft_shape, tuple(pixel_size_m), wavelength_m, slice_thickness_m,
                            model=propagator_model, xp=xp)
    far = FarField()
    amp_h, measured_h = prepare_amplitudes(frames, fft_shape, mask)
    geom = ops.ScanGeometry.from_positions(positions_m, fft_shape, pixel_size_m, origin_m=origin_m,
                                           object_shape=object_shape)
    amp, measured = xp.asarray(amp_h), xp.asarray(measured_h)
    total_intensity = float(np.sum(amp_h.astype(np.float64) ** 2))
    floor = 1e-3 * total_intensity / max(amp_h.size, 1)
    S = n_slices
    if object_init is None:
        objs = xp.ones((S,) + geom.object_shape, dtype=np.complex64)
    else:
        init = xp.asarray(object_init, dtype=np.complex64)
        if init.ndim == 2:
            init = split_object(init, S)
        if tuple(init.shape) != (S,) + geom.object_shape:
            raise ValueError(f"object_init shape {tuple(object_init.shape)} differs from the slice stack "
                             f"{(S,) + geom.object_shape}")
        objs = init.copy()
    prb = xp.array(probe, dtype=np.complex64, copy=True)
    probe_mask_k = None if probe_fourier_mask is None else xp.asarray(probe_fourier_mask, dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = geom.n_positions
    errors = np.zeros(n_iter, dtype=np.float32)
    for it in range(n_iter):
        order = rng.permutation(n)
        err = 0.0
        update_probe = it >= probe_update_start
        for start in range(0, n, batch_size):
            batch = np.sort(order[start:start + batch_size])
            probe_k = backend.fft2(prb)
            num = xp.zeros((S,) + geom.object_shape, dtype=np.complex64)
            den = xp.zeros((S,) + geom.object_shape, dtype=np.float32)
            p_num = xp.zeros(fft_shape, dtype=np.complex64) if update_probe else None
            p_den = xp.zeros(fft_shape, dtype=np.float32) if update_probe else None
            for c0 in range(0, len(batch), _CHUNK):
                idx = batch[c0:c0 + _CHUNK]
                flat = geom.flat_index(idx, xp)
                ramps = ops.shift_ramps(geom.frac[idx], fft_shape, xp)
                probes = ops.shifted_probes(probe_k, ramps)
                patches = xp.stack([ops.extract_patches(objs[s], flat) for s in range(S)])
                psi, incident = op.forward(patches, probes)
                psi_k = far.forward(psi)
                mod = xp.abs(psi_k)
                a = amp[idx]
                err += float(xp.sum((mod - a) ** 2 * measured))
                dpsi = far.adjoint(psi_k * modulus_factor(mod, a, measured, noise_model, floor)) - psi
                # Back-propagation through the stack (3PIE): each slice's update uses the wave
                # incident on it; the adjoint carries the difference up to the probe.
                g = dpsi
                for s in range(S - 1, -1, -1):
                    ops.patches_adjoint(xp.conj(incident[s]) * g, flat, geom.object_shape, out=num[s])
                    ops.patches_adjoint((xp.abs(incident[s]) ** 2).astype(np.float32), flat, geom.object_shape,
                                        out=den[s])
                    if s == 0:
                        break
                    g = op.back_propagate(xp.conj(patches[s]) * g)
                if update_probe:
                    p_num += ops.unshift_sum(xp.conj(patches[0]) * g, ramps)
                    p_den += xp.sum(xp.abs(patches[0]) ** 2, axis=0)
            dmax = den.reshape(S, -1).max(axis=1).reshape(S, 1, 1)
            # Every slice receives the whole exit-wave difference, so S full steps would change the
            # exit wave S times too much (and diverge with large β): each slice takes β/S.
            objs += (beta_object / S) * num / ((1 - alpha) * den + alpha * dmax)
            if update_probe:
                prb += beta_probe * p_num / ((1 - alpha) * p_den + alpha * float(p_den.max()))
                if probe_mask_k is not None:
                    prb = backend.ifft2(backend.fft2(prb) * probe_mask_k)
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))

    illum = illumination(prb, geom, batch_size, xp)
    return MultisliceResult(
        objects=backend.to_host(objs).astype(np.complex64),
        probe=backend.to_host(prb).astype(np.complex64),
        error=errors,
        illumination=backend.to_host(illum),
        pixel_size_m=geom.pixel_size_m,
        origin_m=geom.origin_m,
        slice_thickness_m=float(slice_thickness_m),
        info={"engine": "3pie", "n_slices": S, "noise_model": noise_model, "alpha": alpha,
              "batch_size": batch_size, "fft_shape": fft_shape, "n_iter": n_iter,
              "propagator_model": propagator_model},
    )


@dataclass
class FocalSeries:
    """Output of :func:`focal_series`.

    Attributes
    ----------
    waves : (n_planes, H, W) complex64
        The wave at each plane.
    defocus_m : (n_planes,) float64
        Propagation distance of each plane from the input plane, m (> 0 downstream).
    sharpness : (n_planes,) float64
        Sharpness of each plane (:func:`sharpness`); the in-focus plane has the largest.
    best_defocus_m : float
        The plane of largest sharpness.
    """

    waves: np.ndarray
    defocus_m: np.ndarray
    sharpness: np.ndarray
    best_defocus_m: float


def sharpness(waves, region=None, metric="phase_gradient"):
    """Focus metric per plane of a complex wave stack; largest at the in-focus plane.

    For a weak phase object 1 + iφ, propagation by Δ with
    H = exp(−iπλΔ|k|²) gives the phase φ·cos(πλΔ|k|²) and the amplitude
    φ·sin(πλΔ|k|²) in Fourier space (first order in φ; the weak-phase
    transfer of Kirkland, *Advanced Computing in Electron Microscopy*, ch. 3,
    with defocus only): the phase contrast is largest, and the amplitude
    contrast vanishes, in focus.

    Parameters
    ----------
    waves : (n, H, W) complex
        A focal series (exit waves or objects).
    region : (H, W) bool, optional
        Pixels scored (e.g. around one feature); default all.
    metric : {"phase_gradient", "phase_variance", "amplitude_contrast"}
        ``"phase_gradient"``: Σ|∇ arg ψ|² (weights fine detail, the sharpest
        depth response); ``"phase_variance"``: variance of arg ψ;
        ``"amplitude_contrast"``: −variance of |ψ| / mean |ψ| (negated so that
        larger is sharper). Phases are taken relative to the region's
        circular mean, so an offset does not wrap.

    Returns
    -------
    (n,) float64

    Raises
    ------
    ValueError
        Unknown metric or a region that selects no pixel.
    """
    xp = backend.xp_of(waves)
    if metric not in ("phase_gradient", "phase_variance", "amplitude_contrast"):
        raise ValueError(f"unknown sharpness metric {metric!r}")
    if waves.ndim == 2:
        waves = waves[None]
    region = xp.ones(waves.shape[1:], bool) if region is None else xp.asarray(region, bool)
    if int(region.sum()) == 0:
        raise ValueError("the region selects no pixel")
    if metric == "amplitude_contrast":
        amp = xp.abs(waves)[:, region]
        return -backend.to_host(amp.var(axis=1) / xp.maximum(amp.mean(axis=1), 1e-30) ** 2).astype(np.float64)
    ref = xp.sum(waves[:, region], axis=1)
    phase = xp.angle(waves * xp.conj(ref / xp.maximum(xp.abs(ref), 1e-30))[:, None, None])
    if metric == "phase_variance":
        return backend.to_host(phase[:, region].var(axis=1)).astype(np.float64)
    # Phase differences of neighbours, wrapped, so a phase jump of 2π is not an edge.
    gy = xp.angle(xp.exp(1j * xp.diff(phase, axis=1)))
    gx = xp.angle(xp.exp(1j * xp.diff(phase, axis=2)))
    ry, rx = region[1:] & region[:-1], region[:, 1:] & region[:, :-1]
    return backend.to_host(xp.sum(gy[:, ry] ** 2, axis=1) + xp.sum(gx[:, rx] ** 2, axis=1)).astype(np.float64)


def focal_series(wave, defocus_m, pixel_size_m, wavelength_m, *, region=None, metric="phase_gradient",
                 model="fresnel") -> FocalSeries:
    """Post-acquisition focusing: propagate a reconstructed wave to a stack of planes.

    Each plane is ψ_Δ = F⁻¹[H_Δ(k) F[ψ]] with H_Δ the free-space propagator
    over Δ (Fresnel, exp(−iπλΔ|k|²), :func:`ptyhpc.physics.fresnel_propagator`,
    or the angular spectrum, :func:`ptyhpc.physics.angular_spectrum_propagator`),
    Δ > 0 downstream. The input is either an
    exit wave (object × probe) or a transmission function: a weak object
    O = 1 + o propagates as its scattered part o under plane-wave
    illumination, so a feature at depth Δ below the plane of a single-slice
    reconstruction comes into focus at +Δ.

    Parameters
    ----------
    wave : (H, W) complex
        Exit wave or object (numpy or cupy array). The FFT wraps around:
        pad it first when features lie near the edge.
    defocus_m : sequence of float
        Propagation distances, m.
    pixel_size_m : (float, float)
        m.
    wavelength_m : float
        m.
    region, metric
        Passed to :func:`sharpness`.
    model : {"fresnel", "angular_spectrum"}

    Returns
    -------
    FocalSeries
        Arrays on the input's array module (waves) and host (the rest).

    Raises
    ------
    ValueError
        An empty defocus list, a wave that is not 2D, or an unknown model.
    """
    xp = backend.xp_of(wave)
    defocus = np.atleast_1d(np.asarray(defocus_m, dtype=np.float64))
    if defocus.ndim != 1 or defocus.size == 0:
        raise ValueError("defocus_m must be a non-empty list of distances")
    if wave.ndim != 2:
        raise ValueError(f"wave must be 2D (H, W), got shape {wave.shape}")
    make = _PROPAGATORS.get(model)
    if make is None:
        raise ValueError(f"unknown propagator model {model!r}; use one of {tuple(_PROPAGATORS)}")
    # All planes in one batched inverse FFT of the same spectrum.
    wave_k = backend.fft2(xp.asarray(wave, dtype=np.complex64))
    hs = xp.stack([make(wave.shape, tuple(pixel_size_m), wavelength_m, float(d), xp=xp) for d in defocus])
    waves = backend.ifft2(wave_k[None] * hs).astype(np.complex64)
    score = sharpness(waves, region, metric)
    return FocalSeries(waves, defocus, score, float(defocus[int(np.argmax(score))]))
