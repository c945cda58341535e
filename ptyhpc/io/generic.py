"""Reader for any HDF5 scan file, with the dataset paths given by the user.

A :class:`GenericSpec` (pydantic; from Python or a YAML file, see
:func:`load_spec`) names where the frames, positions and geometry are.
Example YAML (every path is inside the scan file)::

    frames: /measurement/pilatus/images          # (n, det_y, det_x) or (scan_y, scan_x, det_y, det_x)
    positions_y: /measurement/motors/sy          # or `positions: /path` of an (n, 2) array
    positions_x: /measurement/motors/sx          #    with `positions_order: yx` (default) or xy
    positions_units: um                          # needed when the datasets have no `units` attribute
    positions_are: sample                        # probe (default) | sample (motor moves the sample: probe = −value)
    radiation: xray                              # xray (default) | electron
    energy: {path: /instrument/mono/energy, units: keV}      # or wavelength: ...
    distance: {value: 5.2}                       # a bare number is in the store's unit (m, eV, rad)
    pixel_size: {value: [75, 75], units: um}     # one value or (y, x)
    mask: /instrument/pilatus/pixel_mask         # optional, `mask_bad: nonzero` (default) | zero
    dark: /instrument/pilatus/dark               # optional, in this file or `other.h5:/path`
    flat: other.h5:/flatfield                    # optional
    probe_semiangle: {value: 2.5, units: mrad}   # optional probe model for the ptycho stage
    defocus: {value: 150, units: um}             # optional
    regime: near_field                           # far_field (default) | near_field (in-line holograms)
    focus_to_sample: {value: 3.65, units: mm}    # optional, near field with a divergent (cone) beam

A quantity is a mapping with ``path`` or ``value`` and optional ``units``, or
shorthand: a string is a path, a number or list a value. Units of a dataset
come from ``units`` in the spec or the dataset's ``units`` attribute; giving
both with different meanings is an error, giving neither is an error. A
value without units is in the store's units (m, eV, rad).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Literal, Optional, Union

import h5py
import hdf5plugin  # noqa: F401  (compression filters facility files use)
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .units import ANGLE, ENERGY, LENGTH, to_si, unit_factor
from .validate import IngestError, check_frames_dataset

__all__ = ["Quantity", "GenericSpec", "load_spec", "read_generic_scan"]


class Quantity(BaseModel):
    """A number from the file (``path``) or from the spec (``value``), with optional ``units``."""

    model_config = ConfigDict(extra="forbid")
    path: Optional[str] = None
    value: Optional[Union[float, list[float]]] = None
    units: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, str):
            return {"path": data}
        if isinstance(data, (int, float, list, tuple)):
            return {"value": list(data) if isinstance(data, tuple) else data}
        return data

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of 'path' and 'value'")
        return self


class GenericSpec(BaseModel):
    """Where a generic HDF5 scan file keeps its data (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    frames: str
    positions: Optional[str] = None
    positions_order: Literal["yx", "xy"] = "yx"
    positions_y: Optional[str] = None
    positions_x: Optional[str] = None
    positions_units: Optional[str] = None
    positions_are: Literal["probe", "sample"] = "probe"
    radiation: Literal["xray", "electron"] = "xray"
    energy: Optional[Quantity] = None
    wavelength: Optional[Quantity] = None
    distance: Quantity
    pixel_size: Quantity
    mask: Optional[str] = None
    mask_bad: Literal["nonzero", "zero"] = "nonzero"
    dark: Optional[str] = None
    flat: Optional[str] = None
    probe_semiangle: Optional[Quantity] = None
    defocus: Optional[Quantity] = None
    tilt_angle: Optional[Quantity] = None
    regime: Literal["far_field", "near_field"] = "far_field"
    focus_to_sample: Optional[Quantity] = None

    @model_validator(mode="after")
    def _choices(self):
        if (self.positions is None) == (self.positions_y is None and self.positions_x is None):
            raise ValueError("give either 'positions' (an (n, 2) array) or both 'positions_y' and 'positions_x'")
        if self.positions is None and (self.positions_y is None or self.positions_x is None):
            raise ValueError("give both 'positions_y' and 'positions_x'")
        if (self.energy is None) == (self.wavelength is None):
            raise ValueError("give exactly one of 'energy' and 'wavelength'")
        return self


def load_spec(source: str | PathLike | dict) -> GenericSpec:
    """A :class:`GenericSpec` from a YAML file or a dict.

    Raises
    ------
    IngestError
        File missing, not YAML, or a spec that does not validate (unknown
        key, missing ``frames``/``distance``/``pixel_size``, both or neither
        of energy/wavelength, ...); the message names the file and the key.
    """
    where = "spec"
    if not isinstance(source, dict):
        import yaml  # noqa: PLC0415

        where = str(source)
        path = Path(source)
        if not path.is_file():
            raise IngestError(f"{path}: spec file not found")
        try:
            source = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise IngestError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(source, dict):
            raise IngestError(f"{path}: expected a mapping of keys (frames, positions, ...)")
    try:
        return GenericSpec.model_validate(source)
    except ValidationError as err:
        lines = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in err.errors())
        raise IngestError(f"{where}: {lines}") from None


