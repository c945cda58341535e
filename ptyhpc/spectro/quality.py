"""Image-quality figures of merit used by seed 001 (Figs. 3, 6): knife-edge width, sharpness, SNR, FRC.

The Fourier ring correlation itself is :func:`ptyhpc.ptycho.metrics.frc` (half-bit threshold,
:func:`~ptyhpc.ptycho.metrics.frc_resolution`); :func:`frc_of_halves` prepares two half-data
reconstructions for it (registration, global phase, apodisation). :func:`stack_quality` measures
the knife edge, sharpness and SNR at every energy of an OD stack.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knife_edge_width", "laplacian_variance", "snr", "strongest_edge", "line_profile", "stack_quality",
           "frc_of_halves"]


def knife_edge_width(profile, pixel_size_m: float, low: float = 0.2, high: float = 0.8) -> float:
    """Edge width between the ``low`` and ``high`` levels (20–80 %) of a line profile across one edge.

    The profile is normalised between the means of its first and last 15 %
    (the plateaus on each side); the crossings are found by linear
    interpolation on the monotone part around the steepest step.

    Parameters
    ----------
    profile : (n,) float
        Values along a line crossing one edge (either direction).
    pixel_size_m : float
        Sample spacing along the line, m.

    Returns
    -------
    float
        m.

    Raises
    ------
    ValueError
        Fewer than 8 samples or no step between the plateaus.
    """
    p = np.asarray(profile, float)
    if p.size < 8:
        raise ValueError("knife_edge_width: the profile needs >= 8 samples")
    m = max(1, int(0.15 * p.size))
    a, b = p[:m].mean(), p[-m:].mean()
    if abs(b - a) < 1e-12:
        raise ValueError("knife_edge_width: no step between the plateaus")
    q = (p - a) / (b - a)               # 0 -> 1 across the edge
    centre = int(np.argmin(np.abs(q - 0.5)))

    def crossing(level):
        # The crossing of ``level`` nearest the edge centre, by linear interpolation.
        i = np.nonzero((q[:-1] - level) * (q[1:] - level) <= 0)[0]
        if i.size == 0:
            raise ValueError(f"knife_edge_width: profile never reaches {level:.0%}")
        lo = int(i[np.argmin(np.abs(i - centre))])
        dq = q[lo + 1] - q[lo]
        return lo + ((level - q[lo]) / dq if dq else 0.0)

    return abs(crossing(high) - crossing(low)) * pixel_size_m


def laplacian_variance(image, region=None) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al., ICPR 2000), the sharpness measure of seed 001.

    ``region`` (bool, optional): the pixels whose Laplacian counts (default all); pixels outside
    it are filled with the region's mean first, so that no NaN or frame edge enters.
    """
    from scipy import ndimage  # noqa: PLC0415

    img = np.asarray(image, np.float64)
    if region is None:
        return float(np.var(ndimage.laplace(img)))
    region = np.asarray(region, bool)
    inner = ndimage.binary_erosion(region)
    if inner.sum() < 2:
        raise ValueError("laplacian_variance: the region needs >= 2 interior pixels")
    return float(np.var(ndimage.laplace(np.where(region, img, img[region].mean()))[inner]))


def snr(image, region) -> float:
    """Mean over standard deviation of ``image`` inside ``region`` (seed 001: OD of the CNTs / its spread)."""
    v = np.asarray(image, float)[np.asarray(region, bool)]
    if v.size < 2:
        raise ValueError("snr: the region needs >= 2 pixels")
    return float(v.mean() / v.std())


