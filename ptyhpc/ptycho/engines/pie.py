"""The PIE family (ePIE, rPIE, mPIE) as one mini-batched step rule.

Sources
-------
- ePIE: Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009), eqs. (6)–(7).
- rPIE: Maiden, Johnson & Li, Optica 4, 736 (2017), eqs. (4)–(5): the
  denominator (1 − α)|P|² + α max|P|² interpolates between a
  least-squares step (α → 0) and ePIE (α = 1).
- mPIE: the same paper, Algorithm 1: rPIE plus momentum once per pass.

The updates of a mini-batch of positions are computed from the same object
and probe and summed before they are applied (the "compact" or batched form
used by tike and py4DSTEM): object numerator Σ conj(P_j)Δψ_j and denominator
Σ|P_j|² are scattered onto the object grid, which turns the rPIE denominator
into (1 − α)D(r) + α max D. Cost per position: docs/engines.md.
"""

from __future__ import annotations

import numpy as np

from ... import backend
from .. import operators as ops
from .forward import back_propagate, forward_chunk
from .fourier import fourier_residual
from .kernels import WHOLE_PIXEL_TOL, chunk_size, intensity, spread_for_scatter
from .positions import position_gradient

__all__ = ["pie_batch", "mpie_start", "mpie_end_of_pass"]


def pie_batch(obj, prb, batch, ctx, *, update_probe, shifts):
    """One mini-batch of rPIE/ePIE/mPIE: updates of all its positions from one object and probe, applied together.

    Parameters
    ----------
    obj : (H, W) complex64
    prb : (ny, nx) or (m, ny, nx) complex64
    batch : (b,) int
        The batch's positions, sorted.
    ctx : BatchContext
    update_probe : bool
    shifts : (n, 2) float or None
        Filled with each position's least-squares shift (pixels) when given.

    Returns
    -------
    obj, prb : updated (in place)
    err : float
        Σ (√h − √I)² over the batch's measured pixels, before the update.

    Notes
    -----
    The work runs in chunks of ``CHUNK_PIXELS`` detector pixels so the
    temporaries stay in cache; the batch's shifted probe updates are summed
    in Fourier space and transformed back once. Chunks whose positions all sit
    on whole pixels skip the sub-pixel shift.
    """
    xp, geom = ctx.xp, ctx.geom
    modes = prb.ndim == 3
    fft_shape = geom.probe_shape
    # The object numerator's real and imaginary parts are scattered as two real arrays with the same
    # flat indices, straight from the strided views of the complex gradient (complex scatter-adds
    # cost 38 µs per 128² patch, two real ones 2 × 12 µs).
    num_re = xp.zeros(geom.object_shape, dtype=np.float32)
    num_im = xp.zeros(geom.object_shape, dtype=np.float32)
    den = xp.zeros(geom.object_shape, dtype=np.float32)
    p_num = xp.zeros(prb.shape, dtype=np.complex64) if update_probe else None
    p_num_k = None
    p_den = xp.zeros(fft_shape, dtype=np.float32) if update_probe else None
    probe_k = backend.fft2(prb) if ctx.subpixel == "fourier" else None
    whole = None     # (conj, intensity) of the unshifted probe, built when a chunk needs it
    err = 0.0
    chunk = chunk_size(int(np.prod(prb.shape)) if modes else fft_shape[0] * fft_shape[1])
    off_grid = np.abs(geom.frac[batch] - np.rint(geom.frac[batch])).max(axis=1) > WHOLE_PIXEL_TOL
    for c0 in range(0, len(batch), chunk):
        ch = forward_chunk(obj, prb, probe_k, batch[c0:c0 + chunk], geom, ctx.prop, ctx.subpixel, xp,
                           off_grid=bool(off_grid[c0:c0 + chunk].any()))
        if ch.ramps is not None:
            conj_probes, probe_int = xp.conj(ch.probes), intensity(ch.probes, modes)
        else:
            if whole is None:
                whole = (xp.conj(prb[None]), intensity(prb[None], modes))
            conj_probes, probe_int = whole
        err += fourier_residual(ch.psi_k, ctx.amp[ch.idx], ctx.meas_w, ctx.noise_model, ctx.floor, ctx.bg, ctx.ratio)
        dpsi = back_propagate(ch.psi_k, ctx.prop)
        ch.psi_k = None
        patches = ch.patches
        if shifts is not None:
            shifts[ch.idx] = position_gradient(patches, ch.probes, dpsi, xp)
        grad = conj_probes * dpsi
        if modes:
            grad = grad.sum(axis=1)
        grad, scatter_win = spread_for_scatter(grad, ch.win)
        ops.patches_adjoint(grad.real, scatter_win, geom.object_shape, out=num_re)
        ops.patches_adjoint(grad.imag, scatter_win, geom.object_shape, out=num_im)
        del grad
        ops.patches_adjoint(probe_int, ch.win, geom.object_shape, out=den)
        if update_probe:
            p_den += intensity(patches).sum(axis=0)
            xp.conj(patches, out=patches)
            dpsi *= patches[:, None] if modes else patches      # conj(O_j)·Δψ_j, in place
            if ch.ramps is None:
                p_num += dpsi.sum(axis=0)
            else:
                spec = ops.unshift_sum_k(dpsi, ch.ramps)
                if p_num_k is None:
                    p_num_k = spec
                else:
                    p_num_k += spec
    _apply_object_step(obj, num_re, num_im, den, ctx)
    if update_probe:
        if p_num_k is not None:
            p_num += backend.ifft2(p_num_k, overwrite_x=True)
        _apply_probe_step(prb, p_num, p_den, ctx)
    return obj, prb, err


