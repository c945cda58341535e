"""Engines that project all exit waves together: error reduction (and the place for DM).

The overlap projection finds the object and probe that best explain a set of
exit waves (least squares); the modulus projection makes each wave agree with
its measured pattern. Error reduction alternates them (Fienup 1982;
Thibault et al., Ultramicroscopy 109, 338 (2009), eqs. 8–9).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from . import operators as ops


def _overlap_projection(waves, obj, prb, geom, *, n_inner, update_probe, probe_mask_k, batch_size, xp):
    """Object and probe that best explain the exit waves (least squares), alternating ``n_inner`` times.

    Thibault et al. (2009), eqs. 8–9: O = Σ conj(P_j) ψ_j / Σ |P_j|² and
    P = Σ conj(O_j) ψ_j / Σ |O_j|² (shifted back by each position's sub-pixel shift),
    each with an inertia term λ·(previous value) in the numerator and λ in the
    denominator, λ = 1 % of the peak denominator.
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
        # Inertia (as ptypy's object/probe inertia): weakly lit pixels (probe tails) keep their
        # previous value instead of amplifying noise and running away with the object–probe scale.
        lam = 1e-2 * float(den.max())
        obj = (num + lam * obj) / (den + lam)
        if not update_probe:
            break
        p_num = xp.zeros(geom.probe_shape, dtype=np.complex64)
        p_den = xp.zeros(geom.probe_shape, dtype=np.float32)
        for c, flat, r in zip(chunks, flats, ramps):
            patches = ops.extract_patches(obj, flat)
            p_num += ops.unshift_sum(xp.conj(patches) * waves[c], r)
            p_den += xp.sum(xp.abs(patches) ** 2, axis=0)
        lam = 1e-2 * float(p_den.max())
        prb = (p_num + lam * prb) / (p_den + lam)
        # O·c, P/c explain the waves equally well; pin the scale to a unit-mean object where lit,
        # else the alternation drifts towards O → 0, P → ∞.
        lit = den > 0.1 * float(den.max())
        scale = float(xp.sqrt(xp.mean(xp.abs(obj[lit]) ** 2)))
        obj, prb = obj / scale, prb * scale
        if probe_mask_k is not None:
            prb = backend.ifft2(backend.fft2(prb) * probe_mask_k)
    return obj.astype(np.complex64), prb.astype(np.complex64)


def _projection_engine(amp, measured, obj, prb, geom, prop, *, n_iter, batch_size, probe_update_start,
                       probe_mask_k, errors, total_intensity, callback, xp):
    """Error reduction (alternating projections) over all positions.

    ψ_j ← P_F(P_O(ψ))_j: the overlap projection (least-squares object and
    probe from all exit waves), then the modulus projection per position.
    """
    from .engines import _modulus_factor as modulus_factor  # noqa: PLC0415  (engines imports this module)

    n = geom.n_positions
    chunks = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    waves = xp.empty((n, *geom.probe_shape), dtype=np.complex64)
    probe_k = backend.fft2(prb)
    for c in chunks:
        waves[c] = ops.exit_waves(obj, ops.shifted_probes(probe_k, ops.shift_ramps(geom.frac[c], geom.probe_shape, xp)),
                                  geom.flat_index(c, xp))
    for it in range(n_iter):
        obj, prb = _overlap_projection(waves, obj, prb, geom, n_inner=3 if it >= probe_update_start else 1,
                                       update_probe=it >= probe_update_start, probe_mask_k=probe_mask_k,
                                       batch_size=batch_size, xp=xp)
        probe_k = backend.fft2(prb)
        err = 0.0
        for c in chunks:
            ramps = ops.shift_ramps(geom.frac[c], geom.probe_shape, xp)
            overlap_k = prop.forward(ops.exit_waves(obj, ops.shifted_probes(probe_k, ramps), geom.flat_index(c, xp)))
            mod = xp.abs(overlap_k)
            err += float(xp.sum((mod - amp[c]) ** 2 * measured))
            waves[c] = prop.adjoint(overlap_k * modulus_factor(mod, amp[c], measured, "amplitude", 0.0))
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))
    return obj, prb
