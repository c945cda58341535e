"""The tomography stage of the pipeline: ptycho phases in the store → tomograms in the store.

Reads ``results/ptycho/*`` and ``tilt_angle``, writes ``results/tomo/*``
(names in :mod:`ptyhpc.io.layout`). See :func:`run_tomo`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import zarr

from pydantic import ValidationError

from ..io.store import open_results_store
from ..io.verify import check_consumed_items
from ..pipeline.item_status import failure_reasons
from ..pipeline.results import finish_group, start_group, write_array
from ..ptycho.options import error_lines
from ..io.layout import (PTYCHO_ILLUMINATION, PTYCHO_OBJECT, PTYCHO_STATUS, TILT_ANGLE, TOMO, TOMO_FBP,
                         TOMO_PROJECTIONS, TOMO_SHIFTS, TOMO_SIRT)
from .align import (apply_shifts, consistency_residual, find_center, projection_matching,
                    remove_offset_ramp, vertical_alignment)
from .parallel import DEFAULT_SLAB_SIZE, reconstruct_slabs
from .options import TomoOptions
from .preprocess import amplitude_projections, phase_projections

__all__ = ["run_tomo", "tomo_options", "illuminated_box", "TomoInputError", "TomoOptions", "TOMO_PROJECTIONS"]

_ANGSTROM = 1e-10


class TomoInputError(ValueError):
    """The ptycho results in the store cannot be used for tomography (missing or inconsistent)."""


def illuminated_box(illumination, threshold: float = 0.1) -> tuple[int, int, int, int]:
    """Largest-ish box illuminated above ``threshold`` × max in every item.

    Parameters
    ----------
    illumination : array_like of float, shape (n_items, H, W)
        Summed probe intensity per item.
    threshold : float
        Fraction of each item's maximum.

    Returns
    -------
    (r0, r1, c0, c1) : tuple of int
        Rows ``r0:r1`` and columns ``c0:c1`` where every pixel is above the
        threshold in every item (bounding box of the common region, trimmed
        greedily at the edge with the largest share of dark pixels).

    Raises
    ------
    TomoInputError
        No pixel is illuminated in all items.
    """
    ill = np.asarray(illumination, dtype=np.float64)
    if ill.ndim == 2:
        ill = ill[None]
    good = np.all(ill > threshold * ill.max(axis=(1, 2), keepdims=True), axis=0)
    if not good.any():
        raise TomoInputError("no object pixel is illuminated above the threshold in every item")
    rows, cols = np.flatnonzero(good.any(axis=1)), np.flatnonzero(good.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    while not good[r0:r1, c0:c1].all():
        dark = ~good[r0:r1, c0:c1]
        edge = int(np.argmax([dark[0].mean(), dark[-1].mean(), dark[:, 0].mean(), dark[:, -1].mean()]))
        if edge == 0:
            r0 += 1
        elif edge == 1:
            r1 -= 1
        elif edge == 2:
            c0 += 1
        else:
            c1 -= 1
    return int(r0), int(r1), int(c0), int(c1)


def _pixel_size(attrs) -> float:
    px = np.atleast_1d(np.asarray(attrs["pixel_size_m"], dtype=np.float64))
    if px.size not in (1, 2) or not np.all(px > 0):
        raise TomoInputError(f"pixel_size_m must be a positive scalar or (dy, dx), got {attrs['pixel_size_m']!r}")
    if px.size == 2 and not np.isclose(px[0], px[1], rtol=1e-6):
        raise TomoInputError(f"tomography needs square object pixels, got pixel_size_m = {px.tolist()}")
    return float(px[0])


def _read(arr, sel, store_path):
    """``arr[sel]``; a damaged chunk (crc32c mismatch, undecodable) becomes a TomoInputError naming the array."""
    try:
        return np.asarray(arr[sel])
    except ValueError as exc:
        raise TomoInputError(f"{store_path}: {arr.path}: damaged chunk ({exc}); run ptyhpc verify {store_path} "
                             "--repair, then reconstruct and tomo again") from exc


def _phase(obj: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Phase of each item (global phase removed), unwrapped where it may wrap."""
    return phase_projections(obj, unwrap="auto")


def _say(progress, msg: str) -> None:
    if callable(progress):
        progress(msg)
    elif progress:
        print(f"[tomo] {msg}", file=sys.stderr, flush=True)


