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

Every function takes batches: indices select a mini-batch of positions and
all arrays carry the batch as their first axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .. import backend

__all__ = ["ScanGeometry", "Windows", "extract_patches", "patches_adjoint", "shift_ramps", "shift_ramps_separable",
           "shifted_probes", "unshift_sum", "unshift_sum_k", "exit_waves", "exit_waves_adjoint_object"]


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

    def move(self, idx, delta_px) -> None:
        """Shift positions ``idx`` by ``delta_px`` (b, 2) object pixels, clipped to the object grid."""
        p = self.positions_px[idx] + delta_px
        half = np.array(self.probe_shape) // 2
        hi = np.array(self.object_shape) - np.array(self.probe_shape) + half - 1e-6
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


def extract_patches(obj, flat_index):
    """Gather object patches: (H, W) × index → (b, ny, nx), a new array.

    ``flat_index`` is a (b, ny, nx) integer array of flat object indices, or a
    :class:`Windows` (faster on NumPy).
    """
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
    """
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
