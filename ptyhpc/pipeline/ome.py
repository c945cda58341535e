"""OME-Zarr (NGFF) copies of tomograms and image stacks, for napari and other NGFF viewers.

The store's own arrays keep the result contract (:mod:`ptyhpc.io.layout`); this module adds
viewer-ready copies next to them, inside the store under :data:`OME_GROUP`:

- ``ome/sirt.ome.zarr``, ``ome/fbp.ome.zarr``: the tomograms, axes (z, y, x) = (beam, tilt axis,
  across), float32, values in rad/m, multiscale (halving per level down to 32 px, by averaging),
  scale and translation in physical units (angstrom, nanometer or micrometer by the voxel size);
- ``ome/phase.ome.zarr``: the per-item phase images (c, y, x), one channel per item named by its
  tilt angle or photon energy, float32 rad.

Written through ``ngff-zarr`` (NGFF 0.5 on zarr v3), read back with
``ngff_zarr.from_ngff_zarr``. Blocks go through dask, so large volumes are not loaded whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ..io import layout

__all__ = ["OME_GROUP", "write_ome_tomograms", "write_ome_phase_stack", "ome_images", "ome_unit"]

#: Group of the store that holds the OME-Zarr images.
OME_GROUP = "ome"

# Smallest level kept in the pyramid (pixels along the shortest spatial axis).
_MIN_LEVEL_PX = 32


def ome_unit(size_m: float) -> tuple[str, float]:
    """A UDUNITS length name and the factor from metres for a pixel of ``size_m`` (m).

    Below 1 nm: angstrom; below 1 µm: nanometer; below 1 mm: micrometer; else millimeter.
    """
    for name, factor, below_m in (("angstrom", 1e10, 1e-9), ("nanometer", 1e9, 1e-6), ("micrometer", 1e6, 1e-3)):
        if size_m < below_m:
            return name, factor
    return "millimeter", 1e3


def _scale_factors(shape_spatial) -> list[int]:
    n, f = [], 2
    while min(shape_spatial) // f >= _MIN_LEVEL_PX:
        n.append(f)
        f *= 2
    return n


def _write(path: Path, data, dims, scale_m: dict, origin_m: dict, name: str, channel_names=None) -> Path:
    import dask  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415
    import ngff_zarr as nz  # noqa: PLC0415

    unit, k = ome_unit(min(scale_m.values()))
    img = nz.to_ngff_image(data if isinstance(data, da.Array) else da.asarray(data), dims=list(dims),
                           scale={d: float(v) * k for d, v in scale_m.items()},
                           translation={d: float(v) * k for d, v in origin_m.items()},
                           axes_units={d: unit for d in scale_m}, name=name, channel_names=channel_names)
    spatial = [data.shape[i] for i, d in enumerate(dims) if d in "zyx"]
    # Averaging pyramid (bin shrink): no WebAssembly filter, and the mean keeps the units' meaning.
    ms = nz.to_multiscales(img, scale_factors=_scale_factors(spatial), method=nz.Methods.DASK_BIN_SHRINK)
    if channel_names is not None:   # display windows and the channels' names (item labels)
        ms.metadata.omero = nz.compute_omero_from_multiscales(ms)
    # In this process's threads: ngff-zarr's zarr handles do not pickle, so a dask.distributed
    # client that a stage left as the default scheduler must not receive these tasks.
    with dask.config.set(scheduler="threads"):
        nz.to_ngff_zarr(str(path), ms, version="0.5", overwrite=True)
    return path


def _ome_dir(store_path) -> Path:
    root = zarr.open_group(str(store_path), mode="r+")
    root.require_group(OME_GROUP).attrs["description"] = (
        "OME-Zarr (NGFF 0.5) copies of results for viewers; each child *.ome.zarr is one image")
    return Path(store_path) / OME_GROUP


def write_ome_tomograms(store_path) -> list[Path]:
    """Write ``results/tomo/sirt`` and ``fbp`` as OME-Zarr images inside the store.

    Parameters
    ----------
    store_path : path
        A store whose tomography is complete (arrays (ny, nz, nx) float32 with ``voxel_size_m``
        and ``origin_m`` (y, z, x) attributes).

    Returns
    -------
    list of Path
        The images written, ``STORE/ome/{sirt,fbp}.ome.zarr``; axes (z, y, x).
    """
    import dask.array as da  # noqa: PLC0415

    root = zarr.open_group(str(store_path), mode="r")
    out = []
    for name in ("sirt", "fbp"):
        key = f"{layout.TOMO}/{name}"
        if not isinstance(root.get(key), zarr.Array):
            continue
        arr = root[key]
        vox = float(np.atleast_1d(arr.attrs["voxel_size_m"])[0])
        oy, oz, ox = (float(v) for v in arr.attrs.get("origin_m", (0.0, 0.0, 0.0)))
        vol = da.from_zarr(arr).transpose(1, 0, 2)        # (y, z, x) -> NGFF (z, y, x)
        out.append(_write(_ome_dir(store_path) / f"{name}.ome.zarr", vol, ("z", "y", "x"),
                          {"z": vox, "y": vox, "x": vox}, {"z": oz, "y": oy, "x": ox}, name))
    return out


def write_ome_phase_stack(store_path) -> Path | None:
    """Write the per-item phase images (tilt series or energy stack) as one OME-Zarr image.

    Items become channels (c, y, x) named ``"-60.0 deg"`` or ``"708.0 eV"``. An energy stack's pixel
    changes with the energy; the image takes the first item's pixel (the channels are not resampled).

    Returns
    -------
    Path or None
        ``STORE/ome/phase.ome.zarr``; None when the store has no finished ptychography.
    """
    import dask.array as da  # noqa: PLC0415

    from ..io.energy import ENERGY_STACK, PHOTON_ENERGY  # noqa: PLC0415

    root = zarr.open_group(str(store_path), mode="r")
    if not isinstance(root.get(layout.PTYCHO_OBJECT), zarr.Array):
        return None
    obj = root[layout.PTYCHO_OBJECT]
    px = np.asarray(obj.attrs["pixel_size_m"], dtype=float)
    origin = np.asarray(obj.attrs["origin_m"], dtype=float)
    if px.ndim == 2:      # energy stack: one (y, x) pair per item
        px, origin = px[0], origin[0]
    px = np.broadcast_to(px, (2,))
    if root.attrs.get("kind") == ENERGY_STACK:
        names = [f"{float(e):.1f} eV" for e in root[PHOTON_ENERGY][...]]
    else:
        names = [f"{np.degrees(float(a)):.1f} deg" for a in root[layout.TILT_ANGLE][...]]
    phase = da.angle(da.from_zarr(obj)).astype(np.float32)
    return _write(_ome_dir(store_path) / "phase.ome.zarr", phase, ("c", "y", "x"),
                  {"y": px[0], "x": px[1]}, {"y": origin[0], "x": origin[1]}, "phase", channel_names=names)


def ome_images(store_path) -> list[Path]:
    """The OME-Zarr images of a store (``STORE/ome/*.ome.zarr``), sorted; empty when none."""
    d = Path(store_path) / OME_GROUP
    return sorted(p for p in d.glob("*.ome.zarr") if p.is_dir()) if d.is_dir() else []
