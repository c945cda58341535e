"""Per-pixel spectral fits: thickness maps by non-negative least squares, PCA and k-means clusters.

The thickness fit solves, for every pixel, min_t ||A t − b||² with t ≥ 0,
where b holds the pixel's optical densities OD(E) (and, in the joint fit, its
phase shifts −φ(E)) and A the references: OD = Σ_m μ_m(E) t_m and
−φ = Σ_m k δ_m(E) t_m (k = 2π/λ), so t comes out in metres (aXis2000's
"absorption-coefficient units"; ProSPyX's δ/β use of the phase).

The solver enumerates the 2^K active sets of K components: each is an
unconstrained least-squares solution (one small pseudo-inverse applied to
all pixels at once); the NNLS optimum is the feasible one of least residual
(the NNLS solution is the unconstrained solution on its own passive set, and
every feasible candidate is a feasible point). Exact, batched, and the same
code on CuPy; for K > 8 it falls back to :func:`scipy.optimize.nnls` per pixel.
"""

from __future__ import annotations

import itertools
from types import ModuleType

import numpy as np

__all__ = ["design_matrix", "nnls_batched", "fit_thickness", "pca_kmeans"]

MAX_ENUMERATED = 8


def design_matrix(refs, energies_eV, *, joint: bool = False, phase_weight: float = 1.0) -> np.ndarray:
    """(rows, K) matrix of the fit: μ_m(E) rows, then (``joint``) w·k·δ_m(E) rows.

    Raises
    ------
    ValueError
        ``joint`` while a reference has no δ.
    """
    from ..io.energy import photon_wavelength  # noqa: PLC0415

    mu = np.stack([r.mu_per_m for r in refs], 1)
    if not joint:
        return mu
    missing = [r.name for r in refs if r.delta is None]
    if missing:
        raise ValueError(f"joint amplitude+phase fit needs delta in every reference; missing in {missing}")
    k = np.array([2 * np.pi / photon_wavelength(e) for e in energies_eV])
    return np.concatenate([mu, phase_weight * k[:, None] * np.stack([r.delta for r in refs], 1)], 0)


def nnls_batched(A, B, xp: ModuleType = np):
    """Non-negative least squares for many right-hand sides: min ||A x − b||², x ≥ 0, per column of B.

    Parameters
    ----------
    A : (m, K) float
    B : (m, n) float
        One right-hand side per column (e.g. per pixel).

    Returns
    -------
    X : (K, n) float64
    residual : (n,) float64
        ||A x − b|| per column.

    Raises
    ------
    ValueError
        Mismatched shapes.
    """
    A = xp.asarray(A, dtype=xp.float64)
    B = xp.asarray(B, dtype=xp.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"nnls_batched: A {A.shape} and B {B.shape} do not match")
    m, K = A.shape
    n = B.shape[1]
    if K > MAX_ENUMERATED:
        from scipy.optimize import nnls  # noqa: PLC0415

        An, Bn = backend_numpy(A), backend_numpy(B)
        X = np.empty((K, n))
        res = np.empty(n)
        for j in range(n):
            X[:, j], res[j] = nnls(An, Bn[:, j])
        return xp.asarray(X), xp.asarray(res)
    best_x = xp.zeros((K, n))
    best_r = xp.sum(B * B, axis=0)          # the empty set: x = 0
    for size in range(1, K + 1):
        for cols in itertools.combinations(range(K), size):
            sub = A[:, list(cols)]
            x = xp.linalg.pinv(sub) @ B      # (size, n)
            feasible = xp.all(x >= 0, axis=0)
            r = xp.sum((sub @ x - B) ** 2, axis=0)
            take = feasible & (r < best_r)
            best_r = xp.where(take, r, best_r)
            full = xp.zeros((K, n))
            full[list(cols)] = x
            best_x = xp.where(take[None, :], full, best_x)
    return best_x, xp.sqrt(xp.maximum(best_r, 0))


