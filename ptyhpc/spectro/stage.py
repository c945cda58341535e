"""The spectro stage: a reconstructed energy stack → aligned stack, OD/phase, thickness, dichroism, dose maps.

Results (group ``results/spectro``; every array has ``pixel_size_m`` and
``origin_m`` = (y, x) of pixel [0, 0] in the frame of the probe positions
ingest stores, i.e. minus the CXI/NeXus sample translations, in the frame of
the reference item after alignment; arrays with an energy axis also have
``energy_eV``):

``aligned``          (n_items, H, W) complex64, normalised transmission (|O|² = 1, φ = 0 on I0); items are
                     (energy, polarisation) pairs in store order (attribute ``polarisation``); a single-
                     polarisation stack has one item per energy.
``shifts``           (n_items, 2) float64, px of the common grid: the (y, x) shift applied to each item to
                     register it with ``reference_item`` (a specimen drift of +Δ gives ≈ −Δ/pixel).
``optical_density``  (n_items, H, W) float32, OD = −ln(|O|²/I0).
``phase``            (n_items, H, W) float32, rad, 0 on I0.
``valid``            (H, W) bool, measured and inside every shifted item (fits and PCA use these only).
``i0_mask``          (H, W) bool, the I0 region used.
``thickness``        (n_components, H, W) float32, m, attribute ``components`` (names in the order given),
                     ``fit`` (``"od"`` or ``"od+phase"``); NaN outside ``valid``.
``thickness_od_only``  as ``thickness`` from OD alone, when the joint fit was made.
``residual``         (H, W) float32, RMS misfit of the fit (OD units).
``xmcd``             (n_pairs, H, W) float32, (OD(CR) − OD(CL)) / (OD(CR) + OD(CL)) at ``energy_eV``.
``xld``              (n_pairs, H, W) float32, OD(LV) − OD(LH) at ``energy_eV``.
``clusters``         (H, W) int16, k-means label (−1 outside ``valid``); ``pca_eigenimages`` (n_pc, H, W).
``exposures``        (H, W) uint16, beam discs covering each pixel (attribute ``beam_diameter_m``).
``dose_Gy``          (H, W) float32, Gy, the whole stack's absorbed dose when a density is given
                     (:data:`DOSE_ATTRS`).
``knife_edge_m``, ``laplacian_variance``, ``snr``  (n_items,) float64, per item (:func:`quality.stack_quality`).
``frc``              (3, n_rings) float64: k (1/m), FRC, half-bit threshold of two half-data reconstructions
                     of one item (with ``frc``); attribute ``resolution_m`` (half period).

The group's ``complete`` attribute is written last: a crash leaves a group
without it, and a rerun replaces it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..io import layout, open_store
from .stack import (StackGrid, apply_shift, check_spectro_store, common_grid, find_i0_region, normalise, register,
                    resample_item)

__all__ = ["SPECTRO", "run_spectro", "dichroism_pairs", "beam_diameter"]

SPECTRO = "results/spectro"
CIRCULAR = {"CR": "CR", "C+": "CR", "RCP": "CR", "CL": "CL", "C-": "CL", "LCP": "CL"}
LINEAR = {"LH": "LH", "LV": "LV"}


def _compute(tasks, client, label: str | None = None, progress: bool = False) -> list:
    """Run ``tasks`` (``(fn, args)`` pairs) as dask tasks on ``client`` (or on local threads) and return
    their results in order; with ``progress``, a progress bar counts finished tasks."""
    from concurrent.futures import ThreadPoolExecutor, as_completed  # noqa: PLC0415

    from ..pipeline.ptycho_stage import _progress  # noqa: PLC0415

    tasks = list(tasks)
    out: list = [None] * len(tasks)
    with _progress(progress and label is not None, label or "", len(tasks)) as advance:
        if client is None:
            with ThreadPoolExecutor(max_workers=min(len(tasks), os.cpu_count() or 1) or 1) as pool:
                futures = {pool.submit(fn, *args): k for k, (fn, args) in enumerate(tasks)}
                for fut in as_completed(futures):
                    out[futures[fut]] = fut.result()
                    advance()
        else:
            from distributed import as_completed as dask_completed  # noqa: PLC0415

            futures = [client.submit(fn, *args, pure=False) for fn, args in tasks]
            index = {f.key: k for k, f in enumerate(futures)}
            for fut in dask_completed(futures):
                out[index[fut.key]] = fut.result()
                advance()
    return out


def _resample_task(store_path, item, grid: StackGrid):
    g = open_store(store_path)
    obj = g[layout.PTYCHO_OBJECT]
    px, org = np.asarray(obj.attrs["pixel_size_m"], float), np.asarray(obj.attrs["origin_m"], float)
    if px.ndim == 2:
        px, org = px[item], org[item]
    return resample_item(obj[item], g[layout.PTYCHO_ILLUMINATION][item], px, org, grid)


def beam_diameter(probe, pixel_size_m, power: float = 0.9) -> float:
    """Diameter (m) of the circle about the probe's centre of intensity holding ``power`` of its intensity."""
    p = np.asarray(probe)
    inten = np.abs(p) ** 2 if p.ndim == 2 else (np.abs(p) ** 2).sum(0)
    y, x = np.indices(inten.shape)
    tot = inten.sum()
    cy, cx = (inten * y).sum() / tot, (inten * x).sum() / tot
    r = np.hypot((y - cy) * pixel_size_m[0], (x - cx) * pixel_size_m[1]).ravel()
    order = np.argsort(r)
    cum = np.cumsum(inten.ravel()[order]) / tot
    return float(2 * r[order][np.searchsorted(cum, power)])


