"""PNG figures of an energy stack: amplitude and phase per item, error curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import layout
from ..io.energy import PHOTON_ENERGY

__all__ = ["energy_stack_figures"]


def energy_stack_figures(group, out_dir: str | Path) -> list[Path]:
    """Write ``energy_stack_montage.png`` (amplitude row, phase row per item) and ``ptycho_error.png``.

    Each item is shown on its own pixel grid (the pixel follows the
    wavelength), cropped to where it was illuminated, titled with its photon
    energy (eV) and polarisation label.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = np.nonzero(np.asarray(group[layout.PTYCHO_STATUS][...]) == 1)[0]
    if len(done) == 0:
        return []
    energies = np.asarray(group[PHOTON_ENERGY][...])
    labels = group.attrs["polarisation"]
    ncol = min(len(done), 8)
    nrow = 2 * math.ceil(len(done) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.8 * ncol + 0.5, 1.8 * nrow + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(done):
        obj = np.asarray(group[layout.PTYCHO_OBJECT][int(i)])
        illum = np.asarray(group[layout.PTYCHO_ILLUMINATION][int(i)])
        m = illum > 0.1 * illum.max()
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        crop = obj[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        r, c = 2 * (k // ncol), k % ncol
        axes[r, c].imshow(np.abs(crop), cmap="gray")
        axes[r, c].set_title(f"{energies[i]:.1f} eV {labels[i]}", fontsize=7)
        ph = np.angle(crop)
        axes[r + 1, c].imshow(ph - np.median(ph), cmap="twilight")
    fig.suptitle("energy stack: amplitude (upper) and phase (lower) per item")
    paths = [out_dir / "energy_stack_montage.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    err = np.asarray(group[layout.PTYCHO_ERROR][...])
    fig, ax = plt.subplots(figsize=(6, 4))
    for i in done:
        ax.plot(np.arange(1, err.shape[1] + 1), err[i], lw=0.8, label=f"{energies[i]:.1f} eV {labels[i]}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Σ(|Ψ| − √I)² / ΣI")
    if len(done) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(out_dir / "ptycho_error.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths
