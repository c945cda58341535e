"""Constraints the mini-batch loop applies: probe Fourier mask and support, object amplitude bounds, background."""

from __future__ import annotations

import numpy as np

from ... import backend

__all__ = ["apply_probe_constraints", "clip_amplitude", "update_background"]


def apply_probe_constraints(prb, probe_mask_k, support):
    """Fourier-space aperture (``probe_mask_k``), then the real-space ``support``, each when given."""
    if probe_mask_k is not None:
        prb = backend.ifft2(backend.fft2(prb) * probe_mask_k, overwrite_x=True)
    if support is not None:
        prb *= support
    return prb


def clip_amplitude(obj, bounds):
    """|O| clipped to [lo, hi] keeping the phase (in place; |O| = 0 becomes lo with zero phase)."""
    xp = backend.xp_of(obj)
    lo, hi = bounds
    a = xp.abs(obj)
    scale = xp.clip(a, lo, hi)
    scale /= xp.maximum(a, np.float32(1e-30))
    obj *= scale
    if lo > 0:
        obj[a == 0] = lo
    return obj


def update_background(bg, ratio, n, noise_model):
    """Multiplicative background step once per pass, in place; ``ratio`` (Σ_j over the pass) is reset.

    b ← b·⟨I/h⟩ (Poisson: the EM update of an additive component, which keeps b ≥ 0) or
    b ← b·⟨√I/√h⟩² (amplitude: eq. 11 of the Bragg seed, Nat. Commun. 12, 7059 (2021), as
    :mod:`ptyhpc.bragg.solver`);
    the background term of Odstrčil et al., Opt. Express 26, 3108 (2018), in multiplicative form.
    """
    mean = ratio / np.float32(n)
    bg *= mean if noise_model == "poisson" else mean * mean
    ratio[...] = 0