def run_tomo(store_path: str | PathLike, options: TomoOptions | None = None, *, client=None,
             figures_dir: str | PathLike | None = None, progress=True, **settings) -> dict:
    """Tomography stage: align the ptycho phase projections and reconstruct (FBP and SIRT).

    Parameters
    ----------
    store_path : str or path-like
        ptyhpc zarr v3 store with ``results/ptycho/object`` (n_items, H, W)
        complex64 (attributes ``pixel_size_m``, ``origin_m`` = scan-frame (y, x)
        of pixel [0, 0]), ``results/ptycho/status`` (all 1), ``tilt_angle``
        (n_items,) rad and optionally ``results/ptycho/illumination``
        (n_items, H, W) float32.
    options : TomoOptions, optional
        The stage's settings (:class:`ptyhpc.tomo.options.TomoOptions`:
        ``n_iter``, ``nonneg``, ``align``, ``projection_match``,
        ``align_iter``, ``max_shift_px``, ``center_method``,
        ``rotation_axis_x_m``, ``channel``, ``background``, ``border_px``,
        ``illumination_threshold``, ``filter_name``, ``slab_size``).
    client : distributed.Client, optional
        Reconstruct slab-parallel on this client (also used by projection
        matching); None runs in this process.
    figures_dir : str or path-like, optional
        Where to write ``tomo_orthoslices.png``, ``tomo_projection_y.png`` and
        ``tomo_sinogram.png``; created if needed. None writes no figures.
    progress : bool or callable
        True prints stage messages to stderr; a callable receives each message.
    **settings
        Fields of :class:`TomoOptions` given one by one (they override ``options``).

    Returns
    -------
    dict
        ``center_px`` (rotation-axis column in the cropped field),
        ``rotation_axis_x_m``, ``shifts_px`` (n_items, 2) (y, x),
        ``crop`` (r0, r1, c0, c1) in object pixels, ``shape`` (ny, nz, nx),
        ``voxel_size_m``, ``origin_m`` (y0, z0, x0), ``unwrapped_items``,
        ``figures`` (paths), ``timings_s`` (per step).

    Raises
    ------
    TomoInputError
        Missing arrays or attributes, items without a finished ptycho
        result (named in the message), inconsistent shapes, non-square
        pixels, fewer than 3 items or nothing illuminated in common.
    StoreError
        Not a ptyhpc store (:func:`ptyhpc.io.open_store`).
    ValueError
        A bad setting (naming it; checked before anything is read), or a
        ``border_px`` that does not fit the field.

    Notes
    -----
    Writes ``results/tomo/projections`` (n_items, ny, nx) float32 (the
    aligned projections; the reconstruction tasks read their own rows of it),
    ``results/tomo/sirt`` and ``results/tomo/fbp`` (ny, nz, nx) float32
    in rad/m (1/m for the amplitude channel), each task writing its own
    slab, attributes ``axes = ["y", "z", "x"]``, ``voxel_size_m``,
    ``origin_m`` = (y0, z0, x0) of voxel [0, 0, 0] (y, x in the scan frame of
    the ptycho object, z from the rotation axis), ``rotation_axis_x_m``,
    ``units``, ``channel``; ``results/tomo/shifts`` (n_items, 2) float64 object
    pixels (y, x), applied with ``scipy.ndimage.shift``; group attributes
    ``center_px``, ``rotation_axis_x_m``, ``crop``, and ``complete = True``
    last (removed first when the stage starts).

    The volume grid is ``n × n`` per slice, ``n`` the cropped width, centred
    on the rotation axis, with the object pixel size. The tilt series is
    kept in item order.

    Projection matching's shifts are kept only if they make the row-summed
    sinogram more consistent (smaller non-negative SIRT reprojection
    residual) than the unshifted data: ptychographic projections are already
    registered in the scan frame, and matching must not trade that for a
    worse fit.
    """
    opts = tomo_options(options, settings)
    timings: dict[str, float] = {}
    lap = _stopwatch(timings)
    root = open_results_store(store_path, mode="r+")   # the checked path: schema, complete ingest
    tomo = start_group(root, TOMO)
    inp = _read_input(root, Path(store_path), opts.illumination_threshold)
    _say(progress, f"{inp.n_items} items, field {inp.field} px cropped from {inp.full}, "
                   f"pixel {inp.px / _ANGSTROM:.3f} Å")
    lap("read")
    phase, unwrapped = _preprocess(inp.obj, opts, progress)
    lap("preprocess")
    work, shifts, center = _align(phase, inp, opts, client, progress, lap)
    vols, origin_vol, axis_x = _write_results(root, work, shifts, center, inp, opts, client, progress, lap)
    tomo.attrs.update({"center_px": float(center), "rotation_axis_x_m": float(axis_x),
                       "crop": list(inp.crop), "aligned": bool(opts.align)})
    lap("write")
    figures = []
    if figures_dir is not None:
        figures = _figures(Path(figures_dir), vols["sirt"], inp.px, origin_vol, inp.angles, phase, work,
                           opts.channel)
        lap("figures")
    finish_group(tomo)
    timings["total"] = sum(timings.values())
    _say(progress, f"done in {timings['total']:.1f} s")
    n_rows, n_cols = work.shape[1:]
    return {"center_px": float(center), "rotation_axis_x_m": float(axis_x), "shifts_px": shifts,
            "crop": inp.crop, "shape": (n_rows, n_cols, n_cols), "voxel_size_m": inp.px,
            "origin_m": tuple(origin_vol), "unwrapped_items": unwrapped, "figures": figures, "timings_s": timings}


