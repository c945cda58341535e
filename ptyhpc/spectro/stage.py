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

The group's ``complete`` attribute is written last: a crash leaves a group
without it, and a rerun replaces it.
"""

from __future__ import annotations

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


def _compute(tasks, client):
    """Run dask delayed ``tasks`` on ``client`` (or threads) and return their results in order."""
    import dask  # noqa: PLC0415

    if client is None:
        return list(dask.compute(*tasks, scheduler="threads"))
    return client.gather(client.compute(list(tasks)))


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
                beam_diameter_m: float | None = None, density_kg_m3: float | None = None, client=None,
                figures_dir=None) -> dict:
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
    client : distributed.Client, optional
        Per-item steps run as dask tasks on it (default: local threads).
    figures_dir : path, optional
        Where the PNGs and region-spectra CSV go.

    Returns
    -------
    dict
        ``energies_eV``, ``shifts_px``, ``grid``, ``components``, ``fit``, ``residual_rms``, ``residual_rms_od_only``,
        ``n_i0_pixels``, ``xmcd_energies``, ``xld_energies``, ``figures``, ``seconds``.

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
    import dask  # noqa: PLC0415

    from .fit import fit_thickness, pca_kmeans  # noqa: PLC0415
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

    ill = group[layout.PTYCHO_ILLUMINATION]
    grid = common_grid([ill[i] for i in range(n)], meta["pixel_size_m"], meta["origin_m"])
    user_i0 = None if i0_mask is None else _image_on_grid(i0_mask, group, grid, "--i0-mask") > 0.5
    user_regions = None if regions is None else _image_on_grid(regions, group, grid, "--regions").astype(int)

    # 1. per-item resampling onto the common grid (dask tasks).
    out = _compute([dask.delayed(_resample_task)(store_path, i, grid) for i in range(n)], client)
    objs = [o for o, _ in out]
    valids = [v for _, v in out]
    if reference_item is None:
        contrast = [np.std(-np.log(np.maximum(np.abs(o[v]) ** 2, 1e-6))) for o, v in zip(objs, valids)]
        reference_item = int(np.argmax(contrast))
    # 2. registration to the reference item (dask tasks), shifts, crop to the common valid area.
    ref_o, ref_v = objs[reference_item], valids[reference_item]
    shifts = np.array(_compute([dask.delayed(register)(ref_o, objs[i], ref_v, valids[i], lowpass_sigma=lowpass_sigma)
                                if i != reference_item else dask.delayed(np.zeros)(2) for i in range(n)], client))
    moved = _compute([dask.delayed(apply_shift)(objs[i], valids[i], shifts[i]) for i in range(n)], client)
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
    aligned = np.stack(_compute([dask.delayed(normalise)(objs[i], i0) for i in range(n)], client))
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

    if refs:
        ok = valid & np.all(np.isfinite(od_e), 0)
        t_od, r_od = fit_thickness(od_e, refs, uniq, valid=ok)
        fit_attrs = {**common, "components": [r.name for r in refs], "units": "m",
                     "references": [r.source for r in refs], "energy_eV": uniq.tolist()}
        if all(r.delta is not None for r in refs):
            t, res = fit_thickness(od_e, refs, uniq, phase=ph_e, valid=ok, phase_weight=phase_weight)
            arrays["thickness_od_only"] = (t_od, {**fit_attrs, "fit": "od"})
            summary["fit"] = "od+phase"
            summary["residual_rms_od_only"] = float(np.nanmean(r_od))
        else:
            t, res = t_od, r_od
            summary["fit"] = "od"
        arrays["thickness"] = (t, {**fit_attrs, "fit": summary["fit"], "phase_weight": phase_weight})
        arrays["residual"] = (res, {**common, "units": "OD (RMS over the fitted rows)"})
        summary["residual_rms"] = float(np.nanmean(res))
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
        if "thickness" not in arrays:
            raise ValueError("the dose map needs the thickness (give --reference files) as well as --density")
        arrays["dose_Gy"] = (_dose_map(group, arrays["thickness"][0], od, energies, exp_map, beam_diameter_m,
                                       density_kg_m3), {**common, **DOSE_ATTRS, "density_kg_m3": density_kg_m3})
        summary["max_dose_Gy"] = float(np.nanmax(arrays["dose_Gy"][0]))

    _write(group, arrays)
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


def _write(group, arrays: dict) -> None:
    """Replace ``results/spectro`` with ``arrays``; ``complete`` last."""
    if SPECTRO in group:
        del group[SPECTRO]
    res = group.require_group(SPECTRO)
    res.attrs["complete"] = False
    for name, (data, attrs) in arrays.items():
        data = np.asarray(data)
        res.create_array(name, data=data, chunks=data.shape, attributes=_jsonable(attrs))
    res.attrs["complete"] = True


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
