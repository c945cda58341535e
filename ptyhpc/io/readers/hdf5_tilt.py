"""Reader ``hdf5-tilt``: the project's per-angle electron files (:mod:`ptyhpc.io.hdf5_tilt`).

``--format hdf5-tilt`` also takes per-energy X-ray files (``--kind energy_stack``, or ``auto``: from the
first file), as it always has; ``--format energy-stack`` names them directly (:mod:`.energy`).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ..hdf5_tilt import COUNTS, INSTRUMENT, read_counts, read_scan_metadata, scan_positions
from ..scan import Scan
from .options import ReadOptions

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "hdf5-tilt"
#: Options these files cannot take: their metadata carry the probe; their counts are stored as recorded.
REFUSED = ("dark", "flat", "mask", "radiation", "probe_semiangle_rad", "defocus_m", "regime", "focus_to_sample_m",
           "zone_plate")
WHY = "not supported for hdf5-tilt files (their metadata carry the probe; their counts are stored as recorded)"


def sniff(path) -> bool:
    """An HDF5 file with ``entry/data/counts`` and ``entry/instrument``, not X-ray, CXI or NXptycho."""
    from ..energy import is_xray_file  # noqa: PLC0415
    from ..nexus import is_nxptycho  # noqa: PLC0415

    try:
        with h5py.File(path, "r") as f:
            if "cxi_version" in f:
                return False
            tilt = isinstance(f.get(COUNTS), h5py.Dataset) and isinstance(f.get(INSTRUMENT), h5py.Group)
    except (OSError, ValueError):
        return False
    return tilt and not is_xray_file(path) and not is_nxptycho(path)


def read(path, options: ReadOptions) -> list[Scan]:
    """One electron scan as a :class:`~ptyhpc.io.scan.Scan`; its own record in ``scan.native``.

    The files give the reciprocal sampling, not a detector distance and pixel: the Scan carries the
    equivalent far-field pair z = 1 m, p = λ z Δk (same ``reciprocal_sampling_inv_m``).
    """
    from ...physics.wavelength import electron_wavelength  # noqa: PLC0415

    options.refuse(REFUSED, WHY)
    meta = read_scan_metadata(path)
    lam = electron_wavelength(meta.beam_energy_eV)
    shape = (meta.n_positions, *meta.detector_shape)
    return [Scan(path=Path(path), source_format=NAME, load_frames=lambda: read_counts(path).reshape(shape),
                 n_positions=meta.n_positions, detector_shape=tuple(meta.detector_shape), dtype=meta.dtype,
                 positions_m=scan_positions(meta), radiation="electron", energy_eV=float(meta.beam_energy_eV),
                 wavelength_m=lam, distance_m=1.0,
                 pixel_size_m=tuple(float(k * lam) for k in meta.reciprocal_sampling_inv_m),
                 tilt_angle_rad=meta.tilt_angle_rad, probe_semiangle_rad=meta.convergence_semiangle_rad,
                 defocus_m=meta.defocus_m, native=meta)]


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool) -> Path:
    """:func:`ptyhpc.io.ingest.ingest` (tilt series) or :func:`ptyhpc.io.energy.ingest_energy_stack`."""
    from ..energy import ingest_energy_stack, is_xray_file  # noqa: PLC0415
    from ..errors import IngestError  # noqa: PLC0415
    from ..ingest import ingest as ingest_tilt  # noqa: PLC0415

    options.refuse(REFUSED, WHY)
    kind = options.kind
    if kind not in ("auto", "tilt_series", "energy_stack"):
        raise IngestError(f"--kind must be auto, tilt_series or energy_stack, got {kind!r}")
    if kind == "energy_stack" or (kind == "auto" and is_xray_file(files[0])):
        return ingest_energy_stack(files, store_path, overwrite=overwrite, progress=progress)
    return ingest_tilt(files, store_path, overwrite=overwrite, progress=progress)
