"""Reader ``cxi``: CXI files (:mod:`ptyhpc.io.cxi`), one scan per file."""

from __future__ import annotations

from ..cxi import is_cxi, read_cxi_scan
from ..scan import Scan
from .options import ReadOptions
from .scans import ingest_read_scans

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "cxi"
REFUSED = ()


def sniff(path) -> bool:
    """An HDF5 file with a root ``cxi_version``."""
    return is_cxi(path)


def read(path, options: ReadOptions) -> list[Scan]:
    """:func:`ptyhpc.io.cxi.read_cxi_scan` with the probe and propagation options."""
    return [read_cxi_scan(path, probe_semiangle_rad=options.probe_semiangle_rad, defocus_m=options.defocus_m,
                          regime=options.regime, focus_to_sample_m=options.focus_to_sample_m)]


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool):
    """:func:`~ptyhpc.io.readers.scans.ingest_read_scans` over this reader."""
    import sys  # noqa: PLC0415

    return ingest_read_scans(sys.modules[__name__], files, store_path, options, overwrite=overwrite,
                             progress=progress)
