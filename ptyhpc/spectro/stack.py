"""Stack assembly: per-energy reconstructions onto one grid, aligned, normalised to I0.

Steps (each per item, so they run as independent dask tasks):

1. resample: every far-field item has its own pixel λz/(Np); its object is
   interpolated (cubic, real and imaginary parts) onto one common grid in the
   sample frame (the frame of the probe positions ingest stores): the coarsest
   item pixel, over the area every item illuminated well (illumination ≥ 50 %
   of its maximum; weaker-lit rims carry the amplitude artefacts of the
   reconstruction);
2. align: sub-pixel registration of each item's optical-density image to a
   reference item (:func:`register`, phase correlation upsampled 20×) after a
   Gaussian low-pass (noisy low-energy images), with the unmeasured pixels at
   the empty area's level (no edge to lock on); the shift is applied by cubic interpolation and the valid mask is
   shifted with it; the stack is cropped to the bounding box of the area valid
   in every item, and pixels outside it stay flagged (``valid`` False), so no
   interpolation edge enters PCA or the fits;
3. normalise: an empty (I0) region, found automatically as the brightest,
   spectrally flattest pixels of the stack or given as a mask, sets per item
   the amplitude scale (|O|² = 1 there) and the phase offset and ramp (a plane
   fitted to the phase there), so that OD = −ln(|O|²/I0) and φ is 0 in vacuum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..io import layout
from ..io.store import StoreError

__all__ = ["StackGrid", "check_spectro_store", "common_grid", "resample_item", "register", "apply_shift",
           "find_i0_region", "normalise", "ILLUMINATED"]

#: Fraction of the maximum illumination above which an item's object counts as measured.
ILLUMINATED = 0.5


@dataclass
class StackGrid:
    """The common grid: pixel (y, x) m, origin (y, x) m of pixel [0, 0], shape (H, W)."""

    pixel_size_m: tuple
    origin_m: tuple
    shape: tuple


def check_spectro_store(group, where: str = "store") -> dict:
    """Check that a store can be analysed and return its item metadata.

    Returns
    -------
    dict
        ``energy_eV`` (n_items,), ``polarisation`` (list of str), ``pixel_size_m`` (n_items, 2),
        ``origin_m`` (n_items, 2).

    Raises
    ------
    StoreError
        Not an energy stack; no ptychography results, or items not finished (listed); near-field
        results without per-item pixels are fine (one pixel for all).
    ValueError
        Only one distinct photon energy.
    """
    from ..io.energy import ENERGY_STACK, PHOTON_ENERGY  # noqa: PLC0415

    if group.attrs.get("kind") != ENERGY_STACK:
        raise StoreError(f"{where}: kind {group.attrs.get('kind')!r}; spectro analysis needs an energy_stack store")
    energies = np.asarray(group[PHOTON_ENERGY][...], float)
    if len(np.unique(np.round(energies, 6))) < 2:
        raise ValueError(f"{where}: one photon energy only ({energies[0]:g} eV); spectro analysis needs a stack "
                         "of >= 2 energies")
    n = len(energies)
    status = np.asarray(group[layout.PTYCHO_STATUS][...]) if layout.PTYCHO_STATUS in group else np.zeros(n)
    pending = [int(i) for i in np.flatnonzero(status != 1)]
    if pending:
        raise StoreError(f"{where}: ptychography not finished for items {pending} of {len(status)}; "
                         "run ptyhpc reconstruct to finish them")
    obj = group[layout.PTYCHO_OBJECT]
    px, org = np.asarray(obj.attrs["pixel_size_m"], float), np.asarray(obj.attrs["origin_m"], float)
    if px.ndim == 1:
        px, org = np.tile(px, (n, 1)), np.tile(org, (n, 1))
    pol = list(group.attrs.get("polarisation", ["unknown"] * n))
    return {"energy_eV": energies, "polarisation": pol, "pixel_size_m": px, "origin_m": org}


def _illuminated_box(ill, px, org):
    """(y0, y1, x0, x1) in m of the pixels illuminated >= ILLUMINATED of the maximum."""
    m = ill >= ILLUMINATED * ill.max()
    iy, ix = np.nonzero(m)
    return (org[0] + iy.min() * px[0], org[0] + iy.max() * px[0], org[1] + ix.min() * px[1],
            org[1] + ix.max() * px[1])


def common_grid(illuminations, pixel_sizes, origins) -> StackGrid:
    """The coarsest item pixel over the area every item illuminated.

    Raises
    ------
    ValueError
        The items' illuminated areas do not overlap.
    """
    boxes = np.array([_illuminated_box(np.asarray(il), p, o) for il, p, o in zip(illuminations, pixel_sizes, origins)])
    y0, x0 = boxes[:, 0].max(), boxes[:, 2].max()
    y1, x1 = boxes[:, 1].min(), boxes[:, 3].min()
    px = tuple(float(v) for v in np.max(np.asarray(pixel_sizes), 0))
    if y1 <= y0 or x1 <= x0:
        raise ValueError("the items' illuminated areas do not overlap: no common field of view")
    shape = (int(np.floor((y1 - y0) / px[0])) + 1, int(np.floor((x1 - x0) / px[1])) + 1)
    return StackGrid(px, (float(y0), float(x0)), shape)


def resample_item(obj, illumination, pixel_size_m, origin_m, grid: StackGrid):
    """One item's object on the common grid (cubic), and its measured mask there.

    Returns
    -------
    (H, W) complex64, (H, W) bool
    """
    yy = (grid.origin_m[0] + np.arange(grid.shape[0]) * grid.pixel_size_m[0] - origin_m[0]) / pixel_size_m[0]
    xx = (grid.origin_m[1] + np.arange(grid.shape[1]) * grid.pixel_size_m[1] - origin_m[1]) / pixel_size_m[1]
    coords = np.meshgrid(yy, xx, indexing="ij")
    obj = np.asarray(obj)
    out = (ndimage.map_coordinates(obj.real, coords, order=3, mode="nearest")
           + 1j * ndimage.map_coordinates(obj.imag, coords, order=3, mode="nearest")).astype(np.complex64)
    ill = np.asarray(illumination, np.float64)
    mask = ndimage.map_coordinates(ill, coords, order=1, mode="constant", cval=0.0) >= ILLUMINATED * ill.max()
    return out, mask


def _od_image(obj, valid, sigma, use_phase: bool = False):
    """Low-passed OD image (plus i·phase when ``use_phase``), median 0 on ``valid`` and 0 outside."""
    obj = np.asarray(obj)
    od = -np.log(np.maximum(np.abs(obj) ** 2, 1e-6))
    od = od - np.median(od[valid]) if valid.any() else od
    if use_phase and valid.any():
        ph = np.angle(obj * np.exp(-1j * np.angle(np.mean(obj[valid]))))
        # The phase ramp of each reconstruction is arbitrary: remove a plane fitted over the valid area.
        yy, xx = np.nonzero(valid)
        G = np.stack([np.ones(yy.size), yy, xx], 1).astype(float)
        c = np.linalg.lstsq(G, ph[valid], rcond=None)[0]
        Y, X = np.indices(ph.shape)
        ph = ph - (c[0] + c[1] * Y + c[2] * X)
        od = od + 1j * (ph - np.median(ph[valid]))
    od = np.where(valid, od, 0.0)
    if sigma:
        od = ndimage.gaussian_filter(od.real, sigma) + (1j * ndimage.gaussian_filter(od.imag, sigma) if use_phase else 0)
    return od


def _correlation_peak(a, b, *, whiten: float, cutoff: float, upsample: int):
    """Shift maximising the filtered cross-correlation of ``a`` and ``b`` (px), refined by an upsampled DFT."""
    A, B = np.fft.fft2(a), np.fft.fft2(b)  # a, b may be complex (OD + i phase)
    ky = np.fft.fftfreq(a.shape[0])[:, None]
    kx = np.fft.fftfreq(a.shape[1])[None, :]
    R = A * np.conj(B)
    R = R / np.maximum(np.abs(R), 1e-30) ** whiten * np.exp(-(ky**2 + kx**2) / (2 * cutoff**2))
    c = np.fft.ifft2(R).real
    peak = np.array(np.unravel_index(np.argmax(c), c.shape), float)
    n = np.array(a.shape, float)
    peak = np.where(peak > n / 2, peak - n, peak)
    # Zoom into ±1 px around the integer peak with an upsampled DFT (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008)).
    off = np.arange(-upsample, upsample + 1) / upsample
    ys, xs = peak[0] + off, peak[1] + off
    ey = np.exp(2j * np.pi * ys[:, None] * np.fft.fftfreq(a.shape[0])[None, :])
    ex = np.exp(2j * np.pi * np.fft.fftfreq(a.shape[1])[:, None] * xs[None, :])
    z = (ey @ R @ ex).real
    i, j = np.unravel_index(np.argmax(z), z.shape)
    return np.array([ys[i], xs[j]])


def register(reference, moving, ref_valid, mov_valid, *, lowpass_sigma: float = 1.0, whiten: float = 0.75,
             cutoff: float = 0.1, use_phase: bool = True, upsample: int = 20):
    """Sub-pixel (y, x) shift, px, that registers ``moving`` onto ``reference`` (complex objects).

    Cross-correlation of Gaussian low-passed optical-density images (each 0,
    its median, the empty area's level, outside its measured area so that the
    area's edge is no step), with the cross-power spectrum partly whitened
    (divided by its modulus to the power ``whiten``: 1 is phase correlation, 0
    plain correlation) and low-passed in frequency (Gaussian of σ ``cutoff``
    cycles/px), refined to 1/``upsample`` px by an upsampled DFT. Plain
    correlation is biased where materials change contrast differently across
    energies; full whitening locks onto the fine noise texture that every
    reconstruction of the same scan positions shares (zero shift); the half
    way with the low-pass does neither (module docs; docs/spectro.md).
    """
    a = _od_image(reference, ref_valid, lowpass_sigma, use_phase)
    b = _od_image(moving, mov_valid, lowpass_sigma, use_phase)
    return _correlation_peak(a, b, whiten=whiten, cutoff=cutoff, upsample=upsample)


def apply_shift(obj, valid, shift):
    """Shift a complex image and its valid mask by ``shift`` (y, x) px (cubic; pixels shifted in are invalid)."""
    re = ndimage.shift(np.asarray(obj).real, shift, order=3, mode="nearest")
    im = ndimage.shift(np.asarray(obj).imag, shift, order=3, mode="nearest")
    v = ndimage.shift(np.asarray(valid, np.float64), shift, order=1, mode="constant", cval=0.0) > 0.999
    return (re + 1j * im).astype(np.complex64), v


def find_i0_region(objects, valid, *, fraction: float = 0.2, min_pixels: int = 16) -> np.ndarray:
    """Empty (I0) region of an aligned stack: bright in every item and spectrally flat.

    Pixels valid in all items are ranked by their median transmission |O|²
    over the stack minus its spread (standard deviation of −ln|O|² across
    items, which a material's spectrum raises); the best ``fraction`` is kept,
    opened by a 3×3 structuring element (no isolated noise pixels) unless that
    leaves fewer than ``min_pixels``.

    Returns
    -------
    (H, W) bool

    Raises
    ------
    ValueError
        Fewer than ``min_pixels`` pixels found (give an I0 mask then).
    """
    objects = np.asarray(objects)
    t = np.abs(objects) ** 2
    # Each item's own scale first (ptychography fixes the object only up to a constant factor).
    t = t / np.array([np.median(ti[valid]) for ti in t])[:, None, None]
    od = -np.log(np.maximum(t, 1e-6))
    score = -np.median(od, 0) - np.std(od, 0)
    score = np.where(valid, score, -np.inf)
    level = np.quantile(score[valid], 1 - fraction)
    mask = score >= level
    opened = ndimage.binary_opening(mask, np.ones((3, 3)))
    mask = opened if opened.sum() >= min_pixels else mask
    if mask.sum() < min_pixels:
        raise ValueError(f"no empty (I0) region found ({int(mask.sum())} pixels); give one with --i0-mask")
    return mask


def normalise(obj, i0):
    """Scale and dephase one item so that |O|² = 1 and φ = 0 (plane fit) on the I0 region.

    Returns
    -------
    (H, W) complex64
        O / (√I0 · exp(i(a + b y + c x))).
    """
    obj = np.asarray(obj, np.complex128)
    ref = obj[i0]
    scale = np.sqrt(np.mean(np.abs(ref) ** 2))
    # Remove the mean phase first so that the plane fit never sees a wrap.
    c0 = np.angle(np.mean(ref))
    ph = np.angle(obj * np.exp(-1j * c0))
    yy, xx = np.nonzero(i0)
    G = np.stack([np.ones(yy.size), yy, xx], 1).astype(float)
    a, b, c = np.linalg.lstsq(G, ph[i0], rcond=None)[0]
    Y, X = np.indices(obj.shape)
    plane = c0 + a + b * Y + c * X
    return (obj / scale * np.exp(-1j * plane)).astype(np.complex64)
