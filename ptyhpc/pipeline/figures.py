"""PNG figures of the ptychography stage of a tilt series (phase montage, error curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import layout
from .plotting import Channel, error_curves, item_floors, length_unit, montage, pick_items

__all__ = ["ptycho_figures", "scanned_crop"]


def scanned_crop(illum: np.ndarray, frac: float = 0.1):
    """Row/column slices of the region where Σ|P|² exceeds ``frac`` of its maximum."""
    m = illum > frac * illum.max()
    if not m.any():
        return slice(None), slice(None)
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    return slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def ptycho_figures(group, out_dir: str | Path) -> list[Path]:
    """Write ``ptycho_phase_montage.png`` and ``ptycho_error.png`` for the done items.

    The montage shows each item's phase (rad, offset removed) over the illuminated region with one
    colour scale, axes in Å, nm or µm by the field size (at most
    :data:`~ptyhpc.pipeline.plotting.MAX_PANELS` items, evenly spaced). The error figure divides each
    item's curve by its Poisson noise floor (:func:`~ptyhpc.pipeline.plotting.poisson_floor`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    done = np.nonzero(status == 1)[0]
    if len(done) == 0:
        return []
    obj = group[layout.PTYCHO_OBJECT]
    px = np.broadcast_to(np.asarray(obj.attrs["pixel_size_m"], dtype=float), (2,))
    origin = np.asarray(obj.attrs["origin_m"], dtype=float)
    angles = np.degrees(np.asarray(group[layout.TILT_ANGLE][...]))
    illum = np.asarray(group[layout.PTYCHO_ILLUMINATION][int(done[0])])
    sy, sx = scanned_crop(illum)
    shown = done[pick_items(len(done))]
    phases = []
    for i in shown:
        p = np.angle(np.asarray(obj[int(i)])[sy, sx])
        phases.append(p - np.median(p))
    lo, hi = np.percentile(np.concatenate([p.ravel() for p in phases]), [0.5, 99.5])
    H, W = obj.shape[1:]
    y0, y1 = origin[0] + (sy.start or 0) * px[0], origin[0] + (sy.stop or H) * px[0]
    x0, x1 = origin[1] + (sx.start or 0) * px[1], origin[1] + (sx.stop or W) * px[1]
    unit, k = length_unit(max(y1 - y0, x1 - x0))
    extent = (x0 * k, x1 * k, y1 * k, y0 * k)
    kind = "tilt angle" if group.attrs.get("kind") != "energy_stack" else "item"
    paths = [montage(out_dir / "ptycho_phase_montage.png", [[p] for p in phases],
                     [f"{angles[i]:+.1f}°" for i in shown], [extent] * len(shown),
                     [Channel("phase (rad)", "gray", lo, hi)],
                     f"reconstructed phase per {kind} (scan frame, offset removed)", unit, n_total=len(done))]
    err = np.asarray(group[layout.PTYCHO_ERROR][...])[done]
    paths.append(error_curves(out_dir / "ptycho_error.png", err, item_floors(group, done), angles[done],
                              "tilt angle (°)", "{:+.1f}°"))
    return paths