def dichroism_pairs(energies, labels, kind: str) -> list[tuple[float, int, int]]:
    """(energy, item of CR/LV, item of CL/LH) for each energy measured with both polarisations of ``kind``.

    Parameters
    ----------
    kind : {"circular", "linear"}

    Raises
    ------
    ValueError
        Polarisations of that kind present but never both at one energy (message lists them).
    """
    table = CIRCULAR if kind == "circular" else LINEAR
    first, second = ("CR", "CL") if kind == "circular" else ("LV", "LH")
    seen: dict = {}
    for i, (e, lab) in enumerate(zip(energies, labels)):
        norm = table.get(str(lab).upper())
        if norm:
            seen.setdefault(round(float(e), 6), {})[norm] = i
    pairs = [(e, d[first], d[second]) for e, d in sorted(seen.items()) if first in d and second in d]
    if seen and not pairs:
        have = {lab: sorted(e for e, d in seen.items() if lab in d) for lab in (first, second)}
        raise ValueError(f"{'XMCD' if kind == 'circular' else 'XLD'} needs {first} and {second} at the same "
                         f"energy; the store has {first} at {have[first]} eV and {second} at {have[second]} eV")
    return pairs


def _image_on_grid(path, group, grid: StackGrid, option: str) -> np.ndarray:
    """A user image (mask or labels, ``.npy``/``.tif``) on item 0's reconstruction grid, resampled
    (nearest) onto the common grid.

    Raises
    ------
    FileNotFoundError, ValueError
        No such file; a shape other than item 0's object grid (``results/ptycho/object``).
    """
    from scipy import ndimage  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: file not found")
    if path.suffix == ".npy":
        img = np.load(path)
    else:
        import tifffile  # noqa: PLC0415

        img = tifffile.imread(path)
    obj = group[layout.PTYCHO_OBJECT]
    if img.shape != tuple(obj.shape[1:]):
        raise ValueError(f"{option} {path}: shape {img.shape}, expected item 0's object grid {tuple(obj.shape[1:])} "
                         "(results/ptycho/object)")
    px, org = np.asarray(obj.attrs["pixel_size_m"], float), np.asarray(obj.attrs["origin_m"], float)
    if px.ndim == 2:
        px, org = px[0], org[0]
    yy = (grid.origin_m[0] + np.arange(grid.shape[0]) * grid.pixel_size_m[0] - org[0]) / px[0]
    xx = (grid.origin_m[1] + np.arange(grid.shape[1]) * grid.pixel_size_m[1] - org[1]) / px[1]
    return ndimage.map_coordinates(img.astype(float), np.meshgrid(yy, xx, indexing="ij"), order=0, cval=0)


