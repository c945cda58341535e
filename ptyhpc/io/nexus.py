"""Reader for NeXus ptychography files (application definition NXptycho).

Follows the NeXus class structure, not fixed names: groups are found by their
``NX_class`` attribute, so ``entry/instrument/detector`` and
``entry_1/instrument_1/detector_1`` read alike. Every entry (``NXentry``)
whose ``definition`` is ``"NXptycho"`` (or the CXI-compatible
``"NXcxi_ptycho"``) is one scan. Fields read, with their ``units``
attribute required and converted to SI (``ptyhpc.io.units``)::

    NXentry
      definition                 "NXptycho"
      NXinstrument
        NXsource/probe           "x-ray" | "electron" (required unless radiation= is given)
        NXbeam/incident_energy   (or incident_beam_energy, energy), eV/keV/J;
                                 or NXbeam/incident_wavelength (or wavelength), length
        NXdetector
          data                   (n, det_y, det_x) or raster (scan_y, scan_x, det_y, det_x), counts
          x_pixel_size, y_pixel_size   length; detector columns (last axis) run along x
          distance               length, sample to detector
          pixel_mask             optional (det_y, det_x), 0 = good (NeXus NXdetector convention)
      NXsample
        NXtransformations        fields with transformation_type = "translation", a
                                 ``vector`` (3,) and units: the sample translation is
                                 Σ value · vector; shape (n,) or raster (scan_y, scan_x).
                                 A rotation whose vector is along y is the tilt angle.
                                 Fields named ``x``/``y`` without ``vector`` (NXcxi_ptycho)
                                 are taken along x/y.
        or NXpositioner groups   ``value`` (or ``raw_value``) with units, axis from the
                                 group's ``name`` field or group name ending in x or y

Axes are NeXus's (McStas: z along the beam, y up, x completing a right-handed
frame). A transformation moves the *sample*; the beam stays put, so the probe
sits at minus the translation on the sample: store positions (y, x) =
−(t_y, t_x), as :func:`ptyhpc.io.cxi.read_cxi` does for CXI translations.
Detector rows (axis −2) are taken along y and columns (axis −1) along x (a
detector without rotation in its own transformations).

The probe model (convergence semi-angle, defocus) is not part of NXptycho:
pass it to :func:`read_nexus_scans` when the ptycho stage should build its
initial probe from it. Nor is the propagation regime (NXptycho describes far-field
ptychography; ``NXdetector/distance`` is the sample-to-detector distance in
either regime): pass ``regime="near_field"`` (and ``focus_to_sample_m`` for a
divergent beam) for near-field scans.

Reference: NeXus application definitions NXptycho / NXcxi_ptycho (NIAC,
https://manual.nexusformat.org), base classes NXbeam, NXdetector,
NXtransformations, NXpositioner.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (compression filters facility files use)
import numpy as np

from .units import ANGLE, ENERGY, LENGTH, to_si
from .validate import IngestError, check_frames_dataset

__all__ = ["DEFINITIONS", "is_nxptycho", "read_nexus_scans"]

#: Values of ``NXentry/definition`` read as ptychography entries.
DEFINITIONS = ("NXptycho", "NXcxi_ptycho")

_RADIATION = {"x-ray": "xray", "xray": "xray", "x-rays": "xray", "synchrotron x-ray": "xray",
              "electron": "electron", "electrons": "electron"}


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).strip()


def _nx_class(obj) -> str:
    return _text(obj.attrs.get("NX_class", ""))


def _children(group: h5py.Group, nx_class: str) -> list:
    return [group[k] for k in group if isinstance(group.get(k, getlink=False), h5py.Group)
            and _nx_class(group[k]) == nx_class]


def _definition(entry: h5py.Group) -> str:
    if "definition" in entry and isinstance(entry["definition"], h5py.Dataset):
        return _text(entry["definition"][()])
    return _text(entry.attrs.get("definition", ""))


def _entries(f: h5py.File) -> list:
    return [g for g in _children(f, "NXentry") if _definition(g) in DEFINITIONS]


def is_nxptycho(path: str | PathLike) -> bool:
    """True when ``path`` is HDF5 with an ``NXentry`` whose ``definition`` is one of :data:`DEFINITIONS`."""
    try:
        with h5py.File(path, "r") as f:
            return bool(_entries(f))
    except (OSError, ValueError):
        return False


def _one(path: Path, parent: h5py.Group, nx_class: str, *, required: bool = True, having: str | None = None):
    found = _children(parent, nx_class)
    if having is not None and len(found) > 1:
        found = [g for g in found if having in g] or found
    if not found:
        if required:
            raise IngestError(f"{path}: {parent.name}: no {nx_class} group")
        return None
    if len(found) > 1:
        raise IngestError(f"{path}: {parent.name}: {len(found)} {nx_class} groups "
                          f"({', '.join(g.name for g in found)}); expected one")
    return found[0]


def _quantity(path: Path, group: h5py.Group, names, dimension: str, *, required: bool = True,
              scalar: bool = True):
    """(value in SI, field name) of the first of ``names`` present in ``group``; units attribute required."""
    for name in names:
        ds = group.get(name)
        if isinstance(ds, h5py.Dataset):
            where = f"{path}: {ds.name}"
            if "units" not in ds.attrs:
                raise IngestError(f"{where}: no 'units' attribute (NeXus requires one)")
            value = to_si(ds[()], ds.attrs["units"], dimension, where)
            if scalar:
                flat = np.ravel(value)
                if flat.size == 0 or not np.all(flat == flat[0]):
                    raise IngestError(f"{where}: expected one value, got {flat.size} different values")
                value = float(flat[0])
            return value, ds.name
    if required:
        raise IngestError(f"{path}: {group.name}/{names[0]}: missing")
    return None, None


def _radiation(path: Path, instrument: h5py.Group, given: str | None) -> tuple[str, str]:
    if given is not None:
        if given not in ("xray", "electron"):
            raise IngestError(f"radiation must be 'xray' or 'electron', got {given!r}")
        return given, "given"
    source = _one(path, instrument, "NXsource", required=False)
    if source is None or not isinstance(source.get("probe"), h5py.Dataset):
        where = f"{instrument.name}/NXsource/probe" if source is None else f"{source.name}/probe"
        raise IngestError(f"{path}: {where}: missing; the radiation decides the wavelength (give it with "
                          "radiation='xray'|'electron', --radiation)")
    probe = _text(source["probe"][()])
    if probe.lower() not in _RADIATION:
        raise IngestError(f"{path}: {source.name}/probe: {probe!r} not supported (x-ray or electron)")
    return _RADIATION[probe.lower()], source["probe"].name


def _axis_of(name: str) -> str | None:
    n = name.lower().rstrip("_0123456789")
    for suffix in ("_value", "_raw_value", "_position", "_translation"):
        n = n.removesuffix(suffix)
    return n[-1] if n and n[-1] in "xy" else None


def _sample_translation(path: Path, sample: h5py.Group, n: int) -> tuple[np.ndarray, float, str]:
    """(t (n, 3) m in x, y, z; tilt angle rad; field description) from the sample's transformations or positioners."""
    t = np.zeros((n, 3))
    tilt = 0.0
    used = []

    def add(ds: h5py.Dataset, vector, dimension=LENGTH):
        where = f"{path}: {ds.name}"
        if "units" not in ds.attrs:
            raise IngestError(f"{where}: no 'units' attribute (NeXus requires one)")
        value = to_si(ds[()], ds.attrs["units"], dimension, where).ravel()
        if value.size == 1:
            value = np.full(n, value[0])
        if value.size != n:
            raise IngestError(f"{where}: {value.size} positions for {n} frames")
        vec = np.asarray(vector, dtype=np.float64).ravel()
        if vec.size != 3 or not np.all(np.isfinite(vec)) or not np.linalg.norm(vec) > 0:
            raise IngestError(f"{where}: attribute 'vector' must be 3 finite numbers, not all 0, got {vec.tolist()}")
        return value, vec / np.linalg.norm(vec)

    trans = _one(path, sample, "NXtransformations", required=False)
    if trans is not None:
        for key in trans:
            ds = trans[key]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iuf":
                continue
            kind = _text(ds.attrs.get("transformation_type", ""))
            if "vector" not in ds.attrs:
                axis = key.lower() if key.lower() in ("x", "y") else None
                if axis is None or kind == "rotation":
                    raise IngestError(f"{path}: {ds.name}: no 'vector' attribute (NXtransformations needs one)")
                vector, kind = (1.0, 0.0, 0.0) if axis == "x" else (0.0, 1.0, 0.0), "translation"
            else:
                vector = ds.attrs["vector"]
            if kind == "translation":
                value, vec = add(ds, vector)
                t += value[:, None] * vec[None, :]
                if "offset" in ds.attrs:
                    units = ds.attrs.get("offset_units", ds.attrs["units"])
                    t += to_si(ds.attrs["offset"], units, LENGTH, f"{path}: {ds.name}@offset").reshape(1, 3)
                used.append(ds.name)
            elif kind == "rotation":
                value, vec = add(ds, vector, ANGLE)
                if not (np.all(value == value[0]) and abs(abs(vec[1]) - 1) < 1e-9):
                    raise IngestError(f"{path}: {ds.name}: only a constant rotation about y (the tilt axis) is "
                                      "supported in the sample's transformations")
                tilt = float(value[0] * np.sign(vec[1]))
                used.append(ds.name)
            else:
                raise IngestError(f"{path}: {ds.name}: transformation_type {kind!r}, expected 'translation' or "
                                  "'rotation'")
        if used:
            return t, tilt, ", ".join(used)
    for pos in _children(sample, "NXpositioner"):
        label = _text(pos["name"][()]) if isinstance(pos.get("name"), h5py.Dataset) else pos.name.rsplit("/", 1)[-1]
        axis = _axis_of(label)
        ds = next((pos[k] for k in ("value", "raw_value") if isinstance(pos.get(k), h5py.Dataset)), None)
        if axis is None or ds is None:
            continue
        value, vec = add(ds, (1.0, 0.0, 0.0) if axis == "x" else (0.0, 1.0, 0.0))
        t += value[:, None] * vec[None, :]
        used.append(ds.name)
    if not used:
        raise IngestError(f"{path}: {sample.name}/transformations: no scan positions (NXtransformations "
                          "translations or NXpositioner x/y)")
    return t, tilt, ", ".join(used)


