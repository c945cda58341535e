"""One ptychographic scan from any reader (CXI, NeXus NXptycho, generic HDF5) into a store.

The readers (:mod:`ptyhpc.io.cxi`, :mod:`ptyhpc.io.nexus`, :mod:`ptyhpc.io.generic`)
check a file's metadata and return :class:`Scan` objects; :func:`ingest_scans`
writes one or more of them (the items) into a store of an existing kind:

- X-ray scans → kind ``energy_stack`` (per-item photon energy, wavelength and
  reciprocal sampling; items sorted by energy); a single scan is a one-item stack.
- electron scans → kind ``tilt_series`` (items sorted by tilt angle, 0 when the
  file gives none); a single scan is a one-item series.

so the ptychography stage reads them as it reads every other store. Detector
corrections (dark, flat, mask; :mod:`ptyhpc.io.detector`) are applied on the
way and recorded in the root attribute ``preprocessing``. The store is built
in a sibling folder and renamed into place only when complete, as every
ingest does (:func:`ptyhpc.io.writer.write_store`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from . import detector as det
from .checksum import FRAMES_CONFIG
from .errors import IngestError
from .layout import (DETECTOR_DISTANCE, DETECTOR_MASK, FAR_FIELD, FOCUS_TO_SAMPLE, GEOMETRY_KEYS, POSITIONS,
                     PROPAGATION_REGIME, SCHEMA_VERSION, TILT_ANGLE, check_propagation)
from .validate import SUPPORTED_DTYPES, check_counts

__all__ = ["Scan", "Corrections", "ingest_scans", "estimate_scan_step", "NearFieldWarning", "far_field_window_ratio",
           "scan_propagation"]

#: Scan step / far-field field of view λz/p above which :func:`ingest_scans` warns that far-field data
#: look like near-field data (see :func:`far_field_window_ratio`).
FAR_FIELD_WINDOW_LIMIT = 0.5


class NearFieldWarning(UserWarning):
    """A scan ingested as far field whose geometry fits far-field ptychography badly (probably near field)."""


@dataclass
class Scan:
    """One scan (one store item) as read and checked by a reader; SI units.

    Attributes
    ----------
    path : Path
        Raw file.
    source_format : str
        ``"cxi"``, ``"nexus"`` or ``"generic"``.
    load_frames : callable
        ``() -> ndarray (n, det_y, det_x)`` raw dtype, centred patterns, in the
        order of ``positions_m`` (called once, while writing).
    n_positions : int
    detector_shape : (int, int)
    dtype : numpy.dtype
        Raw counts dtype (one of :data:`~ptyhpc.io.validate.SUPPORTED_DTYPES`).
    positions_m : ndarray, (n, 2) float64
        Probe positions (y, x) on the sample, m.
    radiation : {"xray", "electron"}
    energy_eV : float
        Photon or electron (kinetic) energy, eV.
    wavelength_m : float
        m (hc/E for photons, relativistic for electrons).
    distance_m : float
        Sample-to-detector distance, m.
    pixel_size_m : (float, float)
        Detector pixel (y, x), m.
    measured : ndarray of bool, (det_y, det_x), or None
        The file's own bad-pixel mask (True = measured); None when it has none.
    tilt_angle_rad : float
        Rotation of the sample about y, rad (0 when not given).
    probe_semiangle_rad, defocus_m : float or None
        Probe model for the ptycho stage's initial probe, when known.
    polarisation : str
        Label of an X-ray item (``"unknown"`` when the file gives none).
    fields : dict
        Where each quantity came from (field name or ``"given"``), kept in the store attrs.
    entry : str
        Entry inside the file (``""`` when the file has one scan).
    regime : {"far_field", "near_field"}
        Propagation regime (:data:`ptyhpc.io.layout.REGIMES`); the formats do not
        say, the user does (default far field).
    focus_to_sample_m : float or None
        Near field with a divergent beam: focus-to-sample distance z1, m (None: parallel beam).
    probe_optics : dict or None
        X-ray focusing optics (:meth:`ptyhpc.physics.xray_optics.ZonePlate.to_dict`), stored as the root
        attribute ``probe_optics``; the ptycho stage builds its model probe from it.
    corrections : dict
        Detector corrections the file's description names (generic spec: ``dark``, ``flat`` as
        ``"FILE:path"`` or None, ``mask_bad``); the command line's win.
    native : object or None
        The reader's own record when the store of its format holds more than a Scan says
        (:class:`~ptyhpc.io.hdf5_tilt.ScanMetadata`, :class:`~ptyhpc.io.energy.XrayScanMetadata`,
        :class:`~ptyhpc.stem.readers.StemScan`); None for CXI, NeXus and generic scans.
    """

    path: Path
    source_format: str
    load_frames: Callable[[], np.ndarray]
    n_positions: int
    detector_shape: tuple
    dtype: np.dtype
    positions_m: np.ndarray
    radiation: str
    energy_eV: float
    wavelength_m: float
    distance_m: float
    pixel_size_m: tuple
    measured: np.ndarray | None = None
    tilt_angle_rad: float = 0.0
    probe_semiangle_rad: float | None = None
    defocus_m: float | None = None
    polarisation: str = "unknown"
    fields: dict = field(default_factory=dict)
    entry: str = ""
    regime: str = FAR_FIELD
    focus_to_sample_m: float | None = None
    probe_optics: dict | None = None
    corrections: dict = field(default_factory=dict)
    native: object | None = None

    @property
    def name(self) -> str:
        """``file`` or ``file:entry``, for messages."""
        return f"{self.path}:{self.entry}" if self.entry else str(self.path)

    @property
    def reciprocal_sampling_inv_m(self) -> tuple:
        """(dky, dkx) = pixel / (λ z), 1/m per detector pixel (far field)."""
        lz = self.wavelength_m * self.distance_m
        return (self.pixel_size_m[0] / lz, self.pixel_size_m[1] / lz)


@dataclass
class Corrections:
    """Detector corrections requested at ingest (all optional).

    Attributes
    ----------
    dark : DatasetRef, optional
        Frames recorded without beam; their mean is subtracted.
    flat : DatasetRef, optional
        Flat-field frames; the gain G = mean(F − D̄)/(F − D̄) multiplies the frames.
    mask : DatasetRef, optional
        A bad-pixel mask, combined (AND) with the file's own.
    mask_bad : {"nonzero", "zero"}
        Which values of ``mask`` flag bad pixels.
    """

    dark: det.DatasetRef | None = None
    flat: det.DatasetRef | None = None
    mask: det.DatasetRef | None = None
    mask_bad: str = "nonzero"


def check_scan(scan: Scan) -> None:
    """Check a reader's :class:`Scan` (shapes, finiteness, positivity).

    Raises
    ------
    IngestError
        Message ``<file>: <field>: ...`` using ``scan.fields`` for the field names;
        an unknown regime or a focus distance that is not a finite number > 0
        (:func:`ptyhpc.io.layout.check_propagation`; normalises ``scan.regime``).
    """
    f = scan.fields
    name = scan.name
    if scan.dtype not in SUPPORTED_DTYPES:
        raise IngestError(f"{name}: {f.get('frames', 'frames')}: unsupported dtype {scan.dtype} "
                          f"(supported: {', '.join(str(d) for d in SUPPORTED_DTYPES)})")
    if scan.n_positions < 1 or 0 in scan.detector_shape:
        raise IngestError(f"{name}: {f.get('frames', 'frames')}: empty ({scan.n_positions} frames of "
                          f"{scan.detector_shape})")
    pos = np.asarray(scan.positions_m)
    if pos.shape != (scan.n_positions, 2):
        raise IngestError(f"{name}: {f.get('positions', 'positions')}: {pos.shape[0] if pos.ndim else 0} "
                          f"positions for {scan.n_positions} frames (expected shape ({scan.n_positions}, 2), "
                          f"got {pos.shape})")
    if not np.all(np.isfinite(pos)):
        raise IngestError(f"{name}: {f.get('positions', 'positions')}: non-finite position(s)")
    for key, value in (("energy", scan.energy_eV), ("wavelength", scan.wavelength_m),
                       ("distance", scan.distance_m), ("pixel_size", scan.pixel_size_m)):
        v = np.atleast_1d(np.asarray(value, dtype=float))
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise IngestError(f"{name}: {f.get(key, key)}: must be a finite number > 0, got {v.tolist()}")
    for key, value in (("probe_semiangle", scan.probe_semiangle_rad), ("defocus", scan.defocus_m),
                       ("tilt_angle", scan.tilt_angle_rad)):
        if value is not None and not math.isfinite(value):
            raise IngestError(f"{name}: {f.get(key, key)}: not finite ({value})")
    if scan.probe_semiangle_rad is not None and scan.probe_semiangle_rad <= 0:
        raise IngestError(f"{name}: {f.get('probe_semiangle', 'probe_semiangle')}: must be > 0")
    if scan.radiation not in ("xray", "electron"):
        raise IngestError(f"{name}: {f.get('radiation', 'radiation')}: {scan.radiation!r}, expected xray or electron")
    if scan.measured is not None and tuple(scan.measured.shape) != tuple(scan.detector_shape):
        raise IngestError(f"{name}: {f.get('mask', 'mask')}: shape {scan.measured.shape} differs from the "
                          f"detector's {scan.detector_shape}")
    try:
        scan.regime, scan.focus_to_sample_m = check_propagation(scan.regime, scan.focus_to_sample_m, scan.distance_m)
    except ValueError as exc:
        raise IngestError(f"{name}: {exc}") from None


def scan_propagation(where, regime: str | None, focus_to_sample_m: float | None, distance_m: float) -> dict:
    """The :class:`Scan` keyword arguments ``regime`` and ``focus_to_sample_m``, checked at the door.

    For the readers: the user's options (None: far field, parallel beam) are
    checked when the file is read, before anything is written.

    Parameters
    ----------
    where : str or path
        File (or file:entry) named in the message.
    regime : {"far_field", "near_field"} or None
    focus_to_sample_m : float or None
        m.
    distance_m : float
        The file's sample-to-detector distance, m.

    Raises
    ------
    IngestError
        As :func:`ptyhpc.io.layout.check_propagation` (a ``ValueError``).
    """
    try:
        regime, focus_to_sample_m = check_propagation(regime, focus_to_sample_m, distance_m)
    except ValueError as exc:
        raise IngestError(f"{where}: {exc}") from None
    return {"regime": regime, "focus_to_sample_m": focus_to_sample_m}


def far_field_window_ratio(scan: Scan) -> float:
    """Scan step over the far-field field of view, s·p/(λz): small (≲ 0.2) for far-field data.

    In far-field ptychography the object pixel is λz/(Np), so the
    reconstruction window (which must hold the whole probe) is λz/p wide, and
    successive probe positions must overlap inside it: the step s is a
    fraction of the probe diameter a ≤ λz/p (a ≤ λz/(2p) with the usual
    twofold oversampling), hence s/(λz/p) is typically 0.02–0.2. A ratio
    above 0.5 needs a probe filling the whole window and still overlaps
    neighbours by less than half its width (Bunk et al., Ultramicroscopy
    108, 481 (2008): ≳ 60 % overlap for reliable reconstructions). Near-field data
    (holograms of a field the size of the detector, possibly magnified by a
    cone beam) scan in steps that are large on that scale: the PETRA III P25
    scan gives 0.60. The plain Fresnel number of the step, s²/(λz), cannot
    tell the regimes apart here: for a cone beam the distance that counts is
    z2/M, and M needs the focus distance, which the files do not give
    (PETRA: s²/(λz) = 0.013 looks far field, s²/(λz/M) = 4 is near field).

    Returns
    -------
    float
        s · max(p_y, p_x) / (λ z), with s the median nearest-neighbour step
        (:func:`estimate_scan_step`); 0 for a single position.
    """
    step = estimate_scan_step(np.asarray(scan.positions_m, dtype=np.float64))
    return step * max(scan.pixel_size_m) / (scan.wavelength_m * scan.distance_m)


def _warn_if_near_field(scan: Scan) -> None:
    """Warn (never switch) when a far-field scan looks like near-field data (:func:`far_field_window_ratio`)."""
    if scan.regime != FAR_FIELD:
        return
    ratio = far_field_window_ratio(scan)
    if ratio > FAR_FIELD_WINDOW_LIMIT:
        window = scan.wavelength_m * scan.distance_m / max(scan.pixel_size_m)
        warnings.warn(
            f"{scan.name}: ingested as far field, but the scan step ({estimate_scan_step(scan.positions_m):.3g} m) "
            f"is {ratio:.2f} of the far-field field of view lambda*z/p = {window:.3g} m; far-field probes that "
            "overlap must be much smaller than that. This looks like near-field (or cone-beam) data, which a "
            "far-field reconstruction gets wrong: if so, ingest with --regime near_field [--focus-to-sample-m Z1] "
            "(regime='near_field', focus_to_sample_m=...).", NearFieldWarning, stacklevel=3)


def estimate_scan_step(positions: np.ndarray) -> float:
    """Nominal scan step: the median distance of each position to its nearest neighbour, m (0 for one position)."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    if len(positions) < 2:
        return 0.0
    d, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(d[:, 1]))


