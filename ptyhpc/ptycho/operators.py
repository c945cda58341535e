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

__all__ = ["ScanGeometry", "extract_patches", "patches_adjoint", "shift_ramps", "shifted_probes",
           "unshift_sum", "exit_waves", "exit_waves_adjoint_object"]


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


def extract_patches(obj, flat_index):
    """Gather object patches: (H, W) × (b, ny, nx) indices → (b, ny, nx)."""
    return obj.reshape(-1)[flat_index]


def patches_adjoint(patches, flat_index, object_shape, out=None):
    """Adjoint of :func:`extract_patches`: scatter-add patches onto an object grid.

    Returns ``out`` (allocated with zeros when None), shape ``object_shape``.
    """
    xp = backend.xp_of(patches)
    if out is None:
        out = xp.zeros(object_shape, dtype=patches.dtype)
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


def _per_batch(ramps, ndim_probe):
    # (b, ny, nx) → (b, 1, ny, nx) for probe modes (m, ny, nx), so each mode gets its position's ramp.
    return ramps.reshape(ramps.shape[:1] + (1,) * (ndim_probe - 2) + ramps.shape[1:])


def shifted_probes(probe_k, ramps):
    """Probes shifted by sub-pixel amounts: ifft(F[P] · ramp).

    ``probe_k`` (ny, nx) → (b, ny, nx); probe modes (m, ny, nx) → (b, m, ny, nx).
    """
    return backend.ifft2(probe_k[None] * _per_batch(ramps, probe_k.ndim))


def unshift_sum(waves, ramps):
    """Adjoint of :func:`shifted_probes` summed over the batch: Σ_b shift(w_b, −f_b).

    ``waves`` (b, ny, nx) → (ny, nx), or (b, m, ny, nx) → (m, ny, nx).
    """
    xp = backend.xp_of(waves)
    return backend.ifft2(xp.sum(backend.fft2(waves) * xp.conj(_per_batch(ramps, waves.ndim - 1)), axis=0))


def exit_waves(obj, probes, flat_index):
    """ψ = P_j · O_j for a batch: probes (b, ny, nx) (already shifted)."""
    return probes * extract_patches(obj, flat_index)


def exit_waves_adjoint_object(waves, probes, flat_index, object_shape):
    """Adjoint of ``obj ↦ exit_waves(obj, probes, idx)``: Σ_j scatter(conj(P_j) ψ_j)."""
    xp = backend.xp_of(waves)
    return patches_adjoint(xp.conj(probes) * waves, flat_index, object_shape)
