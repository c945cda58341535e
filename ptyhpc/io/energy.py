"""Energy stacks: X-ray spectro-ptychography scans, one file per (photon energy, polarisation).

A minimal reader of per-energy HDF5 files, their ingest into a store of kind
``energy_stack``, and the per-item geometry that the ptychography stage uses
for both kinds of store.

Raw file format (one file per photon energy and polarisation; SI units)::

    entry/data/counts      (scan_y, scan_x, ky, kx), counts, zero frequency at (ky//2, kx//2)
    entry/instrument       attributes
        photon_energy_eV        float > 0
        polarisation            str, a label such as "LH", "LV", "C+", "C-"
        detector_distance_m     float > 0, sample to detector
        detector_pixel_size_m   (dy, dx) > 0
        probe_semiangle_rad     float > 0, numerical aperture of the focusing optic
        defocus_m               float, m, electron sign (C10 = −defocus: > 0 is a beam converging onto
                                the sample). Stores from these files have no ``defocus_convention``
                                attribute and keep that sign; CXI/NeXus/generic X-ray ingests record
                                ``defocus_convention = "xray"`` (sample downstream of the focus), see
                                :mod:`ptyhpc.physics.xray_optics`.
        scan_origin_m           (y, x)
        scan_step_m             float > 0
        tilt_angle_deg          float, optional (0): the sample's rotation about y

Store (kind ``energy_stack``, radiation ``xray``), in addition to the arrays
of every store (``frames``, ``positions``, ``tilt_angle``; see
:mod:`ptyhpc.io.layout`); items sorted by (photon energy, polarisation):

    ``photon_energy_eV``           (n_items,) float64, eV
    ``wavelength_m``               (n_items,) float64, m, λ = hc/E
    ``reciprocal_sampling_inv_m``  (n_items, 2) float64, 1/m per detector pixel, p / (λ z)
    root attribute ``polarisation``  list of str, one label per item

The root ``geometry`` attribute holds item 0's values (so that code written
for one geometry still reads a store); per-item values come from
:func:`item_geometry`. Because the reciprocal sampling scales with 1/λ, the
reconstruction pixel λz/(N p) differs between items: the ptychography stage
records it per item (see :mod:`ptyhpc.pipeline.ptycho_stage`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (compression filters facility files use)
import numpy as np

from ..physics.wavelength import photon_wavelength  # re-exported: its home used to be here
from .checksum import FRAMES_CONFIG
from .errors import IngestError
from .hdf5_tilt import read_number  # same checks and messages as the electron reader
from .layout import FRAMES, GEOMETRY_KEYS, POSITIONS, SCHEMA_VERSION, TILT_ANGLE
from .validate import SUPPORTED_DTYPES

__all__ = ["XrayScanMetadata", "photon_wavelength", "read_xray_metadata", "is_xray_file", "scan_positions",
           "ingest_energy_stack", "item_geometry", "item_groups", "ENERGY_STACK",
           "PHOTON_ENERGY", "WAVELENGTH", "RECIPROCAL_SAMPLING"]

ENERGY_STACK = "energy_stack"
PHOTON_ENERGY = "photon_energy_eV"
WAVELENGTH = "wavelength_m"
RECIPROCAL_SAMPLING = "reciprocal_sampling_inv_m"

COUNTS = "entry/data/counts"
INSTRUMENT = "entry/instrument"
# Attributes that must agree across the files of one stack (floats compared with rtol 1e-9).
_COMMON = ("detector_distance_m", "detector_pixel_size_m", "probe_semiangle_rad", "defocus_m",
           "scan_origin_m", "scan_step_m")


@dataclass(frozen=True)
class XrayScanMetadata:
    """Metadata of one X-ray scan (SI). Attribute names are those of the file; see module docstring."""

    path: Path
    photon_energy_eV: float
    polarisation: str
    detector_distance_m: float
    detector_pixel_size_m: tuple
    probe_semiangle_rad: float
    defocus_m: float
    scan_origin_m: tuple
    scan_step_m: float
    tilt_angle_rad: float
    scan_shape: tuple
    detector_shape: tuple
    dtype: np.dtype

    @property
    def wavelength_m(self) -> float:
        """λ = hc/E, m."""
        return photon_wavelength(self.photon_energy_eV)

    @property
    def reciprocal_sampling_inv_m(self) -> tuple:
        """(dky, dkx) = pixel / (λ z), 1/m per detector pixel."""
        lz = self.wavelength_m * self.detector_distance_m
        return (self.detector_pixel_size_m[0] / lz, self.detector_pixel_size_m[1] / lz)


def is_xray_file(path: str | PathLike) -> bool:
    """True when ``path`` is an HDF5 file whose ``entry/instrument`` has ``photon_energy_eV``."""
    try:
        with h5py.File(path, "r") as f:
            inst = f.get(INSTRUMENT)
            return isinstance(inst, h5py.Group) and "photon_energy_eV" in inst.attrs
    except (OSError, ValueError):
        return False


def read_xray_metadata(path: str | PathLike) -> XrayScanMetadata:
    """Read and check the metadata of one X-ray file (no counts are read).

    Raises
    ------
    IngestError
        File missing or not HDF5; ``entry/data/counts`` missing, not 4D, empty
        or of an unsupported dtype; an attribute missing, not finite, of the
        wrong length, non-positive where it must be positive; an empty
        polarisation label. Messages start with ``<file>: <field>:``.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise IngestError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        ds = f.get(COUNTS)
        if not isinstance(ds, h5py.Dataset):
            raise IngestError(f"{path}: {COUNTS}: missing dataset")
        if ds.ndim != 4 or 0 in ds.shape:
            raise IngestError(f"{path}: {COUNTS}: expected non-empty 4D (scan_y, scan_x, ky, kx), got {ds.shape}")
        if ds.dtype not in SUPPORTED_DTYPES:
            raise IngestError(f"{path}: {COUNTS}: unsupported dtype {ds.dtype}")
        inst = f.get(INSTRUMENT)
        if not isinstance(inst, h5py.Group):
            raise IngestError(f"{path}: {INSTRUMENT}: missing group")
        a = inst.attrs
        if "polarisation" not in a:
            raise IngestError(f"{path}: {INSTRUMENT}/polarisation: missing")
        pol = a["polarisation"]
        pol = (pol.decode() if isinstance(pol, bytes) else str(pol)).strip()
        if not pol:
            raise IngestError(f"{path}: {INSTRUMENT}/polarisation: empty label")
        tilt = read_number(path, a, "tilt_angle_deg", required=False) or 0.0
        return XrayScanMetadata(
            path=path,
            photon_energy_eV=read_number(path, a, "photon_energy_eV", positive=True),
            polarisation=pol,
            detector_distance_m=read_number(path, a, "detector_distance_m", positive=True),
            detector_pixel_size_m=read_number(path, a, "detector_pixel_size_m", size=2, positive=True),
            probe_semiangle_rad=read_number(path, a, "probe_semiangle_rad", positive=True),
            defocus_m=read_number(path, a, "defocus_m"),
            scan_origin_m=read_number(path, a, "scan_origin_m", size=2),
            scan_step_m=read_number(path, a, "scan_step_m", positive=True),
            tilt_angle_rad=float(np.radians(tilt)),
            scan_shape=(int(ds.shape[0]), int(ds.shape[1])),
            detector_shape=(int(ds.shape[2]), int(ds.shape[3])),
            dtype=np.dtype(ds.dtype),
        )


