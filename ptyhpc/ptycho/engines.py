"""PIE-family engines (ePIE, rPIE), mini-batched, on any array module.

Sources
-------
- ePIE: Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009), eqs. (6)–(7).
- rPIE: Maiden, Johnson & Li, Optica 4, 736 (2017), eqs. (4)–(5): the
  denominator (1 − α)|P|² + α max|P|² interpolates between a
  least-squares step (α → 0) and ePIE (α = 1).

The updates of a mini-batch of positions are computed from the same
object and probe and summed before they are applied (the "compact" or
batched form used by tike and py4DSTEM): object numerator Σ conj(P_j)Δψ_j
and denominator Σ|P_j|² are scattered onto the object grid, which turns
the rPIE denominator into (1 − α)D(r) + α max D. All work on a batch is
array code; Python loops only over iterations and batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

import numpy as np
import scipy.fft

from .. import backend
from . import operators as ops
from .projection import _projection_engine
from .propagators import FarField

__all__ = ["PtychoResult", "reconstruct", "prepare_amplitudes", "probe_from_mean_pattern", "init_probe_modes",
           "orthogonalize_modes", "ENGINES"]

ENGINES = ("rpie", "epie", "mpie", "lsqml", "er")

#: Positions per chunk of array work inside a mini-batch of the PIE engines (cache blocking only;
#: the update still uses the whole batch).
_CHUNK = 8


@dataclass
class PtychoResult:
    """Output of :func:`reconstruct` (host NumPy arrays).

    Attributes
    ----------
    object : (H, W) complex64
        Transmission function; phase in rad (positive for a positive potential).
    probe : (ny, nx) complex64, or (m, ny, nx) for m > 1 probe modes
        Real-space probe at the object plane, on the padded FFT grid.
    error : (n_iter,) float32
        Normalised amplitude error Σ(|Ψ| − √I)² / Σ I, per iteration, over measured pixels.
    illumination : (H, W) float32
        Σ_j |P_j|² on the object grid (where the object is constrained).
    pixel_size_m, origin_m : (float, float)
        Object pixel size and scan-frame (y, x) of pixel [0, 0], m.
    """

    object: np.ndarray
    probe: np.ndarray
    error: np.ndarray
    illumination: np.ndarray
    pixel_size_m: tuple
    origin_m: tuple
    info: dict = field(default_factory=dict)


def prepare_amplitudes(frames, fft_shape=None, mask=None, centred=True):
    """Centred diffraction patterns → measured amplitudes in FFT order, padded.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x)
        Intensities (counts), zero frequency at (det_y//2, det_x//2).
    fft_shape : (int, int), optional
        FFT grid, ≥ detector shape; extra pixels are unmeasured (left free).
        Defaults to the next fast FFT length of each axis.
    mask : ndarray of bool, (det_y, det_x), optional
        True where a pixel is measured (False for gaps, hot pixels).
    centred : bool
        Far-field patterns (zero frequency at the centre, shifted to FFT
        order here); False for near-field images, which are used as they are
        (``fft_shape`` must then equal the detector shape).

    Returns
    -------
    amplitudes : (n, *fft_shape) float32, √max(I, 0), FFT order
    measured : (*fft_shape) bool, FFT order
    """
    frames = np.asarray(frames)
    n, dy, dx = frames.shape
    if fft_shape is None:
        fft_shape = (scipy.fft.next_fast_len(dy), scipy.fft.next_fast_len(dx)) if centred else (dy, dx)
    Ny, Nx = fft_shape
    if not centred:
        if tuple(fft_shape) != (dy, dx):
            raise ValueError(f"near-field data are not padded: fft_shape {fft_shape} must equal {(dy, dx)}")
        amp = np.sqrt(np.maximum(frames, 0, dtype=np.float32))
        measured = np.ones((dy, dx), bool) if mask is None else np.asarray(mask, bool).copy()
        return amp, measured
    if Ny < dy or Nx < dx:
        raise ValueError(f"fft_shape {fft_shape} is smaller than the detector {(dy, dx)}")
    # Pad so that the zero frequency stays at the centre pixel N//2 of the padded grid.
    py0, px0 = Ny // 2 - dy // 2, Nx // 2 - dx // 2
    amp = np.zeros((n, Ny, Nx), dtype=np.float32)
    amp[:, py0:py0 + dy, px0:px0 + dx] = np.sqrt(np.maximum(frames, 0, dtype=np.float32))
    measured = np.zeros((Ny, Nx), dtype=bool)
    measured[py0:py0 + dy, px0:px0 + dx] = True if mask is None else np.asarray(mask, bool)
    amp = np.fft.ifftshift(amp, axes=(-2, -1))
    measured = np.fft.ifftshift(measured)
    return amp, measured


def probe_from_mean_pattern(frames, propagator=None, fft_shape=None):
    """Initial probe when nothing else is known: the mean measured amplitude, flat phase, propagated back.

    Far field: P = fftshift(F⁻¹[√⟨I⟩]) (a focused probe with the measured
    spectrum's extent); near field: P = H⁻¹[√⟨I⟩] (the mean image back-propagated
    to the sample). Σ|P|² equals the mean counts per frame.

    Parameters
    ----------
    frames : (n, det_y, det_x)
    n_probe_modes : int
        Incoherent probe modes (mixed-state ptychography, Thibault & Menzel,
        Nature 494, 68 (2013)): the model intensity is Σ_m |F[P_m O]|², each
        mode gets the same modulus factor, modes are orthogonalised after each
        iteration. PIE family only. ``probe`` may be (n_probe_modes, Ny, Nx).
    propagator : FarField or NearField, optional
    fft_shape : (int, int), optional
        Far field only: padded grid (see :func:`prepare_amplitudes`).

    Returns
    -------
    (Ny, Nx) complex64, centred at (Ny//2, Nx//2) for the far field.
    """
    prop = FarField() if propagator is None else propagator
    mean = np.mean(np.asarray(frames, dtype=np.float32), axis=0, keepdims=True)
    amp, _ = prepare_amplitudes(mean, fft_shape, centred=prop.centred_data)
    probe = prop.adjoint(amp[0].astype(np.complex64))
    if prop.centred_data:
        probe = np.fft.fftshift(probe)
    return probe.astype(np.complex64)


def init_probe_modes(probe, n_modes, power_fraction=0.05):
    """Probe modes for a mixed-state (partially coherent) reconstruction.

    Mode 0 is ``probe``; mode k ≥ 1 is ``probe`` times a phase ramp of ⌈k/2⌉
    cycles across the window (along x for odd k, y for even k), with
    ``power_fraction`` of mode 0's power, then all are orthogonalised.

    Parameters
    ----------
    probe : (ny, nx) or (m, ny, nx) complex
        An existing stack is returned (orthogonalised) when it has ``n_modes`` modes.
    n_modes : int
        ≥ 1.

    Returns
    -------
    (n_modes, ny, nx) complex64
    """
    xp = backend.xp_of(probe)
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1, got {n_modes}")
    if probe.ndim == 3:
        if probe.shape[0] != n_modes:
            raise ValueError(f"probe has {probe.shape[0]} modes, n_modes is {n_modes}")
        return orthogonalize_modes(probe.astype(np.complex64))
    ny, nx = probe.shape
    modes = [probe]
    y = xp.arange(ny)[:, None] / ny
    x = xp.arange(nx)[None, :] / nx
    for k in range(1, n_modes):
        cycles = (k + 1) // 2
        ramp = xp.exp(2j * np.pi * cycles * (x if k % 2 else y))
        modes.append(probe * ramp * np.sqrt(power_fraction))
    return orthogonalize_modes(xp.stack(modes).astype(np.complex64))


def orthogonalize_modes(modes):
    """Orthogonal probe modes spanning the same incoherent sum, strongest first.

    The SVD P = U S Vᴴ of the (m, ny·nx) mode matrix gives modes S_k V_kᴴ,
    which leave Σ_k |P_k|² (the illumination) unchanged (Thibault & Menzel,
    Nature 494, 68 (2013)).
    """
    xp = backend.xp_of(modes)
    m = modes.shape[0]
    _, s, vh = xp.linalg.svd(modes.reshape(m, -1), full_matrices=False)
    return (s[:, None] * vh).reshape(modes.shape).astype(modes.dtype)


def _poisson_step(psi_k, d_k, intensity, measured, n_newton=4):
    """Per-position step α ≥ 0 minimising the Poisson NLL Σ |Ψ+αd|² − I ln|Ψ+αd|² (Newton).

    Odstrčil et al. (2018), Appendix (optimal exit-wave step for Poisson
    noise); a few Newton iterations from α = 1 on the one-dimensional problem,
    clipped to [0, 2]. Arrays (b, ny, nx); returns (b,) float32.
    """
    xp = backend.xp_of(psi_k)
    b = psi_k.shape[0]
    alpha = xp.ones((b, 1, 1), dtype=np.float32)
    dd = xp.abs(d_k) ** 2
    for _ in range(n_newton):
        w = psi_k + alpha * d_k
        w2 = xp.maximum(xp.abs(w) ** 2, 1e-12)
        g = xp.real(xp.conj(w) * d_k)
        ratio = xp.where(measured, intensity / w2, 0.0)
        grad = xp.sum(2 * g * (1 - ratio), axis=(1, 2))
        hess = xp.sum(2 * dd * (1 - ratio) + 4 * g**2 * ratio / w2, axis=(1, 2))
        alpha = xp.clip(alpha - (grad / xp.maximum(hess, 1e-30))[:, None, None], 0.0, 2.0).astype(np.float32)
    return alpha


def _lsqml_batch(obj, prb, probes, patches, psi, psi_k, mod, a, measured, flat, ramps, geom, prop, noise_model,
                 floor, update_probe, xp):
    """One LSQ-ML update of object and probe from a batch (single probe mode)."""
    if noise_model == "poisson":
        intensity = a**2
        d_k = xp.where(measured, psi_k * (intensity / xp.maximum(mod**2, floor) - 1), 0)
        chi = prop.adjoint(d_k * _poisson_step(psi_k, d_k, intensity, measured))
    else:
        chi = prop.adjoint(psi_k * _modulus_factor(mod, a, measured, "amplitude", floor)) - psi
    # Least-squares directions (eqs. 20–21), regularised by 1 % of the peak denominator.
    num = ops.patches_adjoint(xp.conj(probes) * chi, flat, geom.object_shape)
    den = ops.patches_adjoint((xp.abs(probes) ** 2).astype(np.float32), flat, geom.object_shape)
    d_obj = num / (den + 1e-2 * float(den.max()))
    A = ops.extract_patches(d_obj, flat) * probes
    if update_probe:
        p_den = xp.sum(xp.abs(patches) ** 2, axis=0)
        d_prb = ops.unshift_sum(xp.conj(patches) * chi, ramps) / (p_den + 1e-2 * float(p_den.max()))
        B = ops.shifted_probes(backend.fft2(d_prb), ramps) * patches
    else:
        B = xp.zeros_like(A)
    # Optimal steps per position (eq. 22): min ‖χ − β_O A − β_P B‖², then their batch mean.
    m11 = xp.sum(xp.abs(A) ** 2, axis=(1, 2))
    m22 = xp.sum(xp.abs(B) ** 2, axis=(1, 2))
    m12 = xp.real(xp.sum(xp.conj(A) * B, axis=(1, 2)))
    r1 = xp.real(xp.sum(xp.conj(A) * chi, axis=(1, 2)))
    r2 = xp.real(xp.sum(xp.conj(B) * chi, axis=(1, 2)))
    lam = 1e-6 * (m11 + m22) + 1e-30
    det = (m11 + lam) * (m22 + lam) - m12**2
    beta_o = ((m22 + lam) * r1 - m12 * r2) / det
    beta_p = ((m11 + lam) * r2 - m12 * r1) / det
    beta_o = float(xp.clip(xp.mean(beta_o), 0.0, 1.0))
    obj = obj + beta_o * d_obj.astype(np.complex64)
    if update_probe:
        prb = prb + float(xp.clip(xp.mean(beta_p), 0.0, 1.0)) * d_prb.astype(np.complex64)
    return obj, prb


def _position_gradient(patches, probes, dpsi, xp):
    """Least-squares sub-pixel shift (b, 2) in pixels that explains Δψ by moving the object patch.

    ∂ψ/∂r = P·∂O/∂r (central differences); δ_a = Re Σ conj(P ∂_a O) Δψ / Σ |P ∂_a O|².
    Positions are probe centres on the object, so moving the probe by +δ samples O(r + δ).
    """
    gy, gx = xp.gradient(patches, axis=(1, 2))
    out = np.zeros((patches.shape[0], 2))
    for a, g in enumerate((gy, gx)):
        if probes.ndim == 4:
            d = probes * g[:, None]
            num = xp.real(xp.sum(xp.conj(d) * dpsi, axis=(1, 2, 3)))
            den = xp.sum(xp.abs(d) ** 2, axis=(1, 2, 3))
        else:
            d = probes * g
            num = xp.real(xp.sum(xp.conj(d) * dpsi, axis=(1, 2)))
            den = xp.sum(xp.abs(d) ** 2, axis=(1, 2))
        out[:, a] = backend.to_host(num / xp.maximum(den, 1e-30))
    return out


def _modulus_factor(mod, a, measured, noise_model, floor):
    """Factor that maps the model far field Ψ to its data-consistent update (measured pixels only).

    amplitude: √I/|Ψ| (the modulus projection); poisson: I/|Ψ|², so that
    F⁻¹[(factor − 1)Ψ] is the Poisson likelihood gradient. Unmeasured pixels keep Ψ.
    """
    xp = backend.xp_of(mod)
    if noise_model == "poisson":
        # The floor keeps I/|Ψ|² finite where the model is dark but a count landed.
        factor = xp.where(measured, a**2 / xp.maximum(mod**2, floor), 1.0)
    else:
        factor = xp.where(measured, a / xp.maximum(mod, 1e-12), 1.0)
    return factor.astype(np.float32)


def _illumination(prb, geom, batch_size, xp):
    """Σ_j |P_j|² on the object grid, (H, W) float32."""
    illum = xp.zeros(geom.object_shape, dtype=np.float32)
    probe_k = backend.fft2(prb)
    for start in range(0, geom.n_positions, batch_size):
        idx = np.arange(start, min(start + batch_size, geom.n_positions))
        probes = ops.shifted_probes(probe_k, ops.shift_ramps(geom.frac[idx], geom.probe_shape, xp))
        intensity = xp.abs(probes) ** 2
        if prb.ndim == 3:
            intensity = intensity.sum(axis=1)
        ops.patches_adjoint(intensity.astype(np.float32), geom.flat_index(idx, xp), geom.object_shape, out=illum)
    return illum


def reconstruct(frames, positions_m, probe, pixel_size_m, *, engine="rpie", n_iter=60, batch_size=32,
                alpha=0.5, beta_object=0.1, beta_probe=0.1, probe_update_start=2, noise_model="poisson",
                mask=None, probe_fourier_mask=None, origin_m=None, object_shape=None, fft_shape=None,
                propagator=None, n_probe_modes=1, position_correction_start=None, position_step=1.0,
                max_position_shift_px=0.5, object_init=None, momentum=(0.9, 0.5), seed=0,
                xp: ModuleType = np,
                callback: Callable[[int, float], None] | None = None) -> PtychoResult:
    """Reconstruct object and probe from one ptychographic scan.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x)
        Diffraction patterns (counts), centred (zero frequency at det//2).
    positions_m : ndarray, (n, 2) float
        Probe centres (y, x) in the scan frame, m.
    probe : ndarray, (Ny, Nx) complex
        Initial real-space probe on the FFT grid (``fft_shape``), centred at N//2,
        with pixel ``pixel_size_m``; Σ|P|² sets the intensity scale.
    pixel_size_m : (float, float)
        Object pixel = 1 / (N · Δk) for an FFT grid of N pixels of Δk, m.
    engine : {"rpie", "epie", "lsqml", "er"}
        ``"epie"`` is rPIE with α = 1. ``"lsqml"``: least-squares maximum
        likelihood (Odstrčil et al., Opt. Express 26, 3108 (2018)): per
        position, the exit-wave update is the likelihood's descent direction
        with an optimal step (Poisson: Newton line search, eq. 24 and Appendix;
        Gaussian ``noise_model="amplitude"``: the modulus projection); the
        object and probe directions are the least-squares averages of the
        batch's updates (eqs. 20–21) and their step sizes solve the 2×2 least
        squares of eq. 22 per position, averaged over the batch (the paper
        uses them per position; the average is the simplest stable form). ``"er"``: alternating projections /
        error reduction (Fienup 1982; the overlap projection of Thibault et al.,
        Ultramicroscopy 109, 338 (2009), eqs. 8–9, then the modulus
        projection), all positions together with one exit wave per position;
        ``alpha``, ``beta_*`` and ``noise_model`` apply to the PIE family only.
    n_iter : int
        Passes over all positions.
    batch_size : int
        Positions per mini-batch (random order each pass, fixed by ``seed``).
    alpha : float
        rPIE regularisation α ∈ (0, 1].
    beta_object, beta_probe : float
        Step sizes. Small steps average the Poisson noise of low-dose data over
        many mini-batches; 0.1 was the best of 0.05–1 on the 60 kV CNT series
        at 1500 e/Å² (see the project README).
    probe_update_start : int
        First iteration (0-based) that updates the probe.
    noise_model : {"poisson", "amplitude"}
        ``"amplitude"``: the classic modulus projection, Δψ = F⁻¹[√I Ψ/|Ψ|] − ψ
        (Gaussian noise on amplitudes). ``"poisson"``: the gradient of the
        Poisson negative log-likelihood, Δψ = F⁻¹[(I/|Ψ|² − 1) Ψ]
        (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012), eq. 19;
        Odstrčil et al., Opt. Express 26, 3108 (2018)), better at low counts.
    mask : ndarray of bool, (det_y, det_x), optional
        Measured detector pixels.
    probe_fourier_mask : ndarray, (Ny, Nx), FFT order, optional
        Multiplies the probe's spectrum after each probe update (e.g. the
        condenser aperture, slightly enlarged): keeps the probe band-limited.
    origin_m, object_shape : optional
        Force the object grid (see :meth:`ScanGeometry.from_positions`).
    fft_shape : (int, int), optional
        Defaults to ``probe.shape``.
    n_probe_modes : int
        Incoherent probe modes (mixed-state ptychography, Thibault & Menzel,
        Nature 494, 68 (2013)): the model intensity is Σ_m |F[P_m O]|², each
        mode gets the same modulus factor, modes are orthogonalised after each
        iteration. PIE family only. ``probe`` may be (n_probe_modes, Ny, Nx).
    position_correction_start : int, optional
        First iteration that refines the scan positions (PIE family); None: off.
        Per position, the shift δ that best explains the exit-wave update
        Δψ ≈ P·(∇O·δ) in least squares, δ = Re Σ conj(P ∂O)Δψ / Σ|P ∂O|²
        (the gradient position correction of Odstrčil et al., Opt. Express 26,
        3108 (2018), section 4.3; Zhang et al., Opt. Express 21, 13592 (2013)),
        times ``position_step`` and clipped to ``max_position_shift_px`` per
        iteration; the mean shift is removed (a global translation is the
        object–probe ambiguity). Refined positions are in ``info["positions_m"]``.
    position_step, max_position_shift_px : float
    momentum : (float, float)
        ``"mpie"`` only: momentum η for object and probe (Maiden, Johnson & Li,
        Optica 4, 736 (2017), Algorithm 1, with the period T = one pass over
        all positions): after each pass ν ← ην + (X − X_prev), X ← X + ην.
    object_init : ndarray, (H, W) complex, optional
        Starting object on the grid of ``origin_m``/``object_shape`` (default
        ones): chains engines (e.g. ``er`` then ``lsqml`` from its
        ``PtychoResult.object`` and ``probe``) and warm starts.
    propagator : FarField or NearField, optional
        Sample-to-detector propagation (:mod:`ptyhpc.ptycho.propagators`),
        built for the same ``xp``; default far field.
    xp : module
        numpy or cupy; the result comes back as NumPy.
    callback : callable(iteration, error), optional
        Called after every iteration (progress reporting).

    Returns
    -------
    PtychoResult

    Raises
    ------
    ValueError
        Unknown engine, mismatched shapes, or positions outside a forced grid.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if noise_model not in ("poisson", "amplitude"):
        raise ValueError(f"unknown noise_model {noise_model!r}; use 'poisson' or 'amplitude'")
    if engine == "epie":
        alpha = 1.0
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    frames = np.asarray(frames)
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if frames.ndim != 3 or positions_m.shape != (len(frames), 2):
        raise ValueError(f"frames (n, dy, dx) and positions (n, 2) expected, got {frames.shape} and "
                         f"{positions_m.shape}")
    if n_probe_modes > 1 and engine in ("er", "lsqml"):
        raise ValueError(f"probe modes are implemented for rpie and epie, not {engine!r}")
    fft_shape = tuple(probe.shape[-2:]) if fft_shape is None else tuple(fft_shape)
    if tuple(probe.shape[-2:]) != fft_shape:
        raise ValueError(f"probe shape {probe.shape} differs from the FFT grid {fft_shape}")

    prop = FarField() if propagator is None else propagator
    amp_h, measured_h = prepare_amplitudes(frames, fft_shape, mask, centred=prop.centred_data)
    geom = ops.ScanGeometry.from_positions(positions_m, fft_shape, pixel_size_m, origin_m=origin_m,
                                           object_shape=object_shape)
    amp = xp.asarray(amp_h)
    measured = xp.asarray(measured_h)
    total_intensity = float(np.sum(amp_h.astype(np.float64) ** 2))
    floor = 1e-3 * total_intensity / max(amp_h.size, 1)
    if object_init is None:
        obj = xp.ones(geom.object_shape, dtype=np.complex64)
    else:
        if tuple(object_init.shape) != geom.object_shape:
            raise ValueError(f"object_init shape {tuple(object_init.shape)} differs from the object grid "
                             f"{geom.object_shape}")
        obj = xp.asarray(object_init, dtype=np.complex64).copy()
    # A copy: the caller's probe must not change under it (asarray would alias a complex64 input).
    prb = xp.array(probe, dtype=np.complex64, copy=True)
    if n_probe_modes > 1 or prb.ndim == 3:
        prb = init_probe_modes(prb, n_probe_modes)
    probe_mask_k = None if probe_fourier_mask is None else xp.asarray(probe_fourier_mask, dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = geom.n_positions
    errors = np.zeros(n_iter, dtype=np.float32)
    if engine == "er":
        obj, prb = _projection_engine(amp, measured, obj, prb, geom, prop, n_iter=n_iter,
                                      batch_size=batch_size, probe_update_start=probe_update_start,
                                      probe_mask_k=probe_mask_k, errors=errors,
                                      total_intensity=total_intensity, callback=callback, xp=xp)
    if position_correction_start is not None and engine == "er":
        raise ValueError("position correction is implemented for the PIE family (rpie, epie), not 'er'")
    # The geometry is refined in place; keep the caller's copy of the positions intact.
    geom.corners, geom.frac = geom.corners.copy(), geom.frac.copy()
    if engine == "mpie":
        vel_o, vel_p = xp.zeros_like(obj), xp.zeros_like(prb)
        prev_o, prev_p = obj.copy(), prb.copy()
    for it in range(n_iter if engine in ("rpie", "epie", "mpie", "lsqml") else 0):  # per-batch engines
        order = rng.permutation(n)
        err = 0.0
        update_probe = it >= probe_update_start
        correct_positions = position_correction_start is not None and it >= position_correction_start
        shifts = np.zeros((n, 2)) if correct_positions else None
        for start in range(0, n, batch_size):
            batch = np.sort(order[start:start + batch_size])
            if engine == "lsqml":
                idx = batch
                flat = geom.flat_index(idx, xp)
                ramps = ops.shift_ramps(geom.frac[idx], fft_shape, xp)
                probes = ops.shifted_probes(backend.fft2(prb), ramps)
                patches = ops.extract_patches(obj, flat)
                psi = probes * patches
                psi_k = prop.forward(psi)
                mod = xp.abs(psi_k)
                a = amp[idx]
                err += float(xp.sum((mod - a) ** 2 * measured))
                obj, prb = _lsqml_batch(obj, prb, probes, patches, psi, psi_k, mod, a, measured, flat, ramps,
                                        geom, prop, noise_model, floor, update_probe, xp)
                if update_probe and probe_mask_k is not None:
                    prb = backend.ifft2(backend.fft2(prb) * probe_mask_k)
                continue
            # PIE family: the batch's updates are computed from one object and probe and applied
            # together; the work is done in chunks of _CHUNK positions so the temporaries stay in
            # cache (with 32 positions of 128² two workers on two cores slowed each other by 17 %).
            probe_k = backend.fft2(prb)
            num = xp.zeros(geom.object_shape, dtype=np.complex64)
            den = xp.zeros(geom.object_shape, dtype=np.float32)
            p_num = xp.zeros(prb.shape, dtype=np.complex64) if update_probe else None
            p_den = xp.zeros(fft_shape, dtype=np.float32) if update_probe else None
            for c0 in range(0, len(batch), _CHUNK):
                idx = batch[c0:c0 + _CHUNK]
                flat = geom.flat_index(idx, xp)
                ramps = ops.shift_ramps(geom.frac[idx], fft_shape, xp)
                probes = ops.shifted_probes(probe_k, ramps)
                patches = ops.extract_patches(obj, flat)
                if prb.ndim == 3:
                    # Mixed state: (b, m, ny, nx) waves, one modulus factor for the incoherent sum.
                    psi = probes * patches[:, None]
                    psi_k = prop.forward(psi)
                    mod = xp.sqrt(xp.sum(xp.abs(psi_k) ** 2, axis=1))
                else:
                    psi = probes * patches
                    psi_k = prop.forward(psi)
                    mod = xp.abs(psi_k)
                a = amp[idx]
                err += float(xp.sum((mod - a) ** 2 * measured))
                factor = _modulus_factor(mod, a, measured, noise_model, floor)
                dpsi = prop.adjoint(psi_k * (factor[:, None] if prb.ndim == 3 else factor)) - psi

                if correct_positions:
                    shifts[idx] = _position_gradient(patches, probes, dpsi, xp)
                obj_grad = xp.conj(probes) * dpsi
                probe_int = xp.abs(probes) ** 2
                if prb.ndim == 3:
                    obj_grad, probe_int = obj_grad.sum(axis=1), probe_int.sum(axis=1)
                ops.patches_adjoint(obj_grad, flat, geom.object_shape, out=num)
                ops.patches_adjoint(probe_int.astype(np.float32), flat, geom.object_shape, out=den)
                if update_probe:
                    conj_patches = xp.conj(patches)[:, None] if prb.ndim == 3 else xp.conj(patches)
                    p_num += ops.unshift_sum(conj_patches * dpsi, ramps)
                    p_den += xp.sum(xp.abs(patches) ** 2, axis=0)
            obj += beta_object * num / ((1 - alpha) * den + alpha * float(den.max()))
            if update_probe:
                # The batch's object intensities are unshifted: the sub-pixel shift is
                # ignored in the denominator, a preconditioner only.
                prb += beta_probe * p_num / ((1 - alpha) * p_den + alpha * float(p_den.max()))
                if probe_mask_k is not None:
                    prb = backend.ifft2(backend.fft2(prb) * probe_mask_k)
        if engine == "mpie":
            vel_o = momentum[0] * vel_o + (obj - prev_o)
            obj = obj + momentum[0] * vel_o
            prev_o = obj.copy()
            if update_probe:
                vel_p = momentum[1] * vel_p + (prb - prev_p)
                prb = prb + momentum[1] * vel_p
            prev_p = prb.copy()
        if prb.ndim == 3:
            prb = orthogonalize_modes(prb)
        if correct_positions:
            step = position_step * (shifts - shifts.mean(axis=0))
            geom.move(np.arange(n), np.clip(step, -max_position_shift_px, max_position_shift_px))
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))

    illum = _illumination(prb, geom, batch_size, xp)
    return PtychoResult(
        object=backend.to_host(obj).astype(np.complex64),
        probe=backend.to_host(prb).astype(np.complex64),
        error=errors,
        illumination=backend.to_host(illum),
        pixel_size_m=geom.pixel_size_m,
        origin_m=geom.origin_m,
        info={"engine": engine, "noise_model": noise_model, "n_probe_modes": int(n_probe_modes),
              "positions_m": geom.positions_m, "alpha": alpha, "batch_size": batch_size, "fft_shape": fft_shape,
              "n_iter": n_iter},
    )