def _apply_object_step(obj, num_re, num_im, den, ctx):
    """O += β_O Σ conj(P)Δψ / ((1 − α)D + α max D), the rPIE step (Maiden et al. 2017, eq. 4), in place."""
    den_max = float(den.max())
    den *= np.float32(1 - ctx.alpha)
    den += np.float32(ctx.alpha * den_max)
    den = np.float32(ctx.beta_object) / den
    num_re *= den
    num_im *= den
    obj.real += num_re
    obj.imag += num_im


def _apply_probe_step(prb, p_num, p_den, ctx):
    """P += β_P Σ conj(O)Δψ / ((1 − α)D_P + α max D_P), in place (eq. 5).

    The batch's object intensities are unshifted: the sub-pixel shift is
    ignored in the denominator, a preconditioner only.
    """
    p_den_max = float(p_den.max())
    p_den *= np.float32(1 - ctx.alpha)
    p_den += np.float32(ctx.alpha * p_den_max)
    ctx.xp.divide(p_num, p_den, out=p_num)
    p_num *= np.float32(ctx.beta_probe)
    prb += p_num


def mpie_start(obj, prb, ctx):
    """mPIE: zero velocities and the pass's starting object and probe, in ``ctx.state``."""
    xp = ctx.xp
    ctx.state.update(vel_o=xp.zeros_like(obj), vel_p=xp.zeros_like(prb), prev_o=obj.copy(), prev_p=prb.copy())


def mpie_end_of_pass(obj, prb, ctx, *, update_probe):
    """mPIE momentum after a pass (period T = one pass): ν ← ην + (X − X_prev), X ← X + ην.

    Maiden, Johnson & Li, Optica 4, 736 (2017), Algorithm 1; η = ``ctx.momentum`` (object, probe).
    With several probe modes only the object takes momentum (see the comment below).
    """
    s, (eta_o, eta_p) = ctx.state, ctx.momentum
    s["vel_o"] = eta_o * s["vel_o"] + (obj - s["prev_o"])
    obj = obj + eta_o * s["vel_o"]
    s["prev_o"] = obj.copy()
    # Probe momentum for one coherent mode only: incoherent modes are defined up to a unitary mixing
    # (and a phase per mode) that the orthogonalisation after every pass re-chooses, so the change of
    # the mode array between passes is not a direction worth extrapolating (it diverges).
    if update_probe and prb.ndim == 2:
        s["vel_p"] = eta_p * s["vel_p"] + (prb - s["prev_p"])
        prb = prb + eta_p * s["vel_p"]
    s["prev_p"] = prb.copy()
    return obj, prb
