"""Per-pixel thickness fits as tasks over row blocks of the store (memory bounded by the block).

``results/spectro/aligned`` (n_items, H, W) complex64 is written in row blocks (chunks of
(n_items, rows, W)); each task reads one block, forms OD = −ln|O|² and φ = arg O, averages the
items of each energy (the polarisations of a dichroic pair), fits
(:func:`ptyhpc.spectro.fit.fit_thickness`) and writes its rows of ``thickness``, ``residual`` (and
``thickness_od_only`` for the joint fit). Blocks are aligned with the output chunks, so tasks never
write the same chunk; every pixel is fitted independently, so the maps do not depend on how many
workers run the tasks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_rows", "prepare_fit_arrays", "fit_block"]

SPECTRO = "results/spectro"


def block_rows(width: int, n_items: int, budget_bytes: int = 64 << 20) -> int:
    """Rows per block so that one block's working set (≈ 40 B per item and pixel) fits ``budget_bytes``."""
    return int(max(1, budget_bytes // max(40 * n_items * width, 1)))


def prepare_fit_arrays(res, n_components: int, shape, rows: int, *, joint: bool, attrs: dict, residual_attrs: dict):
    """Create the (NaN-filled) output arrays of the fit in group ``res``, chunked by ``rows`` rows."""
    H, W = shape
    names = ["thickness"] + (["thickness_od_only"] if joint else [])
    for name in names:
        res.create_array(name, shape=(n_components, H, W), dtype="float32", chunks=(n_components, rows, W),
                         fill_value=np.nan, attributes=attrs[name])
    res.create_array("residual", shape=(H, W), dtype="float32", chunks=(rows, W), fill_value=np.nan,
                     attributes=residual_attrs)


def fit_block(store_path: str, r0: int, r1: int, refs, energies_eV, which, joint: bool, phase_weight: float) -> dict:
    """Fit rows ``r0:r1`` of the aligned stack in the store and write them (runs on a worker).

    Parameters
    ----------
    store_path : str
        Store holding ``results/spectro/aligned``, ``valid`` and the arrays of :func:`prepare_fit_arrays`.
    refs : list of Reference
        On ``energies_eV``.
    energies_eV : (n_energies,) float
        Distinct energies.
    which : list of int arrays
        Items of each energy (averaged).
    joint : bool
        Also fit the phase (writes ``thickness_od_only`` as well).

    Returns
    -------
    dict
        ``rows`` (r0, r1), ``pixels`` fitted, ``residual_sum`` and ``residual_sum_od_only`` (sums over them).
    """
    import zarr  # noqa: PLC0415

    from .fit import fit_thickness  # noqa: PLC0415

    res = zarr.open_group(store_path, mode="r+", zarr_format=3)[SPECTRO]
    a = np.asarray(res["aligned"][:, r0:r1, :])
    valid = np.asarray(res["valid"][r0:r1, :], bool)
    od = -np.log(np.maximum(np.abs(a) ** 2, 1e-12)).astype(np.float32)
    ph = np.angle(a).astype(np.float32)
    od_e = np.stack([od[w].mean(0) for w in which])
    ph_e = np.stack([ph[w].mean(0) for w in which])
    ok = valid & np.all(np.isfinite(od_e), 0)
    t_od, r_od = fit_thickness(od_e, refs, energies_eV, valid=ok)
    out = {"rows": (r0, r1), "pixels": int(ok.sum()), "residual_sum_od_only": float(np.nansum(r_od))}
    if joint:
        t, r = fit_thickness(od_e, refs, energies_eV, phase=ph_e, valid=ok, phase_weight=phase_weight)
        res["thickness_od_only"][:, r0:r1, :] = t_od
    else:
        t, r = t_od, r_od
    res["thickness"][:, r0:r1, :] = t
    res["residual"][r0:r1, :] = r
    out["residual_sum"] = float(np.nansum(r))
    return out
