"""One entry point for every raw format: choose its reader, read it, ingest it into a store.

Each format is a module of this package with ``NAME``, ``REFUSED`` (the options it cannot take),
``sniff(path) -> bool``, ``read(path, options) -> list[Scan]`` and ``ingest(files, store_path, options, *,
overwrite, progress)``; :data:`READERS` maps ``--format`` names to them (adding a format: one module and one
line there, docs/architecture.md).

``hdf5-tilt``
    The project's per-angle electron files (:mod:`ptyhpc.io.hdf5_tilt`); with ``--kind`` also the
    per-energy X-ray files.
``energy-stack``
    Per-energy X-ray files (:mod:`ptyhpc.io.energy`).
``cxi``
    CXI files (:func:`ptyhpc.io.cxi.read_cxi_scan`).
``nexus``
    NeXus NXptycho files (:mod:`ptyhpc.io.nexus`); every NXptycho entry is an item.
``generic``
    Any HDF5 file with a user spec of dataset paths (:mod:`ptyhpc.io.generic`).
``mib``, ``arina``, ``empad``
    4D-STEM detector files (:mod:`ptyhpc.stem.readers`): one raster scan per file, one item each.
``dxchange``
    Data Exchange tomography projections (:mod:`ptyhpc.io.dxchange`): recognised, refused with a message
    (not diffraction frames).

``auto`` asks every reader's ``sniff`` about the first file (a spec given: ``generic``); exactly one must
say yes.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import h5py

from ..errors import IngestError
from ..layout import REGIMES
from . import arina, cxi, dxchange, empad, energy, generic, hdf5_tilt, mib, nexus
from .options import ReadOptions

__all__ = ["FORMATS", "READERS", "STEM_FORMATS", "ReadOptions", "detect_format", "read_files", "ingest_files"]

#: ``--format`` name → reader module, in the order sniffing reports them.
READERS = {m.NAME: m for m in (hdf5_tilt, energy, cxi, nexus, generic, mib, arina, empad, dxchange)}
FORMATS = ("auto", *READERS)
#: 4D-STEM detector formats, read by :mod:`ptyhpc.stem.readers`.
STEM_FORMATS = ("mib", "arina", "empad")


def detect_format(path: str | PathLike) -> str:
    """The format of one raw file from its content: the one reader whose ``sniff`` accepts it.

    Raises
    ------
    IngestError
        File missing, damaged, or recognised by no reader (the message suggests ``--format generic
        --spec``) or by more than one (it names them).
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    _openable(path)
    found = [name for name, reader in READERS.items() if reader.sniff(path)]
    if len(found) > 1:
        raise IngestError(f"{path}: matches several formats ({', '.join(found)}); name one with --format")
    if found:
        return found[0]
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file (nor a MIB, EMPAD or ARINA 4D-STEM file)")
    raise IngestError(f"{path}: format not recognised (no cxi_version, no NXentry with definition NXptycho, "
                      "no entry/data/counts); for other layouts name the datasets: --format generic --spec FILE.yaml")


def _reader(files: list[Path], fmt: str, options: ReadOptions):
    """The reader module for ``fmt`` (``auto``: by sniffing the first file), options checked against it."""
    if fmt not in FORMATS:
        raise IngestError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not files:
        raise IngestError("no input files given")
    for f in files:
        _openable(f)   # a truncated or damaged file: a clear error naming it, wherever it is in the list
    if fmt == "auto":
        fmt = "generic" if options.spec is not None else detect_format(files[0])
    if fmt not in STEM_FORMATS:
        if options.calibration is not None:
            raise IngestError(f"--calibration is for the 4D-STEM formats ({', '.join(STEM_FORMATS)}), not {fmt}")
        if options.spec is not None and fmt != "generic":
            raise IngestError(f"--spec is for --format generic, not {fmt}")
        if options.regime is not None and options.regime not in REGIMES:
            # Checked again per scan; here so that the message names the option before any file is read.
            raise IngestError(f"--regime must be one of {', '.join(REGIMES)}, got {options.regime!r}")
    return READERS[fmt]


def read_files(files: Sequence[str | PathLike], *, fmt: str = "auto", **options) -> list:
    """Every scan of ``files`` as :class:`~ptyhpc.io.scan.Scan` objects, without writing anything.

    Parameters
    ----------
    files : sequence of path-like
    fmt : str
        One of :data:`FORMATS`.
    **options
        Fields of :class:`ReadOptions`.

    Returns
    -------
    list of Scan
        In file order (frames are read only when ``scan.load_frames()`` is called).

    Raises
    ------
    IngestError
        As :func:`ingest_files` for the choice of format, and whatever the reader rejects.
    """
    files = [Path(f) for f in files]
    opts = ReadOptions(**options)
    reader = _reader(files, fmt, opts)
    return [scan for f in files for scan in reader.read(f, opts)]


