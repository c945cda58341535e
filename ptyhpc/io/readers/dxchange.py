"""Reader ``dxchange``: Data Exchange tomography files (:mod:`ptyhpc.io.dxchange`), recognised but not ingested.

They hold projections (already images of the sample), not diffraction frames: there is no scan to put in a
store of frames. Recognising them lets ``auto`` say so instead of "format not recognised".
"""

from __future__ import annotations

import h5py

from ..dxchange import DATA
from ..errors import IngestError
from ..scan import Scan
from .options import ReadOptions

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "dxchange"
REFUSED = ()
WHY = ("Data Exchange files hold tomography projections, not diffraction frames, and are not ingested into a "
       "store; read them with ptyhpc.io.dxchange.read_dxchange")


def sniff(path) -> bool:
    """An HDF5 file with ``exchange/data``."""
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get(DATA), h5py.Dataset)
    except (OSError, ValueError):
        return False


def read(path, options: ReadOptions) -> list[Scan]:
    """Always raises ``IngestError`` (see the module docstring)."""
    raise IngestError(f"{path}: {WHY}")


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool):
    """Always raises ``IngestError`` naming the first file."""
    raise IngestError(f"{files[0]}: {WHY}")