def _check_together(scans: Sequence[Scan]) -> str:
    ref = scans[0]
    for s in scans[1:]:
        for attr in ("detector_shape", "n_positions", "dtype", "radiation"):
            if getattr(s, attr) != getattr(ref, attr):
                raise IngestError(f"{s.name}: {attr} {getattr(s, attr)} differs from {getattr(ref, attr)} in "
                                  f"{ref.name}; one store holds scans of one shape and kind")
        if (s.regime, s.focus_to_sample_m) != (ref.regime, ref.focus_to_sample_m):
            raise IngestError(f"{s.name}: propagation {s.regime} (focus to sample {s.focus_to_sample_m} m) differs "
                              f"from {ref.regime} ({ref.focus_to_sample_m} m) in {ref.name}; one store has one regime")
        for attr in ("distance_m", "pixel_size_m"):
            if not np.allclose(getattr(s, attr), getattr(ref, attr), rtol=1e-9, atol=0):
                raise IngestError(f"{s.name}: {s.fields.get(attr[:-2], attr)}: {getattr(s, attr)} differs from "
                                  f"{getattr(ref, attr)} in {ref.name}")
    if ref.radiation == "xray":
        seen = {}
        for s in scans:
            key = (round(s.energy_eV, 6), s.polarisation)
            if key in seen:
                raise IngestError(f"{s.name}: {s.fields.get('energy', 'energy')}: {s.energy_eV} eV "
                                  f"(polarisation {s.polarisation!r}) also in {seen[key]}")
            seen[key] = s.name
        return "energy_stack"
    for s in scans[1:]:
        if not np.allclose(s.energy_eV, ref.energy_eV, rtol=1e-9, atol=0):
            raise IngestError(f"{s.name}: {s.fields.get('energy', 'energy')}: {s.energy_eV} eV differs from "
                              f"{ref.energy_eV} eV in {ref.name} (a tilt series has one beam energy)")
    angles = sorted((s.tilt_angle_rad, s.name) for s in scans)
    for (a, na), (b, nb) in zip(angles[:-1], angles[1:]):
        if abs(b - a) <= 1e-9:
            raise IngestError(f"{nb}: tilt angle {math.degrees(b):.9g} deg also in {na}; give each scan "
                              "its angle (one store item per angle)")
    return "tilt_series"


