"""Ptychographic forward model as operators with a forward and an adjoint.

Single-slice (multiplicative) approximation with far-field detection:

    ψ_j(r) = P(r − f_j) · O(r + c_j)        exit wave at scan position j
    Ψ_j(k) = F[ψ_j](k)                       far-field wave (unitary FFT)
    I_j(k) = |Ψ_j(k)|²                       diffraction pattern

(Rodenburg & Faulkner 2004; Thibault et al. 2009). The scan position r_j,
in object pixels, is split into an integer patch corner c_j and a
fractional part f_j ∈ [0, 1)²; the probe is shifted by f_j with a Fourier
phase ramp so positions keep sub-pixel accuracy without interpolating the
object (as py4DSTEM does). The probe window is centred at (ny//2, nx//2).

Alternatively (:class:`BilinearWindows`, as tike does) the probe stays put
and the object patch is read at the fractional position by bilinear
interpolation, ψ_j(r) = P(r) · O_bilinear(r + c_j + f_j); both give the same
diffraction intensities for an exact interpolation (a shift of the exit wave
is a phase ramp in the far field), and the bilinear form needs no FFT for
the shift.

Every function takes batches: indices select a mini-batch of positions and
all arrays carry the batch as their first axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .. import backend

__all__ = ["ScanGeometry", "Windows", "BilinearWindows", "extract_patches", "patches_adjoint", "shift_ramps",
           "shift_ramps_separable", "shifted_probes", "unshift_sum", "unshift_sum_k", "exit_waves",
           "exit_waves_adjoint_object"]


@dataclass
class ScanGeometry:
    """Where each probe position falls on the object grid.

    Attributes
    ----------
    corners : ndarray, (n, 2) int64
        Object pixel (y, x) of each patch's pixel [0, 0].
    frac : ndarray, (n, 2) float64
        Sub-pixel shift of the probe, pixels, in [0, 1).
    probe_shape : (int, int)
    object_shape : (int, int)
    pixel_size_m : (float, float)
        Object pixel (dy, dx), m.
    origin_m : (float, float)
        Scan-frame (y, x) of object pixel [0, 0], m.
    """

    corners: np.ndarray
    frac: np.ndarray
    probe_shape: tuple
    object_shape: tuple
    pixel_size_m: tuple
    origin_m: tuple

    @classmethod
    def from_positions(cls, positions_m, probe_shape, pixel_size_m, *, origin_m=None, object_shape=None,
                       margin=2):
        """Build the geometry from probe-centre positions in metres.

        Parameters
        ----------
        positions_m : ndarray, (n, 2) float
            Probe centres (y, x) in the scan frame, m.
        probe_shape : (int, int)
        pixel_size_m : (float, float)
        origin_m, object_shape : optional
            Force a grid (e.g. the same grid for every tilt angle); by default
            the smallest grid that holds every probe window plus ``margin`` pixels.

        Raises
        ------
        ValueError
            A probe window falls outside a forced object grid.
        """
        pos = np.asarray(positions_m, dtype=np.float64)
        px = np.asarray(pixel_size_m, dtype=np.float64)
        half = np.array(probe_shape) // 2
        if origin_m is None:
            origin = pos.min(axis=0) - (half + margin) * px
        else:
            origin = np.asarray(origin_m, dtype=np.float64)
        p = (pos - origin) / px
        base = np.floor(p)
        corners = base.astype(np.int64) - half
        frac = p - base
        if object_shape is None:
            object_shape = tuple(int(v) for v in corners.max(axis=0) + np.array(probe_shape) + margin)
        if corners.min() < 0 or np.any(corners.max(axis=0) + probe_shape > np.array(object_shape)):
            raise ValueError("a probe window falls outside the object grid; enlarge object_shape/origin")
        return cls(corners, frac, tuple(probe_shape), tuple(int(s) for s in object_shape),
                   tuple(float(v) for v in px), tuple(float(v) for v in origin))

    @property
    def n_positions(self) -> int:
        return len(self.corners)

    @property
    def positions_px(self) -> np.ndarray:
        """Probe centres in object pixels (y, x), (n, 2) float64."""
        return self.corners + np.array(self.probe_shape) // 2 + self.frac

    @property
    def positions_m(self) -> np.ndarray:
        """Probe centres in the scan frame, m, (n, 2) float64."""
        return np.asarray(self.origin_m) + self.positions_px * np.asarray(self.pixel_size_m)

    def move(self, idx, delta_px, far_margin=0) -> None:
        """Shift positions ``idx`` by ``delta_px`` (b, 2) object pixels, clipped to the object grid.

        ``far_margin`` pixels are kept free beyond each window's far edge
        (1 for :class:`BilinearWindows`, which read one more row and column).
        """
        p = self.positions_px[idx] + delta_px
        half = np.array(self.probe_shape) // 2
        hi = np.array(self.object_shape) - np.array(self.probe_shape) - far_margin + half - 1e-6
        p = np.clip(p, half, hi)
        base = np.floor(p)
        self.corners[idx] = base.astype(np.int64) - half
        self.frac[idx] = p - base

    def flat_index(self, idx, xp: ModuleType = np):
        """Flat object indices of the patches of positions ``idx``: (b, ny, nx) int64."""
        ny, nx = self.probe_shape
        c = xp.asarray(self.corners[idx])
        rows = c[:, 0, None, None] + xp.arange(ny)[None, :, None]
        cols = c[:, 1, None, None] + xp.arange(nx)[None, None, :]
        return rows * self.object_shape[1] + cols

    def windows(self, idx, xp: ModuleType = np, *, rounded=False) -> "Windows":
        """The patch windows of positions ``idx`` as a :class:`Windows` index.

        ``rounded=True`` moves each window to the nearest whole pixel of its
        position (corner + round(frac)), for engines that ignore sub-pixel shifts.
        """
        corners = self.corners[idx]
        if rounded:
            corners = corners + np.rint(self.frac[idx]).astype(np.int64)
            # A position within half a pixel of the grid's far edge would round out of it.
            corners = np.minimum(corners, np.array(self.object_shape) - np.array(self.probe_shape))
        return Windows(corners, self.probe_shape, self.object_shape, xp)

    def bilinear_windows(self, idx, xp: ModuleType = np) -> "BilinearWindows":
        """The patches of positions ``idx`` read at their fractional positions (:class:`BilinearWindows`).

        Raises
        ------
        ValueError
            A window's extra far row or column (c + shape + 1) falls outside the object grid.
        """
        return BilinearWindows(self.corners[idx], self.frac[idx], self.probe_shape, self.object_shape, xp)


class Windows:
    """Rectangular patch windows of a batch: an index for :func:`extract_patches` and
    :func:`patches_adjoint` that avoids building (b, ny, nx) flat indices on the CPU.

    On NumPy the gather is one fancy index of a strided window view (no index
    array; 3× faster than a flat-index gather at 128², measured) and the flat
    indices for the scatter-add are built only when needed; on CuPy both use the
    flat indices.

    Parameters
    ----------
    corners : (b, 2) int
        Object pixel (y, x) of each window's pixel [0, 0] (host array).
    shape, object_shape : (int, int)
        Window and object grid shapes, pixels.
    xp : module
    """

    def __init__(self, corners, shape, object_shape, xp: ModuleType = np):
        self.corners = np.asarray(corners, dtype=np.int64)
        self.shape = tuple(shape)
        self.object_shape = tuple(object_shape)
        self.xp = xp
        self._flat = None

    def __len__(self):
        return len(self.corners)

    @property
    def flat(self):
        """Flat object indices (b, ny, nx) int64 on ``xp`` (built once)."""
        if self._flat is None:
            xp, (ny, nx), w = self.xp, self.shape, self.object_shape[1]
            start = xp.asarray(self.corners[:, 0] * w + self.corners[:, 1])
            offs = (xp.arange(ny, dtype=np.int64) * w)[:, None] + xp.arange(nx, dtype=np.int64)[None, :]
            self._flat = start[:, None, None] + offs[None]
        return self._flat


class BilinearWindows:
    """Object patches at fractional positions by bilinear interpolation, and the exact adjoint.

    Forward, as tike's ``Patch`` operator (``tike/operators/cupy/patch.py``,
    kernels ``fwd_patch``/``adj_patch``; D. Ching et al., Argonne) reads
    object patches at sub-pixel positions:

        Õ_j(r) = (1−f_y)(1−f_x) O[c+r] + (1−f_y) f_x O[c+r+x̂]
               + f_y (1−f_x) O[c+r+ŷ] + f_y f_x O[c+r+ŷ+x̂],

    with c_j the integer corner and f_j ∈ [0, 1)² the fractional part of the
    position (:class:`ScanGeometry`), r the window pixel. It is applied
    separably: one gather of the (ny+1, nx+1) window, a linear blend along
    y ((b, ny, nx+1)), then along x ((b, ny, nx)), three elementwise passes
    each. The adjoint (:meth:`adjoint`) is the transpose of the same steps
    (spread along x, then y, into a (b, ny+1, nx+1) array) and one
    scatter-add of the enlarged windows, so ⟨A O, y⟩ = ⟨O, Aᴴ y⟩ exactly (up
    to rounding); :func:`extract_patches` and :func:`patches_adjoint` accept
    it in place of a :class:`Windows`.

    Interpolation is a low-pass filter: per axis its amplitude response at
    k cycles per pixel is |1 − f + f e^{2πik}|, 1 for f = 0 and |cos πk| for
    f = ½ (0.71 at k = ¼, 0 at Nyquist); patches at half-pixel positions are
    blurred, which limits accuracy compared with the exact Fourier shift of
    the probe (see ``reconstruct``'s ``subpixel``).

    Parameters
    ----------
    corners : (b, 2) int
        Integer corner (y, x) of each window (host array).
    frac : (b, 2) float
        Fractional position (y, x), pixels, in [0, 1] (host array).
    shape, object_shape : (int, int)
        Patch and object grid shapes, pixels.
    xp : module

    Raises
    ------
    ValueError
        A window plus its extra far row/column (corner + shape + 1) falls outside the object grid.
    """

    def __init__(self, corners, frac, shape, object_shape, xp: ModuleType = np):
        corners = np.asarray(corners, dtype=np.int64)
        self.shape = tuple(shape)
        self.object_shape = tuple(object_shape)
        if len(corners) and (corners.min() < 0
                             or np.any(corners.max(axis=0) + np.array(self.shape) + 1 > np.array(self.object_shape))):
            raise ValueError("a bilinear patch window (probe window + 1 pixel) falls outside the object grid; "
                             "enlarge object_shape/origin")
        self.xp = xp
        self.corners = corners
        self.frac = np.asarray(frac, dtype=np.float64)
        # The enlarged windows: one gather and one scatter-add of (ny+1, nx+1) per position.
        self.windows = Windows(corners, (self.shape[0] + 1, self.shape[1] + 1), self.object_shape, xp)
        f = xp.asarray(self.frac.astype(np.float32))
        self.fy = f[:, 0, None, None]     # (b, 1, 1) float32: the blend weights broadcast over a patch
        self.fx = f[:, 1, None, None]

    def __len__(self):
        return len(self.corners)

    def forward(self, obj):
        """Interpolated patches, (H, W) → (b, ny, nx), ``obj``'s dtype (complex64 stays complex64)."""
        xp = self.xp
        w = extract_patches(obj, self.windows)                     # (b, ny+1, nx+1), a new array
        # Complex arrays are blended as their interleaved real views (k = 2 floats per pixel): the real
        # weights then multiply without NumPy's mixed-type (complex × float32) buffered loops, 6× slower.
        k, wf = _real_view(w)
        # Blend along y, rows = w[:-1] + f_y (w[1:] − w[:-1]) (a new array: the in-place form on
        # overlapping views would make NumPy copy and is undefined on CuPy), then along x.
        rows = xp.subtract(wf[:, 1:, :], wf[:, :-1, :])
        rows *= self.fy
        rows += wf[:, :-1, :]
        del w, wf
        out = xp.subtract(rows[:, :, k:], rows[:, :, :-k])
        out *= self.fx
        out += rows[:, :, :-k]
        return out.view(obj.dtype) if k == 2 else out

    def spread(self, patches):
        """Transpose of the two blends: (b, ny, nx) → (b, ny+1, nx+1) (real or complex), before the scatter-add.

        ``patches`` may be one (1, ny, nx) real array for every window (a probe
        intensity): its spread is then the (b, 4) corner weights times its four
        one-pixel shifts, one einsum. Not modified.
        """
        xp = self.xp
        b, (ny, nx) = len(self.corners), self.shape
        if patches.shape[0] == 1 and b > 1 and not xp.iscomplexobj(patches):
            shifted = xp.zeros((4, ny + 1, nx + 1), dtype=patches.dtype)
            shifted[0, :-1, :-1] = patches[0]
            shifted[1, :-1, 1:] = patches[0]
            shifted[2, 1:, :-1] = patches[0]
            shifted[3, 1:, 1:] = patches[0]
            fy, fx = self.fy[:, 0, 0], self.fx[:, 0, 0]
            weights = xp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
            out = xp.einsum("bk,kn->bn", weights.astype(patches.dtype), shifted.reshape(4, -1))
            return out.reshape(b, ny + 1, nx + 1)
        if xp.iscomplexobj(patches) and not patches.flags.c_contiguous:
            patches = xp.ascontiguousarray(patches)
        k, pf = _real_view(patches)
        # Along x: r[:, :, :-1] += (1 − f_x) g, r[:, :, 1:] += f_x g (k floats per pixel).
        t = pf * self.fx                                            # (b, ny, k·nx)
        r = xp.empty((b, ny, k * (nx + 1)), dtype=t.dtype)
        xp.subtract(pf, t, out=r[:, :, :-k])
        r[:, :, -k:] = 0
        r[:, :, k:] += t
        del t
        # Along y, the same with f_y.
        t = r * self.fy
        w = xp.empty((b, ny + 1, k * (nx + 1)), dtype=t.dtype)
        xp.subtract(r, t, out=w[:, :-1, :])
        w[:, -1, :] = 0
        w[:, 1:, :] += t
        return w.view(patches.dtype) if k == 2 else w

    def adjoint(self, patches, out=None):
        """Aᴴ: scatter-add the spread patches onto the object grid (``out``, zeros when None)."""
        w = self.spread(patches)
        return patches_adjoint(w, self.windows, self.object_shape, out=out)


def _real_view(a):
    """(k, view): a complex array as its interleaved real view (k = 2 floats per pixel), a real one as is (k = 1)."""
    if backend.xp_of(a).iscomplexobj(a):
        return 2, a.view(a.real.dtype)
    return 1, a


def extract_patches(obj, flat_index):
    """Gather object patches: (H, W) × index → (b, ny, nx), a new array.

    ``flat_index`` is a (b, ny, nx) integer array of flat object indices, a
    :class:`Windows` (faster on NumPy), or a :class:`BilinearWindows`
    (patches interpolated at fractional positions).
    """
    if isinstance(flat_index, BilinearWindows):
        return flat_index.forward(obj)
    if isinstance(flat_index, Windows):
        if backend.xp_of(obj) is np:
            view = np.lib.stride_tricks.sliding_window_view(obj, flat_index.shape)
            return view[flat_index.corners[:, 0], flat_index.corners[:, 1]]
        flat_index = flat_index.flat
    return obj.reshape(-1)[flat_index]


def patches_adjoint(patches, flat_index, object_shape, out=None):
    """Adjoint of :func:`extract_patches`: scatter-add patches onto an object grid.

    ``patches`` is (b, ny, nx) or broadcastable to it (e.g. one (1, ny, nx)
    probe intensity for every window); ``flat_index`` as in :func:`extract_patches`.
    Returns ``out`` (allocated with zeros when None), shape ``object_shape``.
    A :class:`BilinearWindows` applies its exact adjoint (spread, then scatter-add).
    """
    if isinstance(flat_index, BilinearWindows):
        return flat_index.adjoint(patches, out=out)
    xp = backend.xp_of(patches)
    if out is None:
        out = xp.zeros(object_shape, dtype=patches.dtype)
    if isinstance(flat_index, Windows):
        flat_index = flat_index.flat
    if patches.shape != flat_index.shape:
        patches = xp.broadcast_to(patches, flat_index.shape)
    backend.scatter_add(out, flat_index, patches)
    return out


def shift_ramps(frac, shape, xp: ModuleType = np, dtype=np.complex64):
    """Fourier phase ramps exp(−2πi k·f) that shift by ``frac`` pixels: (b, ny, nx), FFT order."""
    f = xp.asarray(frac)
    ky = xp.fft.fftfreq(shape[0])[None, :, None]
    kx = xp.fft.fftfreq(shape[1])[None, None, :]
    ramp_y = xp.exp(-2j * np.pi * ky * f[:, 0, None, None])
    ramp_x = xp.exp(-2j * np.pi * kx * f[:, 1, None, None])
    return (ramp_y * ramp_x).astype(dtype)


def shift_ramps_separable(frac, shape, xp: ModuleType = np, dtype=np.complex64):
    """The ramps of :func:`shift_ramps` as their separable factors (ry (b, ny, 1), rx (b, 1, nx)).

    exp(−2πi k·f) = exp(−2πi k_y f_y)·exp(−2πi k_x f_x): :func:`shifted_probes`
    and :func:`unshift_sum` accept the pair and apply it as two broadcast
    multiplies, which saves building (and the exp of) a (b, ny, nx) array.
    """
    f = xp.asarray(frac, dtype=np.float64)
    ky = xp.fft.fftfreq(shape[0])[None, :, None]
    kx = xp.fft.fftfreq(shape[1])[None, None, :]
    ramp_y = xp.exp(-2j * np.pi * ky * f[:, 0, None, None]).astype(dtype)
    ramp_x = xp.exp(-2j * np.pi * kx * f[:, 1, None, None]).astype(dtype)
    return ramp_y, ramp_x


def _per_batch(ramps, ndim_probe):
    # (b, ny, nx) → (b, 1, ny, nx) for probe modes (m, ny, nx), so each mode gets its position's ramp.
    return ramps.reshape(ramps.shape[:1] + (1,) * (ndim_probe - 2) + ramps.shape[1:])


def shifted_probes(probe_k, ramps):
    """Probes shifted by sub-pixel amounts: ifft(F[P] · ramp).

    ``probe_k`` (ny, nx) → (b, ny, nx); probe modes (m, ny, nx) → (b, m, ny, nx).
    ``ramps``: (b, ny, nx) from :func:`shift_ramps`, the pair from
    :func:`shift_ramps_separable`, or None (no shift).
    """
    if ramps is None:   # no shift: the one probe, (1, ny, nx) or (1, m, ny, nx), broadcasts over the batch
        return backend.ifft2(probe_k)[None]
    if isinstance(ramps, tuple):
        ry, rx = (_per_batch(r, probe_k.ndim) for r in ramps)
        spec = probe_k[None] * ry
        spec *= rx
        return backend.ifft2(spec, overwrite_x=True)
    return backend.ifft2(probe_k[None] * _per_batch(ramps, probe_k.ndim))


def unshift_sum_k(waves, ramps):
    """Spectrum of :func:`unshift_sum`: Σ_b F[w_b]·conj(ramp_b), (ny, nx) or (m, ny, nx).

    Engines sum it over the chunks of a batch and transform back once.
    ``waves`` is overwritten (its FFT is taken in place).
    """
    xp = backend.xp_of(waves)
    spec = backend.fft2(waves, overwrite_x=True)
    if isinstance(ramps, tuple):
        for r in ramps:
            spec *= xp.conj(_per_batch(r, waves.ndim - 1))
    else:
        spec *= xp.conj(_per_batch(ramps, waves.ndim - 1))
    return xp.sum(spec, axis=0)


def unshift_sum(waves, ramps):
    """Adjoint of :func:`shifted_probes` summed over the batch: Σ_b shift(w_b, −f_b).

    ``waves`` (b, ny, nx) → (ny, nx), or (b, m, ny, nx) → (m, ny, nx); not modified.
    ``ramps`` None: no shifts (the plain sum).
    """
    if ramps is None:
        return waves.sum(axis=0)
    return backend.ifft2(unshift_sum_k(waves.copy(), ramps), overwrite_x=True)


def exit_waves(obj, probes, flat_index):
    """ψ = P_j · O_j for a batch: probes (b, ny, nx) (already shifted)."""
    return probes * extract_patches(obj, flat_index)


def exit_waves_adjoint_object(waves, probes, flat_index, object_shape):
    """Adjoint of ``obj ↦ exit_waves(obj, probes, idx)``: Σ_j scatter(conj(P_j) ψ_j)."""
    xp = backend.xp_of(waves)
    return patches_adjoint(xp.conj(probes) * waves, flat_index, object_shape)