def _check_stack(metas: list[XrayScanMetadata]) -> None:
    if not metas:
        raise IngestError("no input files given")
    ref = metas[0]
    for m in metas[1:]:
        for attr in ("scan_shape", "detector_shape", "dtype"):
            if getattr(m, attr) != getattr(ref, attr):
                raise IngestError(f"{m.path}: {COUNTS}: {attr} {getattr(m, attr)} differs from "
                                  f"{getattr(ref, attr)} in {ref.path}")
        for attr in _COMMON:
            if not np.allclose(getattr(m, attr), getattr(ref, attr), rtol=1e-9, atol=0):
                raise IngestError(f"{m.path}: {INSTRUMENT}/{attr}: {getattr(m, attr)} differs from "
                                  f"{getattr(ref, attr)} in {ref.path}")
    seen = {}
    for m in metas:
        key = (round(m.photon_energy_eV, 6), m.polarisation)
        if key in seen:
            raise IngestError(f"{m.path}: {INSTRUMENT}/photon_energy_eV: {m.photon_energy_eV} eV with "
                              f"polarisation {m.polarisation!r} also in {seen[key]}")
        seen[key] = m.path


def scan_positions(m: XrayScanMetadata) -> np.ndarray:
    """Probe positions (n, 2) (y, x) of a raster scan, m, x fastest."""
    i, j = np.indices(m.scan_shape, dtype=np.float64)
    return np.stack([i.ravel(), j.ravel()], 1) * m.scan_step_m + np.asarray(m.scan_origin_m)


