"""Readers of 4D-STEM detector files (Merlin MIB, EMPAD, DECTRIS ARINA) through rosettasciio.

Each reader checks a file's header against the calibration and returns a
:class:`StemScan`: the scan shape, detector shape and dtype, the calibration
(the file's own values where it carries them, the user's otherwise), and a
``read_block(start, stop)`` that returns frames ``start:stop`` in raster order —
the ingest (:mod:`ptyhpc.stem.ingest`) copies the file block by block, never
all of it at once.

Detector frames are oriented as rosettasciio returns them (MIB rows are
flipped by rosettasciio's reader, and so here); the scan–detector rotation
and transpose are measured in that frame (docs/stem.md).

Formats
-------
``mib``    Quantum Detectors Merlin, single chip (384-byte headers) or quad (768-byte),
           U08/U16/U32 processed frames; the scan shape from the calibration or
           the ``.hdr`` file (frames per trigger = scan_x). Read with
           :func:`rsciio.quantumdetector.load_mib_data` (memory-mapped frame ranges).
``empad``  EMPAD ``.xml`` + ``.raw`` (128 × 130 float32 frames, the 2 footer rows dropped);
           scan shape, beam energy and scan field of view from the XML
           (:func:`rsciio.empad.file_reader`, lazy).
``arina``  DECTRIS ARINA ``*_master.h5``: ``entry/data/data_NNNNNN`` (links to the data
           files, bitshuffle/LZ4 via hdf5plugin) in order, as
           :func:`rsciio.arina.file_reader` reads them; that reader loads the whole scan
           into memory, so blocks are read here with h5py in the same layout (uint32 frames
           are kept as uint32; rosettasciio casts them to uint16).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.validate import SUPPORTED_DTYPES, IngestError
from .calibration import Calibration

__all__ = ["StemScan", "STEM_FORMATS", "sniff_stem_format", "read_stem_file", "read_mib", "read_empad",
           "read_arina"]

STEM_FORMATS = ("mib", "arina", "empad")


@dataclass
class StemScan:
    """One raster 4D-STEM scan (one store item) as read and checked by a reader.

    Attributes
    ----------
    path : Path
    source_format : {"mib", "empad", "arina"}
    scan_shape : (int, int)
        (scan_y, scan_x); frames are in raster order (x fastest).
    detector_shape : (int, int)
        (det_y, det_x).
    dtype : numpy.dtype
        Native-endian dtype of the frames ``read_block`` returns.
    read_block : callable
        ``(start, stop) -> ndarray (stop - start, det_y, det_x)`` of ``dtype``.
    calibration : Calibration
        The file's values merged with the user's (the user's win).
    fields : dict
        Where each calibration value came from (``"file:<field>"`` or ``"given"``).
    tilt_angle_rad : float
    """

    path: Path
    source_format: str
    scan_shape: tuple
    detector_shape: tuple
    dtype: np.dtype
    read_block: Callable[[int, int], np.ndarray]
    calibration: Calibration
    fields: dict = field(default_factory=dict)
    tilt_angle_rad: float = 0.0

    @property
    def n_positions(self) -> int:
        return int(self.scan_shape[0] * self.scan_shape[1])

    @property
    def name(self) -> str:
        return str(self.path)


def sniff_stem_format(path) -> str | None:
    """``"mib"``, ``"empad"`` or ``"arina"`` from a file's content, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"MQ1,"):
        return "mib"
    if head.lstrip().startswith(b"<root") and b"raw_file" in head:
        return "empad"
    if head.startswith(b"\x89HDF"):
        import h5py  # noqa: PLC0415

        with h5py.File(path, "r") as f:
            data = f.get("entry/data")
            if isinstance(data, h5py.Group) and any(k.startswith("data_") for k in data):
                return "arina"
    return None


def read_stem_file(path, fmt: str, calibration: Calibration | None = None) -> StemScan:
    """Dispatch to :func:`read_mib`, :func:`read_empad` or :func:`read_arina`."""
    readers = {"mib": read_mib, "empad": read_empad, "arina": read_arina}
    if fmt not in readers:
        raise IngestError(f"{path}: unknown 4D-STEM format {fmt!r}; use one of {', '.join(STEM_FORMATS)}")
    return readers[fmt](Path(path), calibration or Calibration())


def _scan_shape(path, n_frames: int, given, from_file, what: str) -> tuple:
    """Scan shape from the calibration or the file, checked against the frames the file holds."""
    if given is not None and from_file is not None and tuple(given) != tuple(from_file):
        raise IngestError(f"{path}: mismatched scan shape: calibration scan_shape {list(given)} but {what} "
                          f"gives {list(from_file)}")
    shape = given if given is not None else from_file
    if shape is None:
        raise IngestError(f"{path}: scan shape unknown ({n_frames} frames; {what} does not say): give scan_shape "
                          "[scan_y, scan_x] in --calibration FILE.yaml or --scan-shape Y,X")
    shape = (int(shape[0]), int(shape[1]))
    n = shape[0] * shape[1]
    if n_frames < n:
        raise IngestError(f"{path}: truncated: holds {n_frames} complete frames, the scan shape {list(shape)} "
                          f"needs {n} (interrupted acquisition or incomplete copy)")
    if n_frames > n:
        raise IngestError(f"{path}: mismatched scan shape: the file holds {n_frames} frames, scan shape "
                          f"{list(shape)} accounts for {n}")
    return shape


def _native(dtype) -> np.dtype:
    dt = np.dtype(dtype).newbyteorder("=")
    if dt not in SUPPORTED_DTYPES:
        raise IngestError(f"unsupported frame dtype {dt}")
    return dt


def _merge(path, file_values: dict, user: Calibration, fields: dict) -> Calibration:
    """File values overridden by the user's; ``fields`` records the source of each."""
    cal = Calibration(**{k: v for k, v in file_values.items() if v is not None})
    for k in file_values:
        if file_values[k] is not None:
            fields.setdefault(k, "file")
    for k, v in user.model_dump(exclude_unset=True).items():
        if v is not None:
            fields[k] = "given"
    try:
        return cal.merged(user)
    except ValueError as exc:
        raise IngestError(f"{path}: {exc}") from None


# --- Merlin MIB --------------------------------------------------------------------------------------


def read_mib(path: Path, calibration: Calibration) -> StemScan:
    """Check a Merlin ``.mib`` file and return its :class:`StemScan` (frames read on demand).

    Raises
    ------
    IngestError
        Not a MIB file, RAW (undecoded) counter data, a partial last frame or
        fewer frames than the scan (``truncated``), more frames than the scan or a
        ``.hdr`` that disagrees with the calibration (``mismatched scan shape``),
        no scan shape at all.
    """
    from rsciio.quantumdetector._api import MIBProperties, load_mib_data, parse_hdr_file  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    with open(path, "rb") as f:
        if f.read(4) != b"MQ1,":
            raise IngestError(f"{path}: not a Merlin MIB file (no 'MQ1,' header)")
    prop = MIBProperties()
    try:
        prop.parse_file(str(path))
    except Exception as exc:  # noqa: BLE001  (rosettasciio raises several kinds on a bad header)
        raise IngestError(f"{path}: MIB header unreadable ({type(exc).__name__}: {exc})") from None
    if prop.raw or prop.dtype is None or prop.head_size is None:
        raise IngestError(f"{path}: MIB header: RAW counter data or unknown data type; export processed frames")
    dtype = np.dtype(prop.dtype).newbyteorder(">")
    frame_bytes = prop.head_size + int(np.prod(prop.merlin_size)) * dtype.itemsize
    n_frames, rest = divmod(prop.file_size, frame_bytes)
    if rest:
        raise IngestError(f"{path}: truncated: {prop.file_size} bytes is not a whole number of {frame_bytes}-byte "
                          f"frames (the last frame is cut after {rest} bytes)")
    fields = {"frames": f"mib {prop.assembly_size} {prop.merlin_size} {dtype.str}"}
    from_hdr = None
    hdr = path.with_suffix(".hdr")
    if hdr.is_file():
        h = parse_hdr_file(str(hdr))
        try:
            n_acq = int(h["Frames in Acquisition (Number)"])
            per_trigger = int(h["Frames per Trigger (Number)"])
        except (KeyError, ValueError):
            n_acq = per_trigger = 0
        if n_acq > 0 and per_trigger > 0:
            from_hdr = (n_acq // per_trigger, per_trigger)
            fields["scan_shape"] = f"{hdr.name}: Frames in Acquisition / Frames per Trigger"
    shape = _scan_shape(path, int(n_frames), calibration.scan_shape, from_hdr, f"{hdr.name}")
    cal = _merge(path, {"scan_shape": shape}, calibration, fields)
    native = _native(dtype)
    path_str = str(path)

    def read_block(start: int, stop: int) -> np.ndarray:
        p = MIBProperties()
        p.parse_file(path_str)
        data = load_mib_data(path_str, lazy=False, mmap_mode="r", first_frame=start, last_frame=stop, mib_prop=p,
                             return_mmap=True)
        # rosettasciio's file_reader flips the detector rows; do the same so the frame is rosettasciio's.
        return np.ascontiguousarray(data.reshape(stop - start, *prop.merlin_size)[:, ::-1], dtype=native)

    return StemScan(path, "mib", shape, tuple(int(v) for v in prop.merlin_size), native, read_block, cal, fields)


# --- EMPAD -------------------------------------------------------------------------------------------

_EMPAD_FRAME = (128, 128)
_EMPAD_RAW_ROWS = 130


def read_empad(path: Path, calibration: Calibration) -> StemScan:
    """Check an EMPAD ``.xml`` (+ ``.raw``) pair and return its :class:`StemScan`.

    The beam energy (``iom_measurements/high_voltage``, eV) and the scan step
    (field of view over the scan size, as rosettasciio computes it) come from the
    XML when present; the reciprocal sampling and convergence angle never do.

    Raises
    ------
    IngestError
        XML unreadable, raw file missing, truncated or longer than the scan,
        scan shape disagreeing with the calibration.
    """
    import xml.etree.ElementTree as ET  # noqa: PLC0415

    from rsciio.empad import file_reader  # noqa: PLC0415

    path = Path(path)
    if path.suffix.lower() == ".raw":
        raise IngestError(f"{path}: give the EMPAD .xml file (it names the .raw and the scan shape)")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise IngestError(f"{path}: not a readable EMPAD XML file ({exc})") from None
    raw_el = root.find("raw_file")
    if raw_el is None or not raw_el.get("filename"):
        raise IngestError(f"{path}: raw_file: missing (the XML must name the .raw file)")
    raw = path.parent / raw_el.get("filename")
    if not raw.is_file():
        raise IngestError(f"{path}: raw_file: {raw} not found")
    try:
        d = file_reader(str(path), lazy=True)[0]
    except Exception as exc:  # noqa: BLE001
        raise IngestError(f"{path}: rosettasciio cannot read it ({type(exc).__name__}: {exc})") from None
    if d["data"].ndim != 4:
        raise IngestError(f"{path}: a series of images (series_count), not a 4D scan")
    frame_bytes = _EMPAD_RAW_ROWS * _EMPAD_FRAME[1] * 4
    n_frames, rest = divmod(raw.stat().st_size, frame_bytes)
    if rest:
        raise IngestError(f"{raw}: truncated: {raw.stat().st_size} bytes is not a whole number of "
                          f"{frame_bytes}-byte EMPAD frames")
    fields = {"scan_shape": "xml: raw_file name / pix_x, pix_y"}
    shape = _scan_shape(path, int(n_frames), calibration.scan_shape, tuple(d["data"].shape[:2]), "the XML")
    file_values = {"scan_shape": shape}
    hv = root.find("iom_measurements/high_voltage")
    if hv is not None and hv.text:
        file_values["beam_energy_eV"] = float(hv.text)
        fields["beam_energy_eV"] = "xml: iom_measurements/high_voltage"
    ax = d["axes"][:2]
    units = {"m": 1.0, "mm": 1e-3, "µm": 1e-6, "um": 1e-6, "nm": 1e-9, "pm": 1e-12, "Å": 1e-10}
    if all(a.get("units") in units for a in ax):
        file_values["scan_step_m"] = tuple(float(a["scale"]) * units[a["units"]] for a in ax)
        fields["scan_step_m"] = "xml: full_scan_field_of_view (rosettasciio axes scale)"
    cal = _merge(path, file_values, calibration, fields)
    raw_str = str(raw)

    def read_block(start: int, stop: int) -> np.ndarray:
        dt = np.dtype([("data", "<f4", _EMPAD_FRAME), ("footer", "<f4", (_EMPAD_RAW_ROWS - 128, 128))])
        mm = np.memmap(raw_str, dtype=dt, mode="r", offset=start * dt.itemsize, shape=(stop - start,))
        return np.ascontiguousarray(mm["data"], dtype=np.float32)

    return StemScan(path, "empad", shape, _EMPAD_FRAME, np.dtype(np.float32), read_block, cal, fields)


# --- DECTRIS ARINA -----------------------------------------------------------------------------------


def read_arina(path: Path, calibration: Calibration) -> StemScan:
    """Check a DECTRIS ARINA ``*_master.h5`` and return its :class:`StemScan`.

    Frames are the datasets of ``entry/data`` in name order (``data_000001``,
    ...; external links to the data files), as rosettasciio concatenates them.
    The beam energy comes from ``entry/instrument/beam/incident_wavelength`` (Å)
    when present, the scan step from the sibling ``<base>.h5``
    ``STEM Metadata`` attribute ``Pixel Size`` (nm) when present.

    Raises
    ------
    IngestError
        Not HDF5, no ``entry/data/data_*``, a missing data file (broken link),
        frames of different shapes or dtypes, a frame count that does not fit
        the scan shape (a non-square count needs ``scan_shape``).
    """
    import h5py  # noqa: PLC0415
    import hdf5plugin  # noqa: F401, PLC0415  (registers the bitshuffle/LZ4 filters)

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    fields, file_values = {}, {}
    with h5py.File(path, "r") as f:
        names, counts, frame_shape, file_dtype = _arina_datasets(path, f)
        wl = f.get("entry/instrument/beam/incident_wavelength")
        if isinstance(wl, h5py.Dataset):
            file_values["beam_energy_eV"] = _energy_of_wavelength(float(np.asarray(wl[()]).ravel()[0]) * 1e-10)
            fields["beam_energy_eV"] = "entry/instrument/beam/incident_wavelength"
    n_frames = sum(counts)
    square = int(math.isqrt(n_frames))
    guess = (square, square) if square * square == n_frames else None
    shape = _scan_shape(path, n_frames, calibration.scan_shape,
                        None if calibration.scan_shape is not None else guess, "the frame count (square scan)")
    _arina_scan_step(path, file_values, fields)
    file_values["scan_shape"] = shape
    cal = _merge(path, file_values, calibration, fields)
    dtype = _native(file_dtype)
    starts = np.cumsum([0] + counts)
    path_str = str(path)

    def read_block(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *frame_shape), dtype)
        with h5py.File(path_str, "r") as f:
            for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
                lo, hi = max(a, start), min(b, stop)
                if lo < hi:
                    out[lo - start:hi - start] = f["entry/data"][names[k]][lo - a:hi - a]
        return out

    fields["frames"] = f"entry/data/{names[0]}..{names[-1]}"
    return StemScan(path, "arina", shape, frame_shape, dtype, read_block, cal, fields)


def _arina_datasets(path: Path, f) -> tuple[list[str], list[int], tuple, np.dtype]:
    """(names, frame counts, frame shape, file dtype) of the ``entry/data/data_*`` datasets of a master file."""
    import h5py  # noqa: PLC0415

    grp = f.get("entry/data")
    if not isinstance(grp, h5py.Group):
        raise IngestError(f"{path}: entry/data: missing (not an ARINA master file)")
    names = sorted(k for k in grp if k.startswith("data_"))
    if not names:
        raise IngestError(f"{path}: entry/data: no data_NNNNNN datasets")
    counts, shapes, dtypes = [], set(), set()
    for k in names:
        try:
            ds = grp[k]
        except KeyError:
            raise IngestError(f"{path}: entry/data/{k}: the linked data file is missing") from None
        if ds.ndim != 3:
            raise IngestError(f"{path}: entry/data/{k}: expected (n, det_y, det_x), got shape {ds.shape}")
        counts.append(int(ds.shape[0]))
        shapes.add(tuple(ds.shape[1:]))
        dtypes.add(ds.dtype)
    if len(shapes) > 1 or len(dtypes) > 1:
        raise IngestError(f"{path}: entry/data: data files of different frame shapes/dtypes {shapes} {dtypes}")
    return names, counts, shapes.pop(), dtypes.pop()


def _energy_of_wavelength(lam_m: float) -> float:
    """Electron energy (eV) of wavelength ``lam_m``: the relativistic wavelength inverted (monotonic in E)."""
    from scipy.optimize import brentq  # noqa: PLC0415

    from ..physics.wavelength import electron_wavelength  # noqa: PLC0415

    return brentq(lambda e: electron_wavelength(e) - lam_m, 1e2, 1e8)


def _arina_scan_step(path: Path, file_values: dict, fields: dict) -> None:
    """The scan step from the sibling ``<base>.h5`` ``STEM Metadata`` ``Pixel Size`` (nm), when there is one."""
    import h5py  # noqa: PLC0415

    base = Path(str(path).replace("_master.h5", "") + ".h5")
    if not base.is_file() or base == path:
        return
    try:
        with h5py.File(base, "r") as f:
            px = float(np.asarray(f["STEM Metadata"].attrs["Pixel Size"]).ravel()[0]) * 1e-9
    except (KeyError, OSError, IndexError):
        return
    file_values["scan_step_m"] = (px, px)
    fields["scan_step_m"] = f"{base.name}: STEM Metadata/Pixel Size (nm)"
