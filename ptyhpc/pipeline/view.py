"""``ptyhpc view STORE``: the store's OME-Zarr images in napari, or their paths for other viewers."""

from __future__ import annotations

from pathlib import Path

from ..io import StoreError, open_store
from .ome import ome_images, write_ome_phase_stack, write_ome_tomograms

__all__ = ["view_store"]


def _ensure_images(store: Path) -> list[Path]:
    """The store's OME-Zarr images, written first for stores made before they existed."""
    from .lock import run_lock  # noqa: PLC0415

    images = ome_images(store)
    if not images:
        open_store(store)          # refuses a folder that is not a store
        with run_lock(store):      # writes into the store: not while a run holds it
            write_ome_phase_stack(store)
            write_ome_tomograms(store)
        images = ome_images(store)
    if not images:
        raise StoreError(f"{store} has no results to view yet: run `ptyhpc reconstruct {store}` first")
    return images


def view_store(store, print_only: bool = False, echo=print) -> list[Path]:
    """Open the OME-Zarr images of ``store`` in napari when it is installed, else print their paths.

    Each image opens as one layer with its physical scale (``ngff_zarr.from_ngff_zarr``, all
    pyramid levels); the phase stack's items are a slider, not separate layers.

    Returns
    -------
    list of Path
        The images (``STORE/ome/*.ome.zarr``).

    Raises
    ------
    StoreError
        Not a store, or no results yet.
    """
    store = Path(store)
    images = _ensure_images(store)
    try:
        if print_only:
            raise ImportError
        import napari  # noqa: PLC0415
    except ImportError:
        for p in images:
            echo(str(p))
        if not print_only:
            echo("napari is not installed (pip install napari, or the viewer extra: pip install -e '.[viewer]' "
                 "in the ptyhpc folder); open these OME-Zarr images in any NGFF viewer, or in Python:")
            echo(f"    import ngff_zarr; ms = ngff_zarr.from_ngff_zarr('{images[-1]}')")
            echo("    vol = ms.images[0].data.compute(); ms.images[0].scale   # array and voxel size")
        return images
    import ngff_zarr as nz  # noqa: PLC0415

    viewer = napari.Viewer(title=f"ptyhpc: {store}")
    for p in images:
        ms = nz.from_ngff_zarr(str(p))
        im = ms.images[0]
        spatial = [d for d in im.dims if d in "zyx"]
        scale = [im.scale.get(d, 1.0) for d in im.dims]
        translate = [im.translation.get(d, 0.0) for d in im.dims]
        kw = {"multiscale": len(ms.images) > 1, "name": p.name.removesuffix(".ome.zarr"), "scale": scale,
              "translate": translate}
        labels = {"axis_labels": list(im.dims),
                  "units": [im.axes_units.get(d, "pixel") if d in spatial else "pixel" for d in im.dims]}
        try:
            viewer.add_image([level.data for level in ms.images], **kw, **labels)
        except TypeError:   # napari before 0.6 has no axis labels or units on layers
            viewer.add_image([level.data for level in ms.images], **kw)
    napari.run()
    return images
