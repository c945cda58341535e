"""Raw-file readers, ingest into the zarr store, and store access.

Names of the store's arrays and attributes are in :mod:`ptyhpc.io.layout`.
"""

from .hdf5_tilt import ScanMetadata, read_counts, read_scan_metadata, scan_positions
from .ingest import frames_chunking, geometry_from_metadata, ingest
from .store import StoreError, n_items, open_store, read_geometry, read_item, require_result_array
from .validate import IngestError, check_counts, check_series, validate_files

__all__ = [
    "IngestError",
    "ScanMetadata",
    "StoreError",
    "check_counts",
    "check_series",
    "frames_chunking",
    "geometry_from_metadata",
    "ingest",
    "n_items",
    "open_store",
    "read_counts",
    "read_geometry",
    "read_item",
    "read_scan_metadata",
    "require_result_array",
    "scan_positions",
    "validate_files",
]
