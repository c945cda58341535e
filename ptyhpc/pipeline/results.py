"""Result writing: declare a stage's result arrays, write one item, set its status last.

Every result array is crc32c-checksummed (:func:`ptyhpc.io.checksum.result_codecs`). Item results
are written data first and ``status`` last, so a crash in between leaves status 0 and the item is
redone; a whole-array stage (tomography) removes its group's ``complete`` attribute when it starts
and sets it last. Names and attributes are the store contract of :mod:`ptyhpc.io.layout`.
"""

from __future__ import annotations

from ..io import layout, require_result_array
from ..io.checksum import result_codecs
from ..io.energy import ENERGY_STACK
from ..io.store import StoreError
from ..ptycho.options import PtychoOptions
from .item_setup import ObjectGrid, item_grids, resolve_params
from .item_status import check_item_result, check_params_memory, clear_failure, expected_results, prepare_item_status

__all__ = ["prepare_ptycho_results", "write_ptycho_item", "write_array", "start_group", "finish_group"]

#: A whole-array result: crc32c-checked chunks, and every chunk written (an all-zero slab too), so that
#: ``ptyhpc verify`` can tell a deleted chunk from one that was never needed.
CHECKED = {"compressors": result_codecs(), "config": {"write_empty_chunks": True}}


def prepare_ptycho_results(group, params: PtychoOptions, defaults_record: dict | None = None) -> ObjectGrid:
    """Create (or check, on a rerun) the result arrays of the ptycho stage.

    Options not yet ``resolved`` get the data-driven choice first
    (:func:`~ptyhpc.pipeline.item_setup.resolve_params`), so the arrays have its sizes; the choice
    (or ``defaults_record``) is written to the ``defaults_chosen`` attribute of ``results/ptycho``.

    Raises
    ------
    StoreError
        Existing results were made with another grid, iteration count or
        propagation regime.
    """
    if not params.resolved:
        params, defaults_record = resolve_params(group, params)
    grids = item_grids(group, params)
    grid = grids[0]
    prop = dict(grid.extra)
    prop.pop("pixel_size_m", None)   # the object's own pixel_size_m is the one to use
    made = getattr(group.get(layout.PTYCHO), "attrs", {}).get(layout.PROPAGATION_REGIME)
    if made is not None and made != prop["propagation_regime"]:
        raise StoreError(f"{layout.PTYCHO}: made for {made}, the store is now {prop['propagation_regime']}; "
                         "delete results/ptycho to reconstruct again")
    n = group[layout.FRAMES].shape[0]
    H, W = grid.object_shape
    Ny, Nx = grid.fft_shape
    check_params_memory(group, grid, params)   # before any array is created or allocated
    if group.attrs.get("kind") == ENERGY_STACK:
        # One (y, x) pair per item: the pixel follows the wavelength.
        attrs = {"pixel_size_m": [list(g.pixel_size_m) for g in grids], "origin_m": [list(g.origin_m) for g in grids]}
    else:
        attrs = {"pixel_size_m": list(grid.pixel_size_m), "origin_m": list(grid.origin_m)}
    require_result_array(group, layout.PTYCHO_OBJECT, (n, H, W), "complex64", (1, H, W),
                         fill_value=1 + 0j, attrs={**attrs, "axes": ["item", "y", "x"]})
    modes = params.final_probe_modes
    if modes == 1:
        # One mode: (n, Ny, Nx) as before probe modes existed, so existing readers and stores keep working.
        require_result_array(group, layout.PTYCHO_PROBE, (n, Ny, Nx), "complex64", (1, Ny, Nx),
                             attrs={"pixel_size_m": attrs["pixel_size_m"], "centre": "pixel (Ny//2, Nx//2)"})
    else:
        require_result_array(group, layout.PTYCHO_PROBE, (n, modes, Ny, Nx), "complex64", (1, modes, Ny, Nx),
                             attrs={"pixel_size_m": attrs["pixel_size_m"], "centre": "pixel (Ny//2, Nx//2)",
                                    "axes": ["item", "mode", "y", "x"], "n_probe_modes": modes})
    n_pos = group[layout.POSITIONS].shape[1]
    require_result_array(group, layout.PTYCHO_POSITIONS, (n, n_pos, 2), "float64", (1, n_pos, 2),
                         fill_value=float("nan"),
                         attrs={"axes": ["item", "position", "yx"], "units": "m",
                                "refined": params.positions_refined})
    require_result_array(group, layout.PTYCHO_ERROR, (n, params.n_iter), "float32", (1, params.n_iter),
                         attrs={"definition": "sum over measured pixels (|Psi| - sqrt(I))^2 / sum I"})
    require_result_array(group, layout.PTYCHO_ILLUMINATION, (n, H, W), "float32", (1, H, W), attrs=attrs)
    require_result_array(group, layout.PTYCHO_STATUS, (n,), "uint8", (1,))
    prepare_item_status(group)   # failure reasons array; status meaning 0/1/2 (item_status)
    # The regime and its geometry, so that a reader of the results knows the physics behind them;
    # not compared on a rerun (stores with results from before this attribute must still resume),
    # but this function and item_setup.item_grid refuse results prepared for the other regime.
    res = group[layout.PTYCHO]
    res.attrs.update({"fft_shape": list(grid.fft_shape), **attrs, **prop})
    if defaults_record is not None:
        res.attrs["defaults_chosen"] = defaults_record
    group[layout.PTYCHO_OBJECT].attrs[layout.PROPAGATION_REGIME] = prop["propagation_regime"]
    return grid


def write_ptycho_item(group, item: int, result) -> None:
    """Write one item's ptychography result, then set its status to 1 (last).

    Parameters
    ----------
    group : zarr group
        The store, opened ``r+``, results prepared by :func:`prepare_ptycho_results`.
    item : int
    result : ptyhpc.ptycho.engines.PtychoResult

    Raises
    ------
    ItemDataError
        A non-finite result or one of the wrong shape (nothing is written).
    """
    check_item_result(item, expected_results(group, result))   # finite, the right shapes
    # Data first, status last: a crash in between leaves status 0 and the item is redone.
    group[layout.PTYCHO_OBJECT][item] = result.object
    group[layout.PTYCHO_PROBE][item] = result.probe
    group[layout.PTYCHO_ERROR][item] = result.error
    group[layout.PTYCHO_ILLUMINATION][item] = result.illumination
    group[layout.PTYCHO_POSITIONS][item] = result.info["positions_m"]
    clear_failure(group, item)
    group[layout.PTYCHO_STATUS][item] = 1


def write_array(root, name: str, data=None, *, shape=None, dtype="float32", chunks=None, attrs=None):
    """Create (replacing) a checksummed whole-array result ``name``; write ``data`` when given.

    Returns
    -------
    zarr.Array
        With ``attrs`` set after the data.
    """
    if data is not None:
        shape, dtype = data.shape, data.dtype if dtype is None else dtype
    arr = root.create_array(name, shape=shape, dtype=dtype, chunks=chunks or "auto", overwrite=True, **CHECKED)
    if data is not None:
        arr[:] = data
    if attrs:
        arr.attrs.update(attrs)
    return arr


def start_group(root, name: str):
    """Create the stage's result group (or reuse it) and remove its ``complete`` attribute first."""
    grp = root.require_group(name)
    if "complete" in grp.attrs:
        del grp.attrs["complete"]
    return grp


def finish_group(grp) -> None:
    """Mark a whole-array stage's results complete (the last write of the stage)."""
    grp.attrs["complete"] = True
