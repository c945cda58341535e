"""Item set-up: what one item's engine run needs, read from the store (no scheduling, no writing).

The object grid shared by the items, the propagation geometry of the store's regime (far field: a
unitary FFT, object pixel λz/(Np); near field: :class:`ptyhpc.ptycho.propagators.NearField` on the
Fresnel-scaled parallel-beam geometry of :func:`ptyhpc.physics.fresnel_scaling`), the initial
probe, the Fourier probe mask and the detector mask. Shared by the ptychography stage and every
stage that runs an engine per item.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from ..io import layout, read_geometry, read_item, read_mask, read_propagation
from ..io.energy import ENERGY_STACK, item_geometry
from ..io.store import StoreError
from ..physics import electron_probe, fresnel_scaling
from ..ptycho.engines import probe_from_mean_pattern
from ..ptycho.operators import ScanGeometry
from ..ptycho.options import PtychoOptions
from ..ptycho.probe_start import xray_start_probe
from ..ptycho.propagators import NearField
from .item_status import check_item_frames

__all__ = ["ObjectGrid", "NEAR_FIELD_MODEL", "propagation_geometry", "object_grid", "item_grids", "item_grid",
           "item_engine_inputs"]


@dataclass
class ObjectGrid:
    """The object grid shared by all items (so results stack into one array)."""

    fft_shape: tuple
    pixel_size_m: tuple
    origin_m: tuple
    object_shape: tuple
    extra: dict = field(default_factory=dict)


#: The near-field propagator model the stage uses (exact; its paraxial limit "fresnel" differs by πλ³z|k|⁴/4).
NEAR_FIELD_MODEL = "angular_spectrum"


def propagation_geometry(group) -> dict:
    """How the stage propagates a store's exit waves to the detector.

    Returns
    -------
    dict
        ``propagation_regime`` (``"far_field"`` | ``"near_field"``). Near field
        also: ``propagator`` (:data:`NEAR_FIELD_MODEL`), ``pixel_size_m`` (y, x)
        the object pixel in the sample plane, ``propagation_distance_m``,
        ``magnification`` and ``focus_to_sample_m`` (None: parallel beam). With
        a focus distance z1 these are the Fresnel-scaled values Δ/M, z2/M,
        M = (z1 + z2)/z1 (Paganin, *Coherent X-Ray Optics* (2006), eqs.
        2.41–2.44, :func:`ptyhpc.physics.fresnel_scaling`); without one the
        detector pixel, z2 and 1 (parallel beam: the detector images the
        sample plane at 1:1). All m.

    Raises
    ------
    StoreError
        Bad regime metadata (:func:`ptyhpc.io.read_propagation`); a near-field
        store without ``detector_pixel_size_m``.
    """
    prop = read_propagation(group)
    if prop["regime"] == layout.FAR_FIELD:
        return {"propagation_regime": layout.FAR_FIELD}
    det_px = group.attrs.get("detector_pixel_size_m")
    if det_px is None:
        raise StoreError(f"{str(group.store).removeprefix('file://')}: {layout.PROPAGATION_REGIME} is near_field but "
                         "detector_pixel_size_m is missing (ingest with a scan reader: cxi, nexus, generic)")
    det_px = tuple(float(v) for v in det_px)
    z1, z2 = prop["focus_to_sample_m"], prop["detector_distance_m"]
    if z1 is None:
        px, z, mag = det_px, z2, 1.0
    else:
        px, z, mag = fresnel_scaling(det_px, z1, z2)
    return {"propagation_regime": layout.NEAR_FIELD, "propagator": NEAR_FIELD_MODEL,
            "pixel_size_m": [float(v) for v in px], "propagation_distance_m": float(z),
            "magnification": float(mag), "focus_to_sample_m": z1}


def object_grid(group, params: PtychoOptions) -> ObjectGrid:
    """Common object grid of a store, covering every item's scan.

    Far field: pixel 1/(N Δk) on an FFT grid padded to ``fft_size`` (or the
    next fast length). Near field: the (effective) detector pixel of
    :func:`propagation_geometry` on the detector grid itself (near-field images
    are not padded). ``extra`` holds :func:`propagation_geometry`.

    Raises
    ------
    ValueError
        ``fft_size`` smaller than the detector; near field with an ``fft_size``
        other than the detector's.
    """
    import scipy.fft  # noqa: PLC0415

    geom = read_geometry(group)
    det = group[layout.FRAMES].shape[2:]
    prop = propagation_geometry(group)
    pos = np.asarray(group[layout.POSITIONS][...]).reshape(-1, 2)
    if prop["propagation_regime"] == layout.NEAR_FIELD:
        if params.fft_size and (params.fft_size, params.fft_size) != tuple(det):
            raise ValueError(f"ptycho.fft_size {params.fft_size}: near-field data are not padded; leave it 0 "
                             f"(the detector grid {tuple(det)})")
        fft_shape = tuple(int(n) for n in det)
        g = ScanGeometry.from_positions(pos, fft_shape, tuple(prop["pixel_size_m"]))
        return ObjectGrid(fft_shape, g.pixel_size_m, g.origin_m, g.object_shape, extra=prop)
    if params.fft_size:
        if params.fft_size < max(det):
            raise ValueError(f"fft_size {params.fft_size} is smaller than the detector {det}")
        fft_shape = (params.fft_size, params.fft_size)
    else:
        fft_shape = tuple(scipy.fft.next_fast_len(int(n)) for n in det)
    dk = geom["reciprocal_sampling_inv_m"]
    px = (1.0 / (fft_shape[0] * dk[0]), 1.0 / (fft_shape[1] * dk[1]))
    g = ScanGeometry.from_positions(pos, fft_shape, px)
    return ObjectGrid(fft_shape, g.pixel_size_m, g.origin_m, g.object_shape, extra=prop)


def item_grids(group, params: PtychoOptions) -> list[ObjectGrid]:
    """One object grid per item.

    A tilt series has one grid for all items (:func:`object_grid`). In an
    energy stack the far-field pixel 1/(N Δk_i) = λ_i z / (N p) follows each item's
    wavelength: every item gets its own pixel size and origin, on an object
    array of the largest item's shape so that the results still stack. The
    near-field pixel does not depend on the wavelength: one grid for all.

    Returns
    -------
    list of ObjectGrid
        ``n_items`` grids sharing ``fft_shape`` and ``object_shape``.
    """
    n = group[layout.FRAMES].shape[0]
    common = object_grid(group, params)
    if group.attrs.get("kind") != ENERGY_STACK or common.extra["propagation_regime"] == layout.NEAR_FIELD:
        return [common] * n
    pos_all = np.asarray(group[layout.POSITIONS][...])
    own = []
    for i in range(n):
        dk = item_geometry(group, i)["reciprocal_sampling_inv_m"]
        px = (1.0 / (common.fft_shape[0] * dk[0]), 1.0 / (common.fft_shape[1] * dk[1]))
        own.append(ScanGeometry.from_positions(pos_all[i], common.fft_shape, px))
    shape = tuple(max(g.object_shape[k] for g in own) for k in range(2))
    return [ObjectGrid(common.fft_shape, g.pixel_size_m, g.origin_m, shape, extra=common.extra) for g in own]


def _near_field(group, grid: ObjectGrid, wavelength_m: float, xp=np) -> NearField | None:
    """The item's near-field propagator on ``grid`` (None in the far field), built for ``xp``."""
    prop = propagation_geometry(group)
    if prop["propagation_regime"] != layout.NEAR_FIELD:
        return None
    return NearField(tuple(grid.fft_shape), tuple(grid.pixel_size_m), float(wavelength_m),
                     prop["propagation_distance_m"], model=prop["propagator"], xp=xp)


