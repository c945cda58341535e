"""LSQ-ML: least-squares maximum-likelihood ptychography, mini-batched, with position refinement.

Source: Odstrčil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108 (2018):

1. Exit-wave update χ_j per position: Poisson, χ = F⁻¹[α_j (I/|Ψ|² − 1) Ψ]
   (the likelihood gradient with the Newton step α_j of
   :func:`~ptyhpc.ptycho.engines.poisson.poisson_step`); Gaussian
   (``"amplitude"``), χ = F⁻¹[√I Ψ/|Ψ|] − ψ.
2. Object and probe directions (eqs. 20–21):
   ΔO = Σ_b conj(P_j) χ_j / (Σ_scan |P_j|² + δ max), ΔP = Σ_b conj(O_j) χ_j / (Σ_b |O_j|² + δ max).
3. Steps (eq. 22): per position the 2×2 least squares min ‖χ_j − β_O A_j − β_P B_j‖²
   (A = P·ΔO, B = ΔP·O), averaged over the batch; β_O clipped to [0, ``max_step``], β_P to [0, 1].
4. Positions (section 4.3): per position the shift that explains χ_j by moving the object,
   δ = Re Σ conj(P ∂O) χ / Σ|P ∂O|² (:func:`~ptyhpc.ptycho.engines.positions.position_gradient`).

The object denominator is the illumination of the whole scan, δ = 0.1 and ``max_step`` = 2: why,
with the measurements, in docs/engines.md ("LSQ-ML").
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ... import backend
from .. import operators as ops
from ..propagators import FarField
from .forward import back_propagate, forward_chunk
from .fourier import fourier_residual
from .kernels import add_intensity_sum, add_object_gradient, chunk_size, probe_times_patches, re_inner
from .poisson import chunk_counted, counted_pixels
from .positions import position_gradient

__all__ = ["lsqml_batch", "scan_illumination"]


def lsqml_batch(obj, prb, batch, ctx, *, update_probe, shifts, delta=0.1, max_step=2.0):
    """One LSQ-ML update of object and probe from a mini-batch (single probe mode).

    Parameters
    ----------
    obj : (H, W) complex64
    prb : (Ny, Nx) complex64
    batch : (b,) int
        The batch's positions.
    ctx : BatchContext
    update_probe : bool
    shifts : (n, 2) float or None
        Filled with each position's least-squares shift (pixels) when given.
    delta : float
        LSQ damping, a fraction of the denominators' maxima (PtychoShelves: "0.1 is usually safe").
    max_step : float
        Bound of β_O.

    Returns
    -------
    obj, prb : complex64, updated
    err : float
        Σ (√h − √I)² over measured pixels (before the update).

    Notes
    -----
    Two phases over cache-sized chunks: the exit-wave updates and the
    directions' numerators, then the inner products of eq. 22 once the
    directions are known; χ_j and the patches of the batch are kept between.
    """
    xp = ctx.xp
    parts, num, p_num, p_den, err = _exit_wave_updates(obj, prb, batch, ctx, update_probe, shifts)
    den = scan_illumination(prb, ctx, len(batch))
    den = np.float32(1) / (den + np.float32(delta * float(den.max())))
    # ΔO = num·den in place, on the strided real and imaginary views (a complex × float32 multiply takes
    # NumPy's slow mixed-type loop).
    d_obj = num
    xp.multiply(d_obj.real, den, out=d_obj.real)
    xp.multiply(d_obj.imag, den, out=d_obj.imag)
    del num, den
    d_prb = d_prb_k = None
    if update_probe:
        d_prb = p_num / (p_den + np.float32(delta * float(p_den.max())))
        d_prb_k = backend.fft2(d_prb) if ctx.subpixel == "fourier" else None
    beta_o, beta_p = _steps(parts, d_obj, d_prb, d_prb_k, len(batch), xp)
    d_obj *= np.float32(min(max(beta_o, 0.0), max_step))
    obj += d_obj
    if update_probe:
        d_prb *= np.float32(xp.clip(beta_p, 0.0, 1.0))
        prb = prb + d_prb.astype(np.complex64)
    return obj, prb, err


def _exit_wave_updates(obj, prb, batch, ctx, update_probe, shifts):
    """Phase 1: χ_j per chunk, Σ conj(P_j)χ_j on the object grid and the probe's numerator and denominator."""
    xp, geom = ctx.xp, ctx.geom
    fft_shape = geom.probe_shape
    chunk = chunk_size(fft_shape[0] * fft_shape[1])
    probe_k = backend.fft2(prb) if ctx.subpixel == "fourier" else None
    num = xp.zeros(geom.object_shape, dtype=np.complex64)       # Σ_b conj(P_j) χ_j on the object grid
    p_num = xp.zeros(fft_shape, dtype=np.complex64) if update_probe else None
    p_num_k = None
    p_den = xp.zeros(fft_shape, dtype=np.float32) if update_probe else None
    err = 0.0
    parts = []          # per chunk: (window, ramps, probes, patches, χ)
    counted = _counted(ctx)
    for c0 in range(0, len(batch), chunk):
        ch = forward_chunk(obj, prb, probe_k, batch[c0:c0 + chunk], geom, ctx.prop, ctx.subpixel, xp)
        sub_counted = None if counted is None else chunk_counted(counted, ch.idx, ch.psi_k[0].size)
        err += fourier_residual(ch.psi_k, ctx.amp[ch.idx], ctx.meas_w, ctx.noise_model, ctx.floor, ctx.bg,
                                ctx.ratio, line_search=True, counted=sub_counted)
        chi = back_propagate(ch.psi_k, ctx.prop)
        ch.psi_k = None
        patches = ch.patches
        if shifts is not None:
            shifts[ch.idx] = position_gradient(patches, ch.probes, chi, xp)
        add_object_gradient(num, chi, ch.probes, ch.win, xp)
        if update_probe:
            # The probe is lit by every position of the batch: its own denominator is the right scale.
            add_intensity_sum(p_den, patches, xp)
            if ch.ramps is None:
                # Σ_j conj(O_j) χ_j: conj in place, multiply, sum (a complex einsum is 3× slower); the
                # patches are conjugated back for B.
                xp.conj(patches, out=patches)
                p_num += (patches * chi).sum(axis=0)
                xp.conj(patches, out=patches)
            else:
                # Summed in Fourier space over the chunks and transformed back once (as the PIE step).
                spec = ops.unshift_sum_k(xp.conj(patches) * chi, ch.ramps)
                p_num_k = spec if p_num_k is None else p_num_k + spec
        parts.append((ch.win, ch.ramps, ch.probes, patches, chi))
    if p_num_k is not None:
        p_num += backend.ifft2(p_num_k, overwrite_x=True)
    return parts, num, p_num, p_den, err


