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
array code; Python loops only over iterations, batches and cache-sized
chunks of a batch.

Cost per position (PIE family, far field): the forward and inverse FFT
(the bound ``benchmarks/ptycho_iteration.py`` measures against), one FFT
each for the sub-pixel probe shift and its adjoint in the probe update
(``subpixel="fourier"``; none for ``"bilinear"``, ``"none"`` or whole-pixel
positions), one gather and three real scatter-adds of a patch (of (ny+1, nx+1)
with ``"bilinear"``, plus ~12 elementwise passes for its interpolation and
adjoint), and ~20 elementwise passes.
Constraints inside the loop: detector mask, real-space probe support,
Fourier probe mask, object amplitude bounds, incoherent background (see
:func:`reconstruct`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

import numpy as np
import scipy.fft

from .. import backend
from . import operators as ops
from .projection import projection_engine
from .propagators import FarField

__all__ = ["PtychoResult", "reconstruct", "prepare_amplitudes", "probe_from_mean_pattern", "init_probe_modes",
           "orthogonalize_modes", "ENGINES"]

ENGINES = ("rpie", "epie", "mpie", "lsqml", "er", "dm")

#: Detector pixels per chunk of array work inside a mini-batch of the PIE engines (cache blocking
#: only; the update still uses the whole batch): 16 positions of 128², 4 of 256². Measured in CPU time
#: per iteration on the shared 2-core machine (ratio to the FFT bound, best of 3–6 iterations):
#: 128², 8 → 16 positions: 1.95 → 1.83; 256², 2 / 4 / 8 positions: 2.04 / 1.83 / 1.88.
_CHUNK_PIXELS = 16 * 128 * 128


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
    amplitudes : (n, *fft_shape) float32, √max(I, 0), FFT order; 0 on unmeasured pixels
    measured : (*fft_shape) bool, FFT order

    Raises
    ------
    ValueError
        ``fft_shape`` smaller than the detector (or, near field, different from it);
        ``mask`` not of the detector's shape.
    """
    frames = np.asarray(frames)
    n, dy, dx = frames.shape
    if fft_shape is None:
        fft_shape = (scipy.fft.next_fast_len(dy), scipy.fft.next_fast_len(dx)) if centred else (dy, dx)
    Ny, Nx = fft_shape
    if mask is not None and np.shape(mask) != (dy, dx):
        raise ValueError(f"mask shape {np.shape(mask)} differs from the detector {(dy, dx)}")
    meas_det = np.ones((dy, dx), bool) if mask is None else np.asarray(mask, bool)
    if not centred:
        if tuple(fft_shape) != (dy, dx):
            raise ValueError(f"near-field data are not padded: fft_shape {fft_shape} must equal {(dy, dx)}")
        amp = np.sqrt(np.maximum(frames, 0, dtype=np.float32))
        if mask is not None:
            amp *= meas_det
        return amp, meas_det.copy()
    if Ny < dy or Nx < dx:
        raise ValueError(f"fft_shape {fft_shape} is smaller than the detector {(dy, dx)}")
    # Padded so that the zero frequency stays at the centre pixel N//2, then ifftshifted: detector
    # pixel (r, c) lands at ((r − dy//2) mod Ny, (c − dx//2) mod Nx). The result is filled in place,
    # a block of frames at a time, so the only full-size array is the result (4 B per pixel; padding
    # then shifting held three copies, the peak memory of a reconstruction).
    rows = ((np.arange(dy) - dy // 2) % Ny)[:, None]
    cols = ((np.arange(dx) - dx // 2) % Nx)[None, :]
    amp = np.zeros((n, Ny, Nx), dtype=np.float32)
    for s in range(0, n, 64):
        block = np.sqrt(np.maximum(frames[s:s + 64], 0, dtype=np.float32))
        if mask is not None:
            block *= meas_det       # unmeasured pixels carry no data (and no counts in the totals)
        amp[s:s + 64, rows, cols] = block
    measured = np.zeros((Ny, Nx), dtype=bool)
    measured[rows, cols] = meas_det
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


def _poisson_step(p0, c, intensity, amplitude, n_newton=4, tol=1e-3):
    """Per-position step α minimising the Poisson NLL along the exit-wave update, by Newton's method.

    Odstrčil et al., Opt. Express 26, 3108 (2018), Appendix (optimal exit-wave
    step for Poisson noise): minimise f(α) = Σ h − I ln h, h = |Ψ + αd|², over
    the measured pixels by Newton iterations from α = 1, clipped to [0, 2].

    The Poisson direction is d = c·Ψ with the *real* factor c = I/max(|Ψ|², floor) − 1
    (0 off the measured pixels), so with u = 1 + αc, h = |Ψ|²u², and
    w = c/u = 1/(1/c + α) (derived here from the paper's f):

        f'(α)  = 2 Σ c (|Ψ|² u − I/u) = 2 (S₁ + α S₂ − Σ I w),
        f''(α) = 2 Σ c² (|Ψ|² + I/u²) = 2 (S₂ + Σ I w²),

    with S₁ = Σ |Ψ|²c and S₂ = Σ |Ψ|²c² computed once: an iteration is 5
    float32 passes over real arrays (add, reciprocal, multiply, sum, dot)
    instead of ~40 over complex ones in the direct form |Ψ + αd|² (39 % of
    LSQ-ML's time before). f'' > 0: f is convex between the poles u = 0 of
    pixels with I > 0, and α stays below the first one (α < −1/c for the
    most negative c), where f → +∞. Pixels with I = 0 have no pole (only
    their polynomial terms count): 1/c is taken as ±∞ there, so w = 0.
    Newton converges quadratically: it stops when no α moved by more than
    ``tol`` (the next step is then ~tol² or less), after at most ``n_newton``
    iterations. On a batch of the 128² benchmark the steps of iterations 1–4
    moved α by 0.42, 0.08, 4e-4 and 1e-7: ``tol`` = 1e-3 stops after the
    third with the result of the fourth to 1e-7. Without the former clamp
    |Ψ + αd|² ≥ 1e-12 (which mattered only on noise-free data of ~1e-4
    counts per pixel) the step is the exact minimiser.

    Parameters
    ----------
    p0 : (b, ny, nx) float32
        Model intensity |Ψ|² (counts), without the background.
    c : (b, ny, nx) float32
        The factor above (0 on unmeasured pixels).
    intensity, amplitude : (b, ny, nx) float32
        Measured I and √I (counts; 0 on unmeasured pixels).
    n_newton : int
        Most Newton iterations.
    tol : float
        Stop when every |Δα| < ``tol``.

    Returns
    -------
    (b,) float32
    """
    xp = backend.xp_of(p0)
    b = p0.shape[0]
    p0, c, intensity, amplitude = (v.reshape(b, -1) for v in (p0, c, intensity, amplitude))
    pc = p0 * c
    s1 = pc.sum(axis=1)
    s2 = _row_dot(pc, c, xp)
    if xp is np:
        counted = amplitude > 0
        # Per-position counts of such pixels (a bool's bytes summed as int8: 3× faster than count_nonzero).
        n_counted = counted.view(np.int8).sum(axis=1, dtype=np.int64)
        if n_counted.sum() < 0.5 * amplitude.size:
            return _poisson_newton_sparse(s1, s2, c, intensity, counted, n_counted, n_newton, tol)
    # c on pixels with I > 0, −0 or 0 elsewhere (sign(√I) is 1 or 0); its reciprocal is ±∞ there.
    r = xp.sign(amplitude, out=pc)
    r *= c
    c_min = r.min(axis=1)
    with np.errstate(divide="ignore"):
        xp.reciprocal(r, out=r)
    # The first pole, u = 0 at α = −1/c_min, when some c < 0.
    alpha_hi = xp.minimum(np.float32(2.0), np.float32(0.999) / xp.maximum(-c_min, np.float32(1e-30)))
    alpha = xp.minimum(xp.ones(b, dtype=np.float32), alpha_hi)
    w = xp.empty_like(r)
    v = xp.empty_like(r)
    for _ in range(n_newton):
        xp.add(r, alpha[:, None], out=w)
        xp.reciprocal(w, out=w)                                       # w = c / u
        xp.multiply(intensity, w, out=v)                              # I c / u
        grad = s1 + alpha * s2 - v.sum(axis=1)
        hess = s2 + _row_dot(v, w, xp)
        new = xp.clip(alpha - grad / xp.maximum(hess, np.float32(1e-30)), np.float32(0), alpha_hi)
        new = new.astype(np.float32)
        moved = float(xp.max(xp.abs(new - alpha)))
        alpha = new
        if moved < tol:
            break
    return alpha


def _poisson_newton_sparse(s1, s2, c, intensity, counted, n_counted, n_newton, tol):
    """The Newton iterations of :func:`_poisson_step` on the pixels with counts only (NumPy).

    Only pixels with I > 0 enter Σ I w and Σ I w² (and have poles); at
    1e4 counts per 128² pattern that is 13 % of them (9 % at 256²), so the
    iterations run on compressed arrays (boolean-mask gathers, row-major: the
    batch's positions one after another), summed per position with
    ``np.add.reduceat`` (:func:`_newton_compressed`). Arguments as there,
    reshaped to (b, n), plus ``counted`` (b, n) bool (I > 0) and
    ``n_counted`` (b,) its row sums; returns (b,) float32.
    """
    off, has, total = _segments(n_counted)
    # One trailing 0 so that the offsets of positions without counts (at the end) stay in range; their
    # reduceat results (the next segment's first element) are zeroed with ``has``.
    cs = np.empty(total + 1, dtype=np.float32)
    cs[:-1] = c[counted]
    cs[-1] = 0
    i_s = np.empty(total + 1, dtype=np.float32)
    i_s[:-1] = intensity[counted]
    i_s[-1] = 0
    return _newton_compressed(s1, s2, cs, i_s, off, has, n_counted, n_newton, tol)


def _segments(n_counted):
    """(offsets, has, total) of per-position segments of lengths ``n_counted`` in a compressed array.

    The offsets are clipped to ``total``: a compressed array carries one
    trailing element (0) so that ``np.add.reduceat`` stays in range for
    positions without counts at the end; ``has`` (b,) bool marks the
    positions whose segment is not empty (the others' reduceat results are
    the next element and must be zeroed).
    """
    total = int(n_counted.sum())
    off = np.minimum(np.concatenate(([0], np.cumsum(n_counted)[:-1])), total)
    return off, n_counted > 0, total


def _newton_compressed(s1, s2, cs, i_s, off, has, n_counted, n_newton, tol):
    """Newton's method of :func:`_poisson_step` on compressed pixels (NumPy).

    ``cs`` and ``i_s`` (total + 1,) float32: c and I on the pixels with
    counts, position after position (segments of :func:`_segments`), with
    one trailing 0; ``s1``, ``s2`` (b,) the sums S₁ and S₂ over *all*
    pixels. Returns α (b,) float32. All positions iterate together (one
    ``np.add.reduceat`` per sum and iteration over the segments); the
    masking of empty segments is skipped when every position has counts.
    """
    b = len(n_counted)
    total = len(cs) - 1
    mask = None if has.all() else has
    c_min = np.minimum.reduceat(cs, off)
    if mask is not None:
        c_min = np.where(mask, c_min, np.float32(0))
    c_min = np.minimum(c_min, np.float32(0))
    alpha_hi = np.minimum(np.float32(2.0), np.float32(0.999) / np.maximum(-c_min, np.float32(1e-30)))
    alpha = np.minimum(np.ones(b, dtype=np.float32), alpha_hi)
    with np.errstate(divide="ignore"):
        r = np.divide(np.float32(1), cs[:-1])               # c = 0 (an exact fit): ∞, so w = 0
    w = np.empty(total + 1, dtype=np.float32)
    w[-1] = 0
    wt = w[:-1]
    v = np.empty_like(w)
    for _ in range(n_newton):
        np.add(r, np.repeat(alpha, n_counted), out=wt)
        np.divide(np.float32(1), wt, out=wt)                # w = c / u (a divide is faster than reciprocal)
        np.multiply(i_s, w, out=v)
        iw = np.add.reduceat(v, off)                        # Σ I w
        v *= w
        iw2 = np.add.reduceat(v, off)                       # Σ I w²
        if mask is not None:
            iw *= mask
            iw2 *= mask
        hess = np.maximum(s2 + iw2, np.float32(1e-30))
        step = (s1 + alpha * s2 - iw) / hess
        new = np.minimum(np.maximum(alpha - step, np.float32(0)), alpha_hi)    # clip: 2× faster on (b,)
        moved = float(np.abs(new - alpha).max())
        alpha = new
        if moved < tol:
            break
    return alpha


def _counted_pixels(amp, geom):
    """The pixels with counts of every position, compressed, cached on ``geom`` for the reconstruction (NumPy).

    The measured amplitudes do not change between iterations, so the indices
    of the pixels with I > 0 are found once per :func:`reconstruct` call (one
    geometry per call) instead of a ``np.flatnonzero`` over each chunk's
    counts per iteration. Returns a dict: ``"start"`` (n + 1,) int64, the
    offsets of each position's run in ``"local"`` (flat pixel indices within
    a pattern, increasing; uint16, or int32 above 256² pixels) and ``"a"``
    (float32 √I there); ``"amp"`` the array they were taken from
    (recomputed if another one is passed). Memory: 6 B per counted pixel.
    """
    cache = geom.__dict__.get("_lsqml_counted")
    if cache is None or cache["amp"] is not amp:
        n = len(amp)
        flat = amp.reshape(n, -1)
        # Blocks of _CHUNK_PIXELS pixels: no temporaries of the data set's size (its peak memory).
        blk = max(1, _CHUNK_PIXELS // flat.shape[1])
        start = np.zeros(n + 1, dtype=np.int64)
        for i in range(0, n, blk):
            start[i + 1:i + 1 + blk] = (flat[i:i + blk] > 0).view(np.int8).sum(axis=1, dtype=np.int64)
        np.cumsum(start, out=start)
        # uint16 indices up to 256² pixels per pattern (a quarter of the amplitudes' bytes at 13 % counted).
        local = np.empty(int(start[-1]), dtype=np.uint16 if flat.shape[1] <= 1 << 16 else np.int32)
        a_c = np.empty(int(start[-1]), dtype=np.float32)
        for i in range(0, n, blk):
            part = flat[i:i + blk].reshape(-1)
            idx = np.flatnonzero(part > 0)
            lo, hi = start[i], start[min(i + blk, n)]
            np.remainder(idx, flat.shape[1], out=local[lo:hi], casting="unsafe")
            part.take(idx, out=a_c[lo:hi])
        cache = {"amp": amp, "start": start, "local": local, "a": a_c}
        geom.__dict__["_lsqml_counted"] = cache
    return cache


def _chunk_counted(cache, sub, n):
    """(idx, n_counted, a_c) of a chunk's positions ``sub`` from :func:`_counted_pixels`.

    ``idx`` (total,) intp: flat indices of the counted pixels into the chunk's
    (b, ny, nx) far fields of ``n`` pixels each, position after position;
    ``n_counted`` (b,) int64 their numbers per position; ``a_c`` (total,)
    float32 √I there.
    """
    start = cache["start"]
    lo, hi = start[sub], start[np.asarray(sub) + 1]
    n_counted = hi - lo
    bounds = list(zip(lo.tolist(), hi.tolist()))
    local = np.concatenate([cache["local"][i:j] for i, j in bounds])
    a_c = np.concatenate([cache["a"][i:j] for i, j in bounds])
    idx = np.add(local, np.repeat(np.arange(len(n_counted), dtype=np.intp) * n, n_counted), dtype=np.intp)
    return idx, n_counted, a_c


def _poisson_update_sparse(psi_k, counted, floor, n_newton=4, tol=1e-3):
    """The Poisson exit-wave factor of LSQ-ML computed on the pixels with counts only (NumPy).

    For a chunk with no background, no unmeasured pixels and no background
    ratio to accumulate: on a pixel without counts (I = 0) the Poisson factor
    is c = I/max(|Ψ|², floor) − 1 = −1 exactly, so c, the data error and the
    line-search sums need per pixel only |Ψ|² and, on the counted pixels,
    gathered values. With S = Σ|Ψ|² (all pixels, one pass over the float
    view of Ψ) and P = Σ_counted |Ψ|² per position:

        S₁ = Σ |Ψ|²c  = −(S − P) + Σ_counted |Ψ|²c,
        S₂ = Σ |Ψ|²c² =  (S − P) + Σ_counted |Ψ|²c²,
        err = Σ (|Ψ| − √I)² = (S − P) + Σ_counted (|Ψ| − √I)²,

    which replaces ~10 dense float32 passes (|Ψ|², √, the difference and its
    square sum, I = a², max, divide, −1, the two sums) by compressed ones on
    the 13 % counted pixels of the 128² benchmark; the Newton step α_j is that
    of :func:`_poisson_step` (:func:`_newton_compressed`). Equal to the dense
    path up to float32 summation order.

    Parameters
    ----------
    psi_k : (b, ny, nx) complex64, C-contiguous
        Far fields Ψ (counts^½), FFT order; overwritten with the update.
    counted : tuple
        (idx, n_counted, a_c) of :func:`_chunk_counted`: the flat indices of
        the pixels with counts (I > 0) into ``psi_k``, position after position,
        their numbers per position and their measured amplitudes √I (the
        indices are found once per reconstruction, :func:`_counted_pixels`).
    floor : float
        Smallest model intensity in the factor, counts.

    Returns
    -------
    float or None
        Σ (|Ψ| − √I)², with ``psi_k`` overwritten by its update α_j c Ψ,
        c = I/max(|Ψ|², floor) − 1; None (``psi_k`` untouched) when half or
        more of the pixels have counts (the threshold of :func:`_poisson_step`'s
        compressed Newton iterations; the caller then takes the dense path).
    """
    b = psi_k.shape[0]
    idx, n_counted, a_c = counted
    total = idx.size
    if total >= 0.5 * psi_k.size or not psi_k.flags.c_contiguous:
        return None
    off, has, _ = _segments(n_counted)
    pv = psi_k.reshape(b, -1).view(np.float32)
    s_all = _np_row_dot(pv, pv)                             # S = Σ|Ψ|² per position
    # Compressed arrays of the counted pixels, one trailing 0 (see _segments); rows of `comp`:
    # |Ψ|², then |Ψ|²c, |Ψ|²c², (|Ψ| − √I)² for the per-position sums.
    comp = np.empty((4, total + 1), dtype=np.float32)
    comp[:, -1] = 0
    p0 = comp[0, :-1]
    psi_c = psi_k.reshape(-1).take(idx)
    _intensity_into(psi_c, p0)
    i_s = np.empty(total + 1, dtype=np.float32)
    i_s[-1] = 0
    np.multiply(a_c, a_c, out=i_s[:-1])
    cs = np.empty(total + 1, dtype=np.float32)
    cs[-1] = 0
    np.maximum(p0, np.float32(floor), out=cs[:-1])
    np.divide(i_s[:-1], cs[:-1], out=cs[:-1])
    cs[:-1] -= np.float32(1)
    np.multiply(p0, cs[:-1], out=comp[1, :-1])
    np.multiply(comp[1, :-1], cs[:-1], out=comp[2, :-1])
    np.sqrt(p0, out=comp[3, :-1])
    comp[3, :-1] -= a_c
    comp[3, :-1] *= comp[3, :-1]
    sums = np.add.reduceat(comp, off, axis=1)              # (4, b)
    if not has.all():
        sums *= has
    rest = s_all - sums[0]                                 # Σ |Ψ|² of the pixels without counts
    s1 = sums[1] - rest
    s2 = sums[2] + rest
    err = float(np.sum(rest, dtype=np.float64) + np.sum(sums[3], dtype=np.float64))
    alpha = _newton_compressed(s1, s2, cs, i_s, off, has, n_counted, n_newton, tol)
    # Ψ ← α_j c Ψ: −α_j on every pixel (a row scale of the interleaved float view), then the counted
    # pixels overwritten from their gathered Ψ.
    pv *= -alpha[:, None]
    cs[:-1] *= np.repeat(alpha, n_counted)
    psi_c *= cs[:-1]
    psi_k.reshape(-1)[idx] = psi_c
    return err


def _add_intensity_sum(out, waves, xp):
    """``out`` += Σ_j |w_j|² of complex64 ``waves`` (b, ny, nx) over the first axis, in place.

    On NumPy (C-contiguous waves) one ``einsum`` pass over the interleaved
    float32 view (Σ_j of re² and im² per float, then the pairs added):
    ~30 % faster than abs, square and sum on a 16 × 128² chunk (77–93 µs
    against 115–130 µs measured; ``np.abs`` of complex64 is a slow hypot).
    """
    if xp is np and waves.flags.c_contiguous and waves.dtype == np.complex64:
        b = waves.shape[0]
        wv = waves.reshape(b, -1).view(np.float32)
        s = np.einsum("kp,kp->p", wv, wv)
        out += (s[0::2] + s[1::2]).reshape(out.shape)
    else:
        out += _intensity(waves).sum(axis=0)
    return out


def _intensity_into(waves, out):
    """|w|² of complex64 ``waves`` into the float32 array ``out`` (same shape)."""
    np.abs(waves, out=out)
    out *= out
    return out


def _row_dot(x, y, xp):
    """Σ_i x[k, i]·y[k, i] per row k of two (b, n) real arrays (one pass on NumPy, :func:`_np_row_dot`)."""
    if xp is np:
        return _np_row_dot(x, y)
    return xp.sum(x * y, axis=1)


def _np_row_dot(x, y):
    """Σ_i x[k, i]·y[k, i] per row k of two (b, n) float32 NumPy arrays.

    ``np.vecdot`` (NumPy ≥ 2: a dot per row) where there is one: 31 µs
    against 74 µs for ``einsum`` on 16 rows of 32768 (a 16 × 128² chunk's
    float view), with process CPU time equal to wall time (no BLAS worker
    threads spinning), and 10× closer to the float64 sum (relative error
    2e-6 against 2e-5 for Σ|Ψ|² of a chunk's far fields), measured;
    ``einsum``'s one-pass loop otherwise.
    """
    if _VECDOT is not None:
        return _VECDOT(x, y)
    return np.einsum("ki,ki->k", x, y)


_VECDOT = getattr(np, "vecdot", None)


def _re_inner(x, y, xp):
    """Re Σ conj(x)·y per position of two (b, ...) complex arrays: (b,) float32.

    On NumPy, one pass over the interleaved float32 views (Re conj(x)y = x.re y.re + x.im y.im)
    instead of conj, multiply, real and sum passes.
    """
    b = x.shape[0]
    if xp is np and x.shape == y.shape and x.flags.c_contiguous and y.flags.c_contiguous:
        return _np_row_dot(x.view(np.float32).reshape(b, -1), y.view(np.float32).reshape(b, -1))
    return xp.real(xp.sum(xp.conj(x) * y, axis=tuple(range(1, x.ndim)))).astype(np.float32)


def _scan_illumination(prb, geom, n_batch, xp):
    """Σ_j |P_j|² over the *whole* scan for the LSQ-ML object preconditioner, refreshed once per pass.

    ``_lsqml_batch`` is called once per mini-batch from the engine loop; the
    sum is recomputed from the current probe when the batches since the last
    refresh have covered ``geom.n_positions`` positions (once per pass) and
    cached on ``geom`` (one geometry per :func:`reconstruct` call). Sub-pixel
    shifts are ignored (integer patch corners): it is a preconditioner only.

    The sum is the convolution of |P|² with the comb of patch corners,
    computed with real FFTs on the object grid padded to a fast length (no
    wrap-around: every window ends inside the grid): three FFTs of the object
    grid instead of n scatter-adds of a patch (9 → 1 ms per pass at 400 × 128²,
    measured); float32 rounding (~1e-6 of the maximum) is clipped at 0.
    """
    cache = geom.__dict__.setdefault("_lsqml_illumination", {"left": 0, "illum": None})
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


def _lsqml_batch(obj, prb, idx, geom, amp, meas_w, prop, *, noise_model, floor, update_probe, subpixel, bg, ratio,
                 xp, delta=0.1, max_step=2.0):
    """One LSQ-ML update of object and probe from a mini-batch (single probe mode).

    Odstrčil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108 (2018):

    1. Exit-wave update χ_j per position: Poisson, χ = F⁻¹[α_j (I/|Ψ|² − 1) Ψ]
       (the likelihood gradient, eq. 19 of Thibault & Guizar-Sicairos, New J.
       Phys. 14, 063004 (2012)) with the Newton step α_j of :func:`_poisson_step`;
       Gaussian (``"amplitude"``), χ = F⁻¹[√I Ψ/|Ψ|] − ψ.
    2. Object and probe directions (eqs. 20–21):
       ΔO = Σ_b conj(P_j) χ_j / (Σ_scan |P_j|² + δ max), ΔP = Σ_b conj(O_j) χ_j / (Σ_b |O_j|² + δ max).
    3. Steps (eq. 22): per position the 2×2 least squares min ‖χ_j − β_O A_j − β_P B_j‖²
       (A = P·ΔO, B = ΔP·O), averaged over the batch and clipped to [0, 1].

    Two choices here differ from a literal per-batch reading, both found on
    simulated 20 e/Å² data (``tests/test_lowdose.py``):

    - the object denominator is the illumination of the *whole scan*
      (:func:`_scan_illumination`), not of the batch. With the batch's own
      Σ_b|P_j|², every mini-batch moves each pixel it lights all the way to
      the least-squares fit of that batch's few patterns (the step of eq. 22 is
      then ≥ 1, clipped to 1), forgetting the other positions; at low dose
      that fits each batch's shot noise in turn and the result depends on
      the batch size (20 iterations, 1 Å pixels, 80 counts per pattern:
      0.128 rad for batches of 32 against 0.106 for one batch of all 144
      positions; 0.201 with the former δ = 0.01). With the scan's
      illumination a pass over all batches is at most ``max_step``
      least-squares steps of the whole data set, whatever the batch size
      (0.106 rad for batches of 8, 32 or 144 with ``max_step`` = 1).
    - δ = 0.1 (PtychoShelves' suggested LSQ damping, "0.1 is usually safe")
      instead of 0.01: the probe's tails are not inverted.

    ``max_step`` bounds β_O (the mean of eq. 22's per-position steps; with
    the whole-scan denominator the per-batch optimum is larger than 1). 2 is
    the over-relaxation bound of successive over-relaxation (the batches of a
    pass act as block Gauss–Seidel sweeps). Measured: low dose (data above,
    20 iterations) 0.106 / 0.110 / 0.117 rad for bounds 1 / 2 / 4; noise-free
    (seed-3 test scan, 150 iterations, Gaussian/Poisson) 0.0081/0.0104,
    0.0060/0.0081, 0.0050/0.0069 rad; ER 20 iterations then 20 of LSQ-ML
    (``test_engines_chain_through_object_init``) ends at a data error of
    3.0e-5 / 1.9e-5 (bounds 1 / 2) against 2.1e-5 for 40 iterations of ER: 1
    would make LSQ-ML slower than ER on clean data.
    Cost per position (far field): the two FFTs of the bound, three more with
    ``subpixel="fourier"`` (the probe shift, its adjoint and the shifted ΔP of
    eq. 22), one gather of the patches, the scatter-add of the object
    direction (on NumPy in-place slice adds position by position,
    :func:`_add_object_gradient`), the windowed product P·ΔO of eq. 22, and
    ~25 elementwise passes (complex-equivalent). With Poisson noise on NumPy
    and most pixels without counts (no background, all pixels measured), the
    data factor, the data error and the Newton line search are computed on the
    counted pixels only (:func:`_poisson_update_sparse`, with the indices of
    those pixels found once per reconstruction, :func:`_counted_pixels`); the five inner
    products of eq. 22 are one pass each over float views. The work runs in
    cache-sized chunks of ``_CHUNK_PIXELS`` detector pixels, in
    two phases (exit-wave updates and the directions' numerators; then the
    inner products of eq. 22 once the directions are known), keeping χ_j and
    the patches of the whole batch in between.

    Parameters
    ----------
    obj : (H, W) complex64
    prb : (Ny, Nx) complex64
    idx : (b,) int
        The batch's positions.
    geom : ScanGeometry
    amp : (n, Ny, Nx) float32
        Measured amplitudes √I, FFT order, 0 on unmeasured pixels.
    meas_w : (Ny, Nx) float32 (1 measured, 0 not) or None (all measured)
    prop : FarField or NearField
    noise_model : {"poisson", "amplitude"}
    floor : float
        Smallest model intensity in the Poisson factor, counts.
    update_probe : bool
    subpixel : {"fourier", "bilinear", "none"}
    bg : (Ny, Nx) float32 or None
        Incoherent background, counts; the model intensity is |Ψ|² + b.
    ratio : (Ny, Nx) float32 or None
        Accumulates Σ_j of I/h (Poisson) or √I/√h (amplitude) on measured
        pixels, for the background update.
    xp : module

    Returns
    -------
    obj, prb : complex64, updated
    err : float
        Σ (√h − √I)² over measured pixels (before the update).
    """
    fft_shape = geom.probe_shape
    far = isinstance(prop, FarField)
    b = len(idx)
    # Cache blocking as in _pie_batch: the per-position work runs on chunks of _CHUNK_PIXELS detector
    # pixels; only χ_j, the patches and (subpixel="fourier") the shifted probes of the whole batch are
    # kept between the two phases (the object and probe directions need all of the batch).
    chunk = max(1, _CHUNK_PIXELS // (fft_shape[0] * fft_shape[1]))
    probe_k = backend.fft2(prb) if subpixel == "fourier" else None
    num = xp.zeros(geom.object_shape, dtype=np.complex64)       # Σ_b conj(P_j) χ_j on the object grid
    p_num = xp.zeros(fft_shape, dtype=np.complex64) if update_probe else None
    p_num_k = None
    p_den = xp.zeros(fft_shape, dtype=np.float32) if update_probe else None
    err = 0.0
    parts = []          # per chunk: (window, ramps, probes, patches, χ)
    # The counted pixels of every position, found once per reconstruction, for the sparse Poisson update.
    counted = (_counted_pixels(amp, geom) if noise_model == "poisson" and xp is np and far and bg is None
               and meas_w is None and ratio is None else None)
    for c0 in range(0, b, chunk):
        sub = idx[c0:c0 + chunk]
        # subpixel="none": every position uses the unshifted probe at its nearest whole pixel (ramps None:
        # the shift operators are the identity), which saves 2 of 4 FFTs per position; "bilinear": the
        # unshifted probe on interpolated object patches (the same 2 FFTs).
        if subpixel == "fourier":
            win = geom.windows(sub, xp)
            ramps = ops.shift_ramps_separable(geom.frac[sub], fft_shape, xp)
            probes = ops.shifted_probes(probe_k, ramps)
        else:
            win = geom.bilinear_windows(sub, xp) if subpixel == "bilinear" else geom.windows(sub, xp, rounded=True)
            ramps, probes = None, prb[None]
        patches = ops.extract_patches(obj, win)
        psi = probes * patches
        # ψ is not needed after its transform (the amplitude update is F⁻¹[(f − 1)Ψ], see below).
        psi_k = backend.fft2(psi, overwrite_x=True) if far else prop.forward(psi)
        del psi
        sparse = None
        if counted is not None:
            # Most pixels without counts: the factor, the error and the line search on the counted ones.
            sparse = _poisson_update_sparse(psi_k, _chunk_counted(counted, sub, psi_k[0].size), floor)
        if sparse is not None:
            err += sparse                            # and psi_k is α_j c Ψ
        else:
            a = amp[sub]
            p0 = _intensity(psi_k)                       # |Ψ|², without the background
            h = p0 if bg is None else p0 + bg            # the model intensity
            mod = xp.sqrt(h)
            d = mod - a
            if meas_w is not None:
                d *= meas_w
            d = d.reshape(-1)
            err += float(np.einsum("i,i->", d, d) if xp is np else xp.sum(d * d))
            del d
            # The data factor f (as _modulus_factor): I/max(h, floor) (Poisson) or √I/|Ψ| (amplitude), in place.
            if noise_model == "poisson":
                intensity = a * a
                f = xp.maximum(h, np.float32(floor), out=mod)
                xp.divide(intensity, f, out=f)
            else:
                mod += np.float32(1e-12)        # as max(|Ψ|, 1e-12) to float32 precision (see _fourier_residual)
                f = xp.divide(a, mod, out=mod)
            del h, mod
            if ratio is not None:
                part = f.sum(axis=0)
                if meas_w is not None:
                    part *= meas_w
                ratio += part
            f -= np.float32(1)                   # c = f − 1, 0 off the measured pixels: Ψ keeps its value there
            if meas_w is not None:
                f *= meas_w
            c = f
            if noise_model == "poisson":
                # Poisson: χ = F⁻¹[α_j c Ψ] with the Newton step α_j.
                c *= _poisson_step(p0, c, intensity, a)[:, None, None]
                del intensity
            # Amplitude: χ = F⁻¹[f Ψ] − ψ = F⁻¹[(f − 1) Ψ] (unitary propagator), which saves keeping ψ.
            del p0
            psi_k *= c
            del c
        chi = backend.ifft2(psi_k, overwrite_x=True) if far else prop.adjoint(psi_k)
        del psi_k
        _add_object_gradient(num, chi, probes, win, xp)
        if update_probe:
            # The probe is lit by every position of the batch: its own denominator is the right scale.
            _add_intensity_sum(p_den, patches, xp)
            if ramps is None:
                # Σ_j conj(O_j) χ_j: conj in place, multiply, sum (a complex einsum is 3× slower); the
                # patches are conjugated back for B.
                xp.conj(patches, out=patches)
                p_num += (patches * chi).sum(axis=0)
                xp.conj(patches, out=patches)
            else:
                # Summed in Fourier space over the chunks and transformed back once (as _pie_batch).
                spec = ops.unshift_sum_k(xp.conj(patches) * chi, ramps)
                p_num_k = spec if p_num_k is None else p_num_k + spec
        parts.append((win, ramps, probes, patches, chi))
    den = _scan_illumination(prb, geom, b, xp)
    den = np.float32(1) / (den + np.float32(delta * float(den.max())))
    # ΔO = num·den in place, on the strided real and imaginary views (a complex × float32 multiply takes
    # NumPy's slow mixed-type loop).
    d_obj = num
    xp.multiply(d_obj.real, den, out=d_obj.real)
    xp.multiply(d_obj.imag, den, out=d_obj.imag)
    del num, den
    if update_probe:
        if p_num_k is not None:
            p_num += backend.ifft2(p_num_k, overwrite_x=True)
        d_prb = p_num / (p_den + np.float32(delta * float(p_den.max())))
        d_prb_k = backend.fft2(d_prb) if subpixel == "fourier" else None
    # Optimal steps per position (eq. 22): min ‖χ − β_O A − β_P B‖² with A = P_j·ΔO_j, B = ΔP_j·O_j,
    # then their batch mean; the five inner products chunk by chunk.
    m11, m22, m12, r1, r2 = (xp.zeros(b, dtype=np.float32) for _ in range(5))
    for c0, (win, ramps, probes, patches, chi) in zip(range(0, b, chunk), parts):
        sl = slice(c0, c0 + len(chi))
        A = _probe_times_patches(d_obj, win, probes, xp)
        m11[sl] = _re_inner(A, A, xp)
        r1[sl] = _re_inner(A, chi, xp)
        if update_probe:
            if ramps is None:
                B = patches
                B *= d_prb               # ΔP·O_j in place: the patches are not needed any more
            else:
                B = ops.shifted_probes(d_prb_k, ramps)
                B *= patches
            m22[sl] = _re_inner(B, B, xp)
            m12[sl] = _re_inner(A, B, xp)
            r2[sl] = _re_inner(B, chi, xp)
            del B
        del A
    del parts
    lam = 1e-6 * (m11 + m22) + 1e-30
    det = (m11 + lam) * (m22 + lam) - m12**2
    beta_o = ((m22 + lam) * r1 - m12 * r2) / det
    beta_p = ((m11 + lam) * r2 - m12 * r1) / det
    beta_o = float(xp.clip(xp.mean(beta_o), 0.0, max_step))
    d_obj *= np.float32(beta_o)
    obj += d_obj
    if update_probe:
        d_prb *= np.float32(xp.clip(xp.mean(beta_p), 0.0, 1.0))
        prb = prb + d_prb.astype(np.complex64)
    return obj, prb, err


def _add_object_gradient(num, chi, probes, win, xp):
    """``num`` += Σ_j Aᴴ_j[conj(P_j) χ_j]: the object direction's numerator of a chunk, in place.

    ``num`` (H, W) complex64; ``chi`` (b, ny, nx) complex64; ``probes``
    (b, ny, nx) or one (1, ny, nx) for all; ``win`` a :class:`~ptyhpc.ptycho.operators.Windows`
    or :class:`~ptyhpc.ptycho.operators.BilinearWindows`. On NumPy the windows
    are rectangles, so the scatter-add is in-place slice adds position by
    position (windows may overlap: the adds run one after another), with
    conj(P_j) χ_j formed in one cache-resident buffer: 16 × 128² in 0.3 ms
    against 1.0 ms for the product and the two real ``np.add.at`` scatters of
    its parts (measured on the 2-core development machine); bilinear windows
    spread along x into a buffer and add it at two rows with the y weights
    (the exact adjoint, as :meth:`~ptyhpc.ptycho.operators.BilinearWindows.adjoint`).
    CuPy: the product and :func:`~ptyhpc.ptycho.operators.patches_adjoint`.
    """
    if xp is np and isinstance(win, ops.Windows):
        (ny, nx), buf = win.shape, np.empty(win.shape, dtype=np.complex64)
        single = probes.shape[0] == 1
        cprobe = np.conj(probes[0]) if single else None
        for j, (y, x) in enumerate(win.corners.tolist()):
            if single:
                np.multiply(chi[j], cprobe, out=buf)
            else:           # conj(P_j) in the buffer: no (b, ny, nx) conjugate
                np.conj(probes[j], out=buf)
                buf *= chi[j]
            s = num[y:y + ny, x:x + nx]
            s += buf
        return num
    cprobes = xp.conj(probes)
    if xp is np and isinstance(win, ops.BilinearWindows):
        # The adjoint of the interpolation position by position on the object grid: spread along x into
        # an (ny, nx+1) buffer, then its (1 − f_y) and f_y parts added at rows y and y + 1 (the steps of
        # BilinearWindows.spread, on cache-resident buffers instead of (b, ny+1, nx+1) arrays).
        (ny, nx), single = win.shape, cprobes.shape[0] == 1
        g = np.empty((ny, nx), dtype=np.complex64)
        t = np.empty((ny, nx), dtype=np.complex64)
        r = np.empty((ny, nx + 1), dtype=np.complex64)
        ry = np.empty((ny, nx + 1), dtype=np.complex64)
        for j, ((y, x), (fy, fx)) in enumerate(zip(win.corners.tolist(), win.frac.tolist())):
            np.multiply(chi[j], cprobes[0 if single else j], out=g)
            np.multiply(g, np.float32(fx), out=t)
            np.subtract(g, t, out=r[:, :-1])
            r[:, -1] = 0
            r[:, 1:] += t
            np.multiply(r, np.float32(fy), out=ry)
            r -= ry
            s = num[y:y + ny, x:x + nx + 1]
            s += r
            s = num[y + 1:y + ny + 1, x:x + nx + 1]
            s += ry
        return num
    grad, scatter_win = _spread_for_scatter(chi * cprobes, win)
    return ops.patches_adjoint(grad, scatter_win, num.shape, out=num)


def _probe_times_patches(obj, win, probes, xp):
    """P_j·O_j for a chunk: ``probes`` (b, ny, nx) or (1, ny, nx) times the patches of ``win``, a new array.

    On NumPy with a plain :class:`~ptyhpc.ptycho.operators.Windows` index the
    product is written position by position from views of ``obj`` (one pass,
    no gathered copy of the patches); otherwise gather, then multiply.
    """
    if xp is np and isinstance(win, ops.Windows) and obj.flags.c_contiguous:
        (ny, nx), single = win.shape, probes.shape[0] == 1
        out = np.empty((len(win), ny, nx), dtype=np.result_type(obj, probes))
        for j, (y, x) in enumerate(win.corners.tolist()):
            np.multiply(obj[y:y + ny, x:x + nx], probes[0 if single else j], out=out[j])
        return out
    out = ops.extract_patches(obj, win)
    out *= probes
    return out


def _spread_for_scatter(grad, win):
    """(values, index) for scattering the real and imaginary parts of a complex gradient separately.

    With :class:`~ptyhpc.ptycho.operators.BilinearWindows` the complex gradient
    is spread once (its interleaved float view, contiguous) and the parts of the
    (b, ny+1, nx+1) result are scattered with the enlarged plain windows: half
    the passes of spreading the strided real and imaginary views one by one.
    Other indices: ``grad`` and ``win`` unchanged.
    """
    if isinstance(win, ops.BilinearWindows):
        return win.spread(grad), win.windows
    return grad, win


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


def _illumination(prb, geom, batch_size, xp, subpixel="fourier"):
    """Σ_j |P_j|² on the object grid, (H, W) float32."""
    illum = xp.zeros(geom.object_shape, dtype=np.float32)
    probe_k = backend.fft2(prb)
    for start in range(0, geom.n_positions, batch_size):
        idx = np.arange(start, min(start + batch_size, geom.n_positions))
        if subpixel == "fourier":
            probes = ops.shifted_probes(probe_k, ops.shift_ramps_separable(geom.frac[idx], geom.probe_shape, xp))
        else:
            probes = prb[None]
        intensity = _intensity(probes, modes=prb.ndim == 3)
        # "bilinear": the adjoint of the interpolation spreads |P|² with the same weights as the object update.
        win = (geom.bilinear_windows(idx, xp) if subpixel == "bilinear"
               else geom.windows(idx, xp, rounded=subpixel != "fourier"))
        ops.patches_adjoint(intensity, win, geom.object_shape, out=illum)
    return illum


#: A sub-pixel shift below this (pixels) is treated as none: a chunk whose positions all sit on whole
#: pixels skips the shift FFTs (scans on an integer-pixel grid, or data binned to the scan step).
_WHOLE_PIXEL_TOL = 1e-3


def _intensity(waves, modes=False):
    """|w|² (float32 for complex64 ``waves``); summed over the mode axis 1 when ``modes``."""
    xp = backend.xp_of(waves)
    out = xp.abs(waves)       # contiguous abs + square: 2× faster than squaring the strided .real, .imag
    out *= out
    return out.sum(axis=1) if modes else out


def _fourier_residual(psi_k, a, meas_w, noise_model, floor, bg, ratio_out):
    """Turn the far field Ψ into its data-term update (factor − 1)·Ψ, in place; return the data error.

    The factor is that of :func:`_modulus_factor` with the model intensity
    h = Σ_modes |Ψ|² + b (b the incoherent background, or None):
    √I/√h (amplitude) or I/max(h, floor) (Poisson), so F⁻¹ of the result is
    Δψ (for the amplitude model F⁻¹[factor·Ψ] − ψ = F⁻¹[(factor − 1)Ψ], which
    saves keeping ψ and a subtraction pass). Unmeasured pixels get 0: they keep Ψ.

    Parameters
    ----------
    psi_k : (b, ny, nx) or (b, m, ny, nx) complex64
        Far fields (m probe modes share one factor), FFT order; overwritten.
    a : (b, ny, nx) float32
        Measured amplitudes √I (0 on unmeasured pixels).
    meas_w : (ny, nx) float32 (1 measured, 0 not) or None (all measured)
    floor : float
        Smallest model intensity in the Poisson factor (counts).
    bg : (ny, nx) float32 or None
        Background intensity b(q), counts, FFT order.
    ratio_out : (ny, nx) float32 or None
        Accumulates Σ_j of I/h (Poisson) or √I/√h (amplitude), for the background update.

    Returns
    -------
    float
        Σ (√h − √I)² over measured pixels.
    """
    xp = backend.xp_of(psi_k)
    modes = psi_k.ndim == 4
    if modes or bg is not None:
        h = _intensity(psi_k, modes)
        if bg is not None:
            h += bg
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
        f = xp.maximum(h, np.float32(floor), out=h)
        xp.divide(a * a, f, out=f)
    else:
        # |Ψ| + 1e-12 rather than max(|Ψ|, 1e-12): the same factor to float32 precision, and an add
        # is 2.5× faster than NumPy's NaN-propagating maximum.
        mod += np.float32(1e-12)
        f = xp.divide(a, mod, out=mod)
    if ratio_out is not None:
        ratio_out += f.sum(axis=0)
    f -= 1
    if meas_w is not None:
        f *= meas_w
    psi_k *= f[:, None] if psi_k.ndim == 4 else f
    return err


def _apply_probe_constraints(prb, probe_mask_k, support):
    """Fourier-space aperture (``probe_mask_k``), then the real-space ``support``, each when given."""
    if probe_mask_k is not None:
        prb = backend.ifft2(backend.fft2(prb) * probe_mask_k, overwrite_x=True)
    if support is not None:
        prb *= support
    return prb


def _clip_amplitude(obj, bounds):
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


def _pie_batch(obj, prb, batch, geom, amp, meas_w, prop, *, noise_model, floor, alpha, beta_object, beta_probe,
               update_probe, subpixel, bg, ratio, shifts, xp):
    """One mini-batch of rPIE/ePIE/mPIE: updates of all its positions from one object and probe, applied together.

    The work is done in chunks of ``_CHUNK_PIXELS`` detector pixels so the
    temporaries stay in cache (with 32 positions of 128² two workers on two
    cores slowed each other by 17 %). Per position: one FFT for the sub-pixel probe shift
    (``subpixel="fourier"``, skipped for chunks on whole pixels), the forward
    and inverse propagation, one FFT for the probe-update adjoint of the
    shift; the batch's shifted probe updates are summed in Fourier space and
    transformed back once. ``subpixel="bilinear"`` uses the unshifted probe and
    interpolated object patches (:class:`~ptyhpc.ptycho.operators.BilinearWindows`)
    whose adjoint scatters the object numerator and denominator. Returns
    (obj, prb, data error).
    """
    modes = prb.ndim == 3
    far = isinstance(prop, FarField)
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
    probe_k = backend.fft2(prb) if subpixel == "fourier" else None
    whole = None     # (probes, conj, intensity) of the unshifted probe, built when a chunk needs it
    err = 0.0
    chunk = max(1, _CHUNK_PIXELS // (int(np.prod(prb.shape)) if modes else fft_shape[0] * fft_shape[1]))
    off_grid = np.abs(geom.frac[batch] - np.rint(geom.frac[batch])).max(axis=1) > _WHOLE_PIXEL_TOL
    for c0 in range(0, len(batch), chunk):
        idx = batch[c0:c0 + chunk]
        frac = geom.frac[idx]
        shifted = subpixel == "fourier" and bool(off_grid[c0:c0 + chunk].any())
        # "bilinear": interpolated object patches with the unshifted probe (no shift FFTs); chunks on whole
        # pixels use plain windows, the same operator there.
        if subpixel == "bilinear" and bool(off_grid[c0:c0 + chunk].any()):
            win = geom.bilinear_windows(idx, xp)
        else:
            win = geom.windows(idx, xp, rounded=not shifted)
        if shifted:
            ramps = ops.shift_ramps_separable(frac, fft_shape, xp)
            probes = ops.shifted_probes(probe_k, ramps)
            conj_probes, probe_int = xp.conj(probes), _intensity(probes, modes)
        else:
            # One probe for every position of the chunk: (1, [m,] ny, nx), broadcast over the batch.
            ramps = None
            if whole is None:
                whole = (prb[None], xp.conj(prb[None]), _intensity(prb[None], modes))
            probes, conj_probes, probe_int = whole
        patches = ops.extract_patches(obj, win)
        psi = probes * patches[:, None] if modes else probes * patches
        # ψ and Ψ are dead after their transforms: the far-field FFTs may work in place.
        psi_k = backend.fft2(psi, overwrite_x=True) if far else prop.forward(psi)
        del psi
        err += _fourier_residual(psi_k, amp[idx], meas_w, noise_model, floor, bg, ratio)
        dpsi = backend.ifft2(psi_k, overwrite_x=True) if far else prop.adjoint(psi_k)
        del psi_k
        if shifts is not None:
            shifts[idx] = _position_gradient(patches, probes, dpsi, xp)
        grad = conj_probes * dpsi
        if modes:
            grad = grad.sum(axis=1)
        grad, scatter_win = _spread_for_scatter(grad, win)
        ops.patches_adjoint(grad.real, scatter_win, geom.object_shape, out=num_re)
        ops.patches_adjoint(grad.imag, scatter_win, geom.object_shape, out=num_im)
        del grad
        ops.patches_adjoint(probe_int, win, geom.object_shape, out=den)
        if update_probe:
            p_den += _intensity(patches).sum(axis=0)
            xp.conj(patches, out=patches)
            dpsi *= patches[:, None] if modes else patches      # conj(O_j)·Δψ_j, in place
            if ramps is None:
                p_num += dpsi.sum(axis=0)
            else:
                spec = ops.unshift_sum_k(dpsi, ramps)
                if p_num_k is None:
                    p_num_k = spec
                else:
                    p_num_k += spec
    # rPIE (Maiden et al. 2017, eq. 4) with the batch's summed denominators.
    den_max = float(den.max())
    den *= np.float32(1 - alpha)
    den += np.float32(alpha * den_max)
    den = np.float32(beta_object) / den
    num_re *= den
    num_im *= den
    obj.real += num_re
    obj.imag += num_im
    if update_probe:
        if p_num_k is not None:
            p_num += backend.ifft2(p_num_k, overwrite_x=True)
        # The batch's object intensities are unshifted: the sub-pixel shift is
        # ignored in the denominator, a preconditioner only.
        p_den_max = float(p_den.max())
        p_den *= np.float32(1 - alpha)
        p_den += np.float32(alpha * p_den_max)
        xp.divide(p_num, p_den, out=p_num)
        p_num *= np.float32(beta_probe)
        prb += p_num
    return obj, prb, err


def _fit_affine(start_px, target_px):
    """Least-squares affine map, target ≈ [start, 1] @ M: M (3, 2), rows A (2×2, transposed) and t."""
    design = np.hstack([start_px, np.ones((len(start_px), 1))])
    return np.linalg.lstsq(design, target_px, rcond=None)[0]


def _affine_info(start_px, final_px):
    m = _fit_affine(start_px, final_px)
    return {"A": m[:2].T.copy(), "t_px": m[2].copy()}


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
    probe : ndarray, (Ny, Nx) complex
        Initial real-space probe on the FFT grid (``fft_shape``), centred at N//2,
        with pixel ``pixel_size_m``; Σ|P|² sets the intensity scale.
    pixel_size_m : (float, float)
        Object pixel = 1 / (N · Δk) for an FFT grid of N pixels of Δk, m.
    engine : {"rpie", "epie", "mpie", "lsqml", "er", "dm"}
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
        ``"dm"``: the difference map (Thibault et al. 2009, eq. 12; see
        :mod:`ptyhpc.ptycho.projection` for its stabilisations), parameter
        ``dm_beta``. ``"er"`` and ``"dm"`` confine the probe's spectrum to
        ``probe_fourier_mask`` or, when it is None, to the support of the
        initial probe's spectrum (without a probe constraint DM diverges). ``alpha``, ``beta_*`` and ``noise_model`` apply to the PIE
        family only.
    n_iter : int
        Passes over all positions.
    batch_size : int
        Positions per mini-batch (random order each pass, fixed by ``seed``).
    alpha : float
        rPIE regularisation α ∈ (0, 1].
    beta_object, beta_probe : float
        Step sizes. Small steps average the Poisson noise of low-dose data over
        many mini-batches; 0.1 was the best of 0.05–1 on the 60 kV CNT series
        at 1500 e/Å² (see docs/engines.md).
    probe_update_start : int
        First iteration (0-based) that updates the probe.
    noise_model : {"poisson", "amplitude"}
        ``"amplitude"``: the classic modulus projection, Δψ = F⁻¹[√I Ψ/|Ψ|] − ψ
        (Gaussian noise on amplitudes). ``"poisson"``: the gradient of the
        Poisson negative log-likelihood, Δψ = F⁻¹[(I/|Ψ|² − 1) Ψ]
        (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012), eq. 19;
        Odstrčil et al., Opt. Express 26, 3108 (2018)), better at low counts.
    mask : ndarray of bool, (det_y, det_x), optional
        Measured detector pixels (False: gaps, dead or hot pixels). Unmeasured
        pixels are left free: the model's far field keeps its value there and
        they add nothing to the error (Thibault & Guizar-Sicairos, New J. Phys.
        14, 063004 (2012), sec. 3; the padded FFT border is handled the same way).
    probe_fourier_mask : ndarray, (Ny, Nx), FFT order, optional
        Multiplies the probe's spectrum after each probe update (e.g. the
        condenser aperture, slightly enlarged): keeps the probe band-limited.
    probe_support : ndarray, (Ny, Nx), bool or float, optional
        Real-space probe support, centred like the probe: the probe is
        multiplied by it at the start and after each probe update (after the
        Fourier mask), as ptypy's probe support (Enders & Thibault, Proc. R.
        Soc. A 472, 20160640 (2016)) and the support constraint of Fienup,
        Appl. Opt. 21, 2758 (1982). PIE family and ``"lsqml"``.
    object_amplitude_bounds : (float, float), optional
        (min, max): |O| is clipped into [min, max] with its phase kept after
        each object update, e.g. (0, 1) for an absorbing object or (1, 1) for
        a pure phase object (ptypy's ``clip_object``; tike's
        ``ObjectOptions.clip_magnitude`` is (0, 1)). PIE family and ``"lsqml"``.
    background : float or ndarray (det_y, det_x), optional
        Initial incoherent background b(q), counts per pixel (> 0 on measured
        pixels), refined every pass: the model intensity is h = Σ|Ψ|² + b, the
        modulus factors use h (√I/√h, or I/h for Poisson), and after each pass
        b ← b·⟨I/h⟩_j (Poisson: the EM / Richardson–Lucy update of an additive
        component) or b ← b·⟨√I/√h⟩_j² (amplitude: eq. 11 of the Bragg seed,
        Nat. Commun. 12, 7059 (2021), as :mod:`ptyhpc.bragg.solver`); the
        background term of Odstrčil et al., Opt. Express 26, 3108 (2018),
        in multiplicative form so that b stays ≥ 0. The refined b is returned
        in ``info["background"]`` (detector layout). PIE family and ``"lsqml"``
        (whose Poisson line search ignores b).
    subpixel : {"fourier", "bilinear", "none"}
        ``"fourier"``: probes shifted by each position's sub-pixel offset with
        a Fourier ramp (exact for a band-limited probe; one FFT per position
        forward and one for the probe update's adjoint; chunks of positions
        that all sit within 1e-3 px of whole pixels skip them).
        ``"bilinear"``: the probe stays put and the object patch is read at
        the fractional position by bilinear interpolation, the object update
        scattered back with the same weights (the exact adjoint;
        :class:`~ptyhpc.ptycho.operators.BilinearWindows`, as tike does): 2 FFTs
        per position like ``"none"``, but positions keep their sub-pixel part
        (and can be refined, ``position_correction_start``). The interpolation
        blurs patches at half-pixel positions slightly. Needs one more pixel of
        object grid beyond each window's far edge (the default grid has 2).
        Its interpolation and adjoint are ~12 elementwise passes per position:
        on the 2-core development machine (``benchmarks/ptycho_iteration.py``,
        CPU time per iteration / FFT bound, rPIE) 2.6× against 3.4–3.5× for
        ``"fourier"`` and 1.9–2.0× for ``"none"`` at 400 × 128², but no faster
        than ``"fourier"`` at 1000 × 256² (2.7× both; 1.6× ``"none"``), where
        those passes cost as much as the two shift FFTs; LSQ-ML 3.7–3.9×
        against 4.6–5.0× / 2.6–2.9× at 128², 3.7× against 3.9× / 2.7× at 256².
        ``"none"``: positions rounded to the nearest pixel (error ≤ 0.5 px),
        one probe for all; 2 instead of 4 FFTs per position, 1.8–2× faster.
        Accuracy on the noise-free seed-3 12 × 12 test scan with random
        sub-pixel positions (data simulated with Fourier-shifted probes; 150
        iterations from a 20 %-defocused probe; phase RMSE, rad, fourier /
        bilinear / none): rPIE (amplitude, full steps) 0.0035 / 0.0048 /
        0.0079, ePIE 0.0058 / 0.0060 / 0.0090, mPIE 0.0008 / 0.0034 / 0.0075,
        rPIE Poisson 0.0267 / 0.0266 / 0.0277, LSQ-ML amplitude 0.0060 /
        0.0068 / 0.0093, LSQ-ML Poisson 0.0075 / 0.0077 / 0.0105 (seed 8:
        the same order); all the same on whole-pixel scans. Engines ``"er"``
        and ``"dm"`` support ``"fourier"`` only (ValueError otherwise).
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
    position_model : {"free", "affine"}
        ``"affine"``: after each refinement step the positions are replaced by
        the least-squares affine map of the starting positions that best fits
        them, p = A·p₀ + t (scale, rotation, shear and translation of the whole
        scan: a miscalibrated stage or detector distance), the global geometry
        model of position refinement in PtychoShelves (Odstrčil et al., Opt.
        Express 26, 3108 (2018), section 4.3). Robust where per-position
        updates are noisy. ``info["position_affine"]`` holds A (2×2) and t (px).
    momentum : (float, float)
        ``"mpie"`` only: momentum η for object and probe (Maiden, Johnson & Li,
        Optica 4, 736 (2017), Algorithm 1, with the period T = one pass over
        all positions): after each pass ν ← ην + (X − X_prev), X ← X + ην.
    dm_beta : float
        ``"dm"`` only: β of the difference map (1: the classic form,
        ψ ← ψ + Π_F(2Π_O ψ − ψ) − Π_O ψ).
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
    stop : callable(errors) -> bool, optional
        Called after every iteration of the PIE family and ``"lsqml"`` with the data errors so far;
        True ends the run (e.g. :func:`ptyhpc.ptycho.defaults.stalled`). The returned error curve
        keeps ``n_iter`` values (the last repeated); ``info["n_iter_run"]`` is the iterations run.

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
    if subpixel not in ("fourier", "bilinear", "none"):
        raise ValueError(f"unknown subpixel {subpixel!r}; use 'fourier', 'bilinear' or 'none'")
    if engine in ("er", "dm") and (subpixel != "fourier" or probe_support is not None
                                   or object_amplitude_bounds is not None or background is not None):
        raise ValueError(f"subpixel, probe_support, object_amplitude_bounds and background are implemented for "
                         f"the PIE family and lsqml, not {engine!r}")
    if engine == "epie":
        alpha = 1.0
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    frames = np.asarray(frames)
    positions_m = np.asarray(positions_m, dtype=np.float64)
    if frames.ndim != 3 or positions_m.shape != (len(frames), 2):
        raise ValueError(f"frames (n, dy, dx) and positions (n, 2) expected, got {frames.shape} and "
                         f"{positions_m.shape}")
    if position_model not in ("free", "affine"):
        raise ValueError(f"unknown position_model {position_model!r}; use 'free' or 'affine'")
    if n_probe_modes > 1 and engine in ("er", "dm", "lsqml"):
        raise ValueError(f"probe modes are implemented for rpie and epie, not {engine!r}")
    fft_shape = tuple(probe.shape[-2:]) if fft_shape is None else tuple(fft_shape)
    if tuple(probe.shape[-2:]) != fft_shape:
        raise ValueError(f"probe shape {probe.shape} differs from the FFT grid {fft_shape}")

    prop = FarField() if propagator is None else propagator
    amp_h, measured_h = prepare_amplitudes(frames, fft_shape, mask, centred=prop.centred_data)
    geom = ops.ScanGeometry.from_positions(positions_m, fft_shape, pixel_size_m, origin_m=origin_m,
                                           object_shape=object_shape)
    start_px = geom.positions_px.copy()   # the affine position model maps these
    if subpixel == "bilinear" and np.any(geom.corners.max(axis=0) + np.array(fft_shape) + 1
                                         > np.array(geom.object_shape)):
        raise ValueError("subpixel='bilinear' reads one pixel beyond each probe window; a window touches the "
                         "far edge of the forced object grid: enlarge object_shape/origin")
    amp = xp.asarray(amp_h)
    measured = xp.asarray(measured_h)
    # Σ I per frame (float32 rows, summed in float64) without a float64 copy of the data set.
    rows = amp_h.reshape(len(amp_h), -1)
    total_intensity = float(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64))
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
    if position_correction_start is not None and engine in ("er", "dm"):
        raise ValueError(f"position correction is implemented for the PIE family (rpie, epie), not {engine!r}")
    if engine in ("er", "dm"):
        obj, prb = projection_engine(amp, measured, obj, prb, geom, prop, engine=engine, n_iter=n_iter,
                                     batch_size=batch_size, probe_update_start=probe_update_start,
                                     probe_mask_k=probe_mask_k, errors=errors, beta=dm_beta,
                                     total_intensity=total_intensity, callback=callback, xp=xp)
    # The geometry is refined in place; keep the caller's copy of the positions intact.
    geom.corners, geom.frac = geom.corners.copy(), geom.frac.copy()
    if engine == "mpie":
        vel_o, vel_p = xp.zeros_like(obj), xp.zeros_like(prb)
        prev_o, prev_p = obj.copy(), prb.copy()
    # Detector mask as 0/1 weights; None when every pixel is measured (saves a pass per chunk).
    meas_w = None if bool(measured_h.all()) else measured.astype(np.float32)
    bg = ratio = None
    if background is not None:
        # Laid out as the data (centred, padded, FFT order) through prepare_amplitudes, which takes √.
        b_frame = np.broadcast_to(np.asarray(background, dtype=np.float32), frames.shape[1:])[None]
        bg_h, _ = prepare_amplitudes(b_frame, fft_shape, mask, centred=prop.centred_data)
        bg = xp.asarray(bg_h[0] ** 2 * measured_h)
        if not bool(xp.all(bg[measured] > 0)):
            raise ValueError("the initial background must be > 0 on measured pixels (its update is multiplicative)")
        ratio = xp.zeros(fft_shape, dtype=np.float32)
    support = None
    if probe_support is not None:
        support = xp.asarray(probe_support, dtype=np.float32)
        if support.shape != fft_shape:
            raise ValueError(f"probe_support shape {support.shape} differs from the FFT grid {fft_shape}")
        prb *= support
    if object_amplitude_bounds is not None:
        lo, hi = (float(v) for v in object_amplitude_bounds)
        if not 0 <= lo <= hi:
            raise ValueError(f"object_amplitude_bounds must satisfy 0 <= min <= max, got {object_amplitude_bounds}")
        object_amplitude_bounds = (lo, hi)
        obj = _clip_amplitude(obj, object_amplitude_bounds)
    n_run = n_iter
    for it in range(n_iter if engine in ("rpie", "epie", "mpie", "lsqml") else 0):  # per-batch engines
        order = rng.permutation(n)
        err = 0.0
        update_probe = it >= probe_update_start
        correct_positions = position_correction_start is not None and it >= position_correction_start
        shifts = np.zeros((n, 2)) if correct_positions else None
        for start in range(0, n, batch_size):
            batch = np.sort(order[start:start + batch_size])
            if engine == "lsqml":
                obj, prb, e = _lsqml_batch(obj, prb, batch, geom, amp, meas_w, prop, noise_model=noise_model,
                                           floor=floor, update_probe=update_probe, subpixel=subpixel, bg=bg,
                                           ratio=ratio, xp=xp)
                err += e
                if object_amplitude_bounds is not None:
                    obj = _clip_amplitude(obj, object_amplitude_bounds)
                if update_probe:
                    prb = _apply_probe_constraints(prb, probe_mask_k, support)
                continue
            # PIE family: the batch's updates are computed from one object and probe and applied together.
            obj, prb, e = _pie_batch(obj, prb, batch, geom, amp, meas_w, prop, noise_model=noise_model,
                                     floor=floor, alpha=alpha, beta_object=beta_object, beta_probe=beta_probe,
                                     update_probe=update_probe, subpixel=subpixel, bg=bg, ratio=ratio,
                                     shifts=shifts, xp=xp)
            err += e
            if object_amplitude_bounds is not None:
                obj = _clip_amplitude(obj, object_amplitude_bounds)
            if update_probe:
                prb = _apply_probe_constraints(prb, probe_mask_k, support)
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
        if ratio is not None:
            # Multiplicative background step, the ratio averaged over all positions once per pass:
            # b ← b·⟨I/h⟩ (Poisson: the EM update of an additive component, which keeps b ≥ 0) or
            # b ← b·⟨√I/√h⟩² (amplitude: eq. 11 of the Bragg seed, as ptyhpc.bragg.solver).
            mean = ratio / np.float32(n)
            bg *= mean if noise_model == "poisson" else mean * mean
            ratio[...] = 0
        if correct_positions:
            step = position_step * (shifts - shifts.mean(axis=0))
            step = np.clip(step, -max_position_shift_px, max_position_shift_px)
            if position_model == "affine":
                affine = _fit_affine(start_px, geom.positions_px + step)
                step = np.hstack([start_px, np.ones((n, 1))]) @ affine - geom.positions_px
            geom.move(np.arange(n), step, far_margin=1 if subpixel == "bilinear" else 0)
        errors[it] = err / max(total_intensity, 1e-30)
        if callback is not None:
            callback(it, float(errors[it]))
        if stop is not None and stop(errors[:it + 1]):
            # The curve keeps its length (stores hold n_iter values); info says where the run stopped.
            errors[it + 1:] = errors[it]
            n_run = it + 1
            break

    illum = _illumination(prb, geom, batch_size, xp, subpixel=subpixel)
    return PtychoResult(
        object=backend.to_host(obj).astype(np.complex64),
        probe=backend.to_host(prb).astype(np.complex64),
        error=errors,
        illumination=backend.to_host(illum),
        pixel_size_m=geom.pixel_size_m,
        origin_m=geom.origin_m,
        info={"engine": engine, "noise_model": noise_model, "n_probe_modes": int(n_probe_modes),
              "positions_m": geom.positions_m, "alpha": alpha, "batch_size": batch_size, "fft_shape": fft_shape,
              "n_iter": n_iter, "n_iter_run": n_run, "subpixel": subpixel, "position_model": position_model,
              "position_affine": _affine_info(start_px, geom.positions_px) if position_model == "affine" else None,
              "background": None if bg is None else _detector_layout(backend.to_host(bg), frames.shape[1:],
                                                                      prop.centred_data)},
    )


def _detector_layout(image, det_shape, centred):
    """Inverse of :func:`prepare_amplitudes`' layout for one (Ny, Nx) image: FFT order, padded → detector."""
    if not centred:
        return image.copy()
    image = np.fft.fftshift(image)
    (Ny, Nx), (dy, dx) = image.shape, det_shape
    py0, px0 = Ny // 2 - dy // 2, Nx // 2 - dx // 2
    return image[py0:py0 + dy, px0:px0 + dx].copy()
