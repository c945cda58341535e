"""Figures of merit against a known ground truth (simulated series).

Used by the report when a recipe names a ``truth`` folder laid out like
``data/cnt_tilt_series`` (``truth_projected_NNN.npy``, ``truth_tubes.json``,
``index.json``); see that folder's README.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io import layout, open_store, read_geometry
from ..physics import interaction_constant

__all__ = ["lowpass", "phase_correlation", "phase_truth_metrics", "tube_centres", "tube_metrics"]

_CNT_BOND_M = 2.46e-10  # graphene lattice constant, for the tube radius a/π·√(n²+nm+m²)/2


def lowpass(image, pixel_size_m, k_cut):
    """Sharp circular low-pass of a 2D image at spatial frequency ``k_cut`` (1/m)."""
    ky = np.fft.fftfreq(image.shape[0], pixel_size_m[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1], pixel_size_m[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(image) * (np.hypot(ky, kx) <= k_cut)))


def phase_correlation(phase, truth, region):
    """Pearson correlation of two images over a boolean region, offsets removed."""
    a = phase[region] - phase[region].mean()
    b = truth[region] - truth[region].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _truth_index(truth_dir: Path) -> dict:
    entries = json.loads((truth_dir / "index.json").read_text())
    return {e["file"]: int(e["index"]) for e in entries}


def phase_truth_metrics(store_path, truth_dir) -> dict:
    """Correlation of each reconstructed phase with σ·V_proj of the truth.

    Both low-passed at the probe's information limit 2α/λ, offset removed,
    over the scanned area (bounding box of the scan positions). The truth
    cell is 1/Δk wide (the simulation cell), pixel [0, 0] at the scan-frame
    origin.

    Returns
    -------
    dict
        ``correlation`` (per item), ``mean_correlation``, ``angles_deg``.
    """
    truth_dir = Path(truth_dir)
    group = open_store(store_path)
    geom = read_geometry(group)
    sigma = interaction_constant(geom["beam_energy_eV"])
    obj = group[layout.PTYCHO_OBJECT]
    px, origin = obj.attrs["pixel_size_m"], obj.attrs["origin_m"]
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    index = _truth_index(truth_dir)
    k_cut = 2 * geom["convergence_semiangle_rad"] / geom["wavelength_m"]
    cell = 1.0 / np.asarray(geom["reciprocal_sampling_inv_m"])
    H, W = obj.shape[1:]
    yy, xx = np.mgrid[:H, :W]
    y_m, x_m = origin[0] + yy * px[0], origin[1] + xx * px[1]
    corr = []
    for i, src in enumerate(group.attrs["source_files"]):
        if status[i] != 1:
            corr.append(float("nan"))
            continue
        pos = np.asarray(group[layout.POSITIONS][i])
        region = ((y_m >= pos[:, 0].min()) & (y_m <= pos[:, 0].max())
                  & (x_m >= pos[:, 1].min()) & (x_m <= pos[:, 1].max()))
        v = np.load(truth_dir / f"truth_projected_{index[Path(src).name]:03d}.npy")  # V·Å
        tp = v * sigma * 1e-10
        coords = [y_m / (cell[0] / v.shape[0]), x_m / (cell[1] / v.shape[1])]
        truth = ndimage.map_coordinates(tp, coords, order=1, mode="grid-wrap")
        phase = np.angle(np.asarray(obj[i]))
        corr.append(phase_correlation(lowpass(phase, px, k_cut), lowpass(truth, px, k_cut), region))
    return {"correlation": corr, "mean_correlation": float(np.nanmean(corr)),
            "angles_deg": np.degrees(np.asarray(group[layout.TILT_ANGLE][...])).tolist()}


def tube_centres(image_xz, x_m, z_m, starts, radius_m, n_steps=20):
    """Mean-shift centroids of bright rings in an x–z image.

    Parameters
    ----------
    image_xz : (nz, nx) float
        Tomogram summed over y; negative values are ignored.
    x_m, z_m : (nx,), (nz,) float
        Coordinates of the columns and rows, m.
    starts : (n, 2) float
        Starting (x, z), m.
    radius_m : (n,) float
        Window radius per tube, m.

    Returns
    -------
    (n, 2) float, (x, z) in m.
    """
    img = np.clip(image_xz, 0, None)
    X, Z = np.meshgrid(x_m, z_m)
    out = []
    for (x, z), r in zip(starts, radius_m):
        for _ in range(n_steps):
            w = img * (np.hypot(X - x, Z - z) <= r)
            if w.sum() <= 0:
                break
            x, z = (w * X).sum() / w.sum(), (w * Z).sum() / w.sum()
        out.append((x, z))
    return np.array(out)


def tube_metrics(store_path, truth_dir, volume: str = layout.TOMO_SIRT) -> dict:
    """Distance of each tube centre in the tomogram (x–z plane) from ``truth_tubes.json``.

    Tube centres are taken relative to the tomogram's rotation axis
    (``rotation_axis_x_m``; z is already relative to it), found by a
    mean-shift centroid in a window of the tube radius + 1 Å started at the
    true centre, on the tomogram summed over the scanned rows.
    """
    truth = json.loads((Path(truth_dir) / "truth_tubes.json").read_text())["tubes"]
    group = open_store(store_path)
    vol = group[volume]
    data = np.asarray(vol[...])
    vox = vol.attrs["voxel_size_m"]
    y0, z0, x0 = vol.attrs["origin_m"]
    axis_x = vol.attrs["rotation_axis_x_m"]
    ny, nz, nx = data.shape
    x_m = x0 + np.arange(nx) * vox - axis_x
    z_m = z0 + np.arange(nz) * vox
    img = data.sum(axis=0)
    starts = np.array([[t["x_A"], t["z_A"]] for t in truth]) * 1e-10
    radii = np.array([_CNT_BOND_M / np.pi * np.sqrt(n * n + n * m + m * m) / 2 + 1e-10
                      for n, m in (t["n_m"] for t in truth)])
    found = tube_centres(img, x_m, z_m, starts, radii)
    dist = np.hypot(*(found - starts).T)
    return {"found_xz_A": (found * 1e10).round(3).tolist(), "truth_xz_A": (starts * 1e10).tolist(),
            "distance_A": (dist * 1e10).round(3).tolist(), "max_distance_A": float(dist.max() * 1e10)}