def tomo_options(options: TomoOptions | None, settings: dict) -> TomoOptions:
    """``options`` with ``settings`` applied, validated; ValueError naming the bad key.

    Raises
    ------
    ValueError
        ``key: must be >= 1 (got 0)``-style lines, one per bad setting.
    """
    base = {} if options is None else options.model_dump()
    try:
        return TomoOptions(**{**base, **settings})
    except ValidationError as exc:
        raise ValueError("; ".join(error_lines(exc, "tomo", TomoOptions))) from None


def _stopwatch(timings: dict):
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[name] = now - tick
        tick = now
    return lap


@dataclass
class _Input:
    """The cropped ptycho objects and what the stage needs to know about them."""

    obj: np.ndarray          # (n_items, rows, cols) complex, cropped
    angles: np.ndarray       # (n_items,) rad
    px: float                # object pixel, m
    y0: float                # scan-frame y of the cropped field's pixel [0, 0], m
    x0: float
    crop: tuple              # (r0, r1, c0, c1) object pixels
    full: str                # "H×W" of the uncropped objects (for messages)

    @property
    def n_items(self) -> int:
        return self.obj.shape[0]

    @property
    def field(self) -> str:
        return f"{self.obj.shape[1]}×{self.obj.shape[2]}"


def _read_input(root, store_path: Path, illumination_threshold: float) -> _Input:
    """Check the ptycho results every item must have, and read the illuminated box of each object."""
    for name in (PTYCHO_OBJECT, PTYCHO_STATUS, TILT_ANGLE):
        if not isinstance(root.get(name), zarr.Array):
            raise TomoInputError(f"{store_path}: array {name!r} missing")
    angles = np.asarray(root[TILT_ANGLE][:], dtype=np.float64)
    status = np.asarray(root[PTYCHO_STATUS][:])
    obj_arr = root[PTYCHO_OBJECT]
    if status.shape != angles.shape or obj_arr.shape[0] != angles.size:
        raise TomoInputError(f"{store_path}: {TILT_ANGLE} {angles.shape}, {PTYCHO_STATUS} {status.shape} "
                             f"and {PTYCHO_OBJECT} {obj_arr.shape} disagree on the number of items")
    missing = np.flatnonzero(status != 1)
    if missing.size:
        reasons = failure_reasons(root)
        listed = ", ".join(f"{i} ({np.rad2deg(angles[i]):.1f}°" + (f", failed: {reasons[i]}" if i in reasons else "")
                           + ")" for i in missing)
        raise TomoInputError(f"{store_path}: no finished ptycho result for item(s) {listed}; "
                             "run the ptycho stage for them first")
    check_consumed_items(root, [PTYCHO_OBJECT, PTYCHO_ILLUMINATION], range(angles.size), store_path)
    if angles.size < 3:
        raise TomoInputError(f"{store_path}: tomography needs at least 3 items, got {angles.size}")
    for key in ("pixel_size_m", "origin_m"):
        if key not in obj_arr.attrs:
            raise TomoInputError(f"{store_path}: {PTYCHO_OBJECT} has no attribute {key!r}")
    px = _pixel_size(obj_arr.attrs)
    origin = np.asarray(obj_arr.attrs["origin_m"], dtype=np.float64)
    _, H, W = obj_arr.shape
    if isinstance(root.get(PTYCHO_ILLUMINATION), zarr.Array):
        illum = _read(root[PTYCHO_ILLUMINATION], slice(None), store_path)
        if illum.shape != obj_arr.shape:
            raise TomoInputError(f"{store_path}: {PTYCHO_ILLUMINATION} {illum.shape} does not match "
                                 f"{PTYCHO_OBJECT} {obj_arr.shape}")
        r0, r1, c0, c1 = illuminated_box(illum, illumination_threshold)
    else:
        r0, r1, c0, c1 = 0, H, 0, W
    obj = _read(obj_arr, (slice(None), slice(r0, r1), slice(c0, c1)), store_path)
    return _Input(obj, angles, px, origin[0] + r0 * px, origin[1] + c0 * px, (r0, r1, c0, c1), f"{H}×{W}")


