"""Per-item progress of a store, read from the store itself (``ptyhpc status``)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np

from ..io import layout, open_store
from ..io.energy import ENERGY_STACK, PHOTON_ENERGY
from .item_status import FAILED, failure_reasons
from .lock import lock_dir

__all__ = ["store_status"]


def _held(path: Path, shared_ok: bool = False) -> bool:
    """True when another process holds a flock on ``path`` (probed without waiting)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared_ok else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the probe's lock, if it got one


def store_status(store_path) -> dict:
    """Per-item state of the ptychography stage and who holds the store.

    An item is ``done`` when its status is 1, ``failed`` when it is 2 (row
    ``reason``: why), ``running`` when a task holds
    its item lock (on any machine that shares the file system, see
    :mod:`ptyhpc.pipeline.lock`), ``pending`` otherwise.

    Returns
    -------
    dict
        ``store``, ``kind``, ``n_items``, ``items`` (list of dicts: ``item``,
        ``state``, ``final_error`` (None unless done), ``reason`` (failed items) and ``tilt_deg`` or
        ``energy_eV`` and ``polarisation``), ``counts`` (done/running/pending/failed),
        ``run_lock`` (None when free; the holder's description, or
        ``"job array elements"``), ``tomo_complete``.

    Raises
    ------
    StoreError
        Not a complete ptyhpc store.
    """
    group = open_store(store_path)
    n = int(group[layout.FRAMES].shape[0])
    kind = group.attrs.get("kind")
    status = np.asarray(group[layout.PTYCHO_STATUS][...]) if layout.PTYCHO_STATUS in group else np.zeros(n, np.uint8)
    err = np.asarray(group[layout.PTYCHO_ERROR][:, -1]) if layout.PTYCHO_ERROR in group else None
    locks = lock_dir(store_path)
    reasons = failure_reasons(group)
    items = []
    for i in range(n):
        row = {"item": i}
        if kind == ENERGY_STACK:
            row["energy_eV"] = float(group[PHOTON_ENERGY][i])
            row["polarisation"] = group.attrs["polarisation"][i]
        else:
            row["tilt_deg"] = round(float(np.degrees(group[layout.TILT_ANGLE][i])), 6)
        if status[i] == 1:
            row["state"] = "done"
        elif status[i] == FAILED:
            row["state"] = "failed"
            row["reason"] = reasons.get(i) or "(no reason stored)"
        elif _held(locks / "locks" / f"item-{i:06d}.lock"):
            row["state"] = "running"
        else:
            row["state"] = "pending"
        row["final_error"] = float(err[i]) if status[i] == 1 and err is not None else None
        items.append(row)
    run_lock = None
    if _held(locks / "run.lock"):
        try:
            info = json.loads((locks / "run.lock").read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        run_lock = (f"pid {info['pid']} on {info['host']} since {info['since']}" if info
                    else "job array elements")
    counts = {s: sum(r["state"] == s for r in items) for s in ("done", "running", "pending", "failed")}
    tomo = bool(group[layout.TOMO].attrs.get("complete", False)) if layout.TOMO in group else False
    return {"store": str(store_path), "kind": kind, "n_items": n, "items": items, "counts": counts,
            "run_lock": run_lock, "tomo_complete": tomo}
