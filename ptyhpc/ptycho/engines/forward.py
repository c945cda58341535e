"""The shared forward step of the mini-batch engines: gather object patches, shift the probe, propagate.

ψ_j = P(r − r_j)·O_j, Ψ_j = F[ψ_j] (far field) or H[ψ_j] (near field). The sub-pixel part of each
position is applied as a Fourier ramp on the probe (``"fourier"``), as a bilinear interpolation of
the object patch (``"bilinear"``, the probe unshifted) or dropped (``"none"``, positions rounded);
see docs/engines.md for the trade-offs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import backend
from .. import operators as ops
from ..propagators import FarField

__all__ = ["Chunk", "forward_chunk", "propagate", "back_propagate"]


@dataclass
class Chunk:
    """One chunk of positions after the forward step.

    Attributes
    ----------
    idx : (b,) int
        Positions.
    win : Windows or BilinearWindows
        Their patch windows on the object grid.
    ramps : tuple or None
        Separable sub-pixel shift ramps of the probe; None when the probe is unshifted.
    probes : (b, [m,] ny, nx) or (1, [m,] ny, nx) complex64
        The (shifted) probes; one for all positions when unshifted.
    patches : (b, ny, nx) complex64
        Object patches O_j.
    psi_k : (b, [m,] ny, nx) complex64
        Propagated exit waves Ψ_j (FFT order for the far field).
    """

    idx: np.ndarray
    win: object
    ramps: object
    probes: object
    patches: object
    psi_k: object


def propagate(psi, prop):
    """Ψ = F[ψ] (far field, in place) or ``prop.forward(ψ)``."""
    return backend.fft2(psi, overwrite_x=True) if isinstance(prop, FarField) else prop.forward(psi)


def back_propagate(psi_k, prop):
    """ψ = F⁻¹[Ψ] (far field, in place) or ``prop.adjoint(Ψ)``."""
    return backend.ifft2(psi_k, overwrite_x=True) if isinstance(prop, FarField) else prop.adjoint(psi_k)


def forward_chunk(obj, prb, probe_k, idx, geom, prop, subpixel, xp, *, off_grid=True):
    """Exit waves of positions ``idx`` propagated to the detector.

    Parameters
    ----------
    obj : (H, W) complex64
    prb : (ny, nx) or (m, ny, nx) complex64
        Probe (modes along the first axis).
    probe_k : complex64 or None
        ``fft2(prb)``, needed for ``subpixel="fourier"``.
    idx : (b,) int
    geom : ScanGeometry
    prop : FarField or NearField
    subpixel : {"fourier", "bilinear", "none"}
    xp : module
    off_grid : bool
        False when every position of the chunk sits on a whole pixel (the
        PIE family checks this per chunk): the shift or interpolation is then
        skipped and plain windows are used (the same operator there).

    Returns
    -------
    Chunk
    """
    shifted = subpixel == "fourier" and off_grid
    if subpixel == "bilinear" and off_grid:
        win = geom.bilinear_windows(idx, xp)
    else:
        win = geom.windows(idx, xp, rounded=not shifted)
    if shifted:
        ramps = ops.shift_ramps_separable(geom.frac[idx], geom.probe_shape, xp)
        probes = ops.shifted_probes(probe_k, ramps)
    else:
        # One probe for every position of the chunk: (1, [m,] ny, nx), broadcast over the batch.
        ramps, probes = None, prb[None]
    patches = ops.extract_patches(obj, win)
    psi = probes * patches[:, None] if prb.ndim == 3 else probes * patches
    # ψ is dead after its transform: the far-field FFT may work in place.
    return Chunk(idx, win, ramps, probes, patches, propagate(psi, prop))
