"""The 3D ED stage: tilt series store → tracks, per-particle diffraction series, exports, unit cells.

Writes ``OUTDIR/tracks.csv`` (``particle,tilt_deg,y_m,x_m``, scan frame of each scan, m),
``OUTDIR/particle_NNN/`` (``particle_NNN.pts`` + ``tiff/``, ``particle_NNN.mrc``, ``smv/`` + ``XDS.INP``
when the tilt steps are uniform, ``summary.json``, ``cell.json``, ``reciprocal.png``),
``OUTDIR/tracks.png``, and in the store ``results/ed3d/`` (see docs/ed3d.md).
"""

from __future__ import annotations

import csv
import json
import shutil
from os import PathLike
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["ED3DOptions", "run_ed3d", "ED3D_RESULTS"]

#: Results group of the stage in the store.
ED3D_RESULTS = "results/ed3d"


class ED3DOptions(BaseModel):
    """Settings of the 3D ED stage (defaults for a few-px particles in a 4D-STEM scan)."""

    model_config = ConfigDict(extra="forbid")

    bf_radius_px: float = 2.5          # beam-centre search radius on the detector (px)
    adf_inner_px: float = 3.5          # ADF virtual detector inner radius (px) for segmentation
    smooth_px: float = 0.6             # Gaussian σ before thresholding (scan px)
    min_area_px: int = 6               # smallest particle (scan px)
    search_range_px: float = 3.0       # largest move between linked tilts after drift removal (scan px)
    memory: int = 3                    # tilts a particle may be missing and keep its track
    min_track_length: int = 3
    drift_max_shift_px: float = 3.0
    peak_n_sigma: float = 6.0          # diffraction peaks above this many noise σ
    exports: tuple[str, ...] = ("pets", "mrc", "xds")