def _initial_probe(geom: dict, grid: ObjectGrid, intensity: float, xp, frames=None, near_field=None):
    if near_field is not None:
        # Near field: the mean image back-propagated to the sample (a probe model of a focused beam
        # would need the cone's curvature, which the Fresnel-scaled geometry has removed).
        return xp.asarray(probe_from_mean_pattern(frames, propagator=near_field))
    if geom.get("convergence_semiangle_rad") is None and frames is not None:
        # No probe model in the store (CXI / NXptycho ingest): the mean pattern, flat phase.
        return xp.asarray(probe_from_mean_pattern(frames, fft_shape=grid.fft_shape))
    return electron_probe(grid.fft_shape, grid.pixel_size_m, geom["wavelength_m"],
                          geom["convergence_semiangle_rad"], defocus=geom["defocus_m"],
                          Cs=geom.get("Cs_m", 0.0) or 0.0, intensity=intensity, xp=xp)


def _probe_fourier_mask(geom: dict, grid: ObjectGrid, factor: float, near_field: bool = False):
    # The aperture bounds a far-field probe's angles; a Fresnel-scaled near-field probe has its
    # cone removed, so the mask would cut the wrong spectrum there.
    if not factor or geom.get("convergence_semiangle_rad") is None or near_field:
        return None
    ky = np.fft.fftfreq(grid.fft_shape[0], d=grid.pixel_size_m[0])[:, None]
    kx = np.fft.fftfreq(grid.fft_shape[1], d=grid.pixel_size_m[1])[None, :]
    k_cut = factor * geom["convergence_semiangle_rad"] / geom["wavelength_m"]
    return np.hypot(ky, kx) <= k_cut


