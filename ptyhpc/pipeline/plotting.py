"""Figure building blocks shared by the stages: a montage that reads the same from 1 item to hundreds,
error curves against the Poisson noise floor, length units picked by the field size.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot state),
so they can be made in worker threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Channel", "montage", "error_curves", "poisson_floor", "item_floors", "length_unit", "pick_items"]

#: Most panels a montage shows; longer series show this many items, evenly spaced, and say so.
MAX_PANELS = 64


def length_unit(span_m: float) -> tuple[str, float]:
    """Axis label unit and factor from metres for a field ``span_m`` wide: Å, nm, µm or mm."""
    for name, factor, below in (("Å", 1e10, 1e-8), ("nm", 1e9, 1e-5), ("µm", 1e6, 1e-2)):
        if span_m < below:
            return name, factor
    return "mm", 1e3


def pick_items(n: int, most: int = MAX_PANELS) -> np.ndarray:
    """Indices of at most ``most`` of ``n`` items, evenly spaced, first and last included."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, most)).astype(int))


@dataclass
class Channel:
    """One kind of panel of a montage: its colour map, colour-bar label and shared colour limits."""

    label: str
    cmap: str = "gray"
    vmin: float | None = None
    vmax: float | None = None


def _figure(w: float, h: float, layout: str = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(w, h), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def montage(path, panels, titles, extents, channels, title: str, unit: str, n_total: int | None = None,
            dpi: int = 110) -> Path:
    """Write a montage of items, each shown in one or more channels (e.g. amplitude and phase).

    Parameters
    ----------
    path : path
        PNG to write.
    panels : list of list of 2D arrays
        ``panels[k][c]``: item ``k`` in channel ``c``.
    titles : list of str
        One per item (its tilt angle or energy).
    extents : list of (left, right, bottom, top)
        Per item, in ``unit``.
    channels : list of Channel
        One colour bar each, shared by all items.
    title : str
        Figure title; says how many items are shown when ``n_total`` exceeds ``len(panels)``.
    unit : str
        Length unit of the axes.

    One layout for any count: a near-square grid of at most 10 columns whose panels shrink from 4 in
    (a single item) to 1.3 in; axes labels on the left column and bottom row, tick labels on every
    panel when the items' fields differ (an energy stack's pixel follows the wavelength).
    """
    n, nch = len(panels), len(channels)
    ncol = min(10, max(1, math.ceil(math.sqrt(n / nch))))
    nrow_items = math.ceil(n / ncol)
    side = float(np.clip(11.0 / ncol, 1.3, 4.0))
    e0 = extents[0]
    aspect = float(np.clip(abs(e0[3] - e0[2]) / max(abs(e0[1] - e0[0]), 1e-30), 0.3, 3.0))   # height / width
    # "compressed": the layout for grids of fixed-aspect images (labels are not clipped)
    fig = _figure(side * ncol + 1.4, side * aspect * nrow_items * nch + 0.9, layout="compressed")
    axs = fig.subplots(nrow_items * nch, ncol, squeeze=False)
    same_field = all(np.allclose(e, extents[0]) for e in extents)
    small = 6 if side < 2.5 else 8
    by_channel = [[] for _ in channels]
    for ax in axs.ravel():
        ax.set_visible(False)
    for k in range(n):
        r0, col = (k // ncol) * nch, k % ncol
        for c, ch in enumerate(channels):
            ax = axs[r0 + c, col]
            ax.set_visible(True)
            im = ax.imshow(panels[k][c], cmap=ch.cmap, vmin=ch.vmin, vmax=ch.vmax, extent=extents[k])
            by_channel[c].append((ax, im))
            ax.tick_params(labelsize=small, length=2)
            if c == 0:
                ax.set_title(titles[k], fontsize=small + 1)
            edge_left, edge_bottom = col == 0, (r0 + c == axs.shape[0] - 1) or (k + ncol >= n and c == nch - 1)
            if same_field and not edge_left:
                ax.set_yticklabels([])
            if same_field and not edge_bottom:
                ax.set_xticklabels([])
            if edge_left:
                ax.set_ylabel(f"y ({unit})", fontsize=small)
            if edge_bottom:
                ax.set_xlabel(f"x ({unit})", fontsize=small)
    for ch, pairs in zip(channels, by_channel):
        fig.colorbar(pairs[-1][1], ax=[a for a, _ in pairs], shrink=0.9 if n == 1 else 0.6, label=ch.label,
                     aspect=30)
    shown = "" if not n_total or n_total == n else f" (showing {n} of {n_total} items, evenly spaced)"
    fig.suptitle(title + shown, fontsize=10 if side < 2.5 else 11)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def poisson_floor(mean_pattern: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Expected data error of the true model for Poisson counts: the noise floor of the error curves.

    The engines' error is Σ(|Ψ| − √I)² / ΣI over measured pixels. With I ~ Poisson(λ) and |Ψ|² = λ
    exact, each pixel contributes E[(√N − √λ)²] = 2λ − 2√λ E[√N] (→ 1/4 at high counts, ≈ λ at low
    counts), so the floor is Σ f(λ) / Σ λ with λ estimated by the mean pattern of the item.

    Parameters
    ----------
    mean_pattern : ndarray
        Mean counts per detector pixel (photons or electrons, not normalised).
    mask : ndarray of bool, optional
        True = measured; others left out, as in the engines.

    Returns
    -------
    float
        The floor; NaN when the pattern has no counts.
    """
    from scipy.special import gammaln  # noqa: PLC0415  (scipy.stats takes seconds to import)

    lam = np.asarray(mean_pattern, dtype=np.float64)
    if mask is not None:
        lam = lam[np.asarray(mask, bool)]
    lam = lam[np.isfinite(lam) & (lam > 0)]
    if lam.size == 0 or lam.sum() <= 0:
        return float("nan")
    top = float(lam.max())
    grid = np.geomspace(min(1e-4, float(lam.min())), max(top, 1e-3), 256)
    k = np.arange(int(top + 12 * math.sqrt(top) + 30) + 1)
    esqrt = np.empty_like(grid)
    log_kfact = gammaln(k + 1.0)
    for j in range(0, grid.size, 32):                     # bounded memory: 32 λ values at a time
        g = grid[j:j + 32, None]
        pmf = np.exp(k[None, :] * np.log(g) - g - log_kfact[None, :])
        esqrt[j:j + 32] = pmf @ np.sqrt(k)
    f = np.interp(lam, grid, 2 * grid - 2 * np.sqrt(grid) * esqrt)
    return float(f.sum() / lam.sum())


def error_curves(path, errors: np.ndarray, floors: np.ndarray, values: np.ndarray, value_label: str,
                 item_label: str, dpi: int = 110) -> Path:
    """Error curves of every item divided by its Poisson noise floor, the floor drawn at 1.

    Parameters
    ----------
    errors : ndarray (n_items, n_iter)
        Data error per iteration (:func:`poisson_floor`'s definition).
    floors : ndarray (n_items,)
        Each item's floor; NaN where unknown (then the raw error is plotted and no floor drawn).
    values : ndarray (n_items,)
        What the colour encodes (tilt angle in °, photon energy in eV).
    value_label, item_label : str
        Colour-bar label, and the legend's item format (``"{:+.1f}°"``).

    Up to 10 items get a legend; more get a colour bar over ``values`` and a bold median curve.
    """
    import matplotlib as mpl  # noqa: PLC0415

    errors = np.asarray(errors, dtype=np.float64)
    floors = np.asarray(floors, dtype=np.float64)
    normalised = bool(np.all(np.isfinite(floors) & (floors > 0)))
    y = errors / floors[:, None] if normalised else errors
    it = np.arange(1, errors.shape[1] + 1)
    fig = _figure(7.0, 4.6)
    ax = fig.subplots()
    values = np.asarray(values, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)
    cmap = mpl.colormaps["viridis"]
    many = len(y) > 10
    for k in range(len(y)):
        ax.plot(it, y[k], color=cmap(norm(values[k])), lw=0.6 if many else 1.2, alpha=0.7 if many else 1.0,
                label=None if many else item_label.format(values[k]))
    if many:
        ax.plot(it, np.median(y, axis=0), color="k", lw=2.0, label=f"median of {len(y)} items")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=value_label)
    if normalised:
        ax.axhline(1.0, color="crimson", ls="--", lw=1.2,
                   label="Poisson noise floor (true model at the measured dose)")
        ax.set_ylabel("data error / Poisson noise floor")
        spread = f"{floors.min():.3g}" if np.ptp(floors) < 1e-3 * floors.max() else \
            f"{floors.min():.3g}–{floors.max():.3g}"
        ax.set_title(f"convergence: 1 = noise-limited (floor Σ(|Ψ|−√I)²/ΣI = {spread})", fontsize=10)
    else:
        ax.set_ylabel("data error Σ(|Ψ| − √I)² / ΣI")
        ax.set_title("data error per item (no count statistics to draw the noise floor)", fontsize=10)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    if normalised and np.nanmax(y) > 3:    # far from the floor (real data, systematic errors): decades
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right", ncol=2 if len(y) > 5 and not many else 1)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def item_floors(group, items) -> np.ndarray:
    """:func:`poisson_floor` of each item of a store, from up to 4 × 16 of its frames.

    Frames are read from up to four evenly spaced blocks of positions (one stored chunk each), so
    the cost per item is bounded whatever the scan size. NaN for an item whose frames are not
    counts (negative values).
    """
    from ..io import layout  # noqa: PLC0415
    from ..io.store import read_mask  # noqa: PLC0415

    frames = group[layout.FRAMES]
    n_pos = frames.shape[1]
    block = min(16, n_pos)
    chunk = frames.chunks[1] if frames.chunks[1] else n_pos
    starts = sorted({int(s) for s in np.linspace(0, max(n_pos - block, 0), 4) // chunk * chunk})
    try:
        mask = read_mask(group)
    except Exception:  # noqa: BLE001  (a figure must not fail on an odd mask)
        mask = None
    out = np.full(len(items), np.nan)
    for j, i in enumerate(items):
        f = np.concatenate([np.asarray(frames[int(i), s:s + block], dtype=np.float64) for s in starts])
        if f.min() < 0:
            continue
        out[j] = poisson_floor(f.mean(axis=0), mask)
    return out