def strongest_edge(image, valid, half_length_px: float = 6.0, sigma: float = 1.0) -> tuple[float, float, float, float]:
    """The line (y0, x0, y1, x1), px, of length 2·``half_length_px`` across the strongest edge of ``image``.

    The edge point is the maximum of the Gaussian gradient magnitude (σ ``sigma`` px) among the
    pixels at least ``half_length_px`` inside ``valid``; the line runs along the gradient there.

    Raises
    ------
    ValueError
        No valid pixel that far inside ``valid``.
    """
    from scipy import ndimage  # noqa: PLC0415

    valid = np.asarray(valid, bool)
    img = np.asarray(image, np.float64)
    img = np.where(valid, img, np.nanmean(img[valid]) if valid.any() else 0.0)
    inner = ndimage.distance_transform_edt(valid) > half_length_px + 1
    if not inner.any():
        raise ValueError(f"strongest_edge: no pixel lies {half_length_px} px inside the valid area")
    gy = ndimage.gaussian_filter(img, sigma, order=(1, 0))
    gx = ndimage.gaussian_filter(img, sigma, order=(0, 1))
    mag = np.where(inner, np.hypot(gy, gx), -1.0)
    cy, cx = np.unravel_index(int(np.argmax(mag)), mag.shape)
    norm = max(float(np.hypot(gy[cy, cx], gx[cy, cx])), 1e-300)
    uy, ux = gy[cy, cx] / norm, gx[cy, cx] / norm
    h = half_length_px
    return (float(cy - h * uy), float(cx - h * ux), float(cy + h * uy), float(cx + h * ux))


def line_profile(image, line, step_px: float = 0.25) -> tuple[np.ndarray, float]:
    """Cubic-interpolated samples of ``image`` along ``line`` (y0, x0, y1, x1) px, every ``step_px`` px.

    Returns
    -------
    profile : (n,) float
    step : float
        Sample spacing in px of the image.
    """
    from scipy import ndimage  # noqa: PLC0415

    y0, x0, y1, x1 = line
    length = float(np.hypot(y1 - y0, x1 - x0))
    n = int(round(length / step_px)) + 1
    t = np.linspace(0.0, 1.0, n)
    img = np.asarray(image, np.float64)
    img = np.where(np.isfinite(img), img, np.nanmean(img))
    prof = ndimage.map_coordinates(img, [y0 + t * (y1 - y0), x0 + t * (x1 - x0)], order=3, mode="nearest")
    return prof, length / (n - 1)


def stack_quality(od, valid, pixel_size_m, *, region=None, line=None, half_length_px: float = 6.0) -> dict:
    """Knife-edge 20–80 % width, variance of the Laplacian and SNR of every image of an OD stack.

    Seed 001 measures these per energy (Figs. 3, 6): the edge width across a sharp feature, the
    sharpness, and the SNR = mean/std of a material's OD.

    Parameters
    ----------
    od : (n, H, W) float
        Optical density per item (NaN outside ``valid`` allowed).
    valid : (H, W) bool
    pixel_size_m : (float, float)
        (y, x), m.
    region : (H, W) bool, optional
        SNR region (a uniform material); default: the valid pixels (eroded by 1 px) whose mean OD over
        the stack is in the top 10 %.
    line : (y0, x0, y1, x1), optional
        Knife-edge line, px; default :func:`strongest_edge` of the stack's mean OD.
    half_length_px : float
        Half length of the automatic knife-edge line, px.

    Returns
    -------
    dict
        ``knife_edge_m`` (n,) m (NaN where the profile has no step), ``laplacian_variance`` (n,),
        ``snr`` (n,), ``line`` (y0, x0, y1, x1) px, ``region`` (H, W) bool.

    Raises
    ------
    ValueError
        Fewer than 2 SNR pixels; no room for the knife-edge line inside ``valid``.
    """
    from scipy import ndimage  # noqa: PLC0415

    od = np.asarray(od, np.float64)
    valid = np.asarray(valid, bool)
    with np.errstate(invalid="ignore"):
        mean = np.where(valid, np.nanmean(np.where(valid, od, 0.0), axis=0), np.nan)
    if region is None:
        inner = ndimage.binary_erosion(valid) & np.isfinite(mean)
        cut = np.percentile(mean[inner], 90)
        region = inner & (mean >= cut)
    region = np.asarray(region, bool) & valid
    if line is None:
        line = strongest_edge(mean, valid, half_length_px)
    y0, x0, y1, x1 = line
    # Metres per px along the line (pixels may be non-square).
    length_m = float(np.hypot((y1 - y0) * pixel_size_m[0], (x1 - x0) * pixel_size_m[1]))
    length_px = float(np.hypot(y1 - y0, x1 - x0))
    edge, lap, s = [], [], []
    for img in od:
        prof, step = line_profile(img, line)
        try:
            edge.append(knife_edge_width(prof, step * length_m / length_px))
        except ValueError:
            edge.append(float("nan"))
        lap.append(laplacian_variance(img, valid))
        s.append(snr(img, region))
    return {"knife_edge_m": np.array(edge), "laplacian_variance": np.array(lap), "snr": np.array(s),
            "line": tuple(float(v) for v in line), "region": region}


