"""One entry point for every raw format: detect it, read it, ingest it into a store.

Formats (``--format`` of ``ptyhpc ingest``):

``hdf5-tilt``
    The project's per-item files (:mod:`ptyhpc.io.hdf5_tilt` electron tilt
    series, :mod:`ptyhpc.io.energy` X-ray energy stacks).
``cxi``
    CXI files (:func:`ptyhpc.io.cxi.read_cxi_scan`).
``nexus``
    NeXus NXptycho files (:mod:`ptyhpc.io.nexus`); every NXptycho entry is an item.
``generic``
    Any HDF5 file with a user spec of dataset paths (:mod:`ptyhpc.io.generic`).
``mib``, ``arina``, ``empad``
    4D-STEM detector files (:mod:`ptyhpc.stem.readers`): one raster scan per file, one item each.

``auto`` looks at the first file's content: a root ``cxi_version`` → cxi, an
``NXentry`` with ``definition`` NXptycho → nexus, ``entry/data/counts`` with
``entry/instrument`` → hdf5-tilt; a spec given → generic.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import h5py

from .layout import REGIMES
from .validate import IngestError

__all__ = ["FORMATS", "detect_format", "ingest_files"]

FORMATS = ("auto", "hdf5-tilt", "cxi", "nexus", "generic", "mib", "arina", "empad")
#: 4D-STEM detector formats, read by :mod:`ptyhpc.stem.readers`.
STEM_FORMATS = ("mib", "arina", "empad")


def detect_format(path: str | PathLike) -> str:
    """The format of one raw file from its content.

    Returns
    -------
    str
        ``"cxi"``, ``"nexus"`` or ``"hdf5-tilt"``; ``"mib"``, ``"empad"`` or ``"arina"`` for 4D-STEM
        detector files (:func:`ptyhpc.stem.readers.sniff_stem_format`).

    Raises
    ------
    IngestError
        File missing, not HDF5, or of none of these layouts (then the
        message suggests ``--format generic --spec``).
    """
    from .nexus import is_nxptycho  # noqa: PLC0415

    from ptyhpc.stem.readers import sniff_stem_format  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    stem = sniff_stem_format(path)
    if stem is not None:
        return stem
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    _openable(path)
    with h5py.File(path, "r") as f:
        if "cxi_version" in f:
            return "cxi"
        counts, inst = f.get("entry/data/counts"), f.get("entry/instrument")
        tilt = isinstance(counts, h5py.Dataset) and isinstance(inst, h5py.Group)
    if is_nxptycho(path):
        return "nexus"
    if tilt:
        return "hdf5-tilt"
    raise IngestError(f"{path}: format not recognised (no cxi_version, no NXentry with definition NXptycho, "
                      "no entry/data/counts); for other layouts name the datasets: --format generic --spec FILE.yaml")


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
        ``hdf5-tilt``: one file per item. ``cxi``/``generic``: one scan per
        file, each an item. ``nexus``: every NXptycho entry of every file is an item.
    store_path : path-like
        Store folder to create.
    fmt : {"auto", "hdf5-tilt", "cxi", "nexus", "generic"}
    spec : GenericSpec, dict or path of a YAML file, optional
        Dataset paths for ``generic`` (required there, refused elsewhere).
    dark, flat, mask : str, optional
        ``"FILE[:path]"`` of dark frames, flat-field frames, a bad-pixel mask
        (``":path"`` or a bare path: inside the first raw file). Override the spec's.
    mask_bad : {"nonzero", "zero"}, optional
        Values of ``mask`` that flag bad pixels (default nonzero).
    radiation : {"xray", "electron"}, optional
        For NeXus files without ``NXsource/probe``.
    probe_semiangle_rad, defocus_m : float, optional
        Probe model recorded in the store's geometry (overrides the spec's). X-rays: ``defocus_m`` is the
        distance of the sample downstream of the focus; electrons: C10 = −defocus
        (:mod:`ptyhpc.physics.xray_optics`).
    zone_plate : dict, optional
        X-ray optics ``outer_diameter_m``, ``outer_zone_width_m``, ``central_stop_diameter_m``
        (:class:`ptyhpc.physics.xray_optics.ZonePlate`), recorded as ``probe_optics``.
    regime : {"far_field", "near_field"}, optional
        Propagation regime recorded in the store (``propagation_regime``,
        :mod:`ptyhpc.io.layout`); None: the spec's (generic) or far field. No
        format says it, so near-field scans need it; a far-field ingest whose
        geometry looks near-field warns (:class:`ptyhpc.io.scan.NearFieldWarning`).
    focus_to_sample_m : float, optional
        Near field with a divergent beam: focus-to-sample distance z1, m
        (``focus_to_sample_m``; overrides the spec's). None: parallel beam.
    kind : {"auto", "tilt_series", "energy_stack"}
        ``hdf5-tilt`` only (as :func:`ptyhpc.io.ingest` / :func:`~ptyhpc.io.energy.ingest_energy_stack`).
    overwrite, progress : bool
    calibration : ptyhpc.stem.calibration.Calibration, optional
        4D-STEM formats only (``mib``, ``arina``, ``empad``; :func:`ptyhpc.stem.ingest.ingest_stem`).

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        Unknown format; no files; a spec with a non-generic format or a
        generic format without one; corrections, probe or regime options given
        for ``hdf5-tilt`` files (not supported there); an unknown ``regime``, a
        ``focus_to_sample_m`` that is not a finite number > 0 or is given without
        ``regime="near_field"``; anything a reader or
        :func:`ptyhpc.io.scan.ingest_scans` rejects.
    """
    from .scan import Corrections, ingest_scans  # noqa: PLC0415
    from .detector import DatasetRef  # noqa: PLC0415

    files = [Path(f) for f in files]
    if fmt not in FORMATS:
        raise IngestError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not files:
        raise IngestError("no input files given")
    for f in files:
        _openable(f)   # a truncated or damaged file: a clear error naming it, wherever it is in the list
    if fmt == "auto":
        fmt = "generic" if spec is not None else detect_format(files[0])
    if fmt in STEM_FORMATS:
        from ptyhpc.stem.ingest import ingest_stem  # noqa: PLC0415

        extra = {"--spec": spec, "--dark": dark, "--flat": flat, "--mask": mask, "--radiation": radiation,
                 "--regime": regime, "--focus-to-sample-m": focus_to_sample_m, "--kind": None if kind == "auto" else kind}
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise IngestError(f"{', '.join(given)}: not supported for 4D-STEM files ({fmt})")
        from ptyhpc.stem.calibration import Calibration  # noqa: PLC0415

        if isinstance(calibration, dict):
            calibration = Calibration(**calibration).check("recipe input.calibration")
        if probe_semiangle_rad is not None or defocus_m is not None:
            calibration = (calibration or Calibration()).merged(
                {"convergence_semiangle_rad": probe_semiangle_rad, "defocus_m": defocus_m})

        return ingest_stem(files, store_path, fmt=fmt, calibration=calibration, overwrite=overwrite,
                           progress=progress)
    if calibration is not None:
        raise IngestError(f"--calibration is for the 4D-STEM formats ({', '.join(STEM_FORMATS)}), not {fmt}")
    if spec is not None and fmt != "generic":
        raise IngestError(f"--spec is for --format generic, not {fmt}")
    if regime is not None and regime not in REGIMES:
        # Checked again per scan; here so that the message names the option before any file is read.
        raise IngestError(f"--regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if fmt == "hdf5-tilt":
        extra = {"--dark": dark, "--flat": flat, "--mask": mask, "--radiation": radiation,
                 "--probe-semiangle": probe_semiangle_rad, "--defocus": defocus_m, "--regime": regime,
                 "--focus-to-sample-m": focus_to_sample_m, "--zone-plate-*": zone_plate}
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise IngestError(f"{', '.join(given)}: not supported for hdf5-tilt files (their metadata carry the "
                              "probe; their counts are stored as recorded)")
        from .energy import ingest_energy_stack, is_xray_file  # noqa: PLC0415
        from .ingest import ingest  # noqa: PLC0415

        if kind not in ("auto", "tilt_series", "energy_stack"):
            raise IngestError(f"--kind must be auto, tilt_series or energy_stack, got {kind!r}")
        if kind == "energy_stack" or (kind == "auto" and is_xray_file(files[0])):
            return ingest_energy_stack(files, store_path, overwrite=overwrite, progress=progress)
        return ingest(files, store_path, overwrite=overwrite, progress=progress)
    if kind != "auto":
        raise IngestError(f"--kind is for hdf5-tilt files; {fmt} scans get their kind from the radiation "
                          "(X-ray: energy_stack, electron: tilt_series)")

    scans, spec_corr = [], {}
    if fmt == "cxi":
        from .cxi import read_cxi_scan  # noqa: PLC0415

        scans = [read_cxi_scan(f, probe_semiangle_rad=probe_semiangle_rad, defocus_m=defocus_m, regime=regime,
                               focus_to_sample_m=focus_to_sample_m) for f in files]
    elif fmt == "nexus":
        from .nexus import read_nexus_scans  # noqa: PLC0415

        for f in files:
            scans += read_nexus_scans(f, radiation=radiation, probe_semiangle_rad=probe_semiangle_rad,
                                      defocus_m=defocus_m, regime=regime, focus_to_sample_m=focus_to_sample_m)
    else:
        from .generic import load_spec, read_generic_scan  # noqa: PLC0415

        if spec is None:
            raise IngestError("--format generic needs --spec FILE.yaml (the dataset paths)")
        if radiation is not None:
            raise IngestError("--radiation: give 'radiation' in the generic spec")
        spec = spec if not isinstance(spec, (str, PathLike)) else load_spec(spec)
        spec = _with_propagation(load_spec(spec) if isinstance(spec, dict) else spec, regime, focus_to_sample_m)
        for f in files:
            scan, spec_corr = read_generic_scan(f, spec)
            if probe_semiangle_rad is not None:
                scan.probe_semiangle_rad = probe_semiangle_rad
            if defocus_m is not None:
                scan.defocus_m = defocus_m
            scans.append(scan)
    if not scans:
        raise IngestError("no scans found in the input files")
    if zone_plate is not None:
        from ..physics.xray_optics import ZonePlate  # noqa: PLC0415

        try:
            optics = ZonePlate(**zone_plate).to_dict()
        except (TypeError, ValueError) as exc:
            raise IngestError(f"--zone-plate-*: {exc}") from None
        for s in scans:
            if s.radiation != "xray":
                raise IngestError(f"{s.name}: zone-plate optics given for {s.radiation} data")
            s.probe_optics = optics

    def ref(text, spec_text):
        text = text if text is not None else spec_text
        return None if text is None else DatasetRef.parse(text, default_file=files[0])

    corrections = Corrections(dark=ref(dark, spec_corr.get("dark")), flat=ref(flat, spec_corr.get("flat")),
                              mask=ref(mask, None),
                              mask_bad=mask_bad or spec_corr.get("mask_bad") or "nonzero")
    return ingest_scans(scans, store_path, corrections=corrections, overwrite=overwrite, progress=progress)


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


def _with_propagation(spec, regime: str | None, focus_to_sample_m: float | None):
    """``spec`` with the command line's regime and focus distance (when given) in place of its own."""
    from .generic import Quantity  # noqa: PLC0415

    update = {}
    if regime is not None:
        update["regime"] = regime
    if focus_to_sample_m is not None:
        update["focus_to_sample"] = Quantity(value=focus_to_sample_m)
    return spec.model_copy(update=update) if update else spec
