"""Virtual detectors, virtual diffraction, centre of mass and bright-field pixels as map-reduce analyses.

Detector geometry: the bright-field (BF) disk centre is measured from the
mean pattern (:func:`find_bf_disk`); its radius is α/(λ Δk) pixels from the
calibration. Default virtual detectors (radii in units of the BF radius r_BF):
``bf`` r ≤ r_BF, ``abf`` r_BF/2 ≤ r ≤ r_BF, ``adf`` 1.5 r_BF ≤ r ≤ the largest
circle on the detector. Centre of mass (CoM) in detector pixels relative to
the BF centre, detector frame: ``com_y`` (rows), ``com_x`` (columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mapreduce import Analysis, Output, StemContext

__all__ = ["DetectorGeometry", "find_bf_disk", "annular_mask", "standard_masks", "VirtualDetectors",
           "VirtualDiffraction", "CentreOfMass", "PixelStack", "sample_mean_pattern"]


@dataclass(frozen=True)
class DetectorGeometry:
    """BF disk on the detector: centre (row, col) in pixels, radius in pixels, Δk (1/m per pixel, (y, x))."""

    centre: tuple
    bf_radius_px: float
    reciprocal_sampling_inv_m: tuple
    measured_radius_px: float = float("nan")

    def as_attrs(self) -> dict:
        return {"centre_px": [float(v) for v in self.centre], "bf_radius_px": float(self.bf_radius_px),
                "measured_bf_radius_px": float(self.measured_radius_px),
                "reciprocal_sampling_inv_m": [float(v) for v in self.reciprocal_sampling_inv_m],
                "axes": ["det_y", "det_x"], "units": "px"}


def sample_mean_pattern(group, item: int = 0, max_chunks: int = 16) -> np.ndarray:
    """Mean pattern (det_y, det_x) float64 of up to ``max_chunks`` chunks spread over the scan (bounded read)."""
    arr = group["frames"]
    n, c = arr.shape[1], arr.chunks[1]
    starts = np.unique(np.linspace(0, (n - 1) // c, min(max_chunks, -(-n // c))).astype(int) * c)
    acc = np.zeros(arr.shape[2:])
    count = 0
    for a in starts:
        block = np.asarray(arr[item, a:a + c], dtype=np.float64)
        acc += block.sum(0)
        count += len(block)
    return acc / count


def find_bf_disk(mean_pattern: np.ndarray, geometry: dict) -> DetectorGeometry:
    """BF disk centre from a mean pattern (centroid of the pixels above half the maximum), radius from α/(λΔk).

    Raises
    ------
    ValueError
        No BF disk (empty pattern), or a measured disk radius more than 30 %
        off the calibrated one (wrong calibration: convergence angle or Δk).
    """
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    # Smoothed, and the plateau level from a high percentile: robust to shot noise at low dose.
    p = gaussian_filter(np.asarray(mean_pattern, dtype=np.float64), 1.0)
    top = np.percentile(p, 99.5)
    if not top > 0:
        raise ValueError("mean pattern is empty: no bright-field disk to centre on")
    disk = p >= 0.5 * top
    w = p * disk
    yy, xx = np.indices(p.shape)
    centre = (float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum()))
    dk = tuple(geometry["reciprocal_sampling_inv_m"])
    radius = geometry["convergence_semiangle_rad"] / geometry["wavelength_m"] / float(np.mean(dk))
    measured = float(np.sqrt(disk.sum() / np.pi))
    if abs(measured / radius - 1) > 0.3:
        raise ValueError(f"bright-field disk radius {measured:.1f} px measured, {radius:.1f} px from the calibration "
                         "(convergence_semiangle_rad / wavelength / reciprocal_sampling_inv_m): check the calibration")
    return DetectorGeometry(centre, radius, dk, measured)


def annular_mask(shape, centre, r_in: float, r_out: float) -> np.ndarray:
    """Boolean mask of r_in ≤ |pixel − centre| ≤ r_out (pixels)."""
    yy, xx = np.indices(shape)
    r = np.hypot(yy - centre[0], xx - centre[1])
    return (r >= r_in) & (r <= r_out)


def standard_masks(shape, det: DetectorGeometry, names=("bf", "abf", "adf"), adf_inner: float = 1.5) -> dict:
    """The default ``bf``, ``abf``, ``adf`` masks (see the module docstring) as float32 arrays."""
    r = det.bf_radius_px
    edge = min(det.centre[0], det.centre[1], shape[0] - 1 - det.centre[0], shape[1] - 1 - det.centre[1])
    table = {"bf": (0.0, r), "abf": (r / 2, r), "adf": (adf_inner * r, max(edge, adf_inner * r + 1))}
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown virtual detector(s) {sorted(unknown)}; use bf, abf, adf or give masks")
    return {n: annular_mask(shape, det.centre, *table[n]).astype(np.float32) for n in names}


@dataclass
class VirtualDetectors(Analysis):
    """Per position: Σ_pixels mask · frame for each mask (linear: fused into the pass's one matrix product)."""

    masks: dict

    def outputs(self, ctx: StemContext):
        return {name: Output("position") for name in self.masks}

    def linear(self, ctx):
        return np.stack([np.asarray(m, np.float32).ravel() for m in self.masks.values()], 1)

    def prepare(self, ctx, xp):
        return xp.asarray(self.linear(ctx))

    def finish(self, products, index, state, ctx, xp):
        return {name: products[:, k] for k, name in enumerate(self.masks)}

    def process(self, frames, index, state, ctx, xp):
        return self.finish(frames.reshape(len(frames), -1) @ state, index, state, ctx, xp)


@dataclass
class VirtualDiffraction(Analysis):
    """Sum and max pattern over the positions in ``region`` (bool (scan_y, scan_x); None: all)."""

    region: np.ndarray | None = None
    raw_ok = True  # counts are summed as integers: exact, and no float32 copy of the block

    def outputs(self, ctx):
        return {"sum": Output("reduce", ctx.detector_shape, "float64", "sum"),
                "max": Output("reduce", ctx.detector_shape, "float32", "max")}

    def process(self, frames, index, state, ctx, xp):
        if self.region is not None:
            keep = np.asarray(self.region).ravel()[index]
            frames = frames[xp.asarray(keep)]
            if len(frames) == 0:
                return {"sum": xp.zeros(ctx.detector_shape), "max": xp.zeros(ctx.detector_shape, xp.float32)}
        kind, size = frames.dtype.kind, frames.dtype.itemsize
        if kind in "ui" and size <= 2 and len(frames) <= 32768:
            # 32768 frames of 16-bit counts fit in a 32-bit sum (about 3x faster than a float64 sum); the integer sum
            # is exact, as is the float64 sum of float32 counts below 2**53, so both give the same bits.
            total = frames.sum(0, dtype=xp.int32 if kind == "i" else xp.uint32)
        elif kind in "ui":
            total = frames.sum(0, dtype=xp.int64 if kind == "i" else xp.uint64)
        else:
            total = frames.sum(0, dtype=xp.float64)
        return {"sum": total.astype(xp.float64), "max": frames.max(0).astype(xp.float32)}


@dataclass
class CentreOfMass(Analysis):
    """Per position: centre of mass (rows, cols) relative to ``centre`` in pixels, and the total counts.

    ``mask`` (bool (det_y, det_x), e.g. a disk of 1.2 r_BF) limits the pixels;
    ``threshold`` (counts) zeroes pixels below it first. Frames with no counts
    inside the mask get CoM 0.
    """

    centre: tuple
    mask: np.ndarray | None = None
    threshold: float | None = None

    def outputs(self, ctx):
        return {"com_y": Output("position"), "com_x": Output("position"), "total": Output("position")}

    def _weights(self, ctx):
        shape = ctx.detector_shape
        m = np.ones(shape, np.float32) if self.mask is None else np.asarray(self.mask, np.float32)
        yy, xx = np.indices(shape, dtype=np.float32)
        return np.stack([m.ravel(), (m * (yy - self.centre[0])).ravel(), (m * (xx - self.centre[1])).ravel()], 1)

    def linear(self, ctx):
        # A threshold makes the CoM non-linear in the frame: then it runs on the float32 frames (process).
        return self._weights(ctx) if self.threshold is None else None

    def prepare(self, ctx, xp):
        return xp.asarray(self._weights(ctx))

    def process(self, frames, index, state, ctx, xp):
        f = frames.reshape(len(frames), -1)
        if self.threshold is not None:
            f = f * (f >= self.threshold)
        return self.finish(f @ state, index, state, ctx, xp)

    def finish(self, products, index, state, ctx, xp):
        s = products
        total = s[:, 0]
        safe = xp.where(total > 0, total, 1)
        return {"com_y": xp.where(total > 0, s[:, 1] / safe, 0), "com_x": xp.where(total > 0, s[:, 2] / safe, 0),
                "total": total}


@dataclass
class PixelStack(Analysis):
    """Per position: the values of selected detector pixels (e.g. the BF disk, for SSB).

    With ``descan`` ((2, 3) plane of :func:`ptyhpc.stem.com.remove_descan`: the
    pattern's shift (rows, cols) = a + b·iy + c·ix) every frame is sampled at
    the pixels moved by its shift (bilinear), so the disk stays put across the scan.
    """

    pixels: np.ndarray  # flat pixel indices, int
    descan: np.ndarray | None = None

    def outputs(self, ctx):
        return {"pixels": Output("position", (len(self.pixels),), "float32")}

    def prepare(self, ctx, xp):
        rows, cols = np.unravel_index(np.asarray(self.pixels), ctx.detector_shape)
        return xp.asarray(np.asarray(self.pixels)), rows.astype(np.float32), cols.astype(np.float32)

    def process(self, frames, index, state, ctx, xp):
        flat_idx, rows, cols = state
        b = len(frames)
        flat = frames.reshape(b, -1)
        if self.descan is None:
            return {"pixels": flat[:, flat_idx]}
        iy, ix = np.divmod(index, ctx.scan_shape[1])
        basis = np.stack([np.ones(b), iy, ix], 1)
        dy, dx = basis @ np.asarray(self.descan)[0], basis @ np.asarray(self.descan)[1]
        ny, nx = ctx.detector_shape
        r = np.clip(rows[None] + dy[:, None], 0, ny - 1.001)
        c = np.clip(cols[None] + dx[:, None], 0, nx - 1.001)
        r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
        fr, fc = xp.asarray((r - r0).astype(np.float32)), xp.asarray((c - c0).astype(np.float32))
        base = np.arange(b)[:, None] * (ny * nx)
        f = flat.reshape(-1)

        def at(rr, cc):
            return f[xp.asarray(base + rr * nx + cc)]

        out = ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
               + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))
        return {"pixels": out}