def _prepare_corrections(corr: Corrections | None, det_shape, measured) -> tuple:
    info = {}
    dark = gain = None
    if corr is None:
        return dark, gain, measured, info
    if corr.mask is not None:
        user, where = det.read_mask(corr.mask, det_shape, corr.mask_bad)
        measured = user if measured is None else (measured & user)
        info["mask"] = {"source": where, "bad_values": corr.mask_bad}
    if corr.dark is not None:
        dark, info["dark"] = det.mean_dark(corr.dark, det_shape)
        info["dark"]["operation"] = "frames - mean(dark), clipped at 0"
    if corr.flat is not None:
        gain, measured, info["flat"] = det.gain_from_flat(corr.flat, det_shape, dark, measured)
        info["flat"]["operation"] = "multiplied by gain = mean(flat - dark) / (flat - dark) over measured pixels"
    return dark, gain, measured, info


def ingest_scans(scans: Sequence[Scan], store_path: str | PathLike, *, corrections: Corrections | None = None,
                 overwrite: bool = False, progress: bool = True) -> Path:
    """Write checked scans (one per item) into a new store.

    Parameters
    ----------
    scans : sequence of Scan
        From the readers; at least one. All of one radiation, detector shape,
        dtype and number of positions (the store's arrays are rectangular), with
        the same detector distance and pixel.
    store_path : path-like
        Store folder to create.
    corrections : Corrections, optional
        Dark, flat and mask applied to every item (one detector).
    overwrite : bool
        Replace an existing store once the new one is complete.
    progress : bool
        Progress bar over items.

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        Store exists (without ``overwrite``); no scans; a scan failing
        :func:`check_scan` (including an unknown regime or a focus distance
        that is not > 0); scans that cannot share a store (shapes, geometry,
        regime, duplicate energies or angles); bad dark/flat/mask; NaN/inf or
        negative counts on measured pixels (found while copying: the partial
        store is removed). Nothing is left at ``store_path`` on error.

    Notes
    -----
    Besides the arrays of every store (``frames``, ``positions``,
    ``tilt_angle``; :mod:`ptyhpc.io.layout`), writes ``detector_mask`` and
    the root attributes ``source_format``, ``detector_distance_m``,
    ``detector_pixel_size_m``, ``propagation_regime``, ``focus_to_sample_m``,
    ``preprocessing``; an ``energy_stack`` also
    gets its per-item arrays and ``polarisation`` labels
    (:mod:`ptyhpc.io.energy`). ``geometry`` holds item 0's values;
    ``convergence_semiangle_rad`` and ``defocus_m`` are None unless given,
    ``scan_step_m`` is :func:`estimate_scan_step`, ``scan_origin_m`` the
    first position.

    A far-field scan whose step is large on the far-field scale
    (:func:`far_field_window_ratio` > 0.5) is still ingested as far field
    but triggers a :class:`NearFieldWarning`: the regime is the user's to state.

    Warns
    -----
    NearFieldWarning
        As above.
    """
    from .ingest import frames_codecs  # noqa: PLC0415
    from .plausible import warn_fractional_counts  # noqa: PLC0415
    from .safe_write import check_target  # noqa: PLC0415
    from .writer import FramesLayout, StorePlan, frames_chunking, item_blocks, write_store  # noqa: PLC0415

    store_path = Path(store_path)
    scans = list(scans)
    refs = (corrections.dark, corrections.flat, corrections.mask) if corrections is not None else ()
    # Safe overwrite: only a ptyhpc store, never a path that is or holds an input.
    check_target(store_path, overwrite, [s.path for s in scans] + [r.file for r in refs if r is not None])
    if not scans:
        raise IngestError("no scans given")
    kind, scans = _checked_in_store_order(scans)
    ref = scans[0]
    dark, gain, measured, prep = _detector_corrections(scans, corrections)
    n, n_pos, det_shape = len(scans), ref.n_positions, tuple(ref.detector_shape)
    positions = np.stack([np.asarray(s.positions_m, dtype=np.float64) for s in scans])

    def load(block) -> np.ndarray:
        s = scans[block[0]]
        where = s.fields.get("frames", "frames")
        try:
            counts = s.load_frames()
        except OSError as exc:   # a damaged chunk or a failing compression filter in the raw file
            raise IngestError(f"{s.name}: {where}: cannot read ({exc})") from None
        if counts.shape != (n_pos, *det_shape) or counts.dtype != ref.dtype:
            raise IngestError(f"{s.name}: {where}: changed since validation "
                              f"(shape {counts.shape}, dtype {counts.dtype})")
        check_counts(s.name, counts if measured is None else counts[:, measured], where)
        warn_fractional_counts(s.name, counts, where)
        return det.correct_frames(counts, dark=dark, gain=gain, measured=measured)

    chunks, shards = frames_chunking(n_pos, det_shape)
    plan = StorePlan(attrs=_store_attrs(kind, scans, positions, prep),
                     arrays=_store_arrays(kind, scans, positions, measured), blocks=item_blocks(n, n_pos), load=load,
                     frames=FramesLayout((n, n_pos, *det_shape), ref.dtype, chunks, shards, frames_codecs(),
                                         FRAMES_CONFIG))
    return write_store(store_path, plan, overwrite=overwrite, progress=progress)