def run_ed3d(store: str | PathLike, outdir: str | PathLike, options: ED3DOptions | dict | None = None, *,
             client=None, progress: bool = True) -> dict:
    """Run the stage on a 4D-STEM tilt-series store.

    Parameters
    ----------
    store : path-like
        A multi-item 4D-STEM store (``ptyhpc ingest scan_*.mib --tilts tilts.csv``); item k at ``tilt_angle[k]``.
    outdir : path-like
    options : ED3DOptions or dict
    client : distributed.Client, optional
        Each scan's map-reduce passes run as dask tasks on it.

    Returns
    -------
    dict
        ``n_particles``, ``tracks`` (DataFrame), ``cells`` (per particle dict or error), ``outdir``.

    Raises
    ------
    StoreError
        Not a 4D-STEM store.
    ValueError
        Fewer than two items, or no particle found.
    """
    import zarr  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415

    from ..io.layout import TILT_ANGLE  # noqa: PLC0415
    from ..io.store import open_store  # noqa: PLC0415
    from ..stem.mapreduce import stem_context  # noqa: PLC0415
    from .cell import cell_parameters, find_cell, find_peaks, peaks_to_reciprocal  # noqa: PLC0415
    from .detect import nominal_centre, scan_images, segment  # noqa: PLC0415
    from .export import ExportGeometry, write_mrc, write_pets, write_smv_xds  # noqa: PLC0415
    from .series import particle_labels, particle_patterns  # noqa: PLC0415
    from .track import track_particles  # noqa: PLC0415

    opts = options if isinstance(options, ED3DOptions) else ED3DOptions(**(options or {}))
    store, outdir = Path(store), Path(outdir)
    group = open_store(store)
    ctx = stem_context(group)
    n_items = int(group["frames"].shape[0])
    if n_items < 2:
        raise ValueError(f"{store}: {n_items} item; a tilt series needs at least two scans")
    tilts = np.asarray(group[TILT_ANGLE][...], float)
    geo = ctx.geometry
    step = tuple(ctx.stem.get("scan_step_m", [geo["scan_step_m"]] * 2))
    dk = tuple(geo["reciprocal_sampling_inv_m"])
    lam = float(geo["wavelength_m"])
    centre = nominal_centre(group, 0)
    scan_rot = float(ctx.stem.get("scan_rotation_rad") or 0.0)
    transpose = bool(ctx.stem.get("detector_transpose") or False)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("3D ED: virtual images", total=n_items)
        ims = _per_item(n_items, lambda k: scan_images(store, k, centre, bf_radius_px=opts.bf_radius_px,
                                                       adf_inner_px=opts.adf_inner_px, client=client),
                        client, lambda: bar.advance(task))
        adf = np.stack([s.adf for s in ims])
        regions = [segment(a, smooth_px=opts.smooth_px, min_area_px=opts.min_area_px) for a in adf]
        tr = track_particles(regions, adf, search_range_px=opts.search_range_px, memory=opts.memory,
                             min_length=opts.min_track_length, drift_max_shift_px=opts.drift_max_shift_px)
        table = tr.table
        n_p = int(table["particle"].max()) + 1 if len(table) else 0
        if n_p == 0:
            raise ValueError(f"{store}: no particle tracked (segmentation found {sum(r.labels.max() for r in regions)} "
                             "regions in all scans)")
        det = ctx.detector_shape
        patterns = np.zeros((n_p, n_items, *det), np.float32)
        n_frames = np.zeros((n_p, n_items), int)
        masks = np.zeros((n_items, *ctx.scan_shape), np.int32)
        task = bar.add_task("3D ED: particle patterns", total=n_items)
        labs = [particle_labels(regions[k], table[table["item"] == k], n_p) for k in range(n_items)]
        series = _per_item(n_items, lambda k: particle_patterns(store, k, labs[k], ims[k].centre, centre, n_p,
                                                                client=client), client, lambda: bar.advance(task))
        for k in range(n_items):
            masks[k] = np.maximum(labs[k], 0).reshape(ctx.scan_shape)
            patterns[:, k], n_frames[:, k], _ = series[k]
    dose_scans = np.asarray(ctx.stem.get("dose_e_per_m2", [geo.get("dose_e_per_m2") or 0.0] * n_items), float)
    # Everything is written into a hidden sibling folder that replaces OUTDIR only once complete:
    # a failed run leaves no OUTDIR that looks finished.
    final_out = outdir
    outdir = final_out.parent / f".{final_out.name}.partial"
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    tilt_deg = np.degrees(tilts)
    with open(outdir / "tracks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["particle", "tilt_deg", "y_m", "x_m"])
        for _, r in table.iterrows():
            w.writerow([int(r["particle"]), f"{tilt_deg[int(r['item'])]:.4f}", f"{r['y_px'] * step[0]:.6e}",
                        f"{r['x_px'] * step[1]:.6e}"])
    cells, summaries = [], []
    for p in range(n_p):
        pdir = outdir / f"particle_{p:03d}"
        pdir.mkdir(exist_ok=True)
        use = np.nonzero(n_frames[p] > 0)[0]
        pats, th = patterns[p, use], tilt_deg[use]
        steps = np.diff(th)
        uniform = len(th) > 1 and np.allclose(steps, steps.mean(), atol=1e-3)
        eg = ExportGeometry(lam, float(np.mean(dk)), float(centre[1]), float(centre[0]), float(th[0]) if len(th) else 0.0,
                            float(steps.mean()) if len(th) > 1 else 0.0,
                            # the tilt axis (scan y) on the detector: R(scan rotation)·(0, 1) in (col, row)
                            rotation_axis_deg=90.0 + float(np.degrees(scan_rot)))
        files = []
        if len(th):
            if "pets" in opts.exports:
                files.append(write_pets(pdir, pdir.name, pats, th, eg).name)
            if "mrc" in opts.exports:
                files.append(write_mrc(pdir / f"{pdir.name}.mrc", pats, eg).name)
            if "xds" in opts.exports and uniform:
                files.append(write_smv_xds(pdir, pats, eg).name)
        qs, Is = [], []
        for pat, t in zip(pats, np.radians(th)):
            pk = find_peaks(pat, centre, n_sigma=opts.peak_n_sigma)
            qs.append(peaks_to_reciprocal(pk[:, :2], centre, t, dk, lam, scan_rotation_rad=scan_rot,
                                          transpose=transpose))
            Is.append(pk[:, 2])
        q = np.concatenate(qs) if qs else np.zeros((0, 3))
        try:
            res = find_cell(q, np.concatenate(Is) if Is else None)
            cell = {**cell_parameters(res["direct_basis_m"]),
                    "orientation": {"direct_basis_m": res["direct_basis_m"].T.tolist(),
                                    "reciprocal_basis_inv_m": res["reciprocal_basis_inv_m"].T.tolist(),
                                    "frame": "rows a, b, c (a*, b*, c*) in the lab frame at tilt 0: x = scan x, "
                                             "y = scan y = tilt axis, z = beam"},
                    "indexed_fraction": res["indexed_fraction"], "n_peaks": res["n_peaks"],
                    "n_reflections": res["n_reflections"], "rms_residual_inv_m": res["rms_residual_inv_m"]}
            _reciprocal_figure(pdir / "reciprocal.png", q)
        except ValueError as e:
            cell = {"error": str(e), "n_peaks": int(len(q))}
        (pdir / "cell.json").write_text(json.dumps(cell, indent=1))
        rows = table[table["particle"] == p]
        summary = {"particle": p, "tilt_deg": th.tolist(), "n_frames": n_frames[p, use].tolist(),
                   "items": use.tolist(), "tracked_items": rows["item"].astype(int).tolist(),
                   "isolated_items": rows[rows["isolated"]]["item"].astype(int).tolist(),
                   # every scan of the series illuminates the whole field: the particle's dose is the series' dose
                   "dose_e_per_A2": float(dose_scans.sum() * 1e-20),
                   "geometry": {**eg.__dict__, "camera_length_m": eg.camera_length_m,
                                "uniform_tilt_step": bool(uniform)},
                   "files": files, "cell": {k: v for k, v in cell.items() if k != "orientation"}}
        (pdir / "summary.json").write_text(json.dumps(summary, indent=1))
        cells.append(cell)
        summaries.append(summary)
    _tracks_figure(outdir / "tracks.png", adf, table, tilt_deg)
    if final_out.exists():
        shutil.rmtree(final_out)
    outdir.rename(final_out)
    outdir = final_out
    # Store results (replaced as a whole on a rerun).
    root = zarr.open_group(store, mode="a")
    if ED3D_RESULTS in root:
        del root[ED3D_RESULTS]
    res = root.require_group(ED3D_RESULTS)
    tracks_arr = np.array([[r["particle"], tilts[int(r["item"])], r["y_px"] * step[0], r["x_px"] * step[1]]
                           for _, r in table.iterrows()], float).reshape(-1, 4)
    res.create_array("tracks", data=tracks_arr, attributes={"columns": ["particle", "tilt_rad", "y_m", "x_m"]})
    res.create_array("masks", data=masks, chunks=(1, *ctx.scan_shape),
                     attributes={"values": "particle + 1 where isolated and tracked, else 0"})
    res.create_array("patterns", data=patterns, chunks=(1, 1, *det),
                     attributes={"units": "counts", "beam_centre_px": list(centre)})
    res.create_array("n_frames", data=n_frames)
    res.create_array("labels", data=np.stack(labs).reshape(n_items, *ctx.scan_shape), chunks=(1, *ctx.scan_shape),
                     attributes={"values": "-1 not used (near a particle, or not isolated), 0 background, "
                                           "k >= 1 particle k - 1"})
    res.create_array("adf", data=adf, chunks=(1, *ctx.scan_shape), attributes={"units": "counts"})
    res.create_array("beam_centre_px", data=np.stack([s.centre for s in ims]), chunks=(1, *ctx.scan_shape, 2),
                     attributes={"axes": ["row", "col"], "nominal": list(centre)})
    res.create_array("drift_px", data=tr.drift_px)
    res.attrs.update({"summaries": summaries, "agglomerates": [list(map(int, a)) for a in tr.agglomerates],
                      "settings": opts.model_dump(mode="json"), "outdir": str(outdir.resolve()),
                      "complete": True})
    return {"n_particles": n_p, "tracks": table, "cells": cells, "outdir": outdir}


def _per_item(n: int, fn, client, advance) -> list:
    """``[fn(0), ..., fn(n − 1)]``; with a dask client the items' map-reduce passes are submitted
    concurrently from a few threads (one scan is often a single partition), results in item order."""
    if client is None:
        out = []
        for k in range(n):
            out.append(fn(k))
            advance()
        return out
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def one(k):
        r = fn(k)
        advance()
        return r

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def _tracks_figure(path, adf, table, tilt_deg):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    picks = sorted({0, len(adf) // 2, len(adf) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(3.3 * len(picks), 3.3), squeeze=False)
    for ax, k in zip(axes[0], picks):
        ax.imshow(adf[k], cmap="gray")
        for p, d in table.groupby("particle"):
            ax.plot(d["x_px"], d["y_px"], "-", lw=0.8)
            now = d[d["item"] == k]
            ax.plot(now["x_px"], now["y_px"], "o", mfc="none")
            if len(now):
                ax.annotate(str(p), (now["x_px"].iloc[0] + 1, now["y_px"].iloc[0]), color="yellow")
        ax.set_title(f"ADF, tilt {tilt_deg[k]:.1f}°")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _reciprocal_figure(path, q):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(6.6, 3.3))
    # Central sections: the slab |q_y| < 0.05 Å⁻¹ (perpendicular to the tilt axis) and |q_z| < 0.05 Å⁻¹.
    for ax, (i, j, k), name in zip(axes, [(0, 2, 1), (0, 1, 2)], ["x–z (⊥ tilt axis)", "x–y"]):
        s = np.abs(q[:, k]) < 0.05e10
        ax.plot(q[s, i] * 1e-10, q[s, j] * 1e-10, ".", ms=3)
        ax.set_aspect("equal")
        ax.set_title(f"reciprocal space {name}, Å⁻¹", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