def _detector_mask(group):
    """The store's detector mask (True = measured), or None when it has none or every pixel is good.

    :data:`ptyhpc.io.layout.DETECTOR_MASK`, written by ingest (older stores have none).

    Raises
    ------
    StoreError
        The mask's shape is not the frames' detector shape.
    """
    mask = read_mask(group)
    det = tuple(group[layout.FRAMES].shape[2:])
    if mask is not None and mask.shape != det:
        raise StoreError(f"{layout.DETECTOR_MASK} has shape {mask.shape}, the frames' detector is {det}")
    return mask


def item_grid(group, item: int) -> ObjectGrid:
    """The object grid item ``item`` was prepared with (:func:`ptyhpc.pipeline.results.prepare_ptycho_results`).

    Raises
    ------
    StoreError
        The results were prepared for another propagation regime.
    """
    res = group[layout.PTYCHO]
    obj = group[layout.PTYCHO_OBJECT]
    px, origin = obj.attrs["pixel_size_m"], obj.attrs["origin_m"]
    if np.ndim(px) == 2:  # energy stack: one (y, x) pair per item
        px, origin = px[item], origin[item]
    grid = ObjectGrid(tuple(res.attrs["fft_shape"]), tuple(px), tuple(origin), tuple(obj.shape[1:]))
    # Results prepared for another regime (the store's attributes edited since) would mix the physics.
    made, now = res.attrs.get(layout.PROPAGATION_REGIME, layout.FAR_FIELD), read_propagation(group)["regime"]
    if made != now:
        raise StoreError(f"results/ptycho were prepared for {made}, the store now says {now}; delete results/ptycho")
    return grid


def resolve_params(group, params: PtychoOptions) -> tuple[PtychoOptions, dict | None]:
    """``params`` with the store's data-driven choices applied, and the record of that choice.

    :func:`ptyhpc.ptycho.defaults.apply_data_defaults` on ``group``; the returned options are marked
    ``resolved`` so that the choice is made once per run (it sizes the result arrays: iteration count,
    probe modes) and every task sees the same settings.
    """
    from ..ptycho.defaults import apply_data_defaults  # noqa: PLC0415

    params, record = apply_data_defaults(group, params)
    return dataclasses.replace(params, resolved=True), record


