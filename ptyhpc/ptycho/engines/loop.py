"""The one iteration / mini-batch loop and :func:`reconstruct`, the public entry of the 2-D engines.

The loop owns what every mini-batch engine shares: the random batch order, the probe constraints
after each probe update, the object amplitude bounds, the incoherent background update, probe-mode
orthogonalisation, position refinement, the error curve and the callback. An engine contributes one
batch step (:class:`~ptyhpc.ptycho.engines.registry.EngineSpec`); the projection engines ER and DM,
which keep one exit wave per position, run their own loop (:mod:`ptyhpc.ptycho.projection`).
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

import numpy as np

from ... import backend
from .. import operators as ops
from ..propagators import FarField
from .constraints import apply_probe_constraints, clip_amplitude, update_background
from .context import BatchContext
from .data import PtychoResult, detector_layout, prepare_amplitudes
from .kernels import illumination
from .modes import init_probe_modes, orthogonalize_modes
from .positions import affine_info, refine_positions
from .registry import ENGINES, check_supported

__all__ = ["reconstruct"]


def reconstruct(frames, positions_m, probe, pixel_size_m, *, engine="rpie", n_iter=60, batch_size=32,
                alpha=0.5, beta_object=0.1, beta_probe=0.1, probe_update_start=2, noise_model="poisson",
                mask=None, probe_fourier_mask=None, origin_m=None, object_shape=None, fft_shape=None,
                propagator=None, n_probe_modes=1, position_correction_start=None, position_step=1.0,
                max_position_shift_px=0.5, position_model="free", object_init=None, momentum=(0.9, 0.5),
                dm_beta=1.0, seed=0,
                subpixel="fourier", probe_support=None, object_amplitude_bounds=None, background=None,
                xp: ModuleType = np,
                callback: Callable[[int, float], None] | None = None,
                stop: Callable[[np.ndarray], bool] | None = None) -> PtychoResult:
    """Reconstruct object and probe from one ptychographic scan.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x)
        Diffraction patterns (counts), centred (zero frequency at det//2).
    positions_m : ndarray, (n, 2) float
        Probe centres (y, x) in the scan frame, m.
    probe : ndarray, (Ny, Nx) or (m, Ny, Nx) complex
        Initial real-space probe on the FFT grid (``fft_shape``), centred at N//2,
        with pixel ``pixel_size_m``; Σ|P|² sets the intensity scale.
    pixel_size_m : (float, float)
        Object pixel = 1 / (N · Δk) for an FFT grid of N pixels of Δk, m.
    engine : str
        A name of :data:`ENGINES`: ``"rpie"``, ``"epie"`` (rPIE with α = 1),
        ``"mpie"`` (rPIE with momentum), ``"lsqml"`` (least-squares maximum
        likelihood), ``"er"`` (error reduction), ``"dm"`` (difference map).
        What each supports: :func:`capabilities`; sources and behaviour:
        docs/engines.md.
    n_iter : int
        Passes over all positions.
    batch_size : int
        Positions per mini-batch (random order each pass, fixed by ``seed``).
    alpha : float
        rPIE regularisation α ∈ (0, 1] (PIE family).
    beta_object, beta_probe : float
        PIE step sizes (0.1: docs/engines.md, "defaults").
    probe_update_start : int
        First iteration (0-based) that updates the probe.
    noise_model : {"poisson", "amplitude"}
        Data term: the Poisson likelihood gradient Δψ = F⁻¹[(I/|Ψ|² − 1)Ψ]
        (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012), eq. 19)
        or the modulus projection Δψ = F⁻¹[√I Ψ/|Ψ|] − ψ (Gaussian noise on
        amplitudes). ER and DM always use the modulus projection.
    mask : ndarray of bool, (det_y, det_x), optional
        Measured detector pixels; unmeasured ones are left free (same paper, sec. 3).
    probe_fourier_mask : ndarray, (Ny, Nx), FFT order, optional
        Multiplies the probe's spectrum after each probe update (e.g. the
        condenser aperture); ER and DM default to the initial probe's support.
    origin_m, object_shape : optional
        Force the object grid (see :meth:`ScanGeometry.from_positions`).
    fft_shape : (int, int), optional
        Defaults to ``probe.shape``.
    propagator : FarField or NearField, optional
        Sample-to-detector propagation, built for the same ``xp``; default far field.
    n_probe_modes : int
        Incoherent probe modes (Thibault & Menzel, Nature 494, 68 (2013)), one
        modulus factor for all, orthogonalised after each pass.
    position_correction_start : int, optional
        First iteration that refines the positions; None: off. Per position
        the shift δ = Re Σ conj(P ∂O)Δψ / Σ|P ∂O|² (Odstrčil et al., Opt.
        Express 26, 3108 (2018), section 4.3), mean removed, times
        ``position_step``, clipped to ``max_position_shift_px`` per pass.
        Refined positions: ``info["positions_m"]``.
    position_step, max_position_shift_px : float
    position_model : {"free", "affine"}
        ``"affine"``: the positions are replaced after each refinement by the
        least-squares affine map of the starting ones (PtychoShelves' global
        model); ``info["position_affine"]`` holds A (2×2) and t (px).
    object_init : ndarray, (H, W) complex, optional
        Starting object on the object grid (default ones): chains and warm starts.
    momentum : (float, float)
        ``"mpie"``: momentum η for object and probe (Maiden, Johnson & Li,
        Optica 4, 736 (2017), Algorithm 1, period one pass).
    dm_beta : float
        ``"dm"``: β of the difference map (1: the classic form).
    seed : int
        Seed of the batch order.
    subpixel : {"fourier", "bilinear", "none"}
        Sub-pixel positions: a Fourier-ramp shift of the probe (exact for a
        band-limited probe), bilinear interpolation of the object patch (as
        tike; needs one more pixel of object grid), or rounded positions.
        Cost and accuracy: docs/engines.md, "Sub-pixel positions".
    probe_support : ndarray, (Ny, Nx), bool or float, optional
        Real-space probe support, applied at the start and after each probe
        update (Fienup, Appl. Opt. 21, 2758 (1982)).
    object_amplitude_bounds : (float, float), optional
        |O| clipped into [min, max] after each object update, phase kept.
    background : float or ndarray (det_y, det_x), optional
        Initial incoherent background b(q), counts (> 0 on measured pixels),
        refined multiplicatively every pass (h = Σ|Ψ|² + b; Poisson: the EM
        update b ← b⟨I/h⟩; amplitude: b ← b⟨√I/√h⟩²). Refined b: ``info["background"]``.
    xp : module
        numpy or cupy; the result comes back as NumPy.
    callback : callable(iteration, error), optional
        Called after every iteration.
    stop : callable(errors) -> bool, optional
        Called after every iteration of the mini-batch engines (PIE family, LSQ-ML) with the data
        errors so far; True ends the run (e.g. :func:`ptyhpc.ptycho.defaults.stalled`). The error
        curve keeps ``n_iter`` values (the last one repeated); ``info["n_iter_run"]`` is the number
        of iterations run.

    Returns
    -------
    PtychoResult

    Raises
    ------
    ValueError
        Unknown engine or an option it does not support (:func:`check_supported`),
        mismatched shapes, bad values, or positions outside a forced grid.
    """
    check_supported(engine, n_probe_modes=n_probe_modes, position_correction_start=position_correction_start,
                    subpixel=subpixel, background=background, mask=mask, propagator=propagator,
                    probe_support=probe_support, object_amplitude_bounds=object_amplitude_bounds,
                    noise_model=noise_model)
    spec = ENGINES[engine]
    alpha = (spec.fixed or {}).get("alpha", alpha)
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if position_model not in ("free", "affine"):
        raise ValueError(f"unknown position_model {position_model!r}; use 'free' or 'affine'")
    prop = FarField() if propagator is None else propagator
    setup = _set_up(frames, positions_m, probe, pixel_size_m, fft_shape=fft_shape, mask=mask, prop=prop,
                    origin_m=origin_m, object_shape=object_shape, subpixel=subpixel, object_init=object_init,
                    n_probe_modes=n_probe_modes, background=background, probe_support=probe_support,
                    object_amplitude_bounds=object_amplitude_bounds, probe_fourier_mask=probe_fourier_mask, xp=xp)
    geom, obj, prb = setup["geom"], setup["obj"], setup["prb"]
    errors = np.zeros(n_iter, dtype=np.float32)
    n_run = n_iter
    if spec.run is not None:
        obj, prb = spec.run(setup["amp"], setup["measured"], obj, prb, geom, prop, engine=engine, n_iter=n_iter,
                            batch_size=batch_size, probe_update_start=probe_update_start,
                            probe_mask_k=setup["probe_mask_k"], errors=errors, beta=dm_beta,
                            total_intensity=setup["total_intensity"], callback=callback, xp=xp)
    else:
        ctx = BatchContext(geom=geom, amp=setup["amp"], meas_w=setup["meas_w"], prop=prop, noise_model=noise_model,
                           floor=setup["floor"], subpixel=subpixel, bg=setup["bg"], ratio=setup["ratio"], xp=xp,
                           alpha=alpha, beta_object=beta_object, beta_probe=beta_probe, momentum=momentum)
        refine = None if position_correction_start is None else dict(
            start=position_correction_start, step=position_step, max_shift_px=max_position_shift_px,
            model=position_model, start_px=setup["start_px"])
        obj, prb, n_run = _iterate(spec, obj, prb, ctx, n_iter=n_iter, batch_size=batch_size,
                            probe_update_start=probe_update_start, probe_mask_k=setup["probe_mask_k"],
                            support=setup["support"], bounds=setup["bounds"], refine=refine, errors=errors,
                            total_intensity=setup["total_intensity"], seed=seed, callback=callback,
                            stop=stop)
    return _result(obj, prb, errors, geom, setup, prop, batch_size=batch_size, subpixel=subpixel, xp=xp,
                   info={"engine": engine, "noise_model": noise_model, "n_probe_modes": int(n_probe_modes),
                         "alpha": alpha, "batch_size": batch_size, "n_iter": n_iter, "n_iter_run": n_run,
                         "subpixel": subpixel,
                         "position_model": position_model}, frames_shape=np.shape(frames))


def _iterate(spec, obj, prb, ctx, *, n_iter, batch_size, probe_update_start, probe_mask_k, support, bounds, refine,
             errors, total_intensity, seed, callback, stop=None):
    """The mini-batch loop: batches in random order, constraints, background, modes, positions, errors.

    Returns ``(object, probe, iterations run)``.
    """
    geom = ctx.geom
    rng = np.random.default_rng(seed)
    n = geom.n_positions
    if spec.start is not None:
        spec.start(obj, prb, ctx)
    for it in range(n_iter):
        order = rng.permutation(n)
        err = 0.0
        update_probe = it >= probe_update_start
        correct = refine is not None and it >= refine["start"]
        shifts = np.zeros((n, 2)) if correct else None
        for start in range(0, n, batch_size):
            batch = np.sort(order[start:start + batch_size])
            obj, prb, e = spec.batch_step(obj, prb, batch, ctx, update_probe=update_probe, shifts=shifts)
            err += e
            if bounds is not None:
                obj = clip_amplitude(obj, bounds)
            if update_probe:
                prb = apply_probe_constraints(prb, probe_mask_k, support)
        if spec.end_of_pass is not None:
            obj, prb = spec.end_of_pass(obj, prb, ctx, update_probe=update_probe)
        if prb.ndim == 3:
            prb = orthogonalize_modes(prb)
        if ctx.ratio is not None:
            update_background(ctx.bg, ctx.ratio, n, ctx.noise_model)
        if correct:
            refine_positions(geom, shifts, refine["start_px"], step=refine["step"], max_shift_px=refine["max_shift_px"],
                             model=refine["model"], far_margin=1 if ctx.subpixel == "bilinear" else 0)
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))
        if stop is not None and stop(errors[:it + 1]):
            # The curve keeps its length (stores hold n_iter values); info says where the run stopped.
            errors[it + 1:] = errors[it]
            return obj, prb, it + 1
    return obj, prb, n_iter


def _set_up(frames, positions_m, probe, pixel_size_m, *, fft_shape, mask, prop, origin_m, object_shape, subpixel,
            object_init, n_probe_modes, background, probe_support, object_amplitude_bounds, probe_fourier_mask, xp):
    """Checked inputs on the array module: amplitudes, geometry, starting object and probe, constraints.

    Returns a dict (keys as used by :func:`reconstruct`). Raises ValueError on mismatched shapes or values.
    """
    frames = np.asarray(frames)
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if frames.ndim != 3 or positions_m.shape != (len(frames), 2):
        raise ValueError(f"frames (n, dy, dx) and positions (n, 2) expected, got {frames.shape} and "
                         f"{positions_m.shape}")
    fft_shape = tuple(probe.shape[-2:]) if fft_shape is None else tuple(fft_shape)
    if tuple(probe.shape[-2:]) != fft_shape:
        raise ValueError(f"probe shape {probe.shape} differs from the FFT grid {fft_shape}")
    amp_h, measured_h = prepare_amplitudes(frames, fft_shape, mask, centred=prop.centred_data)
    geom = ops.ScanGeometry.from_positions(positions_m, fft_shape, pixel_size_m, origin_m=origin_m,
                                           object_shape=object_shape)
    if subpixel == "bilinear" and np.any(geom.corners.max(axis=0) + np.array(fft_shape) + 1
                                         > np.array(geom.object_shape)):
        raise ValueError("subpixel='bilinear' reads one pixel beyond each probe window; a window touches the "
                         "far edge of the forced object grid: enlarge object_shape/origin")
    out = {"geom": geom, "start_px": geom.positions_px.copy(), "fft_shape": fft_shape,
           "amp": xp.asarray(amp_h), "measured": xp.asarray(measured_h)}
    # Σ I per frame (float32 rows, summed in float64) without a float64 copy of the data set.
    rows = amp_h.reshape(len(amp_h), -1)
    out["total_intensity"] = total = float(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
    out["floor"] = 1e-3 * total / max(amp_h.size, 1)
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
    out["probe_mask_k"] = None if probe_fourier_mask is None else xp.asarray(probe_fourier_mask, dtype=np.float32)
    # The geometry is refined in place; keep the caller's copy of the positions intact.
    geom.corners, geom.frac = geom.corners.copy(), geom.frac.copy()
    # Detector mask as 0/1 weights; None when every pixel is measured (saves a pass per chunk).
    out["meas_w"] = None if bool(measured_h.all()) else out["measured"].astype(np.float32)
    out["bg"] = out["ratio"] = None
    if background is not None:
        # Laid out as the data (centred, padded, FFT order) through prepare_amplitudes, which takes √.
        b_frame = np.broadcast_to(np.asarray(background, dtype=np.float32), frames.shape[1:])[None]
        bg_h, _ = prepare_amplitudes(b_frame, fft_shape, mask, centred=prop.centred_data)
        out["bg"] = bg = xp.asarray(bg_h[0] ** 2 * measured_h)
        if not bool(xp.all(bg[out["measured"]] > 0)):
            raise ValueError("the initial background must be > 0 on measured pixels (its update is multiplicative)")
        out["ratio"] = xp.zeros(fft_shape, dtype=np.float32)
    out["support"] = None
    if probe_support is not None:
        out["support"] = support = xp.asarray(probe_support, dtype=np.float32)
        if support.shape != fft_shape:
            raise ValueError(f"probe_support shape {support.shape} differs from the FFT grid {fft_shape}")
        prb *= support
    out["bounds"] = None
    if object_amplitude_bounds is not None:
        lo, hi = (float(v) for v in object_amplitude_bounds)
        if not 0 <= lo <= hi:
            raise ValueError(f"object_amplitude_bounds must satisfy 0 <= min <= max, got {object_amplitude_bounds}")
        out["bounds"] = (lo, hi)
        obj = clip_amplitude(obj, out["bounds"])
    out["obj"], out["prb"] = obj, prb
    return out


def _result(obj, prb, errors, geom, setup, prop, *, batch_size, subpixel, xp, info, frames_shape):
    """The :class:`PtychoResult` on the host, with the illumination and the refined positions/background."""
    illum = illumination(prb, geom, batch_size, xp, subpixel=subpixel)
    bg = setup["bg"]
    info.update(positions_m=geom.positions_m, fft_shape=setup["fft_shape"],
                position_affine=(affine_info(setup["start_px"], geom.positions_px)
                                 if info["position_model"] == "affine" else None),
                background=None if bg is None else detector_layout(backend.to_host(bg), frames_shape[1:],
                                                                   prop.centred_data))
    return PtychoResult(object=backend.to_host(obj).astype(np.complex64),
                        probe=backend.to_host(prb).astype(np.complex64), error=errors,
                        illumination=backend.to_host(illum), pixel_size_m=geom.pixel_size_m, origin_m=geom.origin_m,
                        info=info)