def _dataset(path: Path, f: h5py.File, name: str, key: str) -> h5py.Dataset:
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise IngestError(f"{path}: {name}: missing dataset (spec key '{key}')")
    return ds


def _units_of(path: Path, ds: h5py.Dataset, given: str | None, dimension: str, key: str) -> str:
    attr = ds.attrs.get("units")
    where = f"{path}: {ds.name}"
    if attr is None and given is None:
        raise IngestError(f"{where}: no 'units' attribute; give the units in the spec ('{key}')")
    if attr is not None and given is not None:
        if unit_factor(attr, dimension, where) != unit_factor(given, dimension, f"spec '{key}'"):
            raise IngestError(f"{where}: 'units' attribute {attr!r} contradicts the spec's {given!r} ('{key}')")
    return given if given is not None else attr


def _value(path: Path, f: h5py.File, q: Quantity | None, dimension: str, key: str, *, size=(1,)):
    """(SI value, field description); ``size`` lists the accepted numbers of values."""
    if q is None:
        return None, None
    if q.path is not None:
        ds = _dataset(path, f, q.path, key)
        units = _units_of(path, ds, q.units, dimension, key)
        value = to_si(ds[()], units, dimension, f"{path}: {ds.name}").ravel()
        where = ds.name
    else:
        where = f"spec '{key}'"
        units = q.units if q.units is not None else {LENGTH: "m", ENERGY: "eV", ANGLE: "rad"}[dimension]
        value = to_si(q.value, units, dimension, where).ravel()
    if value.size not in size:
        if value.size > 1 and np.all(value == value[0]) and 1 in size:
            value = value[:1]  # a per-frame record of a constant
        else:
            raise IngestError(f"{path}: {where}: expected {' or '.join(map(str, size))} value(s), got {value.size}")
    return (float(value[0]) if value.size == 1 and size == (1,) else value), where


def read_generic_scan(path: str | PathLike, spec: GenericSpec | dict | str | PathLike):
    """Read and check one scan from an HDF5 file laid out as ``spec`` says.

    Parameters
    ----------
    path : path-like
        The scan file.
    spec : GenericSpec, dict or path of a YAML file

    Returns
    -------
    Scan
        :class:`ptyhpc.io.scan.Scan` (SI; positions (y, x) of the probe on the
        sample), frames read later at ingest; ``scan.corrections`` holds the
        spec's ``dark``, ``flat`` (``"FILE:path"`` strings or None) and ``mask_bad``.

    Raises
    ------
    IngestError
        Spec invalid (see :func:`load_spec`); file missing or not HDF5; a
        dataset missing; frames not 3D/4D or of an unsupported dtype; position
        count ≠ frame count; a position array of the wrong shape; missing,
        unknown or contradictory units; non-finite values; an unknown
        ``regime`` or a ``focus_to_sample`` that is not > 0 (or is given for
        the far field). Messages name the file and the dataset (or spec key).
    """
    from .scan import Scan, scan_propagation  # noqa: PLC0415

    if not isinstance(spec, GenericSpec):
        spec = load_spec(spec)
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        data = _dataset(path, f, spec.frames, "frames")
        n, det_shape = check_frames_dataset(path, data)
        name, dtype = data.name, np.dtype(data.dtype)
        fields = {"frames": name}

        pos, fields["positions"] = _positions(path, f, spec, n, name)

        energy, fields["energy"] = _value(path, f, spec.energy, ENERGY, "energy")
        wavelength, fields["wavelength"] = _value(path, f, spec.wavelength, LENGTH, "wavelength")
        distance, fields["distance"] = _value(path, f, spec.distance, LENGTH, "distance")
        pixel, fields["pixel_size"] = _value(path, f, spec.pixel_size, LENGTH, "pixel_size", size=(1, 2))
        semi, fields["probe_semiangle"] = _value(path, f, spec.probe_semiangle, ANGLE, "probe_semiangle")
        defocus, fields["defocus"] = _value(path, f, spec.defocus, LENGTH, "defocus")
        tilt, fields["tilt_angle"] = _value(path, f, spec.tilt_angle, ANGLE, "tilt_angle")
        z1, fields["focus_to_sample"] = _value(path, f, spec.focus_to_sample, LENGTH, "focus_to_sample")
        measured, fields["mask"] = _measured(path, f, spec, det_shape)
    fields = {k: v for k, v in fields.items() if v is not None}
    pixel = np.atleast_1d(pixel)
    pixel = (float(pixel[0]), float(pixel[-1]))

    from ..physics.wavelength import energy_from_wavelength, wavelength_function  # noqa: PLC0415

    for key, value in (("energy", energy), ("wavelength", wavelength)):
        if value is not None and not value > 0:
            raise IngestError(f"{path}: {fields[key]}: must be > 0, got {value}")
    if energy is None:
        energy = energy_from_wavelength(spec.radiation, wavelength)
    lam = wavelength_function(spec.radiation)(energy) if wavelength is None else wavelength
    shape = (n, *det_shape)

    def load() -> np.ndarray:
        with h5py.File(path, "r") as fh:
            return np.asarray(fh[name][()]).reshape(shape)

    scan = Scan(path=path, source_format="generic", load_frames=load, n_positions=n, detector_shape=det_shape,
                dtype=dtype, positions_m=pos, radiation=spec.radiation, energy_eV=float(energy),
                wavelength_m=float(lam), distance_m=distance, pixel_size_m=pixel, measured=measured,
                tilt_angle_rad=0.0 if tilt is None else tilt, probe_semiangle_rad=semi, defocus_m=defocus,
                fields={**fields, **({"regime": "spec 'regime'"} if "regime" in spec.model_fields_set else {})},
                **scan_propagation(path, spec.regime, z1, distance))
    scan.corrections = {"dark": _ref_text(spec.dark, path), "flat": _ref_text(spec.flat, path),
                        "mask_bad": spec.mask_bad}
    return scan