def frc_of_halves(a, b, valid, pixel_size_m, *, taper_px: float = 6.0) -> dict:
    """FRC and half-bit resolution of two half-data reconstructions of one field.

    ``b`` is registered onto ``a`` (sub-pixel, :func:`ptyhpc.spectro.stack.register`) and given
    ``a``'s global phase; both have their mean over ``valid`` removed and are apodised by ``valid``
    eroded by ``taper_px`` and smoothed over ``taper_px`` (no hard edge, which would correlate at
    every frequency). Then :func:`ptyhpc.ptycho.metrics.frc` and
    :func:`~ptyhpc.ptycho.metrics.frc_resolution` (van Heel & Schatz 2005, half-bit).

    Parameters
    ----------
    a, b : (H, W) complex
        Two reconstructions from disjoint halves of the data, on the same grid.
    valid : (H, W) bool
        Well-lit in both.
    pixel_size_m : float or (float, float)
        m (the mean of y and x is used for the frequency axis).

    Returns
    -------
    dict
        ``k_per_m`` (n,), ``frc`` (n,), ``threshold`` (n,) half-bit, ``n_pixels`` (n,), ``resolution_m``,
        ``shift_px`` (2,) applied to ``b``.

    Raises
    ------
    ValueError
        Mismatched shapes, or fewer than 64 valid pixels.
    """
    from scipy import ndimage  # noqa: PLC0415

    from ..ptycho.metrics import frc, frc_resolution, half_bit_threshold  # noqa: PLC0415
    from .stack import apply_shift, register  # noqa: PLC0415

    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    valid = np.asarray(valid, bool)
    if a.shape != b.shape or a.shape != valid.shape:
        raise ValueError(f"frc_of_halves: shapes {a.shape}, {b.shape} and valid {valid.shape} differ")
    if valid.sum() < 64:
        raise ValueError(f"frc_of_halves: {int(valid.sum())} valid pixels, need >= 64")
    shift = register(a, b, valid, valid)
    b, vb = apply_shift(b, valid, shift)
    v = valid & vb
    b = b * np.exp(1j * np.angle(np.sum((a * np.conj(b))[v])))
    w = ndimage.gaussian_filter(ndimage.binary_erosion(v, iterations=int(np.ceil(taper_px))).astype(float), taper_px)
    iy, ix = np.nonzero(v)
    box = (slice(iy.min(), iy.max() + 1), slice(ix.min(), ix.max() + 1))
    am = (a - a[v].mean()) * w
    bm = (b - b[v].mean()) * w
    px = float(np.mean(np.broadcast_to(pixel_size_m, (2,))))
    k, f, n = frc(am[box], bm[box], px)
    return {"k_per_m": k, "frc": f, "threshold": half_bit_threshold(n), "n_pixels": n, "resolution_m": frc_resolution(k, f, n),
            "shift_px": np.asarray(shift, float)}