def _preprocess(obj: np.ndarray, opts: TomoOptions, progress) -> tuple[np.ndarray, list[int]]:
    """Projections of the chosen channel with the offset/ramp removed; the items whose phase was unwrapped."""
    if opts.channel == "phase":
        phase, unwrapped = _phase(obj)
        if unwrapped:
            _say(progress, f"phase unwrapped in items {unwrapped}")
    else:
        phase, unwrapped = amplitude_projections(obj), []
    if opts.background == "border":
        mask = np.zeros(phase.shape[1:], dtype=bool)
        b = int(opts.border_px)
        if not 1 <= b < min(mask.shape) / 2:
            raise ValueError(f"border_px must be in [1, {min(mask.shape) / 2:.0f}), got {opts.border_px}")
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = True, True, True, True
        return remove_offset_ramp(phase, mask), unwrapped
    return remove_offset_ramp(phase, method=opts.background), unwrapped


def _align(phase: np.ndarray, inp: _Input, opts: TomoOptions, client, progress, lap):
    """Vertical alignment, the rotation axis, projection matching: (aligned projections, shifts, centre column)."""
    angles = inp.angles
    n_rows, n_cols = phase.shape[1:]
    max_shift = max(n_rows, n_cols) / 4 if opts.max_shift_px is None else float(opts.max_shift_px)
    shifts = np.zeros((inp.n_items, 2))
    if opts.align:
        _, shifts[:, 0] = vertical_alignment(phase, angles, max_shift=max_shift)
        lap("vertical_alignment")
    work = apply_shifts(phase, shifts)
    if opts.rotation_axis_x_m is None:
        center = find_center(work, angles, method=opts.center_method)
    else:
        center = (float(opts.rotation_axis_x_m) - inp.x0) / inp.px
    lap("find_center")
    _say(progress, f"rotation axis at column {center:.2f} of the cropped field")
    if opts.align and opts.projection_match:
        binning = max(1, int(np.ceil(max(n_rows, n_cols) / 128)))

        def pm_progress(it, change):
            _say(progress, f"projection matching iteration {it}: largest shift update {change:.3f} px")

        _, pm = projection_matching(work, angles, center=center, n_iter=opts.align_iter, max_shift=max_shift,
                                    binning=binning, client=client, progress=pm_progress)
        trial = apply_shifts(phase, shifts + pm)   # one interpolation of the data, not two
        before, after = consistency_residual(work, angles, center), consistency_residual(trial, angles, center)
        if after < before:
            shifts += pm
            work = trial
            _say(progress, f"projection matching kept: residual {before:.4f} -> {after:.4f}")
        else:
            _say(progress, f"projection matching rejected: residual {before:.4f} -> {after:.4f}")
        lap("projection_matching")
    return work, shifts, center


def _write_results(root, work, shifts, center, inp: _Input, opts: TomoOptions, client, progress, lap):
    """Write the projections, FBP and SIRT volumes (slab by slab) and the shifts; (volumes, origin, axis x)."""
    n_items, n_rows, n_cols = work.shape
    px, channel = inp.px, opts.channel
    axis_x = inp.x0 + center * px
    half = (n_cols - 1) / 2 * px
    origin_vol = [float(inp.y0), float(-half), float(axis_x - half)]
    common = {"axes": ["y", "z", "x"], "voxel_size_m": px, "origin_m": origin_vol, "rotation_axis_x_m": float(axis_x),
              "units": "rad/m" if channel == "phase" else "1/m", "channel": channel}
    # Row chunks = slabs: each task reads its own rows of the projections and writes its own
    # chunk of the volume; the client holds neither volume.
    slab = min(n_rows, DEFAULT_SLAB_SIZE if opts.slab_size is None else int(opts.slab_size))
    proj_arr = write_array(root, TOMO_PROJECTIONS, work, dtype="float32", chunks=(n_items, slab, n_cols),
                           attrs={"axes": ["item", "y", "x"], "units": "rad" if channel == "phase" else "1",
                                  "channel": channel, "pixel_size_m": px})
    vols = {}
    for name, method, kw, extra in (
        (TOMO_FBP, "fbp", {"filter_name": opts.filter_name}, {"method": "fbp", "filter_name": opts.filter_name}),
        (TOMO_SIRT, "sirt", {"n_iter": opts.n_iter, "nonneg": opts.nonneg},
         {"method": "sirt", "n_iter": int(opts.n_iter), "nonneg": bool(opts.nonneg)}),
    ):
        _say(progress, method.upper() + (f", {opts.n_iter} iterations" if method == "sirt" else ""))
        arr = write_array(root, name, shape=(n_rows, n_cols, n_cols), dtype="float32", chunks=(slab, n_cols, n_cols))
        reconstruct_slabs(proj_arr, inp.angles, method=method, client=client, slab_size=slab, out=arr,
                          scale=1.0 / px, center=center, **kw)
        arr.attrs.update({**common, **extra})
        vols[method] = arr
        lap(method)
    write_array(root, TOMO_SHIFTS, shifts, dtype="float64",
                attrs={"axes": ["item", "yx"], "units": "px", "pixel_size_m": px,
                       "convention": "scipy.ndimage.shift applied to each projection"})
    return vols, origin_vol, axis_x