def item_engine_inputs(group, item: int, params: PtychoOptions, init_probe_from: int | None = None,
                       select=None) -> tuple:
    """The engine's inputs for one item: what :func:`ptyhpc.pipeline.ptycho_stage.reconstruct_item` passes on.

    Parameters
    ----------
    group : zarr group
        The store (results prepared).
    item : int
    params : PtychoOptions
    init_probe_from : int, optional
        Warm start from this finished item's probe.
    select : index array, optional
        Use only these positions (e.g. one half of the data for a Fourier ring correlation); the
        starting probe is then found from them alone.

    Returns
    -------
    frames, positions, probe, common (keywords of the engine), grid (ObjectGrid), xp

    Raises
    ------
    RuntimeError
        ``init_probe_from`` is not finished.
    """
    grid = item_grid(group, item)
    geom = item_geometry(group, item)
    frames, positions = read_item(group, item)
    check_item_frames(group, item, frames)   # present, finite, not all zero: else status 2, no compute
    if select is not None:
        # A subset of the positions (e.g. half of the data for an FRC): everything below sees only it.
        frames, positions = frames[select], positions[select]
    mask = _detector_mask(group) if params.use_detector_mask else None
    if mask is not None:
        # Ingest stores bad pixels as 0; make sure, since the probe's scale below sums the counts.
        frames[:, ~mask] = 0
    xp = backend.get_xp(params.backend)
    near = _near_field(group, grid, geom["wavelength_m"])   # NumPy, for the initial probe
    probe = start_probe(group, item, geom, grid, frames, positions, xp, mask, near, init_probe_from)
    common = dict(
        params.engine_kwargs(), mask=mask,
        probe_fourier_mask=_probe_fourier_mask(geom, grid, params.probe_mask_factor, near is not None),
        origin_m=grid.origin_m, object_shape=grid.object_shape, fft_shape=grid.fft_shape,
        seed=params.seed + item, xp=xp,
    )
    if near is not None:
        common["propagator"] = _near_field(group, grid, geom["wavelength_m"], xp)
    return frames, positions, probe, common, grid, xp


def start_probe(group, item: int, geom: dict, grid: ObjectGrid, frames, positions, xp, mask=None, near=None,
                init_probe_from: int | None = None):
    """The initial probe of one item, (Ny, Nx) or (modes, Ny, Nx) complex64 on ``xp``.

    A warm start takes ``init_probe_from``'s finished probe, scaled to this
    item's counts; otherwise an X-ray model (:mod:`ptyhpc.ptycho.probe_start`),
    the electron probe model of the store's geometry, or the back-propagated
    mean pattern (near field, stores without a probe model).

    Raises
    ------
    RuntimeError
        ``init_probe_from`` is not finished.
    """
    intensity = float(frames.sum(axis=(1, 2), dtype=np.float64).mean())
    if init_probe_from is None:
        # X-ray stores: zone-plate model or a defocus chosen from the data (ptyhpc.ptycho.probe_start).
        probe = None if near is not None else xray_start_probe(group.attrs, geom, grid, intensity, frames,
                                                               positions, xp, mask)
        if probe is None:
            probe = _initial_probe(geom, grid, intensity, xp, frames, near_field=near)
    else:
        if int(group[layout.PTYCHO_STATUS][init_probe_from]) != 1:
            raise RuntimeError(f"warm start of item {item}: source item {init_probe_from} is not finished")
        src = np.asarray(group[layout.PTYCHO_PROBE][init_probe_from])   # (Ny, Nx) or (modes, Ny, Nx)
        # Σ|P|² (over modes too) equals the counts per pattern (unitary FFT): rescale to this item's dose.
        scale = np.sqrt(intensity / max(float(np.sum(np.abs(src) ** 2)), 1e-30))
        probe = xp.asarray((src * scale).astype(np.complex64))
    return probe