def ingest_energy_stack(files: Iterable[str | PathLike], store_path: str | PathLike, *,
                        overwrite: bool = False, progress: bool = True) -> Path:
    """Validate per-energy X-ray files and write a store of kind ``energy_stack``.

    Same guarantees as :func:`ptyhpc.io.ingest`: every file is checked before
    anything is written, and the store is built in a sibling folder and renamed
    into place only when complete.

    Parameters
    ----------
    files : iterable of path-like
        One file per (photon energy, polarisation), any order.
    store_path : path-like
        Store folder to create.
    overwrite : bool
        Replace an existing store once the new one is complete.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        ``store_path``.

    Raises
    ------
    IngestError
        Store exists and not ``overwrite``; no files; a per-file problem (see
        :func:`read_xray_metadata`); shapes, dtype or common geometry
        differing between files; two files with the same energy and
        polarisation; NaN/inf or negative counts.
    """
    from .hdf5_tilt import read_counts  # noqa: PLC0415  (same counts layout and checks)
    from .ingest import frames_codecs  # noqa: PLC0415
    from .plausible import check_geometry, warn_fractional_counts  # noqa: PLC0415
    from .safe_write import check_target  # noqa: PLC0415
    from .writer import FramesLayout, StorePlan, WholeArray, frames_chunking, item_blocks, write_store  # noqa: PLC0415

    files = [Path(f) for f in files]
    store_path = Path(store_path)
    check_target(store_path, overwrite, files)   # safe overwrite: only a ptyhpc store, never an input
    metas = sorted((read_xray_metadata(f) for f in files), key=lambda m: (m.photon_energy_eV, m.polarisation))
    _check_stack(metas)
    for m in metas:   # plausibility at the door: errors for the impossible, warnings for the unusual
        check_geometry(m.path, radiation="xray", energy_eV=m.photon_energy_eV, wavelength_m=m.wavelength_m,
                       semiangle_rad=m.probe_semiangle_rad, defocus_m=m.defocus_m, distance_m=m.detector_distance_m,
                       reciprocal_sampling_inv_m=m.reciprocal_sampling_inv_m, positions_m=scan_positions(m),
                       scan_step_m=m.scan_step_m)
    ref = metas[0]
    n, n_pos = len(metas), ref.scan_shape[0] * ref.scan_shape[1]
    chunks, shards = frames_chunking(n_pos, ref.detector_shape)
    attrs = {
        "ptyhpc_schema": SCHEMA_VERSION, "kind": ENERGY_STACK, "radiation": "xray", "geometry": _geometry(ref),
        "polarisation": [m.polarisation for m in metas], "detector_distance_m": ref.detector_distance_m,
        "detector_pixel_size_m": list(ref.detector_pixel_size_m),
        "source_files": [str(m.path.resolve()) for m in metas],
    }
    arrays = [
        WholeArray(POSITIONS, np.stack([scan_positions(m) for m in metas]), (n, n_pos, 2),
                   {"axes": ["y", "x"], "units": "m"}),
        WholeArray(TILT_ANGLE, np.array([m.tilt_angle_rad for m in metas]), (n,), {"units": "rad", "axis": "y"}),
        *per_item_arrays([m.photon_energy_eV for m in metas], [m.wavelength_m for m in metas],
                         [m.reciprocal_sampling_inv_m for m in metas]),
    ]

    def check(block, counts):
        if block[0] == 0:
            warn_fractional_counts(metas[0].path, counts)

    plan = StorePlan(attrs=attrs, arrays=arrays, blocks=item_blocks(n, n_pos),
                     frames=FramesLayout((n, n_pos, *ref.detector_shape), ref.dtype, chunks, shards, frames_codecs(),
                                         FRAMES_CONFIG),
                     load=lambda block: read_counts(metas[block[0]].path),   # checks NaN/inf and negative counts
                     check=check)
    return write_store(store_path, plan, overwrite=overwrite, progress=progress)


