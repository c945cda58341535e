"""Per-particle exports for crystallography programs: PETS2 (.pts + TIFF), MRC stack, XDS (SMV + XDS.INP), JSON.

Geometry written (see docs/ed3d.md): wavelength, reciprocal pixel size (Å⁻¹/px) or the equivalent
camera length for a nominal 55 µm pixel, rotation axis = detector y (rows) → PETS2 ``omega 90``,
XDS ``ROTATION_AXIS= 0 1 0`` (x = columns, y = rows), oscillation start = first tilt, step = the
mean tilt step, beam centre (col, row) px of the beam-centred patterns. Patterns are written as
uint16 (negative background-subtracted values clipped to 0, counts above 65535 clipped; the number
clipped is in the JSON).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["ExportGeometry", "write_pets", "write_mrc", "read_mrc_geometry", "write_smv_xds", "to_uint16"]

#: Nominal detector pixel (m) used to express the reciprocal sampling as a camera length (Merlin/Medipix3: 55 µm).
NOMINAL_PIXEL_M = 55e-6


@dataclass
class ExportGeometry:
    """What the exports carry (SI, degrees for angles the programs expect in degrees)."""

    wavelength_m: float
    reciprocal_pixel_inv_m: float
    beam_centre_col_px: float
    beam_centre_row_px: float
    osc_start_deg: float
    osc_step_deg: float
    rotation_axis_deg: float = 90.0  # from the detector x (column) axis towards y (rows): the tilt axis is detector y

    @property
    def camera_length_m(self) -> float:
        """Camera length for :data:`NOMINAL_PIXEL_M` pixels: pixel / (λ · Δk)."""
        return NOMINAL_PIXEL_M / (self.wavelength_m * self.reciprocal_pixel_inv_m)


def to_uint16(pattern: np.ndarray) -> tuple[np.ndarray, int]:
    """Rounded, clipped to [0, 65535]; returns the image and the number of pixels clipped above."""
    p = np.rint(np.asarray(pattern, float))
    return np.clip(p, 0, 65535).astype(np.uint16), int((p > 65535).sum())


def write_pets(folder, name: str, patterns: np.ndarray, tilts_deg, geo: ExportGeometry) -> Path:
    """``folder/name.pts`` and ``folder/tiff/NNNNN.tif`` (one uint16 TIFF per tilt, geometry JSON in the description)."""
    import tifffile  # noqa: PLC0415

    folder = Path(folder)
    (folder / "tiff").mkdir(parents=True, exist_ok=True)
    lines = []
    desc = json.dumps(asdict(geo))
    for k, (p, t) in enumerate(zip(patterns, tilts_deg)):
        img, _ = to_uint16(p)
        fn = f"tiff/{k + 1:05d}.tif"
        tifffile.imwrite(folder / fn, img, description=desc, metadata=None)
        lines.append(f"{fn} {float(t):.4f} 0.0000")
    lam_A = geo.wavelength_m * 1e10
    pts = folder / f"{name}.pts"
    pts.write_text("\n".join([
        "# ptyhpc ed3d export (docs/ed3d.md); patterns beam-centred and background-subtracted",
        f"lambda {lam_A:.8f}",
        f"Aperpixel {geo.reciprocal_pixel_inv_m * 1e-10:.8f}",
        "geometry continuous",
        f"omega {geo.rotation_axis_deg:.2f}",
        f"phi {abs(geo.osc_step_deg) / 2:.4f}",
        f"center {geo.beam_centre_col_px:.3f} {geo.beam_centre_row_px:.3f}",
        "bin 1",
        "reflectionsize 6",
        "noiseparameters 3.5 38",
        "",
        "imagelist", *lines, "endimagelist", ""]))
    return pts


def write_mrc(path, patterns: np.ndarray, geo: ExportGeometry) -> Path:
    """float32 MRC stack (n_tilts, det_y, det_x); the geometry as ``key=value`` header labels
    (``voxel_size`` is the reciprocal pixel in Å⁻¹ on x and y and the tilt step in degrees on z)."""
    import mrcfile  # noqa: PLC0415

    path = Path(path)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(patterns, np.float32))
        m.set_image_stack()
        r = geo.reciprocal_pixel_inv_m * 1e-10
        m.voxel_size = (r, r, abs(geo.osc_step_deg))
        labels = [f"ptyhpc ed3d {k}={v!r}" for k, v in asdict(geo).items()]
        m.header.nlabl = len(labels)
        for i, lab in enumerate(labels):
            m.header.label[i] = lab.encode()[:80]
    return path


def read_mrc_geometry(path) -> tuple[np.ndarray, ExportGeometry]:
    """Data and geometry back from :func:`write_mrc` (for checks and tests)."""
    import mrcfile  # noqa: PLC0415

    with mrcfile.open(path, permissive=False) as m:
        data = m.data.copy()
        kv = {}
        for lab in m.header.label[: int(m.header.nlabl)]:
            k, v = lab.decode().removeprefix("ptyhpc ed3d ").split("=", 1)
            kv[k] = float(v)
    return data, ExportGeometry(**kv)


def write_smv_xds(folder, patterns: np.ndarray, geo: ExportGeometry) -> Path:
    """ADSC SMV frames ``smv/NNNNN.img`` (fabio) and an ``XDS.INP`` with the same geometry; returns XDS.INP."""
    import fabio.adscimage  # noqa: PLC0415

    folder = Path(folder)
    (folder / "smv").mkdir(parents=True, exist_ok=True)
    n, ny, nx = patterns.shape
    pix_mm = NOMINAL_PIXEL_M * 1e3
    dist_mm = geo.camera_length_m * 1e3
    lam_A = geo.wavelength_m * 1e10
    for k, p in enumerate(patterns):
        img, _ = to_uint16(p)
        head = {"HEADER_BYTES": "512", "DIM": "2", "BYTE_ORDER": "little_endian", "TYPE": "unsigned_short",
                "SIZE1": str(nx), "SIZE2": str(ny), "PIXEL_SIZE": f"{pix_mm:.6f}", "WAVELENGTH": f"{lam_A:.8f}",
                "DISTANCE": f"{dist_mm:.4f}", "OSC_START": f"{geo.osc_start_deg + k * geo.osc_step_deg:.4f}",
                "OSC_RANGE": f"{geo.osc_step_deg:.4f}", "PHI": f"{geo.osc_start_deg + k * geo.osc_step_deg:.4f}",
                "BEAM_CENTER_X": f"{geo.beam_centre_col_px * pix_mm:.4f}",
                "BEAM_CENTER_Y": f"{geo.beam_centre_row_px * pix_mm:.4f}"}
        fabio.adscimage.AdscImage(data=img, header=head).write(str(folder / "smv" / f"{k + 1:05d}.img"))
    inp = folder / "XDS.INP"
    inp.write_text("\n".join([
        "! ptyhpc ed3d export (docs/ed3d.md): beam-centred, background-subtracted 4D-STEM patterns",
        "JOB= XYCORR INIT COLSPOT IDXREF DEFPIX INTEGRATE CORRECT",
        f"NAME_TEMPLATE_OF_DATA_FRAMES= smv/?????.img SMV",
        f"DATA_RANGE= 1 {n}", f"SPOT_RANGE= 1 {n}", "BACKGROUND_RANGE= 1 1",
        f"NX= {nx} NY= {ny} QX= {pix_mm:.6f} QY= {pix_mm:.6f}",
        f"ORGX= {geo.beam_centre_col_px:.3f} ORGY= {geo.beam_centre_row_px:.3f}",
        f"DETECTOR_DISTANCE= {dist_mm:.4f}",
        f"X-RAY_WAVELENGTH= {lam_A:.8f}",
        f"OSCILLATION_RANGE= {geo.osc_step_deg:.4f}", f"STARTING_ANGLE= {geo.osc_start_deg:.4f}",
        f"ROTATION_AXIS= {np.cos(np.radians(geo.rotation_axis_deg)):.6f} {np.sin(np.radians(geo.rotation_axis_deg)):.6f} 0",
        "INCIDENT_BEAM_DIRECTION= 0 0 1", "FRACTION_OF_POLARIZATION= 0.5", "POLARIZATION_PLANE_NORMAL= 0 1 0",
        "DETECTOR= PILATUS MINIMUM_VALID_PIXEL_VALUE= 0 OVERLOAD= 65535",
        "DIRECTION_OF_DETECTOR_X-AXIS= 1 0 0", "DIRECTION_OF_DETECTOR_Y-AXIS= 0 1 0",
        "SENSOR_THICKNESS= 0.0", "SPACE_GROUP_NUMBER= 0", ""]))
    return inp