def _figures(folder: Path, vol, px: float, origin: list, angles: np.ndarray,
             before: np.ndarray, after: np.ndarray, channel: str = "phase") -> list[str]:
    """Orthoslices, the y-sum and the sinograms; ``vol`` is the zarr array (read slice by slice).

    Longer than a screen: three figures in sequence that share the axes' extents and units.
    """
    # Figure + Agg canvas directly: no pyplot global state, safe in worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    ny, nz, nx = vol.shape
    a = px / _ANGSTROM
    y0, z0, x0 = (v / _ANGSTROM for v in origin)

    def ext(o0, n0, o1, n1):   # imshow extent (pixel edges), axis 1 horizontal, axis 0 vertical
        return (o1 - a / 2, o1 + (n1 - 0.5) * a, o0 - a / 2, o0 + (n0 - 0.5) * a)

    unit = "rad" if channel == "phase" else "1"
    paths = []
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 3)
    panels = (
        (vol[ny // 2], ext(z0, nz, x0, nx), "x (Å)", "z (Å)", f"y = {y0 + ny // 2 * a:.1f} Å"),
        (vol[:, nz // 2], ext(y0, ny, x0, nx), "x (Å)", "y (Å)", f"z = {z0 + nz // 2 * a:.1f} Å"),
        (vol[:, :, nx // 2], ext(y0, ny, z0, nz), "z (Å)", "y (Å)", f"x = {x0 + nx // 2 * a:.1f} Å"),
    )
    for ax, (img, extent, xl, yl, title) in zip(axs, panels):
        im = ax.imshow(img * _ANGSTROM, extent=extent, origin="lower", cmap="gray")
        ax.set(xlabel=xl, ylabel=yl, title=f"SIRT, {title}")
        fig.colorbar(im, ax=ax, label=f"{unit}/Å", shrink=0.8)
    paths.append(folder / "tomo_orthoslices.png")
    fig.savefig(paths[-1], dpi=120)

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ysum = np.zeros((nz, nx))
    step = vol.chunks[0] if hasattr(vol, "chunks") else ny
    for r in range(0, ny, step):                     # one chunk of rows at a time
        ysum += np.asarray(vol[r:r + step], dtype=np.float64).sum(axis=0)
    im = ax.imshow(ysum * px, extent=ext(z0, nz, x0, nx), origin="lower", cmap="magma")
    ax.set(xlabel="x (Å)", ylabel="z (Å)", title="SIRT summed along the tilt axis y")
    # ∫ f dy of a volume in rad/m over y in m is a phase: rad (the projection along the tilt axis).
    fig.colorbar(im, ax=ax, label=f"∫ f dy ({unit})")
    paths.append(folder / "tomo_projection_y.png")
    fig.savefig(paths[-1], dpi=120)

    order = np.argsort(angles)
    deg = np.rad2deg(angles[order])
    half_step = np.median(np.diff(deg)) / 2 if deg.size > 1 else 0.5
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 2, sharey=True)
    n_cols = before.shape[2]
    for ax, data, title in ((axs[0], before, "before alignment"), (axs[1], after, "after alignment")):
        sino = data.sum(axis=1)[order]
        im = ax.imshow(sino, aspect="auto", origin="lower", cmap="gray",
                       extent=(-a / 2, (n_cols - 0.5) * a, deg[0] - half_step, deg[-1] + half_step))
        ax.set(xlabel="detector x (Å, cropped field)", title=f"sinogram (Σ over y), {title}")
    axs[0].set_ylabel("tilt angle (°)")
    fig.colorbar(im, ax=axs, label=f"projection summed over its y rows ({unit})")
    paths.append(folder / "tomo_sinogram.png")
    fig.savefig(paths[-1], dpi=120)
    return [str(p) for p in paths]
