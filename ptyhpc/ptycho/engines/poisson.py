"""The Poisson exit-wave step of LSQ-ML: Newton line search, dense and on the pixels with counts only.

Source: Odstrčil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108 (2018), Appendix (optimal exit-wave
step for Poisson noise). :func:`counted_pixels` finds the pixels with counts once per reconstruction;
the caller keeps the result (no cache on the scan geometry).
"""

from __future__ import annotations

import numpy as np

from ... import backend
from .kernels import CHUNK_PIXELS, intensity_into, np_row_dot, row_dot

__all__ = ["poisson_step", "counted_pixels", "chunk_counted", "poisson_update_sparse"]


def poisson_step(p0, c, intensity, amplitude, n_newton=4, tol=1e-3):
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
    s2 = row_dot(pc, c, xp)
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
        hess = s2 + row_dot(v, w, xp)
        new = xp.clip(alpha - grad / xp.maximum(hess, np.float32(1e-30)), np.float32(0), alpha_hi)
        new = new.astype(np.float32)
        moved = float(xp.max(xp.abs(new - alpha)))
        alpha = new
        if moved < tol:
            break
    return alpha


def _poisson_newton_sparse(s1, s2, c, intensity, counted, n_counted, n_newton, tol):
    """The Newton iterations of :func:`poisson_step` on the pixels with counts only (NumPy).

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
    """Newton's method of :func:`poisson_step` on compressed pixels (NumPy).

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


def counted_pixels(amp):
    """The pixels with counts of every position, compressed, for :func:`poisson_update_sparse` (NumPy).

    The measured amplitudes do not change between iterations, so the indices
    of the pixels with I > 0 are found once per reconstruction (the caller
    keeps the result) instead of a ``np.flatnonzero`` over each chunk's
    counts per iteration.

    Parameters
    ----------
    amp : (n, Ny, Nx) float32
        Measured amplitudes √I.

    Returns
    -------
    dict
        ``"start"`` (n + 1,) int64, the offsets of each position's run in
        ``"local"`` (flat pixel indices within a pattern, increasing; uint16,
        or int32 above 256² pixels) and ``"a"`` (float32 √I there); ``"amp"``
        the array they were taken from. Memory: 6 B per counted pixel.
    """
    n = len(amp)
    flat = amp.reshape(n, -1)
    # Blocks of CHUNK_PIXELS pixels: no temporaries of the data set's size (its peak memory).
    blk = max(1, CHUNK_PIXELS // flat.shape[1])
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
    return {"amp": amp, "start": start, "local": local, "a": a_c}


def chunk_counted(cache, sub, n):
    """(idx, n_counted, a_c) of a chunk's positions ``sub`` from :func:`counted_pixels`.

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


def poisson_update_sparse(psi_k, counted, floor, n_newton=4, tol=1e-3):
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
    of :func:`poisson_step` (:func:`_newton_compressed`). Equal to the dense
    path up to float32 summation order.

    Parameters
    ----------
    psi_k : (b, ny, nx) complex64, C-contiguous
        Far fields Ψ (counts^½), FFT order; overwritten with the update.
    counted : tuple
        (idx, n_counted, a_c) of :func:`chunk_counted`: the flat indices of
        the pixels with counts (I > 0) into ``psi_k``, position after position,
        their numbers per position and their measured amplitudes √I (the
        indices are found once per reconstruction, :func:`counted_pixels`).
    floor : float
        Smallest model intensity in the factor, counts.

    Returns
    -------
    float or None
        Σ (|Ψ| − √I)², with ``psi_k`` overwritten by its update α_j c Ψ,
        c = I/max(|Ψ|², floor) − 1; None (``psi_k`` untouched) when half or
        more of the pixels have counts (the threshold of :func:`poisson_step`'s
        compressed Newton iterations; the caller then takes the dense path).
    """
    b = psi_k.shape[0]
    idx, n_counted, a_c = counted
    total = idx.size
    if total >= 0.5 * psi_k.size or not psi_k.flags.c_contiguous:
        return None
    off, has, _ = _segments(n_counted)
    pv = psi_k.reshape(b, -1).view(np.float32)
    s_all = np_row_dot(pv, pv)                             # S = Σ|Ψ|² per position
    # Compressed arrays of the counted pixels, one trailing 0 (see _segments); rows of `comp`:
    # |Ψ|², then |Ψ|²c, |Ψ|²c², (|Ψ| − √I)² for the per-position sums.
    comp = np.empty((4, total + 1), dtype=np.float32)
    comp[:, -1] = 0
    p0 = comp[0, :-1]
    psi_c = psi_k.reshape(-1).take(idx)
    intensity_into(psi_c, p0)
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