def _geometry(ref: XrayScanMetadata) -> dict:
    """The root ``geometry`` of an energy stack: item 0's values."""
    geometry = {
        "beam_energy_eV": ref.photon_energy_eV, "wavelength_m": ref.wavelength_m,
        "convergence_semiangle_rad": ref.probe_semiangle_rad, "defocus_m": ref.defocus_m, "Cs_m": 0.0,
        "reciprocal_sampling_inv_m": list(ref.reciprocal_sampling_inv_m), "scan_step_m": ref.scan_step_m,
        "scan_origin_m": list(ref.scan_origin_m), "dose_e_per_m2": None,
    }
    assert tuple(geometry) == GEOMETRY_KEYS
    return geometry


def per_item_arrays(energies_eV, wavelengths_m, reciprocal_sampling_inv_m) -> list:
    """The per-item arrays of an ``energy_stack`` (photon energy, wavelength, reciprocal sampling)."""
    from .writer import WholeArray  # noqa: PLC0415

    n = len(energies_eV)
    return [WholeArray(PHOTON_ENERGY, np.array(energies_eV), (n,), {"units": "eV"}),
            WholeArray(WAVELENGTH, np.array(wavelengths_m), (n,), {"units": "m"}),
            WholeArray(RECIPROCAL_SAMPLING, np.array(reciprocal_sampling_inv_m), (n, 2),
                       {"units": "1/m", "axes": ["y", "x"]})]


def item_geometry(group, item: int) -> dict:
    """The geometry of one item: the root ``geometry`` with per-item values applied.

    For an energy stack ``beam_energy_eV``, ``wavelength_m`` and
    ``reciprocal_sampling_inv_m`` come from the per-item arrays; for a tilt
    series every item has the root geometry.

    Returns
    -------
    dict
        Keys :data:`ptyhpc.io.layout.GEOMETRY_KEYS`, SI.
    """
    from .store import read_geometry  # noqa: PLC0415

    geom = read_geometry(group)
    if group.attrs.get("kind") == ENERGY_STACK:
        geom["beam_energy_eV"] = float(group[PHOTON_ENERGY][item])
        geom["wavelength_m"] = float(group[WAVELENGTH][item])
        geom["reciprocal_sampling_inv_m"] = [float(v) for v in group[RECIPROCAL_SAMPLING][item]]
        optics = group.attrs.get("probe_optics")
        if optics and geom.get("convergence_semiangle_rad") is None:
            from ..physics.xray_optics import ZonePlate  # noqa: PLC0415

            # A zone plate's semi-angle λ/(2Δr) follows the wavelength (the probe's Fourier mask uses it).
            geom["convergence_semiangle_rad"] = ZonePlate.from_dict(optics).numerical_aperture(geom["wavelength_m"])
    return geom


def item_groups(group) -> list[list[int]]:
    """Items in scan order, split into sequences whose neighbours are alike.

    A tilt series is one sequence (increasing angle). An energy stack has one
    sequence per polarisation label, in increasing photon energy: a warm start
    takes its probe from a neighbour in the same sequence.
    """
    n = int(group[FRAMES].shape[0])
    if group.attrs.get("kind") != ENERGY_STACK:
        return [list(range(n))]
    labels = list(group.attrs["polarisation"])
    return [[i for i in range(n) if labels[i] == lab] for lab in dict.fromkeys(labels)]
