"""Array kernels shared by the engines: intensities, row dots, scatter-adds of updates, the illumination.

Every function works on NumPy or CuPy arrays; the NumPy branches are faster loops for the 2-core
CPU case (their measurements are in the docstrings' reasons, the figures in docs/engines.md).
"""

from __future__ import annotations

import numpy as np

from ... import backend
from .. import operators as ops

__all__ = ["CHUNK_PIXELS", "WHOLE_PIXEL_TOL", "chunk_size", "intensity", "illumination", "add_intensity_sum",
           "intensity_into", "row_dot", "np_row_dot", "re_inner", "add_object_gradient", "probe_times_patches",
           "spread_for_scatter"]

#: Detector pixels per chunk of array work inside a mini-batch (cache blocking only; the update still
#: uses the whole batch): 16 positions of 128², 4 of 256² (measurements: docs/engines.md).
CHUNK_PIXELS = 16 * 128 * 128

#: A sub-pixel shift below this (pixels) is treated as none: a chunk whose positions all sit on whole
#: pixels skips the shift FFTs (scans on an integer-pixel grid, or data binned to the scan step).
WHOLE_PIXEL_TOL = 1e-3


def chunk_size(pixels_per_position):
    """Positions per cache-sized chunk: ``_CHUNK_PIXELS`` of the package (read at call time, so it can
    be changed in one place, as the chunking test does) over the pixels of one position, at least 1."""
    from . import _CHUNK_PIXELS  # noqa: PLC0415

    return max(1, _CHUNK_PIXELS // pixels_per_position)


def intensity(waves, modes=False):
    """|w|² (float32 for complex64 ``waves``); summed over the mode axis 1 when ``modes``."""
    xp = backend.xp_of(waves)
    out = xp.abs(waves)       # contiguous abs + square: 2× faster than squaring the strided .real, .imag
    out *= out
    return out.sum(axis=1) if modes else out



def add_intensity_sum(out, waves, xp):
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
        out += intensity(waves).sum(axis=0)
    return out


def intensity_into(waves, out):
    """|w|² of complex64 ``waves`` into the float32 array ``out`` (same shape)."""
    np.abs(waves, out=out)
    out *= out
    return out


def row_dot(x, y, xp):
    """Σ_i x[k, i]·y[k, i] per row k of two (b, n) real arrays (one pass on NumPy, :func:`np_row_dot`)."""
    if xp is np:
        return np_row_dot(x, y)
    return xp.sum(x * y, axis=1)


def np_row_dot(x, y):
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


def re_inner(x, y, xp):
    """Re Σ conj(x)·y per position of two (b, ...) complex arrays: (b,) float32.

    On NumPy, one pass over the interleaved float32 views (Re conj(x)y = x.re y.re + x.im y.im)
    instead of conj, multiply, real and sum passes.
    """
    b = x.shape[0]
    if xp is np and x.shape == y.shape and x.flags.c_contiguous and y.flags.c_contiguous:
        return np_row_dot(x.view(np.float32).reshape(b, -1), y.view(np.float32).reshape(b, -1))
    return xp.real(xp.sum(xp.conj(x) * y, axis=tuple(range(1, x.ndim)))).astype(np.float32)



def add_object_gradient(num, chi, probes, win, xp):
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
    grad, scatter_win = spread_for_scatter(chi * cprobes, win)
    return ops.patches_adjoint(grad, scatter_win, num.shape, out=num)


def probe_times_patches(obj, win, probes, xp):
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


def spread_for_scatter(grad, win):
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



def illumination(prb, geom, batch_size, xp, subpixel="fourier"):
    """Σ_j |P_j|² on the object grid, (H, W) float32, of probe ``prb`` ((Ny, Nx) or (m, Ny, Nx)) at every position."""
    illum = xp.zeros(geom.object_shape, dtype=np.float32)
    probe_k = backend.fft2(prb)
    for start in range(0, geom.n_positions, batch_size):
        idx = np.arange(start, min(start + batch_size, geom.n_positions))
        if subpixel == "fourier":
            probes = ops.shifted_probes(probe_k, ops.shift_ramps_separable(geom.frac[idx], geom.probe_shape, xp))
        else:
            probes = prb[None]
        power = intensity(probes, modes=prb.ndim == 3)
        # "bilinear": the adjoint of the interpolation spreads |P|² with the same weights as the object update.
        win = (geom.bilinear_windows(idx, xp) if subpixel == "bilinear"
               else geom.windows(idx, xp, rounded=subpixel != "fourier"))
        ops.patches_adjoint(power, win, geom.object_shape, out=illum)
    return illum