def _positions(path: Path, f: h5py.File, spec: GenericSpec, n: int, frames_name: str) -> tuple[np.ndarray, str]:
    """(probe positions (n, 2) (y, x) m, field description) from the spec's position datasets."""
    if spec.positions is not None:
        ds = _dataset(path, f, spec.positions, "positions")
        units = _units_of(path, ds, spec.positions_units, LENGTH, "positions_units")
        pos = to_si(ds[()], units, LENGTH, f"{path}: {ds.name}")
        if pos.ndim < 2 or pos.shape[-1] != 2:
            raise IngestError(f"{path}: {ds.name}: expected (n, 2) positions, got shape {pos.shape}")
        pos = pos.reshape(-1, 2)
        if pos.shape[0] != n:
            raise IngestError(f"{path}: {ds.name}: {pos.shape[0]} positions for {n} frames ({frames_name})")
        if spec.positions_order == "xy":
            pos = pos[:, ::-1]
        where = ds.name
    else:
        cols = []
        for key, dname in (("positions_y", spec.positions_y), ("positions_x", spec.positions_x)):
            ds = _dataset(path, f, dname, key)
            units = _units_of(path, ds, spec.positions_units, LENGTH, "positions_units")
            v = to_si(ds[()], units, LENGTH, f"{path}: {ds.name}").ravel()
            if v.size != n:
                raise IngestError(f"{path}: {ds.name}: {v.size} positions for {n} frames ({frames_name})")
            cols.append(v)
        pos = np.stack(cols, axis=1)
        where = f"{spec.positions_y}, {spec.positions_x}"
    if spec.positions_are == "sample":
        pos = -pos  # the motor moved the sample: the probe sits at minus its position
    return pos, where


def _measured(path: Path, f: h5py.File, spec: GenericSpec, det_shape: tuple) -> tuple:
    """(measured-pixel mask or None, field name or None) from the spec's ``mask``."""
    if spec.mask is None:
        return None, None
    ds = _dataset(path, f, spec.mask, "mask")
    if tuple(ds.shape) != det_shape:
        raise IngestError(f"{path}: {ds.name}: mask shape {ds.shape} differs from the detector's {det_shape}")
    m = np.asarray(ds[()])
    return ((m == 0) if spec.mask_bad == "nonzero" else (m != 0)), ds.name


def _ref_text(text: str | None, path: Path) -> str | None:
    """``"path"`` (in the scan file) → ``"FILE:path"``; ``"other.h5:/path"`` unchanged."""
    if text is None:
        return None
    head, sep, _ = text.rpartition(":")
    return text if sep and head else f"{path}:{text.lstrip(':')}"