def read_nexus_scans(path: str | PathLike, *, radiation: str | None = None,
                     probe_semiangle_rad: float | None = None, defocus_m: float | None = None,
                     regime: str | None = None, focus_to_sample_m: float | None = None) -> list:
    """Read and check every NXptycho entry of a NeXus file (frames are read later, at ingest).

    Parameters
    ----------
    path : path-like
        NeXus/HDF5 file.
    radiation : {"xray", "electron"}, optional
        Overrides (or stands in for a missing) ``NXsource/probe``.
    probe_semiangle_rad, defocus_m : float, optional
        Probe model for the ptycho stage's initial probe, rad and m.
    regime : {"far_field", "near_field"}, optional
        Propagation regime of every entry (default far field).
    focus_to_sample_m : float, optional
        Near field with a divergent beam: focus-to-sample distance z1, m.

    Returns
    -------
    list of Scan
        One per NXptycho entry (:class:`ptyhpc.io.scan.Scan`, SI units,
        positions = −sample translation in (y, x)), for
        :func:`ptyhpc.io.scan.ingest_scans`.

    Raises
    ------
    IngestError
        File missing or not HDF5; no NXptycho entry; a required group or
        field missing; a field without ``units`` or with units of the wrong
        kind; frames not 3D/4D or of an unsupported dtype; position count ≠
        frame count; non-finite values; mask of the wrong shape; an unknown
        ``regime`` or a ``focus_to_sample_m`` that is not > 0 (or is given for
        the far field). Messages name the file and the field.
    """
    from .scan import Scan, scan_propagation  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    scans = []
    with h5py.File(path, "r") as f:
        entries = _entries(f)
        if not entries:
            raise IngestError(f"{path}: /NXentry/definition: no entry with definition {' or '.join(DEFINITIONS)}")
        for entry in entries:
            instrument = _one(path, entry, "NXinstrument")
            detector = _one(path, instrument, "NXdetector", having="data")
            data = detector.get("data")
            if not isinstance(data, h5py.Dataset):
                raise IngestError(f"{path}: {detector.name}/data: missing dataset")
            n, det_shape = check_frames_dataset(path, data)
            fields = {"frames": data.name}
            px_x, fields["pixel_size"] = _quantity(path, detector, ("x_pixel_size",), LENGTH)
            px_y, _ = _quantity(path, detector, ("y_pixel_size",), LENGTH)
            distance, fields["distance"] = _quantity(path, detector, ("distance",), LENGTH)
            rad, fields["radiation"] = _radiation(path, instrument, radiation)

            sample = _one(path, entry, "NXsample")
            energy, lam = _beam(path, instrument, sample, rad, fields)

            t, tilt, fields["positions"] = _sample_translation(path, sample, n)
            positions = -t[:, [1, 0]]  # probe on the sample = −(sample translation); store order (y, x)

            measured = None
            pm = detector.get("pixel_mask")
            if isinstance(pm, h5py.Dataset):
                if tuple(pm.shape) != det_shape:
                    raise IngestError(f"{path}: {pm.name}: shape {pm.shape} differs from the detector's {det_shape}")
                measured = np.asarray(pm[()]) == 0
                fields["mask"] = pm.name
            fields.update({k: "given" for k, v in (("probe_semiangle", probe_semiangle_rad), ("defocus", defocus_m),
                                                    ("regime", regime), ("focus_to_sample", focus_to_sample_m))
                           if v is not None})
            dname = data.name
            scans.append(Scan(
                path=path, source_format="nexus", load_frames=_loader(path, dname, n, det_shape),
                n_positions=n, detector_shape=det_shape, dtype=np.dtype(data.dtype), positions_m=positions,
                radiation=rad, energy_eV=float(energy), wavelength_m=float(lam), distance_m=float(distance),
                pixel_size_m=(float(px_y), float(px_x)), measured=measured, tilt_angle_rad=tilt,
                probe_semiangle_rad=probe_semiangle_rad, defocus_m=defocus_m, fields=fields,
                entry=entry.name.lstrip("/") if len(entries) > 1 else "",
                **scan_propagation(path, regime, focus_to_sample_m, float(distance)),
            ))
    return scans


