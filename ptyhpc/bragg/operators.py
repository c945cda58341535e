"""Forward model of 3D Bragg ptychography (seed eq. 1) as operators with adjoints.

Kinematic model (seed eq. 1, Nat. Commun. 12, 7059 (2021)):

    ψ_j(r) = P(r − r_j) ρ(r)                       exit field at position j
    Ψ_j(q) = F[ψ_j](q)                             modified 3D FT (below)
    h_j(q) = |Ψ_j(q)|² + b(q)                      predicted counts (seed eq. 4)

ρ(r) = |ρ(r)| exp(i φ(r)), φ = Q_hkl · u(r). F is the discrete form of
∫ ψ(r) exp(−i q·r) dr on the measurement grid q = Σ m_a b_a and the
orthonormal reconstruction grid r = Σ (n_a − N_a//2) δ_a r̂_a of
:class:`~ptyhpc.bragg.geometry.BraggGeometry`:

    q·r = 2π (m1 n1/N1 + m2 n2/N2 + m3 n3/N3 + κ m3 n2/N3)

so F = FFT_2 ∘ S ∘ FFT_{1,3} with the diagonal shear phase
S = exp(−2πi κ m3 n2 / N3) (m3 signed). This plays the role of the seed's
"modified 3D Fourier transform" (Methods, refs. 40 and 69 there): the
unknowns live on an orthogonal grid and the measured (non-orthogonal) q grid
is used without interpolation. It is unitary (each factor is), so its
adjoint is its inverse (tested against the direct sum Σ ψ exp(−i q·r)).

The probe is invariant along k̂_i (seed Methods, "Probe retrieval"), so it
is stored as a 2D transverse field P⊥(t1, t2) on a grid of spacing
``probe_spacing`` and the 3D probe of position j is its bilinear
interpolation at the transverse coordinates t = T (r − r_j) of every window
voxel (T = ``geometry.transverse_matrix``). This is the seed's B_{k_i}
(back-projection) operator; its adjoint (the bilinear splat, summed along
k̂_i) is R_{k_i} up to normalisation (seed eq. 6).

All functions are batched: the first axis of per-position arrays is the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .. import backend
from .geometry import BraggGeometry

__all__ = ["bragg_fftn", "bragg_ifftn", "shear_phase", "ScanFrame", "ProbeOperator",
           "extract_patches", "patches_adjoint", "predicted_intensity"]


def shear_phase(geometry: BraggGeometry, xp: ModuleType = np, dtype=np.complex64):
    """Shear phase S[n2, m3] = exp(−2πi κ m3 (n2 − N2//2) / N3), shape (N2, N3), m3 in FFT order."""
    n1, n2, n3 = geometry.shape
    m3 = np.fft.fftfreq(n3) * n3
    nn2 = np.arange(n2) - n2 // 2
    s = np.exp(-2j * np.pi * geometry.shear * np.outer(nn2, m3) / n3)
    return xp.asarray(s.astype(dtype))


def bragg_fftn(psi, shear):
    """Modified unitary 3D FT of exit fields (…, N1, N2, N3) → (…, N1, N2, N3), FFT order in q.

    ``shear`` from :func:`shear_phase`. Ψ = FFT_2(S · FFT_{1,3}(ψ)).
    """
    a = backend.fftn(psi, axes=(-3, -1))
    a *= shear
    return backend.fftn(a, axes=(-2,))


def bragg_ifftn(big_psi, shear):
    """Inverse (= adjoint) of :func:`bragg_fftn`."""
    xp = backend.xp_of(big_psi)
    a = backend.ifftn(big_psi, axes=(-2,))
    a *= xp.conj(shear)
    return backend.ifftn(a, axes=(-3, -1))


@dataclass
class ScanFrame:
    """Where each probe position falls on the object grid (reconstruction frame).

    Attributes
    ----------
    corners : ndarray, (J, 3) int64
        Object voxel of each window's voxel [0, 0, 0].
    offsets : ndarray, (J, 2) float64
        Transverse probe coordinates (m) of window voxel [0, 0, 0] relative to the
        beam axis of position j; add ``t0`` for the other voxels.
    object_shape : (int, int, int)
    origin : ndarray (3,) float64
        Reconstruction-frame coordinate (voxels) of object voxel [0, 0, 0].
    """

    corners: np.ndarray
    offsets: np.ndarray
    object_shape: tuple
    origin: np.ndarray

    @classmethod
    def from_positions(cls, geometry: BraggGeometry, positions_m, margin: int = 1, object_shape=None,
                       origin=None):
        """Build from beam positions: points (J, 3) in the lab frame, m, where the beam axis crosses the film.

        The window of position j is centred (to the nearest voxel) on the
        beam point; the sub-voxel remainder goes into the probe's transverse
        offset, so positions keep full accuracy without interpolating ρ.

        Raises
        ------
        ValueError
            ``positions_m`` not (J, 3), or a window outside a forced object grid.
        """
        pos = np.asarray(positions_m, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions must be (J, 3) lab points in m, got shape {pos.shape}")
        n = np.asarray(geometry.shape)
        xi = geometry.lab_to_r(pos)                      # continuous voxel coords of the beam points
        c_global = np.round(xi).astype(np.int64) - n // 2
        if origin is None:
            origin = c_global.min(axis=0) - margin
        origin = np.asarray(origin, dtype=np.int64)
        corners = c_global - origin
        if object_shape is None:
            object_shape = tuple(int(v) for v in corners.max(axis=0) + n + margin)
        if corners.min() < 0 or np.any(corners.max(axis=0) + n > np.asarray(object_shape)):
            raise ValueError("a window falls outside the object grid")
        d = (c_global - xi) * geometry.voxel_size      # r-frame vector, m, from beam point to voxel [0,0,0]
        offsets = d @ geometry.transverse_matrix.T
        return cls(corners, offsets, tuple(int(s) for s in object_shape), origin.astype(np.float64))

    @property
    def n_positions(self) -> int:
        return len(self.corners)

    def flat_index(self, idx, window, xp: ModuleType = np, box=None):
        """Flat object indices of the windows of positions ``idx``: (b, N1, N2, N3) int64.

        ``box``: a tuple of 3 slices (a sub-block of the object holding the windows);
        indices are then flat indices into that sub-block.
        """
        n1, n2, n3 = window
        corners = np.asarray(self.corners[idx])
        if box is None:
            s1, s2, s3 = self.object_shape
        else:
            corners = corners - np.array([sl.start for sl in box])
            s1, s2, s3 = (sl.stop - sl.start for sl in box)
        c = xp.asarray(corners)
        i1 = c[:, 0, None, None, None] + xp.arange(n1)[None, :, None, None]
        i2 = c[:, 1, None, None, None] + xp.arange(n2)[None, None, :, None]
        i3 = c[:, 2, None, None, None] + xp.arange(n3)[None, None, None, :]
        return (i1 * s2 + i2) * s3 + i3


def extract_patches(obj, flat_index):
    """Gather object windows: ρ (S1, S2, S3) × indices (b, N1, N2, N3) → (b, N1, N2, N3)."""
    return obj.reshape(-1)[flat_index]


def patches_adjoint(patches, flat_index, object_shape, out=None):
    """Adjoint of :func:`extract_patches`: scatter-add windows onto the object grid."""
    xp = backend.xp_of(patches)
    if out is None:
        out = xp.zeros(object_shape, dtype=patches.dtype)
    backend.scatter_add(out, flat_index, patches)
    return out


class ProbeOperator:
    """B_{k_i}: 2D transverse probe P⊥ (M1, M2) → 3D probes of a batch (b, N1, N2, N3).

    Bilinear interpolation of P⊥ at t = t0(n) + offset_j, where
    t0(n) = T · ((n − 0) δ) are the transverse coordinates (m) of window voxel n
    (T from ``geometry.transverse_matrix``); outside the P⊥ grid the probe is 0.

    Parameters
    ----------
    geometry : BraggGeometry
    probe_shape : (int, int)
        (M1, M2) transverse grid; grid point (M1//2, M2//2) is the beam axis.
    spacing_m : (float, float)
        Transverse grid spacing, m.
    xp : module
    """

    def __init__(self, geometry: BraggGeometry, probe_shape, spacing_m, xp: ModuleType = np):
        self.geometry = geometry
        self.probe_shape = tuple(int(s) for s in probe_shape)
        self.spacing = np.asarray(spacing_m, dtype=np.float64)
        self.xp = xp
        n1, n2, n3 = geometry.shape
        g = np.stack(np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij"), -1)
        t0 = (g * geometry.voxel_size) @ geometry.transverse_matrix.T        # (N1, N2, N3, 2), m
        self._t0 = t0

    def _weights(self, offsets):
        """Flat P⊥ indices (b, 4, N...) and bilinear weights for positions with ``offsets`` (b, 2)."""
        xp = self.xp
        m1, m2 = self.probe_shape
        u = (self._t0[None] + np.asarray(offsets)[:, None, None, None, :]) / self.spacing \
            + np.array([m1 // 2, m2 // 2])
        f = np.floor(u)
        w = u - f
        i = f.astype(np.int64)
        idx, wts = [], []
        for di, dj in ((0, 0), (1, 0), (0, 1), (1, 1)):  # the 4 bilinear corners (not a loop over voxels)
            a, b = i[..., 0] + di, i[..., 1] + dj
            wt = (w[..., 0] if di else 1 - w[..., 0]) * (w[..., 1] if dj else 1 - w[..., 1])
            ok = (a >= 0) & (a < m1) & (b >= 0) & (b < m2)
            idx.append(np.where(ok, a * m2 + b, 0))
            wts.append(np.where(ok, wt, 0.0))
        return xp.asarray(np.stack(idx, 1)), xp.asarray(np.stack(wts, 1).astype(np.float32))

    def prepare(self, offsets):
        """Precompute interpolation tables for a batch; pass the result to forward/adjoint."""
        return self._weights(offsets)

    def forward(self, probe2d, table):
        """P_j(n) = Σ_corners w · P⊥[idx]: (M1, M2) → (b, N1, N2, N3)."""
        idx, w = table
        flat = probe2d.reshape(-1)
        return (flat[idx] * w).sum(axis=1)

    def adjoint(self, fields, table, out=None):
        """Adjoint of :meth:`forward` summed over the batch: (b, N1, N2, N3) → (M1, M2)."""
        xp = self.xp
        idx, w = table
        if out is None:
            out = xp.zeros(self.probe_shape, dtype=fields.dtype)
        backend.scatter_add(out, idx, fields[:, None] * w)
        return out

    def coverage(self, table):
        """Σ_j,n w: how strongly each P⊥ point is sampled by the batch (M1, M2), float32."""
        xp = self.xp
        out = xp.zeros(self.probe_shape, dtype=np.float32)
        idx, w = table
        backend.scatter_add(out, idx, w)
        return out


def predicted_intensity(obj, probe2d, scan: ScanFrame, probe_op: ProbeOperator, shear, idx, background=None):
    """h_j(q) = |F[P_j ρ]|² + b(q) (seed eqs. 1, 4) for positions ``idx``: (b, N1, N2, N3), FFT order."""
    g = probe_op.geometry
    fi = scan.flat_index(idx, g.shape, probe_op.xp)
    probes = probe_op.forward(probe2d, probe_op.prepare(scan.offsets[idx]))
    big = bragg_fftn(probes * extract_patches(obj, fi), shear)
    h = (big * big.conj()).real
    if background is not None:
        h = h + background
    return h
