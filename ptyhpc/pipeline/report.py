"""Short text report and store summary (what ran, how long, how well)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import layout, open_store, read_geometry

__all__ = ["store_summary", "write_report"]


def store_summary(store_path) -> dict:
    """Geometry, item count and per-stage progress of a store, JSON-ready."""
    group = open_store(store_path)
    out = {"store": str(store_path), "kind": group.attrs.get("kind"), "geometry": read_geometry(group),
           "frames_shape": list(group[layout.FRAMES].shape),
           "tilt_angle_deg": np.degrees(np.asarray(group[layout.TILT_ANGLE][...])).round(4).tolist()}
    if layout.PTYCHO_STATUS in group:
        status = np.asarray(group[layout.PTYCHO_STATUS][...])
        out["ptycho"] = {"done": int((status == 1).sum()), "pending": np.nonzero(status == 0)[0].tolist(),
                         "failed": np.nonzero(status == 2)[0].tolist()}   # 2: failed, reason in ptyhpc status
    if layout.TOMO in group:
        out["tomo"] = {"complete": bool(group[layout.TOMO].attrs.get("complete", False))}
    return out


def write_report(path, store_path, *, timings: dict, ptycho: dict, tomo: dict, truth=None,
                 figures=None) -> Path:
    """Write the run's text report (and a JSON twin ``<path>.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = store_summary(store_path)
    group = open_store(store_path)
    err = np.asarray(group[layout.PTYCHO_ERROR][...])
    data = {"ptyhpc": __version__, "python": platform.python_version(), "summary": summary,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "ptycho_final_error": err[:, -1].round(5).tolist(),
            "tomo": {k: v for k, v in (tomo or {}).items() if isinstance(v, (int, float, str, list))}}
    if truth:
        from .evaluate import phase_truth_metrics, tube_metrics  # noqa: PLC0415

        data["truth"] = {"phase": phase_truth_metrics(store_path, truth), "tubes_sirt": tube_metrics(store_path, truth),
                         "tubes_fbp": tube_metrics(store_path, truth, layout.TOMO_FBP)}
    lines = [f"ptyhpc {__version__} report", f"store: {store_path}",
             f"items: {summary['frames_shape'][0]}  positions: {summary['frames_shape'][1]}  "
             f"detector: {summary['frames_shape'][2]}x{summary['frames_shape'][3]}",
             "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
             f"ptychography: {len(ptycho.get('done', []))} reconstructed, {len(ptycho.get('skipped', []))} resumed; "
             f"final data error {err[:, -1].min():.4f}..{err[:, -1].max():.4f}"]
    if "center_px" in (tomo or {}):
        lines.append(f"tomography: rotation axis at column {tomo['center_px']:.2f} px "
                     f"(x = {tomo.get('rotation_axis_x_m', float('nan')) * 1e10:.2f} Å in the scan frame)")
    if truth:
        ph, ts, tf = data["truth"]["phase"], data["truth"]["tubes_sirt"], data["truth"]["tubes_fbp"]
        lines.append(f"truth: mean phase correlation (low-passed at 2α/λ) {ph['mean_correlation']:.3f} "
                     f"(min {np.nanmin(ph['correlation']):.3f})")
        lines.append(f"truth: SIRT tube centre errors (Å) {ts['distance_A']} (max {ts['max_distance_A']:.2f})")
        lines.append(f"truth: FBP tube centre errors (Å) {tf['distance_A']} (max {tf['max_distance_A']:.2f})")
    if figures:
        lines.append(f"figures: {figures}")
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(data, indent=2, default=float))
    return path
