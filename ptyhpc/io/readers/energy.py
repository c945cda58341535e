"""Reader ``energy-stack``: per-energy X-ray files (:mod:`ptyhpc.io.energy`), one item per (energy, polarisation)."""

from __future__ import annotations

from pathlib import Path

from ..energy import is_xray_file, read_xray_metadata
from ..hdf5_tilt import read_counts
from ..scan import Scan
from . import hdf5_tilt
from .options import ReadOptions

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "energy-stack"
REFUSED = hdf5_tilt.REFUSED
WHY = hdf5_tilt.WHY.replace("hdf5-tilt", "energy-stack")


def sniff(path) -> bool:
    """HDF5 with ``photon_energy_eV`` in ``entry/instrument`` (:func:`~ptyhpc.io.energy.is_xray_file`), not NXptycho."""
    from ..nexus import is_nxptycho  # noqa: PLC0415

    return is_xray_file(path) and not is_nxptycho(path)


def read(path, options: ReadOptions) -> list[Scan]:
    """One X-ray scan as a :class:`~ptyhpc.io.scan.Scan`; its own record in ``scan.native``."""
    from ..energy import scan_positions  # noqa: PLC0415

    options.refuse(REFUSED, WHY)
    m = read_xray_metadata(path)
    n = m.scan_shape[0] * m.scan_shape[1]
    shape = (n, *m.detector_shape)
    return [Scan(path=Path(path), source_format=NAME, load_frames=lambda: read_counts(path).reshape(shape),
                 n_positions=n, detector_shape=tuple(m.detector_shape), dtype=m.dtype, positions_m=scan_positions(m),
                 radiation="xray", energy_eV=m.photon_energy_eV, wavelength_m=m.wavelength_m,
                 distance_m=m.detector_distance_m, pixel_size_m=tuple(m.detector_pixel_size_m),
                 tilt_angle_rad=m.tilt_angle_rad, probe_semiangle_rad=m.probe_semiangle_rad, defocus_m=m.defocus_m,
                 polarisation=m.polarisation, native=m)]


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool) -> Path:
    """:func:`ptyhpc.io.energy.ingest_energy_stack` (``--kind`` other than energy_stack refused)."""
    from ..energy import ingest_energy_stack  # noqa: PLC0415
    from ..errors import IngestError  # noqa: PLC0415

    options.refuse(REFUSED, WHY)
    if options.kind not in ("auto", "energy_stack"):
        raise IngestError(f"--kind {options.kind}: energy-stack files make an energy_stack store")
    return ingest_energy_stack(files, store_path, overwrite=overwrite, progress=progress)
