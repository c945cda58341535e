"""Mixed-state probe modes (Thibault & Menzel, Nature 494, 68 (2013)): start and orthogonalisation."""

from __future__ import annotations

import numpy as np

from ... import backend

__all__ = ["init_probe_modes", "orthogonalize_modes"]


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

