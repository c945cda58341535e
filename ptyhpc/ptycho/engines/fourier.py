"""The data term: the factor that maps a model far field onto the data, and the Fourier residual of a chunk.

One definition for every engine. :func:`modulus_factor` is the factor itself (the projection engines
and multislice multiply by it); :func:`fourier_residual` is the fused, in-place form the mini-batch
engines use, with the incoherent background, probe modes, the detector mask and LSQ-ML's Poisson line
search.

Sources: modulus projection √I/|Ψ| (Fienup, Appl. Opt. 21, 2758 (1982)); Poisson likelihood gradient
I/|Ψ|² − 1 (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012), eq. 19); Poisson step
(Odstrčil et al., Opt. Express 26, 3108 (2018), Appendix).
"""

from __future__ import annotations

import numpy as np

from ... import backend
from .kernels import intensity
from .poisson import poisson_step, poisson_update_sparse

__all__ = ["modulus_factor", "fourier_residual"]


def modulus_factor(mod, a, measured, noise_model, floor):
    """Factor that maps the model far field Ψ to its data-consistent update (measured pixels only).

    Parameters
    ----------
    mod : (b, ny, nx) float
        |Ψ|.
    a : (b, ny, nx) float32
        Measured amplitudes √I.
    measured : (ny, nx) bool
        Measured pixels; the others get 1 (Ψ kept).
    noise_model : {"amplitude", "poisson"}
        ``"amplitude"``: √I/|Ψ| (the modulus projection); ``"poisson"``:
        I/max(|Ψ|², floor), so that F⁻¹[(factor − 1)Ψ] is the Poisson
        likelihood gradient.
    floor : float
        Smallest model intensity of the Poisson factor, counts.

    Returns
    -------
    (b, ny, nx) float32
    """
    xp = backend.xp_of(mod)
    if noise_model == "poisson":
        # The floor keeps I/|Ψ|² finite where the model is dark but a count landed.
        factor = xp.where(measured, a**2 / xp.maximum(mod**2, floor), 1.0)
    else:
        factor = xp.where(measured, a / xp.maximum(mod, 1e-12), 1.0)
    return factor.astype(np.float32)


def fourier_residual(psi_k, a, meas_w, noise_model, floor, bg=None, ratio_out=None, *, line_search=False,
                     counted=None):
    """Turn the far field Ψ into its data-term update (factor − 1)·Ψ, in place; return the data error.

    The factor is that of :func:`modulus_factor` with the model intensity
    h = Σ_modes |Ψ|² + b: √I/√h (amplitude) or I/max(h, floor) (Poisson), so
    F⁻¹ of the result is Δψ (for the amplitude model F⁻¹[factor·Ψ] − ψ =
    F⁻¹[(factor − 1)Ψ], which saves keeping ψ). Unmeasured pixels get 0.

    Parameters
    ----------
    psi_k : (b, ny, nx) or (b, m, ny, nx) complex64
        Far fields (m probe modes share one factor), FFT order; overwritten.
    a : (b, ny, nx) float32
        Measured amplitudes √I (0 on unmeasured pixels).
    meas_w : (ny, nx) float32 (1 measured, 0 not) or None (all measured)
    noise_model : {"poisson", "amplitude"}
    floor : float
        Smallest model intensity in the Poisson factor, counts.
    bg : (ny, nx) float32, optional
        Background intensity b(q), counts, FFT order.
    ratio_out : (ny, nx) float32, optional
        Accumulates Σ_j of I/h (Poisson) or √I/√h (amplitude), for the background update.
    line_search : bool
        LSQ-ML: with the Poisson model, scale each position's update by the
        Newton step α_j of :func:`~ptyhpc.ptycho.engines.poisson.poisson_step`
        (the background is ignored in the line search).
    counted : tuple, optional
        (idx, n_counted, a_c) of :func:`~ptyhpc.ptycho.engines.poisson.chunk_counted`:
        with ``line_search``, Poisson, NumPy, no background, mask or ratio,
        the update is computed on the pixels with counts only when most have
        none (:func:`~ptyhpc.ptycho.engines.poisson.poisson_update_sparse`).

    Returns
    -------
    float
        Σ (√h − √I)² over measured pixels, before the update.
    """
    if counted is not None:
        err = poisson_update_sparse(psi_k, counted, floor)
        if err is not None:
            return err
    xp = backend.xp_of(psi_k)
    modes = psi_k.ndim == 4
    p0 = None
    if line_search or modes or bg is not None:
        p0 = intensity(psi_k, modes)             # Σ_modes |Ψ|², without the background
        h = p0 if bg is None else p0 + bg
        mod = xp.sqrt(h)
    else:
        # One abs pass gives both |Ψ| and, squared in place after the error, |Ψ|².
        mod = xp.abs(psi_k)
        h = None
    d = mod - a
    if meas_w is not None:
        d *= meas_w
    # Not a BLAS dot: OpenBLAS's worker threads spin after each call and slowed the next
    # scatter-adds by 10× on the 2-core machine; einsum's own loop is one pass.
    d = d.reshape(-1)
    err = float(np.einsum("i,i->", d, d) if xp is np else xp.sum(d * d))
    del d
    if noise_model == "poisson":
        if h is None:
            h = xp.multiply(mod, mod, out=mod)
        measured_i = a * a
        f = xp.maximum(h, np.float32(floor), out=mod)
        xp.divide(measured_i, f, out=f)
    else:
        # |Ψ| + 1e-12 rather than max(|Ψ|, 1e-12): the same factor to float32 precision, and an add
        # is 2.5× faster than NumPy's NaN-propagating maximum.
        mod += np.float32(1e-12)
        f = xp.divide(a, mod, out=mod)
    del h
    if ratio_out is not None:
        ratio_out += f.sum(axis=0)          # f is 0 on unmeasured pixels (a = 0 there)
    f -= np.float32(1)
    if meas_w is not None:
        f *= meas_w
    if line_search and noise_model == "poisson":
        f *= poisson_step(p0, f, measured_i, a)[:, None, None]
    psi_k *= f[:, None] if modes else f
    return err