def _counted(ctx):
    """The counted pixels for the sparse Poisson update (NumPy, far field, no background, mask or ratio), kept
    in ``ctx.state`` for the reconstruction; None where the dense path is taken."""
    if not (ctx.noise_model == "poisson" and ctx.xp is np and isinstance(ctx.prop, FarField) and ctx.bg is None
            and ctx.meas_w is None and ctx.ratio is None):
        return None
    if ctx.state.get("counted") is None:
        ctx.state["counted"] = counted_pixels(ctx.amp)
    return ctx.state["counted"]


def _steps(parts, d_obj, d_prb, d_prb_k, b, xp):
    """β_O, β_P: the batch means of the per-position 2×2 least squares of eq. 22 (unclipped)."""
    m11, m22, m12, r1, r2 = (xp.zeros(b, dtype=np.float32) for _ in range(5))
    c0 = 0
    for win, ramps, probes, patches, chi in parts:
        sl = slice(c0, c0 + len(chi))
        c0 += len(chi)
        A = probe_times_patches(d_obj, win, probes, xp)
        m11[sl] = re_inner(A, A, xp)
        r1[sl] = re_inner(A, chi, xp)
        if d_prb is not None:
            if ramps is None:
                B = patches
                B *= d_prb               # ΔP·O_j in place: the patches are not needed any more
            else:
                B = ops.shifted_probes(d_prb_k, ramps)
                B *= patches
            m22[sl] = re_inner(B, B, xp)
            m12[sl] = re_inner(A, B, xp)
            r2[sl] = re_inner(B, chi, xp)
            del B
        del A
    lam = 1e-6 * (m11 + m22) + 1e-30
    det = (m11 + lam) * (m22 + lam) - m12**2
    beta_o = ((m22 + lam) * r1 - m12 * r2) / det
    beta_p = ((m11 + lam) * r2 - m12 * r1) / det
    return float(xp.mean(beta_o)), xp.mean(beta_p)


def scan_illumination(prb, ctx, n_batch):
    """Σ_j |P_j|² over the *whole* scan for the LSQ-ML object preconditioner, refreshed once per pass.

    Recomputed from the current probe when the batches since the last refresh
    have covered every position, kept in ``ctx.state``. Sub-pixel shifts are
    ignored (integer patch corners): it is a preconditioner only. The sum is
    the convolution of |P|² with the comb of patch corners, by real FFTs on
    the object grid padded to a fast length (no wrap-around); float32
    rounding (~1e-6 of the maximum) is clipped at 0.

    Returns
    -------
    (H, W) float32
    """
    xp, geom = ctx.xp, ctx.geom
    cache = ctx.state.setdefault("illumination", {"left": 0, "illum": None})
    if cache["left"] <= 0:
        power = (xp.abs(prb) ** 2).astype(np.float32)
        if power.ndim == 3:
            power = power.sum(axis=0)
        (H, W), (ny, nx) = geom.object_shape, power.shape
        shape = (scipy.fft.next_fast_len(H, real=True), scipy.fft.next_fast_len(W, real=True))
        comb = np.zeros(shape, dtype=np.float32)
        np.add.at(comb, (geom.corners[:, 0], geom.corners[:, 1]), np.float32(1))
        kernel = xp.zeros(shape, dtype=np.float32)
        kernel[:ny, :nx] = power
        fft = scipy.fft if xp is np else xp.fft
        spec = fft.rfft2(xp.asarray(comb))
        spec *= fft.rfft2(kernel)
        illum = xp.maximum(fft.irfft2(spec, s=shape)[:H, :W], np.float32(0)).astype(np.float32)
        cache["illum"], cache["left"] = illum, geom.n_positions
    cache["left"] -= n_batch
    return cache["illum"]