def run_spectro(store_path, references: dict | None = None, *, i0_mask=None, clusters: int = 3, regions=None,
                reference_item: int | None = None, lowpass_sigma: float = 1.0, phase_weight: float = 2.0,
                beam_diameter_m: float | None = None, density_kg_m3: float | None = None, frc: bool = False,
                frc_item: int | None = None, frc_engine: str = "lsqml", edge_half_length_px: float = 6.0,
                fit_rows: int | None = None, client=None, figures_dir=None, progress: bool = False) -> dict:
    """Analyse a reconstructed energy stack and write ``results/spectro`` (see the module docstring).

    Parameters
    ----------
    store_path : path
        Energy-stack store whose ptychography is finished.
    references : dict, optional
        ``{name: source}``, source a CSV path or ``xraydb:FORMULA:DENSITY_G_CM3``
        (:mod:`ptyhpc.spectro.references`); order = component order. None: no thickness fit.
    i0_mask : path, optional
        ``.npy``/``.tif`` bool mask on item 0's reconstruction grid; default: found automatically.
    clusters : int
        k-means clusters (0: no PCA/k-means).
    regions : path, optional
        Label image (int, 0 = none) on item 0's grid for region spectra; default: the clusters.
    reference_item : int, optional
        Item the others are registered to; default the item of largest OD contrast.
    lowpass_sigma : float
        Gaussian σ (px) of the low-pass before registration.
    phase_weight : float
        Weight of the phase rows in the joint fit (2: the noise of −φ is about half that of OD for a
        weakly absorbing object, since OD = −2 ln|O|).
    beam_diameter_m : float, optional
        For the exposure map; default the diameter holding 90 % of the reconstructed probe's intensity.
    density_kg_m3 : float, optional
        Specimen density; with references, the stack's total dose map ``dose_Gy`` is written.
    frc : bool
        Fourier ring correlation of two half-data reconstructions of item ``frc_item`` (default the
        reference item): taken from ``results/ptycho_halves`` when the store has them, else
        reconstructed now (two tasks, engine ``frc_engine``, the full reconstruction's iteration
        count; :mod:`ptyhpc.spectro.halves`) and kept there. Writes ``frc`` and ``resolution_m``.
    edge_half_length_px : float
        Half length of the knife-edge line across the strongest edge (:func:`quality.stack_quality`).
    fit_rows : int, optional
        Rows of the aligned stack per fit task (default: blocks of about 64 MB,
        :func:`ptyhpc.spectro.chunked.block_rows`).
    client : distributed.Client, optional
        Per-item steps run as dask tasks on it (default: local threads).
    figures_dir : path, optional
        Where the PNGs and region-spectra CSV go.
    progress : bool
        Progress bars on the per-item and per-block tasks.

    Returns
    -------
    dict
        ``energies_eV``, ``shifts_px``, ``grid``, ``components``, ``fit``, ``residual_rms``, ``residual_rms_od_only``,
        ``n_i0_pixels``, ``xmcd_energies``, ``xld_energies``, ``fit_blocks``, ``knife_edge_m``,
        ``snr``, ``resolution_m`` (with ``frc``), ``figures``, ``seconds``.

    Raises
    ------
    StoreError
        Not an energy stack; ptychography missing or unfinished.
    ValueError
        One energy only; references not covering the energies; XMCD/XLD polarisations not paired;
        bad masks; no I0 region.
    FileNotFoundError
        A reference or mask file missing.
    """
    import functools  # noqa: PLC0415

    from .fit import pca_kmeans  # noqa: PLC0415
    from .references import load_references  # noqa: PLC0415

    t0 = time.perf_counter()
    store_path = str(Path(store_path).resolve())
    group = open_store(store_path, mode="r+")
    meta = check_spectro_store(group, store_path)
    energies, labels = meta["energy_eV"], meta["polarisation"]
    n = len(energies)
    uniq = np.unique(np.round(energies, 6))
    # Everything that can fail on bad input is checked before any work or write.
    refs = load_references(references, uniq) if references else []
    circ = dichroism_pairs(energies, labels, "circular")
    lin = dichroism_pairs(energies, labels, "linear")
    if density_kg_m3 is not None and not refs:
        raise ValueError("the dose map needs the thickness (give --reference files) as well as --density")
    if frc and frc_item is not None and not 0 <= frc_item < n:
        raise ValueError(f"frc_item {frc_item}: the store has items 0-{n - 1}")

    ill = group[layout.PTYCHO_ILLUMINATION]
    grid = common_grid([ill[i] for i in range(n)], meta["pixel_size_m"], meta["origin_m"])
    user_i0 = None if i0_mask is None else _image_on_grid(i0_mask, group, grid, "--i0-mask") > 0.5
    user_regions = None if regions is None else _image_on_grid(regions, group, grid, "--regions").astype(int)

    # 1. per-item resampling onto the common grid (dask tasks).
    out = _compute([(_resample_task, (store_path, i, grid)) for i in range(n)], client, "spectro: resample", progress)
    objs = [o for o, _ in out]
    valids = [v for _, v in out]
    if reference_item is None:
        contrast = [np.std(-np.log(np.maximum(np.abs(o[v]) ** 2, 1e-6))) for o, v in zip(objs, valids)]
        reference_item = int(np.argmax(contrast))
    # 2. registration to the reference item (dask tasks), shifts, crop to the common valid area.
    ref_o, ref_v = objs[reference_item], valids[reference_item]
    reg = functools.partial(register, lowpass_sigma=lowpass_sigma)
    shifts = np.array(_compute([(reg, (ref_o, objs[i], ref_v, valids[i])) if i != reference_item
                                else (np.zeros, (2,)) for i in range(n)], client, "spectro: align", progress))
    moved = _compute([(apply_shift, (objs[i], valids[i], shifts[i])) for i in range(n)], client)
    objs = [o for o, _ in moved]
    valid = np.logical_and.reduce([v for _, v in moved])
    if valid.sum() < 16:
        raise ValueError("after alignment fewer than 16 pixels are valid in every item: the drift is larger "
                         "than the common field of view")
    iy, ix = np.nonzero(valid)
    sl = (slice(iy.min(), iy.max() + 1), slice(ix.min(), ix.max() + 1))
    objs = np.stack([o[sl] for o in objs])
    valid = valid[sl]
    origin = (grid.origin_m[0] + sl[0].start * grid.pixel_size_m[0], grid.origin_m[1] + sl[1].start * grid.pixel_size_m[1])
    if user_i0 is not None:
        from scipy import ndimage  # noqa: PLC0415

        # The mask was drawn on item 0: it moves with item 0's shift.
        i0 = (ndimage.shift(user_i0.astype(float), shifts[0], order=0) > 0.5)[sl] & valid
        if i0.sum() < 4:
            raise ValueError(f"--i0-mask {i0_mask}: fewer than 4 of its pixels lie in the aligned field of view")
    else:
        i0 = find_i0_region(objs, valid)
    if user_regions is not None:
        from scipy import ndimage  # noqa: PLC0415

        user_regions = ndimage.shift(user_regions, shifts[0], order=0)[sl]
    # 3. normalisation on I0, OD and phase.
    aligned = np.stack(_compute([(normalise, (objs[i], i0)) for i in range(n)], client)).astype(np.complex64)
    od = -np.log(np.maximum(np.abs(aligned) ** 2, 1e-12)).astype(np.float32)
    phase = np.angle(aligned).astype(np.float32)
    od[:, ~valid] = np.nan
    phase[:, ~valid] = np.nan
    # Polarisation-averaged stack on the distinct energies (isotropic for a CR/CL or LH/LV pair).
    which = [np.flatnonzero(np.isclose(energies, e, atol=1e-6)) for e in uniq]
    od_e = np.stack([od[w].mean(0) for w in which])
    ph_e = np.stack([phase[w].mean(0) for w in which])

    summary = {"energies_eV": energies.tolist(), "shifts_px": shifts.tolist(), "reference_item": reference_item,
               "grid": {"pixel_size_m": list(grid.pixel_size_m), "origin_m": list(origin), "shape": list(od.shape[1:])},
               "n_i0_pixels": int(i0.sum()), "components": [r.name for r in refs]}
    arrays = {}
    common = {"pixel_size_m": list(grid.pixel_size_m), "origin_m": [float(v) for v in origin]}
    per_item = {**common, "energy_eV": energies.tolist(), "polarisation": labels}
    arrays["aligned"] = (aligned, {**per_item, "axes": ["item", "y", "x"]})
    arrays["shifts"] = (shifts, {"units": "px", "axes": ["item", "yx"], "reference_item": reference_item,
                                 "pixel_size_m": list(grid.pixel_size_m), "origin_m": common["origin_m"]})
    arrays["optical_density"] = (od, {**per_item, "definition": "-ln(|O|^2 / I0)"})
    arrays["phase"] = (phase, {**per_item, "units": "rad"})
    arrays["valid"] = (valid, common)
    arrays["i0_mask"] = (i0, {**common, "source": "given" if user_i0 is not None else "automatic"})

    # The group is replaced now (``complete`` false until the end). The aligned stack goes first, in row
    # blocks that the fit tasks read one at a time (memory bounded by the block, not the stack).
    from .chunked import block_rows, fit_block, prepare_fit_arrays  # noqa: PLC0415

    H, W = valid.shape
    rows = int(fit_rows) if fit_rows else block_rows(W, n)
    res_group = _begin(group)
    _put(res_group, "aligned", *arrays.pop("aligned"), chunks=(n, rows, W))
    _put(res_group, "valid", *arrays.pop("valid"), chunks=(rows, W))
    arrays_valid = valid
    if refs:
        joint = all(r.delta is not None for r in refs)
        summary["fit"] = "od+phase" if joint else "od"
        fit_attrs = {**common, "components": [r.name for r in refs], "units": "m",
                     "references": [r.source for r in refs], "energy_eV": uniq.tolist()}
        prepare_fit_arrays(res_group, len(refs), (H, W), rows, joint=joint,
                           attrs=_jsonable({"thickness": {**fit_attrs, "fit": summary["fit"], "phase_weight": phase_weight},
                                            "thickness_od_only": {**fit_attrs, "fit": "od"}}),
                           residual_attrs=_jsonable({**common, "units": "OD (RMS over the fitted rows)"}))
        blocks = _compute([(fit_block, (store_path, r0, min(r0 + rows, H), refs, uniq, which, joint, phase_weight))
                           for r0 in range(0, H, rows)], client, "spectro: fit", progress)
        npx = max(sum(b["pixels"] for b in blocks), 1)
        summary["residual_rms"] = sum(b["residual_sum"] for b in blocks) / npx
        if joint:
            summary["residual_rms_od_only"] = sum(b["residual_sum_od_only"] for b in blocks) / npx
        summary["fit_blocks"] = {"rows": rows, "n_blocks": len(blocks)}
        # (K, H, W) float32: small next to the stack; the dose map and the figures use it.
        t = np.asarray(res_group["thickness"][...])
        arrays["thickness"] = (t, dict(res_group["thickness"].attrs))
    # Per-item quality (seed 001 Figs. 3, 6): knife edge across the strongest edge, sharpness, SNR.
    from .quality import stack_quality  # noqa: PLC0415

    try:
        q = stack_quality(od, arrays_valid, grid.pixel_size_m, half_length_px=edge_half_length_px)
    except ValueError as err:
        summary["quality_error"] = str(err)
    else:
        qattrs = {**per_item, "knife_edge_line_px": list(q["line"]), "snr_region": "valid pixels (eroded 1 px) in the "
                  "top 10 % of the mean OD", "source": "seed 001 Figs. 3, 6 (ptyhpc.spectro.quality)"}
        arrays["knife_edge_m"] = (q["knife_edge_m"], {**qattrs, "units": "m", "definition": "20-80 % edge width"})
        arrays["laplacian_variance"] = (q["laplacian_variance"], {**qattrs, "definition": "variance of the "
                                                                  "Laplacian of the OD over the valid pixels"})
        arrays["snr"] = (q["snr"], {**qattrs, "definition": "mean / std of the OD in the SNR region"})
        summary["knife_edge_m"] = q["knife_edge_m"].tolist()
        summary["snr"] = q["snr"].tolist()
    if frc:
        summary.update(_frc(store_path, group, meta, frc_item, frc_engine, client, progress, arrays))
    if circ:
        x = np.stack([(od[a] - od[b]) / (od[a] + od[b]) for _, a, b in circ]).astype(np.float32)
        arrays["xmcd"] = (x, {**common, "energy_eV": [e for e, _, _ in circ],
                              "definition": "(OD(CR) - OD(CL)) / (OD(CR) + OD(CL))"})
    if lin:
        x = np.stack([od[a] - od[b] for _, a, b in lin]).astype(np.float32)
        arrays["xld"] = (x, {**common, "energy_eV": [e for e, _, _ in lin], "definition": "OD(LV) - OD(LH)"})
    summary["xmcd_energies"] = [e for e, _, _ in circ]
    summary["xld_energies"] = [e for e, _, _ in lin]
    pca = None
    if clusters:
        pca = pca_kmeans(od_e, valid & np.all(np.isfinite(od_e), 0), n_clusters=clusters)
        arrays["clusters"] = (pca["labels"], {**common, "n_clusters": clusters})
        arrays["pca_eigenimages"] = (pca["eigenimages"], {**common, "explained_variance_ratio":
                                                         pca["explained_variance_ratio"].tolist()})
    # Exposure map from the reference item's positions and beam diameter.
    from .dose import exposure_map  # noqa: PLC0415

    if beam_diameter_m is None:
        beam_diameter_m = beam_diameter(group[layout.PTYCHO_PROBE][reference_item], meta["pixel_size_m"][reference_item])
    pos = np.asarray(group[layout.POSITIONS][reference_item])
    # Aligned frame = reference item's frame; positions there are the stored ones.
    exp_map = exposure_map(pos, beam_diameter_m, grid.pixel_size_m, origin, od.shape[1:])
    arrays["exposures"] = (exp_map, {**common, "beam_diameter_m": beam_diameter_m})
    summary["beam_diameter_m"] = beam_diameter_m
    if density_kg_m3 is not None:
        arrays["dose_Gy"] = (_dose_map(group, arrays["thickness"][0], od, energies, exp_map, beam_diameter_m,
                                       density_kg_m3), {**common, **DOSE_ATTRS, "density_kg_m3": density_kg_m3})
        summary["max_dose_Gy"] = float(np.nanmax(arrays["dose_Gy"][0]))

    _write(res_group, arrays)
    region_labels = user_regions if user_regions is not None else (pca["labels"] + 1 if pca is not None else None)
    if figures_dir is not None:
        from .figures import spectro_figures  # noqa: PLC0415

        summary["figures"] = spectro_figures(Path(figures_dir), arrays, uniq, od_e, ph_e, region_labels, refs)
    summary["seconds"] = time.perf_counter() - t0
    return summary


