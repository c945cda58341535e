"""PNG figures of the ptychography stage (phase montage, error curves)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import layout

__all__ = ["ptycho_figures"]


def _scanned_crop(illum: np.ndarray, frac: float = 0.1):
    """Row/column slices of the region where Σ|P|² exceeds ``frac`` of its maximum."""
    m = illum > frac * illum.max()
    if not m.any():
        return slice(None), slice(None)
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    return slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def ptycho_figures(group, out_dir: str | Path) -> list[Path]:
    """Write ``ptycho_phase_montage.png`` and ``ptycho_error.png`` for the done items.

    The montage shows each item's phase (rad), offset removed, over the
    illuminated region, with a shared colour scale; axes in Å.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    done = np.nonzero(status == 1)[0]
    if len(done) == 0:
        return []
    obj = group[layout.PTYCHO_OBJECT]
    px = obj.attrs["pixel_size_m"]
    origin = obj.attrs["origin_m"]
    angles = np.degrees(np.asarray(group[layout.TILT_ANGLE][...]))
    illum = np.asarray(group[layout.PTYCHO_ILLUMINATION][int(done[0])])
    sy, sx = _scanned_crop(illum)
    phases = [np.angle(np.asarray(obj[int(i)])[sy, sx]) for i in done]
    phases = [p - np.median(p) for p in phases]
    lo, hi = np.percentile(np.concatenate([p.ravel() for p in phases]), [0.5, 99.5])
    extent_A = [(origin[1] + sx.start * px[1]) * 1e10, (origin[1] + sx.stop * px[1]) * 1e10,
                (origin[0] + sy.stop * px[0]) * 1e10, (origin[0] + sy.start * px[0]) * 1e10]
    ncol = math.ceil(math.sqrt(len(done)))
    nrow = math.ceil(len(done) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.0 * ncol + 1.0, 2.0 * nrow + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i, p in zip(axes.ravel(), done, phases):
        im = ax.imshow(p, cmap="gray", vmin=lo, vmax=hi, extent=extent_A)
        ax.set_title(f"{angles[i]:+.1f}°", fontsize=8)
    # Physical axes on the first panel only, so the montage stays readable.
    axes[0, 0].axis("on")
    axes[0, 0].tick_params(labelsize=6)
    axes[0, 0].set_xlabel("x (Å)", fontsize=7)
    axes[0, 0].set_ylabel("y (Å)", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="phase (rad)")
    fig.suptitle("reconstructed phase per tilt angle (scan frame, offset removed)")
    paths = [out_dir / "ptycho_phase_montage.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    err = np.asarray(group[layout.PTYCHO_ERROR][...])
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i in done:
        ax.plot(np.arange(1, err.shape[1] + 1), err[i], color=cmap(i / max(len(status) - 1, 1)), lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("Σ(|Ψ| − √I)² / ΣI")
    # The Poisson engine minimises the likelihood, not this amplitude error, which can rise at first.
    ax.set_title("amplitude data error per tilt angle (colour: angle index)", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "ptycho_error.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
