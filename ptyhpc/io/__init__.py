"""Raw-file readers, ingest into the zarr store, and store access.

Parsers: the project's per-item HDF5 files (:mod:`.hdf5_tilt`, :mod:`.energy`), CXI
(:mod:`.cxi`), NeXus NXptycho (:mod:`.nexus`), any HDF5 with a spec of dataset paths
(:mod:`.generic`). :mod:`.readers` puts every format (4D-STEM included) behind one interface;
:func:`ingest_files` chooses the reader and writes the store through :mod:`.writer`, the one store
writer (:mod:`.scan` for scans, :mod:`.detector` for dark/flat/mask). Errors: :mod:`.errors`.

Names of the store's arrays and attributes are in :mod:`ptyhpc.io.layout`.
"""

from .errors import IngestError
from .hdf5_tilt import ScanMetadata, read_counts, read_scan_metadata, scan_positions, validate_files
from .ingest import frames_chunking, geometry_from_metadata, ingest
from .readers import FORMATS, detect_format, ingest_files
from .store import (StoreError, n_items, open_store, read_geometry, read_item, read_mask, read_propagation,
                    require_result_array)
from .validate import check_counts, check_series

__all__ = [
    "FORMATS",
    "IngestError",
    "ScanMetadata",
    "StoreError",
    "check_counts",
    "check_series",
    "detect_format",
    "frames_chunking",
    "geometry_from_metadata",
    "ingest",
    "ingest_files",
    "n_items",
    "open_store",
    "read_counts",
    "read_geometry",
    "read_item",
    "read_mask",
    "read_propagation",
    "read_scan_metadata",
    "require_result_array",
    "scan_positions",
    "validate_files",
]
