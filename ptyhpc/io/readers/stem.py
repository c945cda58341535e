"""What the 4D-STEM readers (``mib``, ``arina``, ``empad``) share: options, the Scan view, the ingest.

The formats themselves are read by :mod:`ptyhpc.stem.readers` (rosettasciio); a raster scan is one store
item, written by :func:`ptyhpc.stem.ingest.ingest_stem`.
"""

from __future__ import annotations

from pathlib import Path

from ..scan import Scan
from .options import ReadOptions

__all__ = ["REFUSED", "calibration_of", "read_stem", "ingest_stem_files"]

#: Options a 4D-STEM file cannot take (its calibration comes from the file, ``--calibration`` and the flags).
REFUSED = ("spec", "dark", "flat", "mask", "radiation", "regime", "focus_to_sample_m", "kind", "zone_plate")


def calibration_of(fmt: str, options: ReadOptions):
    """The user's :class:`~ptyhpc.stem.calibration.Calibration` (a recipe's dict checked), with the probe flags.

    Raises
    ------
    IngestError
        An option of :data:`REFUSED` given; an implausible calibration.
    """
    from ...stem.calibration import Calibration  # noqa: PLC0415

    options.refuse(REFUSED, f"not supported for 4D-STEM files ({fmt})")
    cal = options.calibration
    if isinstance(cal, dict):
        cal = Calibration(**cal).check("recipe input.calibration")
    if options.probe_semiangle_rad is not None or options.defocus_m is not None:
        cal = (cal or Calibration()).merged({"convergence_semiangle_rad": options.probe_semiangle_rad,
                                             "defocus_m": options.defocus_m})
    return cal


def read_stem(fmt: str, path, options: ReadOptions) -> list[Scan]:
    """One raster scan as a :class:`~ptyhpc.io.scan.Scan` (frames in raster order, x fastest).

    The :class:`~ptyhpc.stem.readers.StemScan` (block reader, calibration sources) is ``scan.native``.
    The calibration gives the reciprocal sampling, not a distance and pixel: the Scan carries the
    equivalent far-field pair z = 1 m, p = λ z Δk.

    Raises
    ------
    IngestError
        Reader errors (truncated file, scan shape); calibration missing or implausible.
    """
    from ...physics.wavelength import electron_wavelength  # noqa: PLC0415
    from ...stem.ingest import raster_positions  # noqa: PLC0415
    from ...stem.readers import read_stem_file  # noqa: PLC0415

    s = read_stem_file(path, fmt, calibration_of(fmt, options))
    cal = s.calibration.require(str(path))
    lam = electron_wavelength(cal.beam_energy_eV)
    step = tuple(float(v) for v in cal.scan_step_m)
    return [Scan(path=Path(path), source_format=fmt, load_frames=lambda: s.read_block(0, s.n_positions),
                 n_positions=s.n_positions, detector_shape=tuple(s.detector_shape), dtype=s.dtype,
                 positions_m=raster_positions(s.n_positions, s.scan_shape[1], step), radiation="electron",
                 energy_eV=float(cal.beam_energy_eV), wavelength_m=lam, distance_m=1.0,
                 pixel_size_m=tuple(float(k * lam) for k in cal.reciprocal_sampling_inv_m),
                 probe_semiangle_rad=cal.convergence_semiangle_rad, defocus_m=cal.defocus_m, fields=s.fields,
                 native=s)]


def ingest_stem_files(fmt: str, files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool) -> Path:
    """:func:`ptyhpc.stem.ingest.ingest_stem` with the user's calibration."""
    from ...stem.ingest import ingest_stem  # noqa: PLC0415

    return ingest_stem(files, store_path, fmt=fmt, calibration=calibration_of(fmt, options), overwrite=overwrite,
                       progress=progress)