def _checked_in_store_order(scans: list[Scan]) -> tuple[str, list[Scan]]:
    """(store kind, scans sorted as items) after every per-scan, cross-scan and plausibility check."""
    from .energy import ENERGY_STACK  # noqa: PLC0415
    from .plausible import check_angles, check_geometry  # noqa: PLC0415

    for s in scans:
        check_scan(s)
    kind = _check_together(scans)
    for s in scans:   # plausibility at the door: errors for the impossible, warnings for the unusual
        check_geometry(s.name, radiation=s.radiation, energy_eV=s.energy_eV, wavelength_m=s.wavelength_m,
                       semiangle_rad=s.probe_semiangle_rad, defocus_m=s.defocus_m, distance_m=s.distance_m,
                       reciprocal_sampling_inv_m=s.reciprocal_sampling_inv_m, positions_m=s.positions_m,
                       regime=s.regime, fields=s.fields)
    if kind == "tilt_series":
        check_angles([s.tilt_angle_rad for s in scans], [s.name for s in scans])
    _warn_if_near_field(scans[0])
    if kind == ENERGY_STACK:
        return kind, sorted(scans, key=lambda s: (s.energy_eV, s.polarisation))
    return kind, sorted(scans, key=lambda s: s.tilt_angle_rad)


def _detector_corrections(scans: list[Scan], corrections: Corrections | None) -> tuple:
    """(dark, gain, measured, preprocessing record): the files' masks ANDed, then the user's corrections."""
    ref = scans[0]
    measured = None
    for s in scans:
        if s.measured is not None:
            measured = s.measured.copy() if measured is None else (measured & s.measured)
    dark, gain, measured, prep = _prepare_corrections(corrections, ref.detector_shape, measured)
    if measured is not None and not measured.any():
        raise IngestError(f"{ref.name}: detector mask: no measured pixel left")
    mask_field = ref.fields.get("mask")
    if mask_field:
        prep.setdefault("mask_from_file", mask_field)
    return dark, gain, measured, prep