def backend_numpy(a):
    """A NumPy copy of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def fit_thickness(od, refs, energies_eV, *, phase=None, valid=None, phase_weight: float = 1.0,
                  chunk_pixels: int = 1 << 16, xp: ModuleType = np):
    """Per-pixel thickness maps (m) of each reference component by NNLS.

    Parameters
    ----------
    od : (n_energies, H, W) float
        Optical density per energy.
    refs : list of Reference
        On the same energies.
    energies_eV : (n_energies,) float
    phase : (n_energies, H, W) float, optional
        Phase φ (rad, vacuum 0); with it (and δ in every reference) the fit is joint: the rows
        −φ = Σ k δ_m t_m are appended, weighted by ``phase_weight``.
    valid : (H, W) bool, optional
        Pixels to fit (others NaN).
    chunk_pixels : int
        Pixels per solver call (bounded memory).

    Returns
    -------
    thickness : (K, H, W) float32, m
    residual : (H, W) float32
        RMS misfit over the rows (OD units; joint: OD and weighted rad together).

    Raises
    ------
    ValueError
        Shapes that do not match; joint fit without δ.
    """
    od = np.asarray(od, np.float64)
    nE, H, W = od.shape
    if len(energies_eV) != nE or any(len(r.mu_per_m) != nE for r in refs):
        raise ValueError(f"fit_thickness: {nE} energies in the stack, references/energies do not match")
    A = design_matrix(refs, energies_eV, joint=phase is not None, phase_weight=phase_weight)
    rows = od.reshape(nE, -1)
    if phase is not None:
        rows = np.concatenate([rows, -phase_weight * np.asarray(phase, np.float64).reshape(nE, -1)], 0)
    valid = np.ones((H, W), bool) if valid is None else np.asarray(valid, bool)
    idx = np.flatnonzero(valid.ravel() & np.all(np.isfinite(rows), 0))
    K = len(refs)
    t = np.full((K, H * W), np.nan, np.float32)
    res = np.full(H * W, np.nan, np.float32)
    for s in range(0, idx.size, chunk_pixels):
        sel = idx[s:s + chunk_pixels]
        x, r = nnls_batched(A, xp.asarray(rows[:, sel]), xp=xp)
        t[:, sel] = backend_numpy(x)
        res[sel] = backend_numpy(r) / np.sqrt(A.shape[0])
    return t.reshape(K, H, W), res.reshape(H, W)


def pca_kmeans(stack, valid, n_clusters: int = 3, n_components: int | None = None, seed: int = 0) -> dict:
    """PCA of the pixel spectra and k-means clusters on the leading scores (as MANTiS).

    Parameters
    ----------
    stack : (n_energies, H, W) float
        OD stack.
    valid : (H, W) bool
    n_clusters : int
    n_components : int, optional
        Default min(n_energies, 4).

    Returns
    -------
    dict
        ``eigenimages`` (n_pc, H, W) float32 (NaN outside ``valid``), ``eigenspectra`` (n_pc, n_energies),
        ``explained_variance_ratio`` (n_pc,), ``labels`` (H, W) int16 (−1 outside), ``cluster_spectra``
        (n_clusters, n_energies) mean OD per cluster.

    Raises
    ------
    ValueError
        Fewer valid pixels than clusters.
    """
    from sklearn.cluster import KMeans  # noqa: PLC0415
    from sklearn.decomposition import PCA  # noqa: PLC0415

    nE, H, W = stack.shape
    X = np.asarray(stack, np.float64).reshape(nE, -1).T[np.asarray(valid).ravel()]
    if len(X) < max(n_clusters, 2):
        raise ValueError(f"PCA/k-means: {len(X)} valid pixels for {n_clusters} clusters")
    npc = min(nE, 4) if n_components is None else int(n_components)
    pca = PCA(n_components=npc, random_state=seed)
    scores = pca.fit_transform(X)
    from threadpoolctl import threadpool_limits  # noqa: PLC0415  (a scikit-learn dependency)

    # One BLAS/OpenMP thread: the problem is small, and spinning threads stall a shared node
    # (5.8 s instead of 0.1 s for 2000 pixels under load).
    with threadpool_limits(1):
        km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(scores)
    eig = np.full((npc, H * W), np.nan, np.float32)
    eig[:, np.asarray(valid).ravel()] = scores.T
    labels = np.full(H * W, -1, np.int16)
    labels[np.asarray(valid).ravel()] = km.labels_
    spectra = np.stack([X[km.labels_ == c].mean(0) for c in range(n_clusters)])
    return {"eigenimages": eig.reshape(npc, H, W), "eigenspectra": pca.components_,
            "explained_variance_ratio": pca.explained_variance_ratio_, "labels": labels.reshape(H, W),
            "cluster_spectra": spectra}