DOSE_ATTRS = {
    "formula": "sum over items of exposures * N_i E_i (1 - exp(-OD_i)) / (rho t pi (D/2)^2), t = sum of the "
               "fitted thicknesses, N_i = counts per pattern (sum |P|^2 of the reconstructed probe: detected "
               "photons, a lower bound on the incident ones)",
    "source": "Howells et al., J. Electron Spectrosc. Relat. Phenom. 170, 4 (2009); Mille et al. (2022) SI; "
              "seed 001 Fig. 7(f)",
}


def _dose_map(group, thickness, od, energies, exposures, diameter_m, density_kg_m3):
    """Absorbed dose of the whole stack per pixel, Gy (:data:`DOSE_ATTRS`); NaN where no material."""
    from .dose import dose_gray  # noqa: PLC0415

    t = np.nansum(thickness, 0)
    ok = np.isfinite(thickness).all(0) & (t > 0)
    area = np.pi * (diameter_m / 2) ** 2
    probe = group[layout.PTYCHO_PROBE]
    total = np.zeros(t.shape)
    for i, e in enumerate(energies):
        photons = float(np.sum(np.abs(np.asarray(probe[i])) ** 2))
        total[ok] += exposures[ok] * dose_gray(od[i][ok], t[ok], density_kg_m3, photons, float(e), area)
    return np.where(ok, total, np.nan).astype(np.float32)


