"""Tilt angles of a multi-scan 4D-STEM acquisition from a table (``--tilts tilts.csv``)."""

from __future__ import annotations

import csv
import math
from os import PathLike
from pathlib import Path
from typing import Sequence

from ..io.validate import IngestError

__all__ = ["read_tilts_csv"]


def read_tilts_csv(path: str | PathLike, files: Sequence[str | PathLike]) -> list[float]:
    """Tilt angle (rad) of each of ``files`` from a CSV with columns ``file,tilt_deg``.

    A file is matched by its path as written, else by its name (automated acquisitions write
    bare names next to the table).

    Returns
    -------
    list of float
        One angle per file, in the order of ``files``.

    Raises
    ------
    IngestError
        Missing columns, a non-numeric or non-finite angle, a file missing from the
        table, a file listed twice.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise IngestError(f"{path}: cannot read the tilt table ({e})") from e
    if not rows or not {"file", "tilt_deg"} <= set(rows[0]):
        raise IngestError(f"{path}: needs the columns file,tilt_deg")
    table: dict[str, float] = {}
    for n, r in enumerate(rows, start=2):
        name = (r["file"] or "").strip()
        try:
            deg = float(r["tilt_deg"])
        except (TypeError, ValueError):
            raise IngestError(f"{path}: line {n}: tilt_deg {r['tilt_deg']!r} is not a number") from None
        if not math.isfinite(deg):
            raise IngestError(f"{path}: line {n}: tilt_deg {deg} is not finite")
        if name in table:
            raise IngestError(f"{path}: line {n}: file {name!r} listed twice")
        table[name] = deg
    out = []
    for f in files:
        f = Path(f)
        deg = table.get(str(f), table.get(f.name))
        if deg is None:
            raise IngestError(f"{path}: no tilt_deg for {f.name} (column file)")
        out.append(math.radians(deg))
    return out
