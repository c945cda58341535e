"""The 4D-STEM stage: one map-reduce pass per item, then CoM/DPC/iCOM, SSB, dose, drift; results and figures.

Results (``results/stem/<name>``, (n_items, scan_y, scan_x) float32, layout in
:mod:`ptyhpc.io.layout`): ``bf``, ``abf``, ``adf`` (counts), ``com_y``,
``com_x`` (detector px, detector frame, relative to the BF centre), ``dpc_y``,
``dpc_x`` (rad, scan frame, descan removed), ``icom``, ``ssb`` and ``parallax`` (rad), ``tcbf``
(tilt-corrected BF, relative contrast; the defocus fit in the group attribute ``parallax_fit``),
``dose`` (e/m²); ``vd_sum``/``vd_max`` (n_items, det_y, det_x) virtual
diffraction; ``drift`` (n_items, 2) scan px and ``<image>_drift_sum`` for
multi-item stores. ``results/stem/status`` (n_items,) uint8 is written per item
after its arrays, so a rerun skips finished items and a crash leaves no
item that looks done. The scan rotation and transpose are a property of the
microscope set-up: found once (item 0, unless the store or the user gives
them) and used for every item.
"""

from __future__ import annotations

import math
import time
from os import PathLike
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from ..io.layout import STEM, STEM_STATUS
from .mapreduce import run_analyses, stem_context

__all__ = ["StemOptions", "run_stem", "IMAGE_NAMES"]

IMAGE_NAMES = ("bf", "abf", "adf", "com_y", "com_x", "dpc_y", "dpc_x", "icom", "ssb", "dose")


