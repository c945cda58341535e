"""Reader ``nexus``: NeXus NXptycho files (:mod:`ptyhpc.io.nexus`); every NXptycho entry is one scan."""

from __future__ import annotations

from ..cxi import is_cxi
from ..nexus import is_nxptycho, read_nexus_scans
from ..scan import Scan
from .options import ReadOptions
from .scans import ingest_read_scans

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "nexus"
REFUSED = ()


def sniff(path) -> bool:
    """An HDF5 file with an ``NXentry`` of definition NXptycho and no root ``cxi_version`` (that is CXI)."""
    return is_nxptycho(path) and not is_cxi(path)


def read(path, options: ReadOptions) -> list[Scan]:
    """:func:`ptyhpc.io.nexus.read_nexus_scans` with the radiation, probe and propagation options."""
    return read_nexus_scans(path, radiation=options.radiation, probe_semiangle_rad=options.probe_semiangle_rad,
                            defocus_m=options.defocus_m, regime=options.regime,
                            focus_to_sample_m=options.focus_to_sample_m)


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool):
    """:func:`~ptyhpc.io.readers.scans.ingest_read_scans` over this reader."""
    import sys  # noqa: PLC0415

    return ingest_read_scans(sys.modules[__name__], files, store_path, options, overwrite=overwrite,
                             progress=progress)
