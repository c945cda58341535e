"""What a job has produced so far: per-item progress from the store and its results for download.

Progress is read from the store itself (its ``results/<stage>/status`` arrays and item locks, as
``ptyhpc status`` does), never from the service's own bookkeeping. Results are listed by name:

``figures/<file>.png``          the figures ``ptyhpc run`` writes
``report.txt``                  the text report
``log.txt``                     the log of the latest run
``arrays/<store path>``         a result array: JSON (``?format=json``, up to :data:`JSON_MAX` elements)
                                or NPY (``?format=npy``, up to :data:`NPY_MAX_BYTES`)
``previews/<store path>.png``   orthoslices through the centre of a real 3D array (a volume),
                                downsampled to at most :data:`PREVIEW_PX` pixels a side
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from .config import ServiceConfig
from .jobs import job_dir

__all__ = ["job_progress", "list_results", "read_result", "ResultNotFound", "JSON_MAX", "NPY_MAX_BYTES"]

JSON_MAX = 100_000
NPY_MAX_BYTES = 64 << 20
PREVIEW_PX = 256


class ResultNotFound(KeyError):
    pass


def _store(cfg: ServiceConfig, job_id: str) -> Path:
    return job_dir(cfg, job_id) / "store.zarr"


def _open(cfg, job_id):
    from ..io import StoreError, open_store  # noqa: PLC0415

    path = _store(cfg, job_id)
    if not path.is_dir():
        return None
    try:
        return open_store(path)
    except (StoreError, OSError, ValueError):
        return None  # ingest still running (the store appears complete or not at all)


def _stage_arrays(group):
    """``(stage, status array)`` for every ``results/<stage>/status``."""
    if "results" not in group:
        return
    for name, sub in group["results"].groups():
        if "status" in sub:
            yield name, sub["status"]


def job_progress(cfg: ServiceConfig, job_id: str) -> Optional[dict]:
    """Per-stage and per-item progress of a job's store, or ``None`` before the ingest finished.

    Returns
    -------
    dict
        ``n_items``; ``stages``: ``{stage: {"done": int, "total": int}}`` from each stage's status
        array (status 1 = done); ``items``: per item ``{"item", "state"}`` with state done | running |
        pending (running: its item lock is held) and ``final_error`` of ptychography; ``counts``;
        ``tomo_complete``.
    """
    group = _open(cfg, job_id)
    if group is None:
        return None
    from ..pipeline.progress import store_status  # noqa: PLC0415

    out: dict = {"stages": {}}
    for name, status in _stage_arrays(group):
        s = np.asarray(status[...])
        out["stages"][name] = {"done": int(np.count_nonzero(s == 1)), "total": int(s.size)}
    try:
        st = store_status(_store(cfg, job_id))
    except Exception:  # noqa: BLE001 - a store of another modality: the status arrays above still hold
        return out
    out.update(n_items=st["n_items"], counts=st["counts"], tomo_complete=st["tomo_complete"],
               items=[{k: r.get(k) for k in ("item", "state", "final_error")} for r in st["items"]])
    return out


def _arrays(group, prefix="results"):
    if prefix not in group:
        return
    node = group[prefix]
    for name, arr in node.arrays():
        yield f"{prefix}/{name}", arr
    for name, _ in node.groups():
        yield from _arrays(group, f"{prefix}/{name}")


def list_results(cfg: ServiceConfig, job_id: str) -> list[dict]:
    """Every result available now: ``name``, ``kind`` (figure | report | log | array | preview),
    ``media_type``, and ``size`` (bytes) or ``shape``/``dtype`` for arrays."""
    d = job_dir(cfg, job_id)
    out = []
    figs = d / "figures"
    if figs.is_dir():
        for p in sorted(figs.glob("*.png")):
            out.append({"name": f"figures/{p.name}", "kind": "figure", "media_type": "image/png",
                        "size": p.stat().st_size})
    if (d / "report.txt").is_file():
        out.append({"name": "report.txt", "kind": "report", "media_type": "text/plain",
                    "size": (d / "report.txt").stat().st_size})
    if _latest_log(d) is not None:
        out.append({"name": "log.txt", "kind": "log", "media_type": "text/plain"})
    group = _open(cfg, job_id)
    if group is not None:
        for path, arr in _arrays(group):
            entry = {"name": f"arrays/{path}", "kind": "array", "shape": list(arr.shape), "dtype": str(arr.dtype),
                     "formats": [f for f, ok in (("json", arr.size <= JSON_MAX),
                                                 ("npy", arr.nbytes <= NPY_MAX_BYTES)) if ok]}
            out.append(entry)
            if arr.ndim == 3 and not np.issubdtype(arr.dtype, np.complexfloating) and min(arr.shape) >= 8:
                out.append({"name": f"previews/{path}.png", "kind": "preview", "media_type": "image/png",
                            "shape": list(arr.shape)})
    return out


def _latest_log(d: Path) -> Optional[Path]:
    logs = sorted(d.glob("run-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    return logs[-1] if logs else None


def read_result(cfg: ServiceConfig, job_id: str, name: str, fmt: Optional[str] = None) -> tuple[bytes | Path, str]:
    """The content of one listed result: ``(path or bytes, media type)``.

    Only names in :func:`list_results` are served (no path from the request reaches the file system).

    Raises
    ------
    ResultNotFound
        Not a current result.
    ValueError
        A format the array is too large for, or unknown.
    """
    listing = {r["name"]: r for r in list_results(cfg, job_id)}
    entry = listing.get(name)
    if entry is None:
        raise ResultNotFound(name)
    d = job_dir(cfg, job_id)
    if entry["kind"] == "figure":
        return d / "figures" / name.split("/", 1)[1], "image/png"
    if entry["kind"] == "report":
        return d / "report.txt", "text/plain; charset=utf-8"
    if entry["kind"] == "log":
        return _latest_log(d), "text/plain; charset=utf-8"
    group = _open(cfg, job_id)
    if entry["kind"] == "preview":
        return _preview(np.asarray(group[name[len("previews/"):-len(".png")]])), "image/png"
    fmt = fmt or ("json" if "json" in entry["formats"] else "npy")
    if fmt not in entry["formats"]:
        raise ValueError(f"{name}: format {fmt!r} not available (available: {entry['formats'] or 'none: too large'})")
    arr = np.asarray(group[name[len("arrays/"):]][...])
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return buf.getvalue(), "application/octet-stream"
    if np.iscomplexobj(arr):
        body = {"shape": list(arr.shape), "dtype": str(arr.dtype), "real": arr.real.tolist(), "imag": arr.imag.tolist()}
    else:
        body = {"shape": list(arr.shape), "dtype": str(arr.dtype), "data": np.where(np.isfinite(arr), arr, None).tolist()
                if arr.dtype.kind == "f" else arr.tolist()}
    return json.dumps(body).encode(), "application/json"


def _preview(vol: np.ndarray) -> bytes:
    """Three orthoslices through the centre, each strided down to at most PREVIEW_PX a side."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    step = max(1, int(np.ceil(max(vol.shape) / PREVIEW_PX)))
    v = vol[::step, ::step, ::step].astype(np.float32)
    c = [s // 2 for s in v.shape]
    slices = [("z", v[c[0]]), ("y", v[:, c[1]]), ("x", v[:, :, c[2]])]
    fig = Figure(figsize=(9, 3.2))
    for i, (label, sl) in enumerate(slices):
        ax = fig.add_subplot(1, 3, i + 1)
        finite = sl[np.isfinite(sl)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0, 1))
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"centre slice, {label} axis (1/{step} sampling)", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
