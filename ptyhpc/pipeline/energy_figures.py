"""PNG figures of an energy stack: amplitude and phase per item, error curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import layout
from ..io.energy import PHOTON_ENERGY
from .figures import scanned_crop
from .plotting import Channel, error_curves, item_floors, length_unit, montage, pick_items

__all__ = ["energy_stack_figures"]


def energy_stack_figures(group, out_dir: str | Path) -> list[Path]:
    """Write ``energy_stack_montage.png`` (amplitude and phase per item) and ``ptycho_error.png``.

    Each item is shown on its own pixel grid (the pixel follows the wavelength), cropped to where it
    was illuminated, titled with its photon energy (eV) and polarisation label; amplitude and phase
    each have one colour scale for all items. Error curves as in
    :func:`ptyhpc.pipeline.figures.ptycho_figures`, coloured by energy.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = np.nonzero(np.asarray(group[layout.PTYCHO_STATUS][...]) == 1)[0]
    if len(done) == 0:
        return []
    energies = np.asarray(group[PHOTON_ENERGY][...])
    labels = group.attrs["polarisation"]
    obj_arr = group[layout.PTYCHO_OBJECT]
    px_all = np.asarray(obj_arr.attrs["pixel_size_m"], dtype=float)
    origin_all = np.asarray(obj_arr.attrs["origin_m"], dtype=float)
    shown = done[pick_items(len(done))]
    crops, boxes = [], []
    for i in shown:
        obj = np.asarray(obj_arr[int(i)])
        sy, sx = scanned_crop(np.asarray(group[layout.PTYCHO_ILLUMINATION][int(i)]))
        crop = obj[sy, sx]
        ph = np.angle(crop)
        crops.append([np.abs(crop), ph - np.median(ph)])
        px = px_all[i] if px_all.ndim == 2 else np.broadcast_to(px_all, (2,))
        org = origin_all[i] if origin_all.ndim == 2 else origin_all
        H, W = obj.shape
        boxes.append((org[1] + (sx.start or 0) * px[1], org[1] + (sx.stop or W) * px[1],
                      org[0] + (sy.stop or H) * px[0], org[0] + (sy.start or 0) * px[0]))
    unit, k = length_unit(max(max(abs(b[1] - b[0]), abs(b[2] - b[3])) for b in boxes))
    amp = np.concatenate([c[0].ravel() for c in crops])
    pha = np.concatenate([c[1].ravel() for c in crops])
    channels = [Channel("amplitude |O|", "gray", *np.percentile(amp, [0.5, 99.5])),
                Channel("phase (rad)", "twilight", *np.percentile(pha, [0.5, 99.5]))]
    def name(i):   # files that do not state a polarisation show none ("unknown" is the store's label)
        return f"{energies[i]:.1f} eV" + ("" if labels[i] == "unknown" else f" {labels[i]}")

    n_items = len(energies)
    what = "energy stack" if n_items > 1 else "single X-ray scan"
    paths = [montage(out_dir / "energy_stack_montage.png", crops, [name(i) for i in shown],
                     [tuple(v * k for v in b) for b in boxes], channels,
                     f"{what}: amplitude (upper) and phase (lower)" + (" per item" if n_items > 1 else ""), unit,
                     n_total=len(done))]
    err = np.asarray(group[layout.PTYCHO_ERROR][...])[done]
    paths.append(error_curves(out_dir / "ptycho_error.png", err, item_floors(group, done), energies[done],
                              "photon energy (eV)", "{:.1f} eV"))
    return paths
