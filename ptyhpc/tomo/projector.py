"""Parallel-beam projector for one slice grid, stored as a sparse matrix.

Geometry (see ``CONVENTIONS.md``): the sample turns about the y axis (the
detector rows); a slice is an image indexed ``[z, x]`` on an ``n × n`` grid
whose centre, ``((n - 1) / 2, (n - 1) / 2)``, lies on the rotation axis
(ASTRA's default volume geometry). At angle θ a point at ``(x, z)`` pixels
from the axis projects to the detector column::

    u = center + x cos θ + z sin θ

with ``center`` the column of the rotation axis, ``(n_det - 1) / 2`` by
default (ASTRA's convention). Volume and detector share one pixel size, and
projections are line integrals in units of that pixel length.

Relation to ASTRA (pinned by ``tests/test_tomo_astra.py``): ASTRA's
``parallel`` geometry with the same angles puts a point at ``(x, y)`` on
``u = x cos θ + y sin θ`` too, but its image rows run along −y; so our
slice ``[z, x]`` is ASTRA's image flipped upside down (``img[::-1]``), and
our ``"strip"`` matrix is ASTRA's ``strip`` projector on that flipped grid.

Every slice of a tilt series has the same geometry, so the matrix is built
once and a slab of slices is projected with a single sparse product, the
slices being the columns of the right-hand side::

    sino = A @ slab.reshape(n_slices, -1).T      # (n_angles * n_det, n_slices)

The adjoint is exactly ``A.T``. The transposed matrix is built directly
(pixel-major: every pixel meets at most 2 or 3 detector bins per angle, so
its rows have a fixed length and need no sorting), in blocks of pixel rows
so the peak memory stays near that of the matrix itself; ``A`` is its
transpose, converted once, and is only built when a forward projection is
asked for (FBP needs only the backprojector).

On a GPU the same matrices are copied once to ``cupyx.scipy.sparse``
(cuSPARSE products); :meth:`Projector.forward` and :meth:`Projector.adjoint`
follow the array module of their input.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from ..backend import xp_of

__all__ = ["projection_matrix", "backprojection_matrix", "Projector"]

_KINDS = ("strip", "linear")

#: Entries computed at once while building a matrix (bounds the temporaries, ~20 bytes each).
_BLOCK_ENTRIES = 1 << 20


def _check_angles(angles) -> np.ndarray:
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size == 0:
        raise ValueError("angles is empty")
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles must be finite (radians)")
    return angles


def _check_geometry(angles, n_cols, center, kind):
    angles = _check_angles(angles)
    n = int(n_cols)
    if n < 1:
        raise ValueError(f"n_cols must be >= 1, got {n_cols}")
    center = (n - 1) / 2 if center is None else float(center)
    if not np.isfinite(center):
        raise ValueError("center must be finite")
    if kind not in _KINDS:
        raise ValueError(f"unknown projector kind {kind!r}; use one of {_KINDS}")
    return angles, n, center


def backprojection_matrix(angles, n_cols: int, center: float | None = None, *,
                          kind: str = "strip", dtype=np.float32) -> sp.csr_matrix:
    """Transpose of :func:`projection_matrix`, built directly (the backprojector).

    Parameters and weights as in :func:`projection_matrix`.

    Returns
    -------
    AT : scipy.sparse.csr_matrix, shape (n_cols * n_cols, n_angles * n_cols)
        Row ``iz * n_cols + ix`` is slice pixel ``[iz, ix]``; column
        ``a * n_cols + u`` is detector column ``u`` at ``angles[a]``.
        Canonical (sorted indices, no zeros, no duplicates).
    """
    angles, n, center = _check_geometry(angles, n_cols, center, kind)
    n_ang = angles.size
    coord = np.arange(n) - (n - 1) / 2
    cos, sin = np.cos(angles), np.sin(angles)
    n_bins = 2 if kind == "linear" else 3
    per_pixel = n_ang * n_bins
    if kind == "strip":
        # Strip model: the chord length through a unit square pixel, as a function of the
        # detector coordinate, is a trapezoid (box of width |cos| convolved with a box of
        # width |sin|, area 1); its integral over each unit detector bin is the area shared
        # by the pixel and the bin's strip (ASTRA's "strip" projector). A footprint at most
        # sqrt(2) wide meets at most 3 bins.
        a = np.maximum(np.abs(cos), np.abs(sin))
        b = np.minimum(np.abs(cos), np.abs(sin))
        lead = (a + b) / 2
        inv2b = np.divide(0.5, b, out=np.zeros_like(b), where=b > 1e-12)
    data = np.empty(n * n * per_pixel, dtype=dtype)
    big = max(n * n * per_pixel, n_ang * n) >= 2**31           # SciPy wants one index dtype
    indices = np.empty(n * n * per_pixel, dtype=np.int64 if big else np.int32)
    ray0 = (np.arange(n_ang) * n)[None, None, :, None]
    rows_per_block = max(1, _BLOCK_ENTRIES // (n * per_pixel))
    for z0 in range(0, n, rows_per_block):
        z1 = min(n, z0 + rows_per_block)
        # detector coordinate of each pixel centre, shape (rows, n_x, n_angles, 1)
        t = (center + coord[None, :, None] * cos + coord[z0:z1, None, None] * sin)[..., None]
        if kind == "linear":
            u0 = np.floor(t)
            frac = t - u0
            u = u0 + np.arange(2)
            w = np.concatenate([1.0 - frac, frac], axis=-1)
        else:
            # footprint [t - lead, t + lead]; bin k = u0 + k spans [k - phi, k + 1 - phi]
            # from the footprint's start, and the footprint (<= sqrt(2) wide) ends before 3 - phi
            s = t - lead[:, None] + 0.5
            u0 = np.floor(s)
            phi = s - u0
            h1 = _footprint_cdf(1.0 - phi, a[:, None], b[:, None], inv2b[:, None])
            h2 = _footprint_cdf(2.0 - phi, a[:, None], b[:, None], inv2b[:, None])
            u = u0 + np.arange(3)
            w = np.concatenate([h1, h2 - h1, 1.0 - h2], axis=-1)
        # Bins off the detector (or weights below float32 noise) get weight 0 and are
        # dropped below; clipping keeps their indices valid until then.
        w[(u < 0) | (u >= n) | (w <= 1e-7)] = 0.0
        cols = ray0 + np.clip(u, 0, n - 1).astype(np.int64)
        sl = slice(z0 * n * per_pixel, z1 * n * per_pixel)
        data[sl] = w.ravel()
        indices[sl] = cols.ravel()
    indptr = np.arange(0, n * n * per_pixel + 1, per_pixel, dtype=indices.dtype)
    AT = sp.csr_matrix((data, indices, indptr), shape=(n * n, n_ang * n))
    AT.eliminate_zeros()
    # columns increase along a row (angle-major, then bin), so the matrix is canonical
    AT.has_sorted_indices = True
    return AT


def projection_matrix(angles, n_cols: int, center: float | None = None, *,
                      kind: str = "strip", dtype=np.float32) -> sp.csr_matrix:
    """Sparse parallel-beam projection matrix for one ``n_cols × n_cols`` slice.

    Parameters
    ----------
    angles : array_like of float, shape (n_angles,)
        Tilt angles in radians, any order and spacing.
    n_cols : int
        Detector columns; the slice grid is ``n_cols × n_cols`` pixels of the
        same size, centred on the rotation axis.
    center : float, optional
        Detector column (0-based, may be fractional) onto which the rotation
        axis projects. Default ``(n_cols - 1) / 2``.
    kind : {"strip", "linear"}
        ``"strip"`` (default): weight = area shared by the square pixel and the
        unit-wide strip of the detector column, i.e. the exact column-averaged
        line integral of the pixel-basis image (ASTRA's ``strip`` projector).
        Mass-conserving and free of the ripple of pixel-driven projection;
        used for SIRT and for forward projection.
        ``"linear"``: pixel-driven, each pixel's unit mass split between the
        two detector columns around its projected centre (linear
        interpolation); its transpose is the linear-interpolation
        backprojector of FBP (Kak & Slaney 1988, ch. 3). As a forward
        projector it ripples by several percent at oblique angles.
    dtype : numpy dtype
        Dtype of the stored weights (float32 halves memory and traffic).

    Returns
    -------
    A : scipy.sparse.csr_matrix, shape (n_angles * n_cols, n_cols * n_cols)
        Row ``a * n_cols + u`` is detector column ``u`` at ``angles[a]``;
        column ``iz * n_cols + ix`` is slice pixel ``[iz, ix]``.

    Raises
    ------
    ValueError
        Empty or non-finite angles, ``n_cols < 1``, non-finite centre or an
        unknown ``kind``.

    Notes
    -----
    Memory: about 8 bytes per non-zero, ~2.6 (strip) or 2 (linear) non-zeros
    per pixel and angle: 0.25 GB for 256² × 180 angles (strip).
    """
    return backprojection_matrix(angles, n_cols, center, kind=kind, dtype=dtype).T.tocsr()


def _footprint_cdf(s, a, b, inv2b):
    """Integral from the start of a pixel's footprint to ``s`` (0 <= s).

    The footprint (chord length through a unit square pixel against the detector
    coordinate) is the unit-area trapezoid box(a) * box(b), a = max(|cos|, |sin|),
    b = min(...): a rising flank of width b, a plateau 1/a of width a - b and a falling
    flank of width b (``inv2b`` = 1/(2b), 0 for b = 0, where the flanks vanish).
    """
    c1 = np.clip(s, 0.0, b)
    c2 = np.clip(s - b, 0.0, a - b)
    c3 = np.clip(s - a, 0.0, b)
    return (c1 * c1 * inv2b + c2 + c3 - c3 * c3 * inv2b) / a


@lru_cache(maxsize=2)
def _cached(angles_bytes: bytes, n_cols: int, center: float, kind: str) -> "Projector":
    return Projector(np.frombuffer(angles_bytes, dtype=np.float64), n_cols, center, kind=kind)


def _inverse(s):
    """1/s where s > 0, else 0 (float32, same array module)."""
    xp = xp_of(s)
    out = xp.zeros(s.shape, dtype=xp.float32)
    pos = s > 0
    out[pos] = 1.0 / s[pos]
    return out


class Projector:
    """Projection matrix with its transpose, row and column sums, for slabs of slices.

    Parameters
    ----------
    angles : array_like of float, shape (n_angles,)
        Radians.
    n_cols : int
        Detector columns = slice grid size.
    center : float, optional
        Rotation-axis column, default ``(n_cols - 1) / 2``.
    kind : {"strip", "linear"}
        See :func:`projection_matrix`.

    Attributes
    ----------
    A, AT : scipy.sparse.csr_matrix
        Projector (n_angles * n_cols, n_cols**2) float32 and its transpose (both
        CSR, the fastest SciPy product); built on first use.
    row_sum, col_sum : ndarray of float32
        Ray lengths through the grid (n_angles * n_cols,) and per-pixel total
        weights (n_cols**2,), for SIRT.

    Notes
    -----
    :meth:`cached` returns a per-process shared instance, so dask tasks on one
    worker build the matrix once. Treat its arrays as read-only.
    """

    def __init__(self, angles, n_cols: int, center: float | None = None, *, kind: str = "strip"):
        self.angles, self.n_cols, self.center = _check_geometry(angles, n_cols, center, kind)
        self.kind = kind
        self._A = None
        self._AT = None
        self._device = {}

    @classmethod
    def cached(cls, angles, n_cols: int, center: float | None = None, *,
               kind: str = "strip") -> "Projector":
        """Shared instance for this geometry (LRU cache of 2 per process, to bound memory)."""
        angles, n_cols, center = _check_geometry(angles, n_cols, center, kind)
        return _cached(angles.tobytes(), n_cols, center, kind)

    @property
    def n_angles(self) -> int:
        return self.angles.size

    @property
    def AT(self) -> sp.csr_matrix:
        if self._AT is None:
            self._AT = backprojection_matrix(self.angles, self.n_cols, self.center, kind=self.kind)
        return self._AT

    @property
    def A(self) -> sp.csr_matrix:
        if self._A is None:
            self._A = self.AT.T.tocsr()
        return self._A

    @property
    def row_sum(self) -> np.ndarray:
        if "row_sum" not in self._device:
            self._device["row_sum"] = self.A @ np.ones(self.A.shape[1], dtype=np.float32)
        return self._device["row_sum"]

    @property
    def col_sum(self) -> np.ndarray:
        if "col_sum" not in self._device:
            self._device["col_sum"] = self.AT @ np.ones(self.AT.shape[1], dtype=np.float32)
        return self._device["col_sum"]

    def matrices(self, xp=np, *, forward: bool = True):
        """``(A, AT)`` on the array module ``xp``; A is None unless ``forward``.

        For CuPy the SciPy matrices are copied once to ``cupyx.scipy.sparse.csr_matrix``
        and kept with this instance.
        """
        if xp is np:
            return (self.A if forward else None), self.AT
        if "AT_dev" not in self._device:
            import cupyx.scipy.sparse as csp  # noqa: PLC0415  (only reached with CuPy arrays)

            self._device["csp"] = csp
            self._device["AT_dev"] = csp.csr_matrix(self.AT)
        if forward and "A_dev" not in self._device:
            self._device["A_dev"] = self._device["csp"].csr_matrix(self.A)
        return (self._device.get("A_dev") if forward else None), self._device["AT_dev"]

    def sums(self, xp=np):
        """``(1 / row_sum, 1 / col_sum)`` as float32 on ``xp``, 0 where a sum is 0."""
        k = ("inv_sums", xp.__name__)
        if k not in self._device:
            self._device[k] = (_inverse(xp.asarray(self.row_sum)), _inverse(xp.asarray(self.col_sum)))
        return self._device[k]

    def forward_columns(self, x):
        """``A @ x`` for slices as columns, x shape (n_cols**2, n_slices), any array module."""
        A, _ = self.matrices(xp_of(x))
        return A @ x

    def adjoint_columns(self, y):
        """``Aᵀ @ y`` for sinograms as columns, y shape (n_angles * n_cols, n_slices)."""
        _, AT = self.matrices(xp_of(y), forward=False)
        return AT @ y

    def forward(self, slab):
        """Project slices.

        Parameters
        ----------
        slab : ndarray (NumPy or CuPy), shape (n_cols, n_cols) or (n_slices, n_cols, n_cols)
            Slice images indexed ``[z, x]``.

        Returns
        -------
        ndarray of float32 (same array module), shape (n_angles, n_cols) or (n_angles, n_slices, n_cols)
            Line integrals in units of pixel length × slice value.
        """
        xp = xp_of(slab)
        slab = xp.asarray(slab, dtype=xp.float32)
        single = slab.ndim == 2
        cols = slab.reshape(1 if single else slab.shape[0], -1).T
        out = self.forward_columns(xp.ascontiguousarray(cols))
        out = out.reshape(self.n_angles, self.n_cols, -1).transpose(0, 2, 1)
        return xp.ascontiguousarray(out[:, 0] if single else out)

    def adjoint(self, proj):
        """Exact adjoint of :meth:`forward` (unfiltered, unweighted backprojection).

        Parameters
        ----------
        proj : ndarray (NumPy or CuPy), shape (n_angles, n_cols) or (n_angles, n_slices, n_cols)

        Returns
        -------
        ndarray of float32 (same array module), shape (n_cols, n_cols) or (n_slices, n_cols, n_cols)
        """
        xp = xp_of(proj)
        proj = xp.asarray(proj, dtype=xp.float32)
        single = proj.ndim == 2
        if single:
            proj = proj[:, None, :]
        cols = xp.ascontiguousarray(proj.transpose(0, 2, 1).reshape(self.n_angles * self.n_cols, -1))
        out = self.adjoint_columns(cols).T.reshape(-1, self.n_cols, self.n_cols)
        return xp.ascontiguousarray(out[0] if single else out)