def ingest_files(files: Sequence[str | PathLike], store_path: str | PathLike, *, fmt: str = "auto",
                 spec=None, dark: str | None = None, flat: str | None = None, mask: str | None = None,
                 mask_bad: str | None = None, radiation: str | None = None,
                 probe_semiangle_rad: float | None = None, defocus_m: float | None = None,
                 regime: str | None = None, focus_to_sample_m: float | None = None,
                 zone_plate: dict | None = None, kind: str = "auto", overwrite: bool = False, progress: bool = True,
                 calibration=None) -> Path:
    """Validate raw files of any supported format and write them into a new store.

    Parameters
    ----------
    files : sequence of path-like
        ``hdf5-tilt``, ``energy-stack``: one file per item. ``cxi``, ``generic``, 4D-STEM: one scan per
        file, each an item. ``nexus``: every NXptycho entry of every file is an item.
    store_path : path-like
        Store folder to create.
    fmt : str
        One of :data:`FORMATS`; ``auto`` by sniffing.
    spec : GenericSpec, dict or path of a YAML file, optional
        Dataset paths for ``generic`` (required there, refused elsewhere).
    dark, flat, mask : str, optional
        ``"FILE[:path]"`` of dark frames, flat-field frames, a bad-pixel mask (``":path"`` or a bare
        path: inside the first raw file). Override the spec's.
    mask_bad : {"nonzero", "zero"}, optional
        Values of ``mask`` that flag bad pixels (default nonzero).
    radiation : {"xray", "electron"}, optional
        For NeXus files without ``NXsource/probe``.
    probe_semiangle_rad, defocus_m : float, optional
        Probe model recorded in the store's geometry (overrides the file's or spec's). X-rays: ``defocus_m``
        is the distance of the sample downstream of the focus; electrons: C10 = −defocus
        (:mod:`ptyhpc.physics.xray_optics`).
    regime : {"far_field", "near_field"}, optional
        Propagation regime recorded in the store (``propagation_regime``, :mod:`ptyhpc.io.layout`); None:
        the spec's (generic) or far field. No format says it, so near-field scans need it; a far-field
        ingest whose geometry looks near-field warns (:class:`ptyhpc.io.scan.NearFieldWarning`).
    focus_to_sample_m : float, optional
        Near field with a divergent beam: focus-to-sample distance z1, m. None: parallel beam.
    zone_plate : dict, optional
        X-ray optics ``outer_diameter_m``, ``outer_zone_width_m``, ``central_stop_diameter_m``
        (:class:`ptyhpc.physics.xray_optics.ZonePlate`), recorded as ``probe_optics``.
    kind : {"auto", "tilt_series", "energy_stack"}
        ``hdf5-tilt`` only.
    overwrite, progress : bool
    calibration : ptyhpc.stem.calibration.Calibration or dict, optional
        4D-STEM formats only (:func:`ptyhpc.stem.ingest.ingest_stem`).

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        Unknown format; no files; a damaged file; no reader or several recognise the first file; an option
        the chosen reader cannot take (its ``REFUSED``; ``spec`` and ``calibration`` outside their formats);
        an unknown ``regime``; anything a reader or the store writer rejects.
    """
    files = [Path(f) for f in files]
    options = ReadOptions(spec=spec, dark=dark, flat=flat, mask=mask, mask_bad=mask_bad, radiation=radiation,
                          probe_semiangle_rad=probe_semiangle_rad, defocus_m=defocus_m, regime=regime,
                          focus_to_sample_m=focus_to_sample_m, zone_plate=zone_plate, kind=kind,
                          calibration=calibration)
    reader = _reader(files, fmt, options)
    return reader.ingest(files, store_path, options, overwrite=overwrite, progress=progress)


def _openable(path: Path) -> None:
    """Refuse an HDF5 file that h5py cannot open (truncated, damaged superblock), naming it.

    Files that are missing or not HDF5 are left to the readers' own messages.
    """
    if not (path.is_file() and h5py.is_hdf5(path)):
        return
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise IngestError(f"{path}: cannot open as HDF5, the file is damaged or truncated ({exc})") from None
