"""Unit cell of one particle from its diffraction series: 3D reciprocal-space map and difference vectors.

1. Peaks of each background-subtracted pattern (local maxima above ``n_sigma`` of a robust noise
   estimate, centroid of the 3×3 neighbourhood), the transmitted beam excluded.
2. Each peak at detector offset (Δrow, Δcol) from the beam centre is the scattering vector
   q_lab = (Δcol·Δk, Δrow·Δk, q_z) on the Ewald sphere |k0 + q| = 1/λ, k0 = (0, 0, 1/λ); the specimen
   was rotated by R_y(θ), so q in the crystal frame (= lab frame at θ = 0) is R_y(−θ)·q_lab.
3. Difference-vector method (as in Kolb et al. ADT / PETS2): the difference vectors between all
   peaks cluster at lattice vectors; the most populated short clusters are candidates, and the
   non-coplanar triplet that indexes most peaks (then the smallest cell) is the reciprocal basis.
4. Least-squares refinement of the reciprocal basis on all indexed peaks; the direct cell is its
   inverse transpose, reduced (shortest non-coplanar vectors; all angles ≥ 90° or all < 90°, right-handed).
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["find_peaks", "peaks_to_reciprocal", "find_cell", "reduce_cell", "cell_parameters", "misorientation_deg"]


def find_peaks(pattern: np.ndarray, centre, *, n_sigma: float = 6.0, exclude_px: float = 3.0,
               min_distance: int = 2, half: int = 2) -> np.ndarray:
    """Peaks (n, 3): row, col (px, sub-pixel centroid over ±``half`` px) and integrated intensity of one pattern."""
    from skimage.feature import peak_local_max  # noqa: PLC0415

    p = np.asarray(pattern, float)
    med = np.median(p)
    noise = 1.4826 * np.median(np.abs(p - med)) + np.sqrt(max(med, 0) + 1.0)
    pk = peak_local_max(p, min_distance=min_distance, threshold_abs=med + n_sigma * noise, exclude_border=1)
    out = []
    for r, c in pk:
        if np.hypot(r - centre[0], c - centre[1]) < exclude_px:
            continue
        # centroid over ±h px (a 3×3 window truncates a σ = 0.8 px spot and biases it to the pixel centre)
        r0, r1, c0, c1 = max(r - half, 0), min(r + half + 1, p.shape[0]), max(c - half, 0), min(c + half + 1, p.shape[1])
        w = np.clip(p[r0:r1, c0:c1] - med, 0, None)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        out.append((float((w * rr).sum() / w.sum()), float((w * cc).sum() / w.sum()), float(w.sum())))
    return np.array(out).reshape(-1, 3)


def peaks_to_reciprocal(peaks_rc: np.ndarray, centre, tilt_rad: float, dk_inv_m, wavelength_m: float, *,
                        scan_rotation_rad: float = 0.0, transpose: bool = False) -> np.ndarray:
    """Crystal-frame scattering vectors (n, 3) (x, y, z) in 1/m of peaks (row, col) px of a pattern at tilt θ.

    The detector frame follows docs/stem.md: after undoing ``transpose``, a scan-frame (k_x, k_y)
    lands at (col, row) = centre + R(scan_rotation_rad)·(k_x, k_y)/Δk, so (k_x, k_y) = R(−θ_s)·(Δcol, Δrow)·Δk.
    """
    from ..sim.ed3d import rotation_y  # noqa: PLC0415

    dk = np.broadcast_to(np.asarray(dk_inv_m, float), (2,))
    dr = peaks_rc[:, 0] - centre[0]
    dc = peaks_rc[:, 1] - centre[1]
    if transpose:
        dr, dc = dc, dr
    dr, dc = dr * dk[0], dc * dk[1]
    cs, sn = np.cos(scan_rotation_rad), np.sin(scan_rotation_rad)
    qx = cs * dc + sn * dr
    qy = -sn * dc + cs * dr
    k = 1.0 / wavelength_m
    qz = np.sqrt(k * k - qx ** 2 - qy ** 2) - k
    return np.stack([qx, qy, qz], 1) @ rotation_y(tilt_rad)  # row-vector form of R_y(−θ)·q


def _fold(v):
    """Each vector or its negative, whichever has its first non-negligible component positive."""
    s = np.sign(v[:, 0])
    s = np.where(np.abs(v[:, 0]) < 1e-9, np.sign(v[:, 1]), s)
    s = np.where(s == 0, 1, s)
    return v * s[:, None]


def _index(V, q, tol):
    h = q @ np.linalg.inv(V).T
    hr = np.rint(h)
    ok = np.all(np.abs(h - hr) < tol, axis=1)
    return hr, ok


def find_cell(q_inv_m: np.ndarray, intensity: np.ndarray | None = None, *, d_min_inv_m: float = 0.06e10, d_max_inv_m: float = 0.6e10,
              bin_inv_m: float = 0.012e10, n_candidates: int = 14, tol: float = 0.15) -> dict:
    """Reciprocal basis and direct cell from crystal-frame scattering vectors.

    Parameters
    ----------
    q_inv_m : ndarray (n, 3)
        From :func:`peaks_to_reciprocal`, all tilts together.
    intensity : ndarray (n,), optional
        Peak intensities: the observations of one reflection at neighbouring tilts are merged
        into their intensity-weighted mean (the centre of its rocking curve) before the final fit.
    d_min_inv_m, d_max_inv_m : float
        Difference vectors considered (shorter ones are the same reflection at neighbouring tilts).
    bin_inv_m : float
        Clustering grid.
    tol : float
        Largest fractional-index residual of an indexed peak.

    Returns
    -------
    dict
        ``reciprocal_basis_inv_m`` (3, 3) columns a*, b*, c*; ``direct_basis_m`` (3, 3) columns a, b, c
        (reduced, crystal frame = lab frame at tilt 0); ``indexed_fraction``; ``n_peaks``;
        ``rms_residual_inv_m``.

    Raises
    ------
    ValueError
        Too few peaks, or no three non-coplanar lattice vectors found.
    """
    q = np.asarray(q_inv_m, float)
    if len(q) < 12:
        raise ValueError(f"find_cell: {len(q)} peaks; at least 12 are needed")
    i, j = np.triu_indices(len(q), 1)
    d = _fold(q[j] - q[i])
    L = np.linalg.norm(d, axis=1)
    d = d[(L > d_min_inv_m) & (L < d_max_inv_m)]
    keys, inv, counts = np.unique(np.rint(d / bin_inv_m).astype(np.int64), axis=0, return_inverse=True,
                                  return_counts=True)
    # Clusters: merge each bin with its neighbours (3×3×3), rank by the merged count.
    lut = {tuple(k): n for n, k in enumerate(keys)}
    off = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
    merged = np.array([sum(counts[lut[t]] for t in map(tuple, k + off) if t in lut) for k in keys])
    order = np.argsort(-merged)
    cands = []
    for n in order:
        c = keys[n] * bin_inv_m
        if any(np.linalg.norm(c - x) < 2.5 * bin_inv_m for x in cands):
            continue
        near = np.linalg.norm(d - c, axis=1) < 1.5 * bin_inv_m
        cands.append(d[near].mean(0))
        if len(cands) >= n_candidates:
            break
    best = None
    for a, b, c in itertools.combinations(range(len(cands)), 3):
        V = np.stack([cands[a], cands[b], cands[c]], 1)
        vol = abs(np.linalg.det(V))
        if vol < 0.2 * np.prod(np.linalg.norm(V, axis=0)):
            continue
        _, ok = _index(V, q, tol)
        score = (round(ok.mean(), 2), vol)  # most peaks indexed, then the largest reciprocal cell (primitive)
        if best is None or score > best[0]:
            best = (score, V)
    if best is None:
        raise ValueError("find_cell: no three non-coplanar lattice vectors among the difference vectors")
    V = best[1]
    for _ in range(3):  # least squares on all indexed peaks
        h, ok = _index(V, q, tol)
        V = np.linalg.lstsq(h[ok], q[ok], rcond=None)[0].T
    h, ok = _index(V, q, tol)
    w = np.ones(len(q)) if intensity is None else np.clip(np.asarray(intensity, float), 1e-12, None)
    hk, inv = np.unique(h[ok], axis=0, return_inverse=True)
    inv = inv.ravel()
    qm = np.stack([np.bincount(inv, w[ok] * q[ok, k]) for k in range(3)], 1) / np.bincount(inv, w[ok])[:, None]
    V = np.linalg.lstsq(hk, qm, rcond=None)[0].T
    h, ok = _index(V, q, tol)
    res = qm - hk @ V.T
    A = reduce_cell(np.linalg.inv(V).T)
    return {"reciprocal_basis_inv_m": np.linalg.inv(A).T, "direct_basis_m": A, "indexed_fraction": float(ok.mean()),
            "n_peaks": int(len(q)), "n_reflections": int(len(hk)), "rms_residual_inv_m": float(np.sqrt((res ** 2).sum(1).mean()))}


_COS_TOL = float(np.sin(np.radians(1.5)))


def reduce_cell(A: np.ndarray) -> np.ndarray:
    """Reduced direct basis (columns): the shortest three non-coplanar lattice vectors, a ≤ b ≤ c,
    signs chosen so that all angles are ≥ 90° or all < 90° (Niggli's two types), right-handed."""
    n = np.array(list(itertools.product(range(-2, 3), repeat=3)))
    n = n[np.any(n != 0, 1)]
    v = n @ A.T
    v = v[np.argsort(np.linalg.norm(v, axis=1), kind="stable")]
    basis = [v[0]]
    for x in v[1:]:
        if len(basis) == 1 and np.linalg.norm(np.cross(basis[0], x)) > 1e-3 * np.linalg.norm(x) * np.linalg.norm(basis[0]):
            basis.append(x)
        elif len(basis) == 2 and abs(np.dot(np.cross(*basis), x)) > 1e-3 * np.prod([np.linalg.norm(y) for y in (*basis, x)]):
            basis.append(x)
            break
    a, b, c = basis
    best = None
    for sa, sb, sc in itertools.product((1, -1), repeat=3):
        B = np.stack([sa * a, sb * b, sc * c], 1)
        cos = np.array([B[:, 1] @ B[:, 2], B[:, 0] @ B[:, 2], B[:, 0] @ B[:, 1]])
        cos /= np.array([np.linalg.norm(B[:, 1]) * np.linalg.norm(B[:, 2]), np.linalg.norm(B[:, 0]) *
                         np.linalg.norm(B[:, 2]), np.linalg.norm(B[:, 0]) * np.linalg.norm(B[:, 1])])
        # Niggli's types with a tolerance of 1.5° about 90° (a measured 89.7° of a 90° angle is not "acute")
        type2 = np.all(cos <= _COS_TOL)
        type1 = np.all(cos > -_COS_TOL)
        key = (type2 or type1, type2, np.linalg.det(B) > 0)
        if best is None or key > best[0]:
            best = (key, B)
    return best[1]


def cell_parameters(A: np.ndarray) -> dict:
    """``a_m, b_m, c_m, alpha_deg, beta_deg, gamma_deg`` of a direct basis (columns)."""
    a, b, c = A.T
    ang = lambda u, v: float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))  # noqa: E731
    return {"a_m": float(np.linalg.norm(a)), "b_m": float(np.linalg.norm(b)), "c_m": float(np.linalg.norm(c)),
            "alpha_deg": ang(b, c), "beta_deg": ang(a, c), "gamma_deg": ang(a, b)}


def misorientation_deg(A_found: np.ndarray, A_true: np.ndarray) -> float:
    """Smallest rotation angle (deg) between two reduced bases of the same lattice, over the sign
    changes that keep the reduced cell (the lattice's 2-fold ambiguities)."""
    best = 180.0
    for s in itertools.product((1, -1), repeat=3):
        if np.prod(s) < 0:
            continue
        B = A_found * np.array(s)[None]
        u, _, vt = np.linalg.svd(B @ A_true.T)
        R = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
        best = min(best, float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))))
    return best