def _store_attrs(kind: str, scans: list[Scan], positions: np.ndarray, prep: dict) -> dict:
    """Root attributes of a store of scans (``geometry``: item 0's values)."""
    from .energy import ENERGY_STACK  # noqa: PLC0415

    ref = scans[0]
    geometry = {
        "beam_energy_eV": float(ref.energy_eV),
        "wavelength_m": float(ref.wavelength_m),
        "convergence_semiangle_rad": None if ref.probe_semiangle_rad is None else float(ref.probe_semiangle_rad),
        "defocus_m": None if ref.defocus_m is None else float(ref.defocus_m),
        "Cs_m": 0.0,
        "reciprocal_sampling_inv_m": [float(v) for v in ref.reciprocal_sampling_inv_m],
        "scan_step_m": estimate_scan_step(positions[0]),
        "scan_origin_m": [float(v) for v in positions[0, 0]],
        "dose_e_per_m2": None,
    }
    assert tuple(geometry) == GEOMETRY_KEYS
    attrs = {
        "ptyhpc_schema": SCHEMA_VERSION, "kind": kind, "radiation": ref.radiation, "geometry": geometry,
        "source_files": [str(s.path.resolve()) + (f":{s.entry}" if s.entry else "") for s in scans],
        "source_format": ref.source_format,
        "source_fields": [s.fields for s in scans],
        DETECTOR_DISTANCE: float(ref.distance_m),
        PROPAGATION_REGIME: ref.regime,
        FOCUS_TO_SAMPLE: ref.focus_to_sample_m,
        "detector_pixel_size_m": [float(v) for v in ref.pixel_size_m],
        "preprocessing": prep,
    }
    if kind == ENERGY_STACK:
        attrs["polarisation"] = [s.polarisation for s in scans]
    if ref.radiation == "xray":
        # X-ray defocus: sample downstream of the focus (ptyhpc.physics.xray_optics); stores without
        # the attribute keep the electron sign they were written with.
        attrs["defocus_convention"] = "xray"
        attrs["probe_optics"] = ref.probe_optics
    return attrs