def _beam(path: Path, instrument, sample, rad: str, fields: dict) -> tuple[float, float]:
    """(energy eV, wavelength m) from the NXbeam (of the instrument, else of the sample); records their fields.

    Either the energy or the wavelength may be given; both must be > 0 and agree within 0.1 %.
    """
    from ..physics.wavelength import energy_from_wavelength, wavelength_function  # noqa: PLC0415

    beam = _one(path, instrument, "NXbeam", required=False)
    if beam is None:
        beam = _one(path, sample, "NXbeam", required=False)
    if beam is None:
        raise IngestError(f"{path}: {instrument.name}: no NXbeam group (incident energy)")
    energy, fields["energy"] = _quantity(path, beam, ("incident_energy", "incident_beam_energy", "energy"),
                                         ENERGY, required=False)
    wavelength, wfield = _quantity(path, beam, ("incident_wavelength", "wavelength"), LENGTH, required=False)
    if energy is None and wavelength is None:
        raise IngestError(f"{path}: {beam.name}/incident_energy: missing (nor incident_wavelength)")
    if energy is not None and not energy > 0:
        raise IngestError(f"{path}: {fields['energy']}: must be > 0, got {energy} eV")
    if wavelength is not None and not wavelength > 0:
        raise IngestError(f"{path}: {wfield}: must be > 0, got {wavelength} m")
    if energy is None:
        energy = energy_from_wavelength(rad, wavelength)
        fields["energy"] = f"{wfield} (converted)"
    lam = wavelength_function(rad)(energy)
    if wavelength is not None and abs(wavelength - lam) > 1e-3 * lam:
        raise IngestError(f"{path}: {wfield}: {wavelength:.6g} m disagrees with the energy's "
                          f"{lam:.6g} m ({fields['energy']})")
    fields["wavelength"] = wfield or f"from {fields['energy']}"
    return energy, lam


def _loader(path: Path, name: str, n: int, det_shape: tuple):
    def load() -> np.ndarray:
        with h5py.File(path, "r") as f:
            return np.asarray(f[name][()]).reshape(n, *det_shape)
    return load
