"""Ingest of the scan readers (CXI, NeXus, generic): read every file, add optics and corrections, write.

The store kind follows the radiation (:func:`ptyhpc.io.scan.ingest_scans`): X-ray → energy stack,
electron → tilt series.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import IngestError
from ..scan import Corrections, Scan, ingest_scans
from .options import ReadOptions

__all__ = ["ingest_read_scans", "with_zone_plate", "corrections_for"]


def ingest_read_scans(reader, files: list[Path], store_path, options: ReadOptions, *, overwrite: bool,
                      progress: bool) -> Path:
    """``reader.read`` on each file, then :func:`ptyhpc.io.scan.ingest_scans`.

    Raises
    ------
    IngestError
        ``--kind`` given (the radiation decides); no scan in the files; zone-plate optics that are
        invalid or given for electron data; whatever the reader or the writer rejects.
    """
    if options.kind != "auto":
        raise IngestError(f"--kind is for hdf5-tilt files; {reader.NAME} scans get their kind from the radiation "
                          "(X-ray: energy_stack, electron: tilt_series)")
    scans = [s for f in files for s in reader.read(f, options)]
    if not scans:
        raise IngestError("no scans found in the input files")
    with_zone_plate(scans, options.zone_plate)
    return ingest_scans(scans, store_path, corrections=corrections_for(scans[-1], files[0], options),
                        overwrite=overwrite, progress=progress)


def with_zone_plate(scans: list[Scan], zone_plate: dict | None) -> None:
    """Record X-ray focusing optics (:class:`ptyhpc.physics.xray_optics.ZonePlate`) on every scan."""
    if zone_plate is None:
        return
    from ...physics.xray_optics import ZonePlate  # noqa: PLC0415

    try:
        optics = ZonePlate(**zone_plate).to_dict()
    except (TypeError, ValueError) as exc:
        raise IngestError(f"--zone-plate-*: {exc}") from None
    for s in scans:
        if s.radiation != "xray":
            raise IngestError(f"{s.name}: zone-plate optics given for {s.radiation} data")
        s.probe_optics = optics


def corrections_for(scan: Scan, first_file: Path, options: ReadOptions) -> Corrections:
    """Dark, flat and mask: the command line's, else those the file's description names (``scan.corrections``).

    A bare ``:path`` or path refers to a dataset inside the first raw file.
    """
    from ..detector import DatasetRef  # noqa: PLC0415

    own = scan.corrections

    def ref(text, own_text):
        text = text if text is not None else own_text
        return None if text is None else DatasetRef.parse(text, default_file=first_file)

    return Corrections(dark=ref(options.dark, own.get("dark")), flat=ref(options.flat, own.get("flat")),
                       mask=ref(options.mask, None), mask_bad=options.mask_bad or own.get("mask_bad") or "nonzero")