def _store_arrays(kind: str, scans: list[Scan], positions: np.ndarray, measured) -> list:
    """The arrays written whole: positions, tilt angles, detector mask (and an energy stack's per-item ones)."""
    from .energy import ENERGY_STACK, per_item_arrays  # noqa: PLC0415
    from .writer import WholeArray  # noqa: PLC0415

    n, n_pos, det_shape = len(scans), scans[0].n_positions, tuple(scans[0].detector_shape)
    arrays = [
        WholeArray(POSITIONS, positions, (n, n_pos, 2), {"axes": ["y", "x"], "units": "m"},
                   ("item", "position", "axis")),
        WholeArray(TILT_ANGLE, np.array([s.tilt_angle_rad for s in scans], dtype=np.float64), (n,),
                   {"units": "rad", "axis": "y"}, ("item",)),
        WholeArray(DETECTOR_MASK, np.ones(det_shape, bool) if measured is None else measured, det_shape,
                   {"meaning": "True = measured pixel; False = bad/hot/dead/gap, stored as 0 and left free by the "
                               "engines"}, ("det_y", "det_x")),
    ]
    if kind == ENERGY_STACK:
        arrays += per_item_arrays([s.energy_eV for s in scans], [s.wavelength_m for s in scans],
                                  [s.reciprocal_sampling_inv_m for s in scans])
    return arrays
