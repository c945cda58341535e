"""Preprocessing and alignment of phase projections for tomography.

Shift convention: ``shifts[i] = (dy, dx)`` in pixels is what is *applied* to
projection ``i`` (``scipy.ndimage.shift`` convention, ``out[y] = in[y - dy]``)
to align it; data displaced by ``d`` come back with ``shifts ≈ -d``.

Reference frame: the projection nearest 0° keeps its position, so absolute
positions (the scan frame) are preserved.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage.filters import window
from skimage.registration import phase_cross_correlation
from skimage.transform import downscale_local_mean

from .fbp import _as_3d
from .parallel import reconstruct_slabs
from .projector import Projector
from .sirt import sirt

__all__ = [
    "remove_offset_ramp",
    "apply_shifts",
    "vertical_alignment",
    "find_center",
    "mirror_pairs",
    "sharpness",
    "sharpness_curve",
    "consistency_residual",
    "projection_matching",
    "reference_index",
]


def reference_index(angles) -> int:
    """Index of the projection nearest 0° (the alignment reference)."""
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size == 0:
        raise ValueError("angles is empty")
    return int(np.argmin(np.abs(np.angle(np.exp(1j * angles)))))


def _plane_basis(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    # centred and scaled so the normal equations are well conditioned
    return np.stack([np.ones(h * w), (y.ravel() - (h - 1) / 2) / h, (x.ravel() - (w - 1) / 2) / w], axis=1)


def remove_offset_ramp(images, mask=None, *, method: str = "robust", dark_fraction: float = 0.2,
                       n_sigma: float = 3.0, max_iter: int = 20) -> np.ndarray:
    """Subtract a least-squares plane ``a + b y + c x`` from each image.

    Parameters
    ----------
    images : array_like of float, shape (H, W) or (n, H, W)
        Phase images (rad) or any real images.
    mask : array_like of bool, shape (H, W) or (n, H, W), optional
        Pixels known to be background (e.g. the empty border); the plane is
        fitted there only. Default: a fit chosen by ``method``.
    method : {"robust", "dark"}
        Without a mask: ``"robust"`` σ-clips around the plane of the pixels
        below the median (background must cover ≳ 30 % of the image);
        ``"dark"`` fits the plane to the darkest ``dark_fraction`` of the
        pixels (relative to the current plane) and iterates: the vacuum
        reference of an object that fills most of the field of view, as
        tilted tubes or rods do, as long as some vacuum is in view.
    dark_fraction : float
        ``"dark"`` only: fraction of pixels taken as vacuum.
    n_sigma : float
        Robust fit only: pixels with ``|residual| > n_sigma · σ`` (σ from the
        median absolute deviation) are excluded and the fit repeated.
    max_iter : int
        Robust fit only: maximum number of refits.

    Returns
    -------
    ndarray of float32, shape of ``images``
        Images with the plane removed, so the background is ≈ 0.

    Raises
    ------
    ValueError
        Complex input, bad shapes, or a mask with fewer than 3 pixels in an image.

    Notes
    -----
    The robust fit starts from the pixels below each image's median, because
    matter has positive phase (projected potential) over vacuum, then
    alternates least squares and symmetric σ-clipping. It needs a background
    that covers a sizeable part of the image (≳ 30 %); otherwise give a mask.
    """
    imgs = np.asarray(images)
    if np.iscomplexobj(imgs):
        raise ValueError("images must be real (take the phase first)")
    if imgs.ndim not in (2, 3):
        raise ValueError(f"images must be (H, W) or (n, H, W), got {imgs.shape}")
    if method not in ("robust", "dark"):
        raise ValueError(f"method must be 'robust' or 'dark', got {method!r}")
    if not 0 < dark_fraction < 1:
        raise ValueError(f"dark_fraction must be in (0, 1), got {dark_fraction}")
    single = imgs.ndim == 2
    stack = imgs[None] if single else imgs
    n, h, w = stack.shape
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), stack.shape)
    G = _plane_basis(h, w)
    out = np.empty(stack.shape, dtype=np.float32)
    for i in range(n):
        v = stack[i].astype(np.float64).ravel()
        if mask is not None:
            sel = mask[i].ravel()
            if sel.sum() < 3:
                raise ValueError(f"mask of image {i} has fewer than 3 pixels")
            coef = np.linalg.lstsq(G[sel], v[sel], rcond=None)[0]
        elif method == "dark":
            r = v
            for _ in range(max_iter):
                sel = r <= np.quantile(r, dark_fraction)
                coef = np.linalg.lstsq(G[sel], v[sel], rcond=None)[0]
                new_r = v - G @ coef
                if np.array_equal(new_r <= np.quantile(new_r, dark_fraction), sel):
                    break
                r = new_r
        else:
            sel = v <= np.median(v)
            for _ in range(max_iter):
                coef = np.linalg.lstsq(G[sel], v[sel], rcond=None)[0]
                r = v - G @ coef
                sigma = 1.4826 * np.median(np.abs(r[sel] - np.median(r[sel])))
                new = np.abs(r) <= n_sigma * max(sigma, np.finfo(np.float32).tiny)
                if new.sum() < 3 or np.array_equal(new, sel):
                    break
                sel = new
        out[i] = (v - G @ coef).reshape(h, w)
    return out[0] if single else out


def apply_shifts(projections, shifts, *, order: int = 3) -> np.ndarray:
    """Shift each projection by ``shifts[i] = (dy, dx)`` pixels.

    Parameters
    ----------
    projections : array_like of float, shape (n, H, W)
    shifts : array_like of float, shape (n, 2)
        ``scipy.ndimage.shift`` convention; (y, x) order.
    order : int
        Spline order of the interpolation (3: cubic).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        Edges are extended with the nearest values (objects along y, such as
        nanotubes, run through the top and bottom edges).
    """
    p = np.asarray(projections, dtype=np.float32)
    shifts = np.asarray(shifts, dtype=np.float64).reshape(p.shape[0], 2)
    out = np.empty_like(p)
    for i in range(p.shape[0]):
        if np.any(shifts[i] != 0):
            out[i] = ndi.shift(p[i], shifts[i], order=order, mode="nearest")
        else:
            out[i] = p[i]
    return out


def _check_stack(projections, angles):
    p, angles, single = _as_3d(projections, angles)
    if single:
        raise ValueError("alignment needs projections shaped (n_angles, n_rows, n_cols)")
    return p.astype(np.float32), angles


def vertical_alignment(projections, angles=None, *, upsample_factor: int = 20,
                       max_shift: float | None = None):
    """Align projections along the tilt axis y by correlating their row profiles.

    For parallel-beam tilts about y, the sum of a projection over x is the
    mass of each slice and does not depend on the angle (when the object
    stays inside the field), so the row profiles of all projections must
    agree; each one is registered to the reference's with subpixel
    cross-correlation of their derivatives (``skimage.registration.phase_cross_correlation``,
    no phase normalisation, zero-padded).

    Parameters
    ----------
    projections : array_like of float, shape (n_angles, n_rows, n_cols)
        Background-corrected projections (background ≈ 0).
    angles : array_like of float, shape (n_angles,), optional
        Radians; the reference is the projection nearest 0°. Without
        angles, the middle projection.
    upsample_factor : int
        Subpixel precision 1 / upsample_factor.
    max_shift : float, optional
        Shifts are clipped to ±max_shift pixels.

    Returns
    -------
    aligned : ndarray of float32, shape (n_angles, n_rows, n_cols)
    shifts_y : ndarray of float64, shape (n_angles,)
        y shifts applied (pixels); 0 for the reference.

    Raises
    ------
    ValueError
        Bad shapes or mismatched angles.

    Notes
    -----
    Objects uniform along y (straight tubes, no ends in the field) have
    featureless profiles and the shifts are then noise; the projection
    matching step (:func:`projection_matching`) registers y as well.
    """
    p = np.asarray(projections)
    if p.ndim != 3:
        raise ValueError(f"projections must be (n_angles, n_rows, n_cols), got {p.shape}")
    if angles is None:
        ref = p.shape[0] // 2
    else:
        p, angles = _check_stack(p, angles)
        ref = reference_index(angles)
    # Derivatives of the profiles: features such as object ends become peaks and
    # the (angle-independent) mean drops out; zero padding makes the FFT correlation
    # linear instead of circular.
    prof = np.gradient(p.sum(axis=2, dtype=np.float64), axis=1)
    prof = np.pad(prof, ((0, 0), (prof.shape[1], prof.shape[1])))
    shifts = np.array([
        phase_cross_correlation(prof[ref], prof[i], upsample_factor=upsample_factor,
                                normalization=None)[0][0]
        for i in range(p.shape[0])
    ])
    shifts -= shifts[ref]
    if max_shift is not None:
        shifts = np.clip(shifts, -max_shift, max_shift)
    both = np.stack([shifts, np.zeros_like(shifts)], axis=1)
    return apply_shifts(p, both), shifts


def _center_com(p: np.ndarray, angles: np.ndarray) -> float:
    prof = p.sum(axis=1, dtype=np.float64)             # (n_angles, n_cols)
    u = np.arange(prof.shape[1])
    mass = prof.sum(axis=1)
    if np.any(np.abs(mass) < 1e-12 * np.abs(prof).sum(axis=1).max()):
        raise ValueError("a projection has zero total mass; remove the offset first")
    com = prof @ u / mass
    G = np.stack([np.ones_like(angles), np.cos(angles), np.sin(angles)], axis=1)
    coef = np.linalg.lstsq(G, com, rcond=None)[0]
    return float(coef[0])


def mirror_pairs(angles, tol: float | None = None) -> list[tuple[int, int, float]]:
    """Pairs of projections about 180° apart (mirror images of each other).

    Parameters
    ----------
    angles : array_like of float, shape (n_angles,)
        Radians.
    tol : float, optional
        Largest accepted mismatch ``|θ_j − θ_i − π|`` (radians, modulo 2π);
        default 1.5 × the median angular step, so a 0…179° series with 1°
        steps pairs 0° with 179°.

    Returns
    -------
    list of (i, j, e)
        ``θ_j = θ_i + π + e`` (modulo 2π), ``|e| <= tol``, each unordered pair
        once, best matches first.
    """
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size < 2:
        return []
    if tol is None:
        steps = np.diff(np.unique(np.mod(angles, 2 * np.pi)))
        steps = steps[steps > 1e-9]
        tol = 1.5 * float(np.median(steps)) if steps.size else 0.0
    mismatch = np.angle(np.exp(1j * (angles[None, :] - angles[:, None] - np.pi)))   # [i, j]
    pairs = []
    for i in range(angles.size):
        j = int(np.argmin(np.abs(mismatch[i])))
        e = float(mismatch[i, j])
        if abs(e) <= tol and i < j:
            pairs.append((i, j, e))
    return sorted(pairs, key=lambda q: abs(q[2]))


def _xshift(reference: np.ndarray, moving: np.ndarray) -> float:
    """x shift to apply to ``moving`` to match ``reference`` (zero-padded, so not circular)."""
    w = reference.shape[-1] // 2
    pad = ((0, 0), (w, w))
    return float(phase_cross_correlation(np.pad(reference, pad), np.pad(moving, pad), upsample_factor=100,
                                         normalization=None)[0][1])


def _center_mirror(p: np.ndarray, angles: np.ndarray, tol: float | None, max_pairs: int = 16) -> float:
    pairs = mirror_pairs(angles, tol)[:max_pairs]
    if not pairs:
        raise ValueError("no projection pair 180° apart (within the tolerance): the mirror method is not "
                         "available for these angles; use method='sharpness' or 'consistency'")
    n = p.shape[2]
    estimates = []
    for i, j, e in pairs:
        # flip(p_j)(u) = p(θ_i + e, u + D), D = 2c − (n − 1): the mirror image is the projection at
        # θ_i + e shifted by −D; its x shift against p_i, s1, is D − m(e), m(e) the motion of the
        # object's features between θ_i and θ_i + e. m is estimated from p_i's nearest
        # neighbour k, linearly in angle (first order in the mismatch e; zero for exact pairs).
        s1 = _xshift(p[i], p[j][:, ::-1])
        D = s1
        if e != 0.0:
            others = np.flatnonzero(np.arange(angles.size) != i)
            k = int(others[np.argmin(np.abs(np.angle(np.exp(1j * (angles[others] - angles[i])))))])
            step = float(np.angle(np.exp(1j * (angles[k] - angles[i]))))
            if abs(step) > 1e-9:
                D = s1 - _xshift(p[i], p[k]) * e / step
        estimates.append(((n - 1) + D) / 2)
    return float(np.median(estimates))


def sharpness(image, mask=None) -> float:
    """Sharpness of a reconstructed slice: ``Σ f / Σ |f|`` over ``mask``.

    A wrong rotation centre smears each feature into arcs with negative side
    lobes, which raise ``Σ |f|`` while ``Σ f`` (the projected mass) stays
    fixed, so the ratio (≤ 1) peaks at the right centre; this is the
    "integral of the absolute value" criterion of Donath et al. (2006),
    J. Opt. Soc. Am. A 23, 1048, which found it the most robust one for
    absorption data, normalised to be scale free. Needs data with a ≈ 0
    background (flat-field or offset corrected).

    Parameters
    ----------
    image : array_like of float, shape (n, n)
    mask : array_like of bool, shape (n, n), optional
        Default: the disk inscribed in the image (where a 180° scan is complete).

    Returns
    -------
    float
        In [-1, 1]; 0 for an all-zero image.
    """
    f = np.asarray(image, dtype=np.float64)
    if mask is None:
        n0, n1 = f.shape
        zz, xx = np.ogrid[:n0, :n1]
        r = min(n0, n1) / 2 - 1
        mask = (zz - (n0 - 1) / 2) ** 2 + (xx - (n1 - 1) / 2) ** 2 <= r * r
    v = f[mask]
    total = np.abs(v).sum()
    return float(v.sum() / total) if total > 0 else 0.0


def _bin_columns(sino: np.ndarray, b: int) -> np.ndarray:
    m = sino.shape[-1] // b * b
    return sino[..., :m].reshape(*sino.shape[:-1], m // b, b).mean(axis=-1)


def sharpness_curve(sino, angles, centers, *, binning: int = 1, filter_name: str | None = "ramp") -> np.ndarray:
    """:func:`sharpness` of the FBP of one sinogram for each candidate centre.

    Parameters
    ----------
    sino : array_like of float, shape (n_angles, n_cols)
        A sinogram (e.g. the projections summed over rows).
    angles : array_like of float, shape (n_angles,)
        Radians.
    centers : array_like of float
        Candidate rotation-axis columns (full-resolution pixels).
    binning : int
        Reconstruct from the sinogram averaged over ``binning`` columns
        (centres converted to the binned grid).
    filter_name : str or None
        FBP filter.

    Returns
    -------
    ndarray of float64, shape of ``centers``
    """
    from .fbp import fbp  # noqa: PLC0415

    sb = _bin_columns(np.asarray(sino, dtype=np.float32), int(binning)) if binning > 1 else np.asarray(sino)
    out = [sharpness(fbp(sb, angles, center=(c + 0.5) / binning - 0.5, filter_name=filter_name))
           for c in np.ravel(centers)]
    return np.array(out).reshape(np.shape(centers))


def _center_sharpness(p: np.ndarray, angles: np.ndarray, search) -> float:
    sino = p.sum(axis=1, dtype=np.float64).astype(np.float32)   # the object projected along y
    n = sino.shape[1]
    lo, hi = search
    # coarse to fine: the whole range in 1-binned-pixel steps on a sinogram binned to
    # 128-255 columns, then ±1.5 steps around the best at each finer level (half the
    # binning, steps of half a binned pixel), ending with 0.25 px steps at full resolution
    b = 1
    while n // (2 * b) >= 128:
        b *= 2
    step = float(b)
    cands = np.arange(lo, hi + step / 2, step)
    while True:
        vals = sharpness_curve(sino, angles, cands, binning=b)
        k = int(np.argmax(vals))
        if step <= 0.25:
            break
        best, width = cands[k], 1.5 * step
        b = max(1, b // 2)
        step = b / 2 if b > 1 else 0.25
        cands = np.arange(max(lo, best - width), min(hi, best + width) + step / 2, step)
    if 0 < k < cands.size - 1:
        r0, r1, r2 = vals[k - 1:k + 2]
        curv = r0 - 2 * r1 + r2
        if curv < 0:
            return float(cands[k] + 0.5 * (r0 - r2) / curv * (cands[1] - cands[0]))
    return float(cands[k])


#: Methods of :func:`find_center`.
CENTER_METHODS = ("auto", "mirror", "sharpness", "consistency", "com")


def find_center(projections, angles, *, method: str = "auto", n_iter: int = 50,
                search=None, mirror_tol: float | None = None) -> float:
    """Estimate the detector column of the rotation axis.

    ``method="mirror"``: projections 180° apart are mirror images about the
    axis, ``p(θ + π, u) = p(θ, 2c − u)``; each pair found by
    :func:`mirror_pairs` is registered by subpixel cross-correlation
    (``skimage.registration.phase_cross_correlation``) of one with the other
    flipped, giving ``2c − (n − 1)``; a pair that is off by ``e`` (e.g. 0° and
    179°) is corrected to first order with the shift between neighbouring
    projections. Median over up to 16 pairs.

    ``method="sharpness"``: the centre maximising :func:`sharpness` of the
    FBP of the row-summed sinogram (the object projected along the axis),
    searched coarse to fine (binned sinograms, then 0.25 px steps at full
    resolution and a parabola through the best three). Needs a range near
    180°: over a limited range every centre gives a plausible image.

    ``method="consistency"``: for each candidate column the row-summed
    sinogram is reconstructed by non-negative SIRT and reprojected; the axis
    is the column of least relative residual, refined to sub-pixel by a
    parabola through the three best candidates. Data from a wrong axis are
    inconsistent with any non-negative object, so the residual has a clear
    minimum even over ±60°. It needs projections whose vacuum is ≈ 0
    (``remove_offset_ramp(method="dark")``) and tolerates an object that
    fills the field or leaves it at high tilt.

    ``method="com"``: the centre of mass of a parallel projection moves on
    ``com(θ) = c + X cos θ + Z sin θ``, (X, Z) the object's centre of mass
    relative to the axis; a linear least-squares fit gives the axis column
    ``c``. Fast, needs no 180° pairs, but biased when the object leaves the
    field.

    ``method="auto"`` (default): mirror where pairs exist, else sharpness for
    a range of at least 170°, else consistency.

    Parameters
    ----------
    projections : array_like of float, shape (n_angles, n_cols) or (n_angles, n_rows, n_cols)
        Background-corrected projections: background ≈ 0 (see
        :func:`remove_offset_ramp`, or −log of flat-field-normalised data).
    angles : array_like of float, shape (n_angles,)
        Radians, at least 3 distinct values.
    method : {"auto", "mirror", "sharpness", "consistency", "com"}
    n_iter : int
        SIRT iterations per candidate (consistency only).
    search : (float, float), optional
        Column range searched (sharpness, consistency); default the middle 80 % of the field.
    mirror_tol : float, optional
        Radians; see :func:`mirror_pairs`.

    Returns
    -------
    float
        Rotation-axis column (0-based pixels, ASTRA's convention: the centre
        of the field is ``(n_cols − 1) / 2``).

    Raises
    ------
    ValueError
        Bad shapes, mismatched angles, fewer than 3 angles, an unknown method,
        (mirror) no pair 180° apart, or (com) a projection with zero total mass.
    """
    p, angles, _ = _as_3d(projections, angles)
    p = np.asarray(p, dtype=np.float32)
    if angles.size < 3:
        raise ValueError("find_center needs at least 3 angles")
    if method not in CENTER_METHODS:
        raise ValueError(f"method must be one of {CENTER_METHODS}, got {method!r}")
    n_cols = p.shape[2]
    lo, hi = search if search is not None else (0.1 * (n_cols - 1), 0.9 * (n_cols - 1))
    if method == "auto":
        phi = np.sort(np.mod(angles, np.pi))
        coverage = np.pi - np.max(np.append(np.diff(phi), np.pi - (phi[-1] - phi[0])))
        if mirror_pairs(angles, mirror_tol):
            method = "mirror"
        elif coverage >= np.deg2rad(170.0):
            method = "sharpness"
        else:
            method = "consistency"
    if method == "com":
        return _center_com(p, angles)
    if method == "mirror":
        return _center_mirror(p, angles, mirror_tol)
    if method == "sharpness":
        return _center_sharpness(p, angles, (lo, hi))
    cands = np.arange(np.ceil(lo), np.floor(hi) + 1)
    res = np.array([consistency_residual(p, angles, c, n_iter=n_iter) for c in cands])
    k = int(np.argmin(res))
    if 0 < k < len(cands) - 1:
        r0, r1, r2 = res[k - 1:k + 2]
        curv = r0 - 2 * r1 + r2
        if curv > 0:
            return float(cands[k] + 0.5 * (r0 - r2) / curv)
    return float(cands[k])


def consistency_residual(projections, angles, center, *, n_iter: int = 50) -> float:
    """Relative residual ‖A x − s‖/‖s‖ of non-negative SIRT on the row-summed sinogram ``s``.

    Small when the projections are consistent with one non-negative object
    rotating about column ``center``; used to find the axis and to accept
    or reject alignment shifts.
    """
    from .projector import Projector  # noqa: PLC0415
    from .sirt import sirt  # noqa: PLC0415

    p, angles, _ = _as_3d(projections, angles)
    sino = p.sum(axis=1).astype(np.float64)
    vol = sirt(sino, angles, n_iter=n_iter, nonneg=True, center=center)
    resid = Projector.cached(angles, sino.shape[1], center=center).forward(vol) - sino
    return float(np.linalg.norm(resid) / max(np.linalg.norm(sino), np.finfo(float).tiny))


def _fix_gauge(shifts: np.ndarray, angles: np.ndarray, ref: int) -> np.ndarray:
    """Remove the shift patterns that reprojection consistency does not fix.

    y: a common shift. x: an object translation (X, Z) shifts projection i
    by X cos θ_i + Z sin θ_i, invisible to consistency; a common shift is
    an axis offset, fixed by ``center`` in principle but hardly constrained
    over a limited range (1 and cos θ are nearly collinear for |θ| ≤ 60°).
    So the x shifts are made orthogonal to (1, cos θ, sin θ), which
    :func:`find_center` fits, and then translated along x (cos θ) so the
    reference keeps its position.
    """
    s = shifts.copy()
    s[:, 0] -= s[ref, 0]
    sin, cos = np.sin(angles), np.cos(angles)
    G = np.stack([np.ones_like(angles), cos, sin], axis=1)
    s[:, 1] -= G @ np.linalg.lstsq(G, s[:, 1], rcond=None)[0]
    if abs(cos[ref]) > 1e-6:
        s[:, 1] -= cos * (s[ref, 1] / cos[ref])
    else:
        s[:, 1] -= s[ref, 1]
    return s


def projection_matching(projections, angles, *, center: float | None = None, n_iter: int = 10,
                        max_shift: float | None = None, sirt_iter: int = 20, nonneg: bool = True,
                        upsample_factor: int = 20, tol: float = 0.02, binning=1,
                        shifts0=None, client=None, progress=None):
    """Iterative reprojection alignment (projection matching).

    Each iteration reconstructs the aligned projections with SIRT, projects
    the volume back, registers every projection to its reprojection with
    subpixel cross-correlation (``skimage.registration.phase_cross_correlation``,
    Tukey window, no phase normalisation) and updates the shifts, which are
    always applied to the *input* projections (``scipy.ndimage.shift``,
    cubic) so interpolation blur does not accumulate.

    Parameters
    ----------
    projections : array_like of float, shape (n_angles, n_rows, n_cols)
        Background-corrected projections.
    angles : array_like of float, shape (n_angles,)
        Radians.
    center : float, optional
        Rotation-axis column (full resolution), default ``(n_cols - 1) / 2``;
        estimate it first with :func:`find_center`.
    n_iter : int
        Maximum alignment iterations.
    max_shift : float, optional
        Shifts are clipped to ±max_shift pixels (full resolution).
    sirt_iter : int
        SIRT iterations per alignment iteration.
    nonneg : bool
        Non-negativity in SIRT.
    upsample_factor : int
        Registration precision 1 / upsample_factor (binned) pixels.
    tol : float
        Stop when the largest shift update is below ``tol`` pixels.
    binning : int or sequence of int
        Reconstruct and register on ``binning × binning`` binned projections
        (faster; precision scales with the binning). A sequence, e.g.
        ``(4, 2, 1)``, aligns coarse to fine, up to ``n_iter`` iterations
        per level: the coarse levels catch shifts of several pixels that a
        full-resolution start leaves partly uncorrected (measured: shifts
        uniform in ±5 px over 31-45 angles end at 0.05-0.16 px RMS with
        (4, 2, 1), up to 0.3 px with 1 alone).
    shifts0 : array_like of float, shape (n_angles, 2), optional
        Initial (y, x) shifts; default zeros.
    client : distributed.Client, optional
        Run the SIRT reconstructions slab-parallel on this client.
    progress : callable, optional
        Called as ``progress(iteration, max_update)``.

    Returns
    -------
    aligned : ndarray of float32, shape (n_angles, n_rows, n_cols)
        ``apply_shifts(projections, shifts)``.
    shifts : ndarray of float64, shape (n_angles, 2)
        Applied (y, x) shifts in pixels.

    Raises
    ------
    ValueError
        Bad shapes, mismatched angles or ``binning < 1``.

    Notes
    -----
    Shift patterns that consistency does not determine are fixed by
    convention: the x shifts have no component along (1, cos θ, sin θ) (a
    common x shift would be an axis offset, which :func:`find_center` sets,
    and the others translate the object), apart from the translation along
    x that keeps the projection nearest 0° in place; that projection has no
    y shift either. A wrong ``center`` is therefore not absorbed: estimate
    it first.
    """
    p, angles = _check_stack(projections, angles)
    n_ang, n_rows, n_cols = p.shape
    levels = [int(b) for b in np.atleast_1d(binning)]
    if not levels or min(levels) < 1:
        raise ValueError(f"binning must be >= 1, got {binning}")
    center = (n_cols - 1) / 2 if center is None else float(center)
    ref = reference_index(angles)
    shifts = np.zeros((n_ang, 2)) if shifts0 is None else np.array(shifts0, dtype=np.float64).reshape(n_ang, 2)
    it_total = 0
    for binning in levels:
        center_b = (center + 0.5) / binning - 0.5
        for _ in range(int(n_iter)):
            aligned = apply_shifts(p, shifts)
            work = downscale_local_mean(aligned, (1, binning, binning)).astype(np.float32) if binning > 1 else aligned
            if client is None:
                vol = sirt(work, angles, center=center_b, n_iter=sirt_iter, nonneg=nonneg)
            else:
                vol = reconstruct_slabs(work, angles, method="sirt", client=client, center=center_b,
                                        n_iter=sirt_iter, nonneg=nonneg)
            reproj = Projector.cached(angles, work.shape[2], center_b, kind="strip").forward(vol)
            win = window(("tukey", 0.3), work.shape[1:])
            update = np.array([
                phase_cross_correlation(reproj[i] * win, work[i] * win,
                                        upsample_factor=upsample_factor, normalization=None)[0]
                for i in range(n_ang)
            ]) * binning
            new = _fix_gauge(shifts + update, angles, ref)
            if max_shift is not None:
                new = np.clip(new, -max_shift, max_shift)
            change = float(np.abs(new - shifts).max())
            shifts = new
            if progress is not None:
                progress(it_total, change)
            it_total += 1
            if change < tol:
                break
    return apply_shifts(p, shifts), shifts
