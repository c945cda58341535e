"""Per-scan virtual images, per-frame beam centres, and particle segmentation of a 4D-STEM tilt series.

The virtual images and beam centres are one pass of :func:`ptyhpc.stem.mapreduce.run_analyses` per
item (a dask task per partition when a client is given); segmentation is scikit-image: Otsu threshold
of the smoothed ADF image, distance-transform watershed for touching particles, region properties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScanImages", "nominal_centre", "scan_images", "segment", "Regions"]


@dataclass
class ScanImages:
    """``bf``, ``adf`` (scan_y, scan_x) float32 counts; ``centre`` (scan_y, scan_x, 2) beam centre (row, col) px."""

    bf: np.ndarray
    adf: np.ndarray
    centre: np.ndarray


def nominal_centre(group, item: int = 0, window: float = 3.0) -> tuple[float, float]:
    """Transmitted-beam centre (row, col) of the mean pattern: brightest smoothed pixel, then the centroid within ``window`` px."""
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    from ..stem.virtual import sample_mean_pattern  # noqa: PLC0415

    m = np.asarray(sample_mean_pattern(group, item), float)
    r0, c0 = np.unravel_index(np.argmax(gaussian_filter(m, 1.0)), m.shape)
    rr, cc = np.indices(m.shape)
    w = m * (np.hypot(rr - r0, cc - c0) <= window)
    return float((w * rr).sum() / w.sum()), float((w * cc).sum() / w.sum())


def scan_images(store, item: int, centre, *, bf_radius_px: float = 2.5, adf_inner_px: float = 3.5,
                client=None, backend: str = "numpy") -> ScanImages:
    """BF/ADF virtual images and per-frame beam centres of one item (one read pass).

    ``centre`` (row, col) is the nominal transmitted-beam position; each frame's centre is the
    centre of mass within ``bf_radius_px`` of it (the beam may wander by a pixel or two).
    """
    from ..stem.mapreduce import run_analyses  # noqa: PLC0415
    from ..stem.virtual import CentreOfMass, VirtualDetectors, annular_mask  # noqa: PLC0415
    from ..io.store import open_store  # noqa: PLC0415

    det = tuple(open_store(store)["frames"].shape[2:])
    bf = annular_mask(det, centre, 0.0, bf_radius_px)
    adf = annular_mask(det, centre, adf_inner_px, float(np.hypot(*det)))
    vd, com = run_analyses(store, [VirtualDetectors({"bf": bf, "adf": adf}), CentreOfMass(tuple(centre), mask=bf)],
                           item=item, client=client, backend=backend, progress=False)
    c = np.stack([vd["bf"] * 0 + centre[0] + com["com_y"], vd["bf"] * 0 + centre[1] + com["com_x"]], -1)
    return ScanImages(vd["bf"].astype(np.float32), vd["adf"].astype(np.float32), c.astype(np.float32))


@dataclass
class Regions:
    """Segmentation of one scan image.

    ``labels`` (scan_y, scan_x) int32 (0 background); per region (index k ↔ label k + 1):
    ``centroid`` (n, 2) intensity-weighted (row, col) px, ``area`` (n,) px, ``isolated`` (n,) bool
    (touches neither another region nor the scan edge).
    """

    labels: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    isolated: np.ndarray


def segment(image: np.ndarray, *, smooth_px: float = 0.6, min_area_px: int = 6, min_distance_px: int = 3) -> Regions:
    """Segment bright particles in an ADF image.

    Raises
    ------
    ValueError
        A constant image (nothing to threshold).
    """
    from scipy import ndimage as ndi  # noqa: PLC0415
    from skimage.feature import peak_local_max  # noqa: PLC0415
    from skimage.filters import gaussian, threshold_otsu  # noqa: PLC0415
    from skimage.measure import regionprops  # noqa: PLC0415
    from skimage.morphology import remove_small_objects  # noqa: PLC0415
    from skimage.segmentation import watershed  # noqa: PLC0415

    img = np.asarray(image, float)
    if np.ptp(img) == 0:
        raise ValueError("segment: constant image")
    sm = gaussian(img, smooth_px, preserve_range=True)
    fg = remove_small_objects(sm > threshold_otsu(sm), max_size=min_area_px - 1)
    dist = ndi.distance_transform_edt(fg)
    lab0, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=min_distance_px, labels=lab0, exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg).astype(np.int32)
    props = regionprops(labels, intensity_image=np.clip(img - np.median(img), 0, None))
    n = labels.max()
    cen, area, iso = np.zeros((n, 2)), np.zeros(n), np.zeros(n, bool)
    grown = ndi.grey_dilation(labels, size=3)
    for p in props:
        k = p.label - 1
        cen[k] = p.centroid_weighted
        area[k] = p.area
        ring = (grown == p.label) | (ndi.binary_dilation(labels == p.label))
        others = np.setdiff1d(np.unique(labels[ring]), [0, p.label])
        r0, c0, r1, c1 = p.bbox
        edge = r0 == 0 or c0 == 0 or r1 == img.shape[0] or c1 == img.shape[1]
        iso[k] = len(others) == 0 and not edge
    keep = area > 0
    if not keep.all():  # labels lost to remove_small_objects: renumber
        old = np.nonzero(keep)[0] + 1
        lut = np.zeros(n + 1, np.int32)
        lut[old] = np.arange(1, len(old) + 1)
        labels, cen, area, iso = lut[labels], cen[keep], area[keep], iso[keep]
    return Regions(labels, cen, area, iso)