def _begin(group):
    """Replace ``results/spectro`` by an empty group marked incomplete."""
    if SPECTRO in group:
        del group[SPECTRO]
    res = group.require_group(SPECTRO)
    res.attrs["complete"] = False
    return res


def _put(res, name: str, data, attrs: dict, chunks=None) -> None:
    data = np.asarray(data)
    res.create_array(name, data=data, chunks=chunks or data.shape, attributes=_jsonable(attrs))


def _write(res, arrays: dict) -> None:
    """Write the ``arrays`` not yet in ``res`` (the fit wrote its own), then ``complete``."""
    for name, (data, attrs) in arrays.items():
        if name not in res:
            _put(res, name, data, attrs)
    res.attrs["complete"] = True


def _frc(store_path, group, meta, item, engine, client, progress, arrays) -> dict:
    """FRC of two half-data reconstructions of ``item`` (:mod:`ptyhpc.spectro.halves`) into ``arrays``."""
    from .halves import half_data_objects  # noqa: PLC0415
    from .quality import frc_of_halves  # noqa: PLC0415

    item = int(arrays["shifts"][1]["reference_item"]) if item is None else int(item)
    objects, ill, source = half_data_objects(
        store_path, item, engine=engine,
        compute=lambda tasks: _compute(tasks, client, f"spectro: FRC halves of item {item}", progress))
    lit = np.logical_and.reduce([i >= 0.5 * i.max() for i in ill])
    px = [float(v) for v in meta["pixel_size_m"][item]]
    r = frc_of_halves(objects[0], objects[1], lit, px)
    attrs = {"pixel_size_m": px, "origin_m": [float(v) for v in meta["origin_m"][item]], "item": item,
             "energy_eV": float(meta["energy_eV"][item]), "polarisation": meta["polarisation"][item],
             "rows": ["k_per_m", "frc", "half_bit_threshold"], "resolution_m": r["resolution_m"],
             "halves": source, "split": "even/odd position index", "shift_px": r["shift_px"].tolist(),
             "source": "van Heel & Schatz, J. Struct. Biol. 151, 250 (2005), half-bit; seed 001 Fig. 6"}
    arrays["frc"] = (np.stack([r["k_per_m"], r["frc"], r["threshold"]]), attrs)
    return {"resolution_m": r["resolution_m"], "frc_item": item, "frc_halves": source}


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    if isinstance(d, np.ndarray):
        return d.tolist()
    return d
