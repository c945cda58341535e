"""Engines that project all exit waves together: error reduction and the difference map.

Both keep one exit wave ψ_j per scan position and alternate two projections
(Thibault et al., Ultramicroscopy 109, 338 (2009), section 2):

- the *overlap projection* Π_O finds the object O and probe P that best explain
  the set of exit waves in least squares (eqs. 8–9) and returns ψ_j = P_j·O_j;
- the *modulus (Fourier) projection* Π_F makes each wave agree with its
  measured pattern: Ψ ← √I·Ψ/|Ψ| on measured pixels, unmeasured pixels left free.

Error reduction (Fienup 1982; "AP" in PyNX) is ψ ← Π_F(Π_O(ψ)). The difference
map (Elser, J. Opt. Soc. Am. A 20, 40 (2003); Thibault et al. 2009, eq. 12) is

    ψ ← ψ + β [Π_F(f_O(ψ)) − Π_O(f_F(ψ))],
    f_O(ψ) = Π_O(ψ) + (Π_O(ψ) − ψ)/β,     f_F(ψ) = Π_F(ψ) − (Π_F(ψ) − ψ)/β,

which for β = 1 (the usual choice, used by Thibault et al. and ptypy) is
ψ ← ψ + Π_F(2Π_O(ψ) − ψ) − Π_O(ψ), with one overlap projection per
iteration; β ≠ 1 needs a second overlap projection (twice the work). The
current object and probe are those of Π_O(ψ).

Why DM diverged with probe retrieval, and what keeps it stable
--------------------------------------------------------------
Measured on the noise-free seed-3 test scan (``tests/test_dm.py``, probe
started 20 % out of focus), one cause at a time:

1. *No probe constraint* is the cause. The overlap projection may put probe
   power anywhere in the window (outside the condenser aperture, i.e. at
   spatial frequencies the optics cannot produce); DM, which is not a descent
   method, wanders along that extra object–probe freedom: the data error
   climbs from 7e-3 to 0.3–34 after 15–20 iterations and the object is lost
   (1.6–1.9 rad phase error in four of five variants tried: 1, 2 or 6 inner
   sweeps, probe update from iteration 10; 0.026 rad after the excursion in
   the fifth). Confining the probe's spectrum after every probe update to
   ``probe_mask_k`` (the aperture, e.g. 1.2 α/λ from the pipeline) or, when
   none is given, to the support of the initial probe's spectrum
   (:func:`probe_support_from_initial`) removes it: 0.0044 rad after 100
   iterations, monotone error. Error reduction gets the same default
   constraint (without it ER made excursions on noisy data and ran away on a
   weak object).
2. *Too few inner overlap iterations* is not the cause of the divergence:
   without the constraint 1 sweep went to NaN, 3 converged after an
   excursion, 6 diverged; with it, 1 and 3 sweeps give the same result on
   noise-free data (0.0045 and 0.0044 rad). On noisy data they matter for DM,
   whose fixed point moves with an inexact projection: 1e5 counts per
   pattern, 60 iterations, 0.19 rad with 1 sweep against 0.072 with 3 (0.5 rad
   object), 0.024 against 0.016 (0.05 rad). ER does not care (0.0354 and
   0.0357; 0.0068 and 0.0069) and runs twice as fast with one sweep, so
   ``n_inner`` defaults to 3 for DM and 1 for ER.
3. *Inertia* λ = 1 % of the peak denominator (object and probe, as ptypy's
   inertia) keeps the probe's tails and unlit object pixels from being
   inverted; raised to 10 % without the probe constraint it did not stop the
   excursions either (data error oscillating up to 0.09, 0.029 rad).
4. *Scale ambiguity*: O·c and P/c explain the waves equally well; the object
   is pinned to unit mean intensity where lit after every probe update, so the
   inertia terms (which are not scale-free) pull towards a correctly scaled
   previous value.
5. *Exit-wave initialisation*: ψ_j = P_j·O_j of the initial guesses (not the
   modulus-projected waves, not zero): DM starts where Π_O(ψ) = ψ and its
   first iteration equals error reduction. The probe update waits
   ``probe_update_start`` iterations (2 by default).

Seed 001 (soft X-ray spectro-ptychography of weak scatterers with PyNX)
reports DM unstable for weakly scattering samples where AP works. That is
reproduced (``tests/test_dm.py``): with Poisson noise (1e5 counts per
pattern) DM's phase error is 2.3x ER's for a 0.05 rad object (worse than a
flat start; its data error rises from its minimum while ER's stays at the
noise floor), 2.0x for 0.5 rad and 1.4x for 1 rad. Noisy data have no fixed
point; DM's iterate drifts with the inconsistency, which outweighs a weak
object's signal. It is a property of DM, not a bug: run DM first and finish
with LSQ-ML or ER (:func:`ptyhpc.ptycho.chain.reconstruct_chain`).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from . import operators as ops
from .engines.fourier import modulus_factor

__all__ = ["projection_engine", "probe_support_from_initial", "PROJECTION_ENGINES"]

#: Engines implemented here (registered in :data:`ptyhpc.ptycho.engines.ENGINES`).
PROJECTION_ENGINES = ("er", "dm")


def _overlap_projection(waves, obj, prb, geom, *, n_inner, update_probe, probe_mask_k, batch_size, xp,
                        inertia=1e-2):
    """Object and probe that best explain the exit waves (least squares), alternating ``n_inner`` times.

    Thibault et al., Ultramicroscopy 109, 338 (2009), eqs. 8–9:
    O = Σ conj(P_j) ψ_j / Σ |P_j|² and P = Σ conj(O_j) ψ_j / Σ |O_j|² (shifted
    back by each position's sub-pixel shift), each with an inertia term
    λ·(previous value) in the numerator and λ in the denominator,
    λ = ``inertia`` × the peak denominator (as ptypy's object/probe inertia).

    Parameters
    ----------
    waves : (n, Ny, Nx) complex64
        Exit waves, one per position (read only).
    obj : (H, W) complex64
    prb : (Ny, Nx) complex64
        Current estimates (the starting point of the alternation).
    n_inner : int
        Object/probe sweeps (only the object is updated when ``update_probe`` is False).

    Returns
    -------
    obj, prb : complex64
    """
    n = geom.n_positions
    chunks = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    flats = [geom.flat_index(c, xp) for c in chunks]
    ramps = [ops.shift_ramps(geom.frac[c], geom.probe_shape, xp) for c in chunks]
    for _ in range(n_inner):
        probe_k = backend.fft2(prb)
        num = xp.zeros(geom.object_shape, dtype=np.complex64)
        den = xp.zeros(geom.object_shape, dtype=np.float32)
        for c, flat, r in zip(chunks, flats, ramps):
            probes = ops.shifted_probes(probe_k, r)
            ops.patches_adjoint(xp.conj(probes) * waves[c], flat, geom.object_shape, out=num)
            ops.patches_adjoint((xp.abs(probes) ** 2).astype(np.float32), flat, geom.object_shape, out=den)
        # Inertia: weakly lit pixels (probe tails) keep their previous value instead of
        # amplifying noise and running away with the object–probe scale.
        lam = inertia * float(den.max())
        obj = (num + lam * obj) / (den + lam)
        if not update_probe:
            break
        p_num = xp.zeros(geom.probe_shape, dtype=np.complex64)
        p_den = xp.zeros(geom.probe_shape, dtype=np.float32)
        for c, flat, r in zip(chunks, flats, ramps):
            patches = ops.extract_patches(obj, flat)
            p_num += ops.unshift_sum(xp.conj(patches) * waves[c], r)
            p_den += xp.sum(xp.abs(patches) ** 2, axis=0)
        lam = inertia * float(p_den.max())
        prb = (p_num + lam * prb) / (p_den + lam)
        # O·c, P/c explain the waves equally well; pin the scale to a unit-mean object where lit,
        # else the alternation drifts towards O → 0, P → ∞.
        lit = den > 0.1 * float(den.max())
        scale = float(xp.sqrt(xp.mean(xp.abs(obj[lit]) ** 2)))
        obj, prb = obj / scale, prb * scale
        if probe_mask_k is not None:
            prb = backend.ifft2(backend.fft2(prb) * probe_mask_k)
    return obj.astype(np.complex64), prb.astype(np.complex64)


def probe_support_from_initial(prb, threshold=1e-2, grow_px=2):
    """Fourier-space probe mask from the initial probe's spectrum (used by DM when none is given).

    The support of |F[P₀]| (where it exceeds ``threshold`` × its peak),
    dilated by ``grow_px`` pixels: for an electron probe the condenser aperture
    (defocus and aberrations change only the phase), for a focusing optic its
    pupil. A probe retrieved inside it keeps the spectrum of the optics.

    Parameters
    ----------
    prb : (Ny, Nx) complex
        Initial real-space probe.
    threshold : float
        Fraction of the peak spectral amplitude.
    grow_px : int
        Dilation, detector pixels.

    Returns
    -------
    (Ny, Nx) float32, FFT order, 1 inside, 0 outside (same array module as ``prb``).
    """
    from scipy import ndimage  # noqa: PLC0415

    xp = backend.xp_of(prb)
    spec = np.abs(backend.to_host(backend.fft2(prb)))
    inside = np.fft.fftshift(spec > threshold * spec.max())
    # Dilate in the centred frame so the support does not wrap at the FFT-order edges.
    inside = ndimage.binary_dilation(inside, iterations=grow_px) if grow_px else inside
    return xp.asarray(np.fft.ifftshift(inside).astype(np.float32))


def _modulus_projection(wave_k, amp, measured):
    """Π_F in the detector plane: Ψ·√I/|Ψ| on measured pixels, Ψ elsewhere (the shared data term)."""
    return wave_k * modulus_factor(backend.xp_of(wave_k).abs(wave_k), amp, measured, "amplitude", 0.0)


def projection_engine(amp, measured, obj, prb, geom, prop, *, engine="er", n_iter, batch_size,
                      probe_update_start, probe_mask_k, errors, total_intensity, callback, xp, beta=1.0,
                      n_inner=None, inertia=1e-2):
    """Error reduction or the difference map over all positions (module docstring has the formulas).

    Parameters
    ----------
    amp : (n, Ny, Nx) float32
        Measured amplitudes √I in the propagator's order (FFT order for the far field).
    measured : (Ny, Nx) bool
        Measured detector pixels; the others are left free.
    obj : (H, W) complex64
    prb : (Ny, Nx) complex64
        Initial object and probe (ψ_j = P_j·O_j starts the iteration).
    geom : ScanGeometry
    prop : FarField or NearField
    engine : {"er", "dm"}
    n_iter, batch_size, probe_update_start : int
        Iterations; positions per chunk of array work (all positions are used in
        every projection); first iteration that updates the probe.
    probe_mask_k : (Ny, Nx) float32 or None
        Probe Fourier mask applied after every probe update.
    errors : (n_iter,) float32
        Filled with Σ_measured (|F[P_j O_j]| − √I)² / Σ I of the current estimate.
    total_intensity : float
        Σ I over all frames.
    callback : callable(iteration, error) or None
    xp : module
    beta : float
        DM parameter β (non-zero; 1 is the classic DM; Thibault et al. 2009 and
        ptypy use 1; |β| < 1 damps the iteration at twice the cost).
    n_inner : int, optional
        Object/probe sweeps per overlap projection once the probe is updated;
        default 3 for DM, 1 for ER (module docstring, point 2).
    inertia : float
        λ of the overlap projection as a fraction of the peak denominator.

    Returns
    -------
    obj : (H, W) complex64
    prb : (Ny, Nx) complex64

    Raises
    ------
    ValueError
        Unknown engine, β = 0 or n_inner < 1.

    Notes
    -----
    Memory: one exit wave per position, n × Ny × Nx complex64 (0.5 GiB for
    1000 positions of 256²), twice that for DM with β ≠ 1; the PIE family and
    LSQ-ML keep none.
    """
    if engine not in PROJECTION_ENGINES:
        raise ValueError(f"unknown projection engine {engine!r}; choose one of {PROJECTION_ENGINES}")
    if engine == "dm" and not beta:
        raise ValueError("the difference-map parameter beta must be non-zero (1 is the classic DM)")
    if n_inner is None:
        n_inner = 3 if engine == "dm" else 1
    if n_inner < 1:
        raise ValueError(f"n_inner must be >= 1, got {n_inner}")
    if probe_mask_k is None and probe_update_start < n_iter:
        # Probe retrieval by the overlap projection runs away without a probe constraint
        # (module docstring, point 4): DM diverges, ER makes excursions on noisy data.
        probe_mask_k = probe_support_from_initial(prb)
    n = geom.n_positions
    chunks = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    flats = [geom.flat_index(c, xp) for c in chunks]
    ramps = [ops.shift_ramps(geom.frac[c], geom.probe_shape, xp) for c in chunks]
    waves = xp.empty((n, *geom.probe_shape), dtype=np.complex64)
    probe_k = backend.fft2(prb)
    for c, flat, r in zip(chunks, flats, ramps):
        waves[c] = ops.exit_waves(obj, ops.shifted_probes(probe_k, r), flat)
    general = engine == "dm" and beta != 1
    # β ≠ 1: f_F(ψ) needs its own overlap projection, so it gets its own array.
    f_f = xp.empty_like(waves) if general else None
    for it in range(n_iter):
        update_probe = it >= probe_update_start
        kw = dict(n_inner=n_inner if update_probe else 1, update_probe=update_probe, probe_mask_k=probe_mask_k,
                  batch_size=batch_size, xp=xp, inertia=inertia)
        obj, prb = _overlap_projection(waves, obj, prb, geom, **kw)
        probe_k = backend.fft2(prb)
        err = 0.0
        for c, flat, r in zip(chunks, flats, ramps):
            p_o = ops.exit_waves(obj, ops.shifted_probes(probe_k, r), flat)     # Π_O(ψ)
            p_o_k = prop.forward(p_o)
            mod = xp.abs(p_o_k)
            err += float(xp.sum((mod - amp[c]) ** 2 * measured))
            if engine == "er":
                waves[c] = prop.adjoint(_modulus_projection(p_o_k, amp[c], measured))
                continue
            # F is linear: F[f_O(ψ)] = (1 + 1/β) F[Π_O ψ] − F[ψ]/β, one FFT of ψ instead of two.
            psi_k = prop.forward(waves[c])
            f_o_k = (1 + 1 / beta) * p_o_k - psi_k / beta
            p_f_f_o = prop.adjoint(_modulus_projection(f_o_k, amp[c], measured))   # Π_F(f_O(ψ))
            if not general:
                # β = 1: f_F(ψ) = ψ, so Π_O(f_F(ψ)) = Π_O(ψ), already at hand.
                waves[c] = waves[c] + p_f_f_o - p_o
            else:
                p_f = prop.adjoint(_modulus_projection(psi_k, amp[c], measured))    # Π_F(ψ)
                f_f[c] = (1 - 1 / beta) * p_f + waves[c] / beta
                # Until Π_O(f_F) is known, keep ψ + β Π_F(f_O) in ``waves``.
                waves[c] = waves[c] + beta * p_f_f_o
        if general:
            # Π_O(f_F(ψ)) from the current estimate; it is not kept as the estimate.
            o2, p2 = _overlap_projection(f_f, obj, prb, geom, **kw)
            p2_k = backend.fft2(p2)
            for c, flat, r in zip(chunks, flats, ramps):
                waves[c] = waves[c] - beta * ops.exit_waves(o2, ops.shifted_probes(p2_k, r), flat)
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))
    return obj, prb