class StemOptions(BaseModel):
    """Settings of the 4D-STEM stage (``ptyhpc stem`` flags, recipe ``stem:`` section)."""

    model_config = ConfigDict(extra="forbid")

    virtual: list[str] = ["bf", "abf", "adf"]
    com: bool = True
    icom: bool = True
    ssb: bool = False
    parallax: bool = False
    drift: bool = False
    drift_max_shift_px: float | None = None  # crystals: below half the lattice period (see lowdose.measure_drift)
    adf_inner: float = 1.5            # ADF inner radius in BF radii
    com_mask_radius: float | None = None  # CoM only inside this many BF radii (None: whole detector)
    com_threshold: float | None = None    # counts; pixels below are zeroed before the CoM
    scan_rotation_rad: float | None = None  # None: the store's, else found (minimum curl)
    transpose: bool | None = None
    backend: str = "numpy"

    @field_validator("virtual", mode="before")
    @classmethod
    def _split(cls, v):
        v = [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
        unknown = sorted(set(v) - {"bf", "abf", "adf"})
        if unknown:
            raise ValueError(f"unknown virtual detector(s) {unknown}; use bf, abf, adf")
        return v

    def result_settings(self) -> dict:
        """What changes the result arrays (compared on rerun)."""
        return {"adf_inner": self.adf_inner, "com_mask_radius": self.com_mask_radius,
                "com_threshold": self.com_threshold, "products": sorted(self.virtual) + [
                    n for n in ("com", "icom", "ssb", "parallax") if getattr(self, n)]}


def _rotation(opts, ctx, com_y, com_x, adf, step):
    from .com import find_rotation  # noqa: PLC0415

    theta = opts.scan_rotation_rad if opts.scan_rotation_rad is not None else ctx.stem.get("scan_rotation_rad")
    tr = opts.transpose if opts.transpose is not None else ctx.stem.get("detector_transpose")
    if theta is not None and tr is not None:
        return float(theta), bool(tr), "given"
    fit = find_rotation(com_y, com_x, step, adf=adf)
    return fit.scan_rotation_rad, fit.transpose, (f"minimum curl (curl fraction {fit.curl:.3f}, other parity "
                                                  f"{fit.curl_other_parity:.3f}; branch score {fit.branch_score:.2f})")


def run_stem(store: str | PathLike, options: StemOptions | dict | None = None, *, client=None,
             figures_dir: str | PathLike | None = None, progress: bool = True) -> dict:
    """Run the 4D-STEM stage on every pending item of a store.

    Parameters
    ----------
    store : path-like
        A 4D-STEM store (:func:`ptyhpc.stem.ingest.ingest_stem`).
    options : StemOptions or dict
    client : distributed.Client, optional
        Partitions run as dask tasks on it (None: in this process).
    figures_dir : path-like, optional
        PNG figures written here.
    progress : bool

    Returns
    -------
    dict
        ``done`` and ``skipped`` items, ``scan_rotation_rad``, ``transpose``,
        ``rotation_source``, ``seconds``, ``figures``.

    Raises
    ------
    StoreError
        Not a 4D-STEM store; results of other settings already in the store.
    ValueError
        Unknown virtual detector; the BF disk disagrees with the calibration.
    """
    from ..io.store import open_store, require_result_array  # noqa: PLC0415
    from .com import dpc, icom, remove_descan, to_scan_frame  # noqa: PLC0415
    from .ssb import bf_pixels, pixel_frequencies, ssb_phase  # noqa: PLC0415
    from .virtual import (CentreOfMass, PixelStack, VirtualDetectors, VirtualDiffraction,  # noqa: PLC0415
                          annular_mask, find_bf_disk, sample_mean_pattern, standard_masks)

    t0 = time.perf_counter()
    opts = options if isinstance(options, StemOptions) else StemOptions(**(options or {}))
    store = Path(store)
    group = open_store(store, "r+")
    ctx = stem_context(group)
    geo = ctx.geometry
    n_items = int(group["frames"].shape[0])
    sy, sx = ctx.scan_shape
    step = tuple(ctx.stem.get("scan_step_m", [geo["scan_step_m"]] * 2))
    dk = tuple(geo["reciprocal_sampling_inv_m"])
    lam = geo["wavelength_m"]
    names = list(opts.virtual)
    if opts.com:
        names += ["com_y", "com_x", "dpc_y", "dpc_x"] + (["icom"] if opts.icom else [])
    if opts.ssb:
        names.append("ssb")
    if opts.parallax:
        names += ["parallax", "tcbf"]
    names.append("dose")
    settings = opts.result_settings()
    status = require_result_array(group, STEM_STATUS, (n_items,), np.uint8, (n_items,), attrs={"settings": settings})
    done_before = np.asarray(status[...])
    theta = tr = None
    source = None
    if "scan_rotation_rad" in group[STEM].attrs and (done_before == 1).any():
        theta, tr = group[STEM].attrs["scan_rotation_rad"], group[STEM].attrs["transpose"]
        source = group[STEM].attrs.get("rotation_source", "earlier run")
    done, skipped = [], []
    det0 = None
    for item in range(n_items):
        if done_before[item] == 1:
            skipped.append(item)
            continue
        det = find_bf_disk(sample_mean_pattern(group, item), geo)
        det0 = det0 or det
        masks = standard_masks(ctx.detector_shape, det, names=[n for n in opts.virtual], adf_inner=opts.adf_inner)
        if opts.com and "adf" not in masks:
            masks["adf"] = standard_masks(ctx.detector_shape, det, names=["adf"], adf_inner=opts.adf_inner)["adf"]
        com_mask = (None if opts.com_mask_radius is None else
                    annular_mask(ctx.detector_shape, det.centre, 0, opts.com_mask_radius * det.bf_radius_px))
        analyses = [VirtualDetectors(masks), CentreOfMass(det.centre, com_mask, opts.com_threshold),
                    VirtualDiffraction()]
        want_pix = opts.ssb or opts.parallax
        pix = bf_pixels(ctx.detector_shape, det.centre, det.bf_radius_px) if want_pix else None
        if want_pix and not opts.com:
            analyses.append(PixelStack(pix))
        res = run_analyses(store, analyses, item=item, client=client, backend=opts.backend, progress=progress)
        images = {n: res[0][n] for n in opts.virtual}
        total = res[1]["total"]
        images["dose"] = total / ctx.stem.get("counts_per_electron", 1.0) / (step[0] * step[1])
        extra = {"vd_sum": res[2]["sum"], "vd_max": res[2]["max"]}
        descan = None
        if opts.com:
            cy, cx = res[1]["com_y"], res[1]["com_x"]
            images["com_y"], images["com_x"] = cy, cx
            ry, rx, descan = remove_descan(cy, cx, weights=total)
            if theta is None:
                theta, tr, source = _rotation(opts, ctx, ry, rx, res[0]["adf"], step)
            ky, kx = to_scan_frame(ry, rx, theta, tr)
            ky, kx = ky * dk[0], kx * dk[1]
            images["dpc_y"], images["dpc_x"] = dpc(ky, kx, lam)
            if opts.icom:
                images["icom"] = icom(ky, kx, step)
        parallax_info = None
        if want_pix:
            if theta is None:
                raise ValueError("SSB and parallax need the scan rotation: give --scan-rotation-deg and "
                                 "--transpose/--no-transpose or run with --com")
            if opts.com:
                # Second pass: the BF pixels sampled where the descan moved the disk (known from the CoM now).
                stack = run_analyses(store, [PixelStack(pix, descan)], item=item, client=client, backend=opts.backend,
                                     progress=progress)[0]["pixels"]
            else:
                stack = res[3]["pixels"]
            k = pixel_frequencies(pix, ctx.detector_shape, det.centre, dk, theta, tr)
            if opts.ssb:
                images["ssb"] = ssb_phase(stack, k, wavelength_m=lam, semiangle_rad=geo["convergence_semiangle_rad"],
                                          step_m=step, defocus_m=geo.get("defocus_m") or 0.0)
            if opts.parallax:
                from .parallax import parallax  # noqa: PLC0415

                # Pixels well inside the disk: the edge pixels' images carry little parallax contrast.
                inner = np.hypot(*[(np.unravel_index(pix, ctx.detector_shape)[j] - det.centre[j]) for j in (0, 1)])
                keep = inner <= det.bf_radius_px - 1
                cell = max(1.0, det.bf_radius_px / 5) * float(np.mean(dk))  # ~80 cells over the disk
                px = parallax(stack[..., keep], (k[0][keep], k[1][keep]), wavelength_m=lam, step_m=step,
                              semiangle_rad=geo["convergence_semiangle_rad"],
                              group_inv_m=cell)
                images["parallax"], images["tcbf"] = px.phase, px.tcbf
                parallax_info = {"defocus_m": px.defocus_m, "shift_matrix_m2": px.shift_matrix.tolist()}
        attrs = {"pixel_size_m": list(step), "origin_m": [0.0, 0.0], "axes": ["item", "y", "x"]}
        for name in names:
            arr = require_result_array(group, f"{STEM}/{name}", (n_items, sy, sx), np.float32, (1, sy, sx),
                                       attrs={**attrs, "settings": settings})
            arr[item] = np.asarray(images[name], np.float32)
            arr.attrs.update({"scan_rotation_rad": None if theta is None else float(theta),
                              "transpose": None if tr is None else bool(tr), "detector": det.as_attrs(),
                              "units": _UNITS.get(name, "counts")})
        for name, v in extra.items():
            arr = require_result_array(group, f"{STEM}/{name}", (n_items, *ctx.detector_shape), np.float32,
                                       (1, *ctx.detector_shape), attrs={"axes": ["item", "det_y", "det_x"]})
            arr[item] = v.astype(np.float32)
        if descan is not None:
            plane = require_result_array(group, f"{STEM}/descan_plane", (n_items, 2, 3), np.float64, (n_items, 2, 3),
                                         attrs={"meaning": "com_y, com_x = a + b*row + c*col (px, px/step)"})
            plane[item] = descan
        if parallax_info is not None:
            fits = dict(group[STEM].attrs.get("parallax_fit", {}))
            fits[str(item)] = parallax_info
            group[STEM].attrs["parallax_fit"] = fits
        group[STEM].attrs.update({"scan_rotation_rad": None if theta is None else float(theta),
                                  "transpose": None if tr is None else bool(tr), "rotation_source": source,
                                  "detector": det.as_attrs()})
        status[item] = 1
        done.append(item)
    out = {"done": done, "skipped": skipped, "scan_rotation_rad": theta, "transpose": tr, "rotation_source": source}
    if opts.drift and n_items > 1 and (np.asarray(status[...]) == 1).all():
        out["drift"] = _drift(group, names, opts.drift_max_shift_px)
    if figures_dir is not None:
        from .figures import stem_figures  # noqa: PLC0415

        out["figures"] = [str(p) for p in stem_figures(group, figures_dir)]
    out["seconds"] = time.perf_counter() - t0
    return out


_UNITS = {"com_y": "px", "com_x": "px", "dpc_y": "rad", "dpc_x": "rad", "icom": "rad", "ssb": "rad", "dose": "e/m^2",
          "parallax": "rad", "tcbf": "relative contrast"}


def _drift(group, names, max_shift_px=None) -> dict:
    """Drift of a multi-item store from its ADF (else BF, else iCOM) images; drift-corrected sums."""
    from ..io.store import require_result_array  # noqa: PLC0415
    from .lowdose import drift_corrected_sum, measure_drift  # noqa: PLC0415

    ref = next(n for n in ("adf", "bf", "icom", names[0]) if n in names)
    stack = np.asarray(group[f"{STEM}/{ref}"][...], np.float64)
    shifts = measure_drift(stack, max_shift_px=max_shift_px)
    arr = require_result_array(group, f"{STEM}/drift", shifts.shape, np.float64, shifts.shape,
                               attrs={"axes": ["item", "yx"], "units": "scan px", "measured_on": ref})
    arr[...] = shifts
    for n in names:
        s = drift_corrected_sum(np.asarray(group[f"{STEM}/{n}"][...], np.float64), shifts)
        a = require_result_array(group, f"{STEM}/{n}_drift_sum", s.shape, np.float32, s.shape)
        a[...] = s.astype(np.float32)
    return {"measured_on": ref, "shifts_px": shifts.tolist()}
