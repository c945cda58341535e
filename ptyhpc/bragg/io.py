"""Bragg data and results in a zarr v3 store, and PNG figures.

Layout (group names relative to the store root)::

    bragg/frames       (J, N1, N2, n3) float32, centred counts (q = 0 at N//2), measured angles
    bragg/mask         (N1, N2, n3) bool, True = valid pixel
    bragg/positions    (J, 3) float64, m, lab-frame beam points on the film
    bragg/probe_guess  (M1, M2) complex64, transverse probe; attr ``spacing_m``
    bragg              attrs: ``geometry`` (BraggGeometry.as_dict), ``film`` (simulation truth, optional)

    results/bragg/object        (S1, S2, S3) complex64, ρ in the reconstruction frame
    results/bragg/amplitude     |ρ| float32
    results/bragg/strain_zz, tilt_x, tilt_y   float32 (strain; rad; rad), NaN outside the crystal
    results/bragg/probe         (M1, M2) complex64
    results/bragg/support       bool;  results/bragg/illumination float32;  results/bragg/error float64
    results/bragg attrs: ``geometry`` (up-sampled), ``origin_voxels`` (reconstruction-frame coordinate of
        voxel [0,0,0]), ``lab_matrix`` (columns r̂1, r̂2, r̂3 in lab), ``voxel_size_m``, ``axes`` =
        ["r1", "r2", "r3"], ``probe_spacing_m``, ``seconds_per_iteration``, ``complete`` (written last).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .geometry import BraggGeometry

__all__ = ["write_dataset", "read_dataset", "write_results", "save_figures"]


def write_dataset(path, ds) -> None:
    """Write a :class:`~ptyhpc.bragg.sim.BraggDataset` (or same-attribute object) to ``path``/bragg."""
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    g = root.require_group("bragg")
    for name, arr in (("frames", ds.data.astype(np.float32)), ("mask", ds.mask.astype(bool)),
                      ("positions", ds.positions_m.astype(np.float64)), ("probe_guess", ds.probe)):
        g.create_array(name, data=np.asarray(arr), overwrite=True)
    g["probe_guess"].attrs["spacing_m"] = list(ds.probe_spacing_m)
    g.attrs["geometry"] = ds.geometry.as_dict()
    film = getattr(ds, "film", None)
    if film is not None:
        g.attrs["film"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(film).items()}


def read_dataset(path) -> dict:
    """Read ``path``/bragg: dict with geometry (BraggGeometry), data, mask, positions, probe, spacing, film.

    Raises
    ------
    KeyError
        The store has no ``bragg`` group or a missing array.
    """
    root = zarr.open_group(str(path), mode="r", zarr_format=3)
    g = root["bragg"]
    gd = dict(g.attrs["geometry"])
    geom = BraggGeometry(gd["wavelength_m"], gd["bragg_angle_rad"], gd["detector_distance_m"],
                         gd["pixel_size_m"], gd["rocking_step_rad"], tuple(gd["shape"]))
    return {"geometry": geom, "data": g["frames"][...], "mask": g["mask"][...], "positions": g["positions"][...],
            "probe": g["probe_guess"][...], "spacing": tuple(g["probe_guess"].attrs["spacing_m"]),
            "film": dict(g.attrs["film"]) if "film" in g.attrs else None}


def write_results(path, result, maps: dict) -> None:
    """Write a :class:`~ptyhpc.bragg.solver.BraggResult` and strain maps to ``results/bragg``.

    ``maps``: ``strain_zz``, ``tilt_x``, ``tilt_y`` arrays on the object grid. ``complete`` is written last.
    """
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    g = root.require_group("results").require_group("bragg")
    g.attrs["complete"] = False
    arrays = {"object": result.obj, "amplitude": np.abs(result.obj).astype(np.float32), "probe": result.probe,
              "support": result.support.astype(bool), "error": np.asarray(result.error, np.float64)}
    if result.illumination is not None:
        arrays["illumination"] = result.illumination
    for k in ("strain_zz", "tilt_x", "tilt_y"):
        arrays[k] = np.asarray(maps[k], dtype=np.float32)
    for name, arr in arrays.items():
        g.create_array(name, data=np.asarray(arr), overwrite=True)
    geo = result.geometry
    g.attrs.update({"geometry": geo.as_dict(), "origin_voxels": list(map(float, result.scan.origin)),
                    "lab_matrix": geo.lab_matrix.tolist(), "voxel_size_m": geo.voxel_size.tolist(),
                    "axes": ["r1", "r2", "r3"], "probe_spacing_m": list(result.probe_spacing_m),
                    "seconds_per_iteration": float(result.seconds_per_iteration)})
    g.attrs["complete"] = True


def save_figures(folder, result, maps: dict, valid=None) -> list[Path]:
    """PNG cross-sections (|ρ|, ε_zz, ω_x, ω_y through the centre of each axis) and an iso-surface view.

    Returns the written paths. The iso-surface is |ρ| (inside ``valid`` when given) at 50 % of
    its 99th percentile (skimage.measure.marching_cubes), drawn in lab coordinates.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    amp = np.abs(result.obj)
    fields = [("|rho|", amp, "viridis"), ("strain_zz", maps["strain_zz"], "coolwarm"),
              ("tilt_x (rad)", maps["tilt_x"], "coolwarm"), ("tilt_y (rad)", maps["tilt_y"], "coolwarm")]
    paths = []
    centre = [s // 2 for s in amp.shape]
    if valid is not None and np.any(valid):
        centre = [int(round(c)) for c in np.argwhere(valid).mean(axis=0)]
    fig, axes = plt.subplots(3, 4, figsize=(14, 10))
    for row, axis in enumerate(range(3)):
        for col, (name, arr, cmap) in enumerate(fields):
            sl = [slice(None)] * 3
            sl[axis] = centre[axis]
            im = axes[row, col].imshow(np.asarray(arr)[tuple(sl)].T, origin="lower", cmap=cmap)
            axes[row, col].set_title(f"{name}, r{axis + 1}={centre[axis]}")
            fig.colorbar(im, ax=axes[row, col], shrink=0.7)
    fig.tight_layout()
    p = folder / "bragg_sections.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    paths.append(p)
    try:
        from skimage.measure import marching_cubes  # noqa: PLC0415

        # weakly illuminated border voxels are barely constrained: draw the crystal where the data are
        vol = amp if valid is None else np.where(valid, amp, 0.0)
        level = 0.5 * float(np.percentile(vol[vol > 0], 99)) if np.any(vol > 0) else 0.5
        verts, faces, _, _ = marching_cubes(vol, level=level)
        lab = result.geometry.r_to_lab(verts + result.scan.origin) * 1e9
        fig = plt.figure(figsize=(6, 6))
        ax = fig.add_subplot(projection="3d")
        ax.plot_trisurf(lab[:, 0], lab[:, 1], faces, lab[:, 2], cmap="viridis", lw=0)
        ax.set_xlabel("x (nm)"), ax.set_ylabel("y (nm)"), ax.set_zlabel("z (nm)")
        p = folder / "bragg_isosurface.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    except (ValueError, RuntimeError):   # flat or empty amplitude: no surface at that level
        pass
    return paths
