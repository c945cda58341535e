"""Per-item ptychography on a dask cluster: one task per tilt angle or energy.

Each task opens the store itself, reads only its own frames, reconstructs,
writes its own region of the result arrays (one chunk per item, so tasks
never share a chunk) and then sets its ``status`` to 1. A rerun skips items
whose status is 1; an item that crashed half-way keeps status 0 and is
redone from scratch.

Around that: a run holds the store's run lock (a second run is refused,
:mod:`ptyhpc.pipeline.lock`), each task holds its item's lock, tasks ask for
a ``GPU`` worker resource when they will run on CuPy (one task per GPU), and
an energy stack gets one object pixel size per item (it scales with the
wavelength). An optional warm start seeds an item's probe from a finished
neighbour.

The store's propagation regime (:func:`ptyhpc.io.read_propagation`) picks
the physics: far field (a unitary FFT, object pixel λz/(Np)) or near field
(:class:`ptyhpc.ptycho.propagators.NearField`, angular spectrum, on the
equivalent parallel-beam geometry of :func:`ptyhpc.physics.fresnel_scaling`
when the store gives a focus-to-sample distance; object pixel = effective
detector pixel), as ``examples/petra_nearfield.py`` does by hand.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backend
from ..io import layout, open_store, read_geometry, read_item, read_mask, read_propagation, require_result_array
from ..io.store import StoreError
from ..io.energy import ENERGY_STACK, item_geometry, item_groups
from ..physics import electron_probe, fresnel_scaling
from ..ptycho.chain import reconstruct_chain, validate_stages
from ..ptycho.engines import ENGINES, probe_from_mean_pattern, reconstruct
from ..ptycho.operators import ScanGeometry
from ..ptycho.probe_start import xray_start_probe
from ..ptycho.propagators import NearField
from .item_status import (check_item_frames, check_item_result, check_params_memory, clear_failure, expected_results,
                          prepare_item_status, record_failure)

__all__ = ["PtychoParams", "ObjectGrid", "object_grid", "item_grids", "reconstruct_item", "run_ptycho",
           "task_resources", "warm_start_sources", "ItemsFailedError"]

#: The worker resource a CuPy task asks for: one per GPU (start GPU workers with ``--resources GPU=1``).
GPU_RESOURCE = "GPU"


class ItemsFailedError(RuntimeError):
    """Some items raised; the others finished and are kept. ``failed`` maps item -> error text."""

    def __init__(self, failed: dict):
        self.failed = dict(failed)
        lines = "; ".join(f"item {i}: {msg}" for i, msg in sorted(self.failed.items()))
        super().__init__(f"{len(self.failed)} item(s) failed ({lines}); the finished items are kept, "
                         "rerun to retry the failed ones")


#: Engines that take probe modes and position correction (the others raise in ``reconstruct``).
_PIE_FAMILY = ("rpie", "epie", "mpie")
#: Settings a stage of a chain may change; the grid, masks, seed and backend are the stage's.
STAGE_KEYS = ("engine", "n_iter", "alpha", "beta_object", "beta_probe", "probe_update_start", "noise_model",
              "batch_size", "dm_beta", "n_probe_modes", "position_correction_start", "position_step",
              "max_position_shift_px", "position_model", "subpixel")


@dataclass
class PtychoParams:
    """Settings of the ptychography stage (defaults serve any series; see docs/engines.md).

    ``fft_size`` 0 pads the detector to the next fast FFT length; the padded
    pixels are unmeasured and left free. ``probe_mask_factor`` is the radius of
    the Fourier-space probe mask in units of the convergence semi-angle (0: off).
    ``warm_start`` (off by default) starts every item that is not an anchor
    from the final probe of the nearest anchor of its sequence (anchors:
    every ``warm_start_stride``-th item, reconstructed from the model probe
    first); see :func:`warm_start_sources`.

    Engine features (see :func:`ptyhpc.ptycho.engines.reconstruct`):

    ``engine``
        ``"rpie"``, ``"epie"``, ``"mpie"``, ``"lsqml"``, ``"er"``, ``"dm"``, or
        ``"chain"`` to run ``stages`` in sequence
        (:func:`ptyhpc.ptycho.chain.reconstruct_chain`), e.g.
        ``[{"engine": "dm", "n_iter": 50}, {"engine": "lsqml", "n_iter": 30}]``;
        a stage may set any of :data:`STAGE_KEYS`, the others come from these
        params. With ``"chain"``, ``n_iter`` is set to the stages' total (the
        length of the stored error curve).
    ``dm_beta``
        β of the difference map (1: classic).
    ``n_probe_modes``
        Incoherent probe modes (PIE family). The stored probe is
        (n_items, Ny, Nx) for one mode and (n_items, modes, Ny, Nx) for more
        (see :mod:`ptyhpc.io.layout`).
    ``position_correction_start``, ``position_step``, ``max_position_shift_px``, ``position_model``
        Position refinement (PIE family); None: off; ``position_model: affine``
        keeps the positions an affine map of the scan (a miscalibrated stage). The positions each item
        was reconstructed with are stored in ``results/ptycho/positions``.
    ``subpixel``
        Sub-pixel scan positions (PIE family, LSQ-ML): ``"fourier"`` (exact probe shifts, 4 FFTs per
        position), ``"bilinear"`` (interpolated object patches, 2 FFTs) or ``"none"`` (rounded
        positions); the speed and accuracy of each are in :func:`ptyhpc.ptycho.reconstruct`.
    ``use_detector_mask``
        Leave the store's bad detector pixels (``detector_mask``) free.
    ``data_defaults``, ``user_set``, ``stop_when_stalled``
        With ``data_defaults`` (on), the settings the user did not give are chosen from the store
        (counts per pixel, regime; :func:`ptyhpc.ptycho.defaults.apply_data_defaults`) and the
        choice is recorded in ``results/ptycho`` attribute ``defaults_chosen``. ``user_set`` names
        the given settings (a setting whose value differs from the default here counts as given).
        ``stop_when_stalled`` ends an item's run when its data error stalls (the stored error
        curve then repeats its last value).

    Raises
    ------
    ValueError
        Any setting out of range or an unsupported combination, naming the
        ``ptycho.`` key.
    """

    engine: str = "rpie"
    n_iter: int = 60  # iterations per item
    batch_size: int = 32  # positions per mini-batch (one set of batched array operations)
    alpha: float = 0.5  # rPIE regularisation α (1: ePIE-like)
    beta_object: float = 0.1  # object step size β
    beta_probe: float = 0.1  # probe step size β
    probe_update_start: int = 2  # first iteration that updates the probe
    noise_model: str = "poisson"  # poisson (likelihood gradient) | amplitude (modulus projection)
    probe_mask_factor: float = 1.2  # Fourier probe mask radius in convergence semi-angles (0: off)
    fft_size: int = 0  # padded detector size (0: next fast FFT length; padded pixels left free)
    seed: int = 0  # random seed (initial guesses, batch order)
    backend: str = "auto"  # auto | numpy | cupy
    warm_start: bool = False  # start non-anchor items from the nearest anchor's final probe
    warm_start_stride: int = 4  # every stride-th item of a sequence is an anchor
    stages: list | None = None  # engine: chain: [{engine: dm, n_iter: 50}, {engine: lsqml, n_iter: 30}]
    dm_beta: float = 1.0
    n_probe_modes: int = 1
    position_correction_start: int | None = None
    position_step: float = 1.0
    max_position_shift_px: float = 0.5
    position_model: str = "free"
    subpixel: str = "fourier"
    use_detector_mask: bool = True
    stop_when_stalled: bool = False  # end an item when its data error stalls (ptyhpc.ptycho.defaults.stalled)
    data_defaults: bool = True  # let the store's data choose the settings not given (ptyhpc.ptycho.defaults)
    user_set: tuple | None = None  # names of the settings the user gave (never changed by data_defaults)
    resolved: bool = False  # the data-driven choice has been applied

    def __post_init__(self):
        engines = (*ENGINES, "chain")
        if self.engine not in engines:
            raise ValueError(f"ptycho.engine must be one of {engines}, got {self.engine!r}")
        if not _is_int(self.n_iter) or not _is_int(self.batch_size) or self.n_iter < 1 or self.batch_size < 1:
            raise ValueError("ptycho.n_iter and ptycho.batch_size must be integers >= 1")
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"ptycho.backend must be 'auto', 'numpy' or 'cupy', got {self.backend!r}")
        if self.warm_start_stride < 2:
            raise ValueError("ptycho.warm_start_stride must be >= 2")
        if self.probe_mask_factor < 0 or self.fft_size < 0:
            raise ValueError("ptycho.probe_mask_factor and ptycho.fft_size must be >= 0 (0: off / automatic)")
        if self.engine == "chain":
            if not self.stages:
                raise ValueError("ptycho.engine 'chain' needs ptycho.stages, e.g. "
                                 "[{engine: dm, n_iter: 50}, {engine: lsqml, n_iter: 30}]")
            try:
                self.stages = validate_stages(self.stages)
            except ValueError as exc:
                raise ValueError(f"ptycho.stages: {exc}") from None
            for k, stage in enumerate(self.stages):
                extra = sorted(set(stage) - set(STAGE_KEYS))
                if extra:
                    raise ValueError(f"ptycho.stages: stage {k}: {extra} cannot be set per stage; "
                                     f"a stage may set {STAGE_KEYS}")
            # The stored error curve holds every stage's iterations.
            self.n_iter = sum(int(st["n_iter"]) for st in self.stages)
        elif self.stages is not None:
            raise ValueError(f"ptycho.stages is given but ptycho.engine is {self.engine!r}; set engine: chain "
                             "to run the stages")
        for where, st in self._stage_settings():
            _check_engine_settings(where, st)

    def _stage_settings(self):
        """(label, effective settings) of each stage (one for a plain engine)."""
        base = {k: getattr(self, k) for k in STAGE_KEYS}
        if self.engine != "chain":
            return [("ptycho", base)]
        return [(f"ptycho.stages[{k}]", {**base, **st}) for k, st in enumerate(self.stages)]

    @property
    def final_probe_modes(self) -> int:
        """Probe modes of the stored probe (those of the last stage)."""
        return int(self._stage_settings()[-1][1]["n_probe_modes"])

    def engine_kwargs(self) -> dict:
        """Keyword arguments of :func:`reconstruct` common to every stage (no grid, masks or seed)."""
        keys = [k for k in STAGE_KEYS if k not in ("engine", "n_iter")]
        return {k: getattr(self, k) for k in keys}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_engine_settings(where: str, st: dict) -> None:
    """Ranges and combinations of one stage's settings; ValueError naming the key."""
    engine = st["engine"]
    if st["noise_model"] not in ("poisson", "amplitude"):
        raise ValueError(f"{where}.noise_model must be 'poisson' or 'amplitude', got {st['noise_model']!r}")
    if not 0 < st["alpha"] <= 1:
        raise ValueError(f"{where}.alpha must be in (0, 1], got {st['alpha']}")
    for key in ("beta_object", "beta_probe", "position_step", "max_position_shift_px"):
        if not st[key] > 0:
            raise ValueError(f"{where}.{key} must be > 0, got {st[key]}")
    if st["subpixel"] not in ("fourier", "bilinear", "none"):
        raise ValueError(f"{where}.subpixel must be 'fourier', 'bilinear' or 'none', got {st['subpixel']!r}")
    if st["subpixel"] != "fourier" and engine in ("er", "dm"):
        raise ValueError(f"{where}.subpixel = {st['subpixel']!r} needs a PIE engine or lsqml, not {engine!r}")
    if st["position_model"] not in ("free", "affine"):
        raise ValueError(f"{where}.position_model must be 'free' or 'affine', got {st['position_model']!r}")
    if not _is_int(st["probe_update_start"]) or st["probe_update_start"] < 0:
        raise ValueError(f"{where}.probe_update_start must be an integer >= 0, got {st['probe_update_start']!r}")
    if not _is_int(st["batch_size"]) or st["batch_size"] < 1:
        raise ValueError(f"{where}.batch_size must be an integer >= 1, got {st['batch_size']!r}")
    if not st["dm_beta"]:
        raise ValueError(f"{where}.dm_beta must be non-zero (1: the classic difference map)")
    modes = st["n_probe_modes"]
    if not _is_int(modes) or modes < 1:
        raise ValueError(f"{where}.n_probe_modes must be an integer >= 1, got {modes!r}")
    if modes > 1 and engine not in _PIE_FAMILY:
        raise ValueError(f"{where}.n_probe_modes = {modes} needs a PIE engine {_PIE_FAMILY}, not {engine!r}")
    start = st["position_correction_start"]
    if start is not None:
        if not _is_int(start) or start < 0:
            raise ValueError(f"{where}.position_correction_start must be None or an integer >= 0, got {start!r}")
        if engine not in _PIE_FAMILY:
            raise ValueError(f"{where}.position_correction_start needs a PIE engine {_PIE_FAMILY}, not {engine!r}")


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


def object_grid(group, params: PtychoParams) -> ObjectGrid:
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


def item_grids(group, params: PtychoParams) -> list[ObjectGrid]:
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


def _item_grid(group, item: int) -> ObjectGrid:
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


def item_engine_inputs(group, item: int, params: PtychoParams, init_probe_from: int | None = None,
                       select=None) -> tuple:
    """The engine's inputs for one item: what :func:`reconstruct_item` passes to the engine.

    Parameters
    ----------
    group : zarr group
        The store (results prepared).
    item : int
    params : PtychoParams
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
    grid = _item_grid(group, item)
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
    intensity = float(frames.sum(axis=(1, 2), dtype=np.float64).mean())
    near = _near_field(group, grid, geom["wavelength_m"])   # NumPy, for the initial probe
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
    common = dict(
        params.engine_kwargs(), mask=mask,
        probe_fourier_mask=_probe_fourier_mask(geom, grid, params.probe_mask_factor, near is not None),
        origin_m=grid.origin_m, object_shape=grid.object_shape, fft_shape=grid.fft_shape,
        seed=params.seed + item, xp=xp,
    )
    if near is not None:
        common["propagator"] = _near_field(group, grid, geom["wavelength_m"], xp)
    return frames, positions, probe, common, grid, xp


def reconstruct_item(store_path: str, item: int, params: PtychoParams | dict, init_probe_from: int | None = None,
                     after=None) -> dict:
    """Reconstruct one item and write it into the store (runs on a worker).

    As :func:`_reconstruct_item`; when it raises, the item gets status 2
    (failed) with the reason stored (:func:`ptyhpc.pipeline.item_status.mark_failed`),
    unless a twin task finished it meanwhile, and the error is raised again.
    """
    try:
        return _reconstruct_item(store_path, item, params, init_probe_from, after)
    except Exception as exc:
        record_failure(store_path, item, f"{type(exc).__name__}: {exc}")
        raise


def _reconstruct_item(store_path: str, item: int, params: PtychoParams | dict, init_probe_from: int | None = None,
                      after=None) -> dict:
    """Reconstruct one item and write it into the store (runs on a worker).

    Holds the item's lock (:func:`ptyhpc.pipeline.lock.item_lock`) while it
    works, and returns at once when the item is already done, so a task that
    runs twice (resubmitted after a lost worker or a vanished client) writes
    once. Writes ``object[item]``, ``probe[item]``, ``error[item]``,
    ``illumination[item]``, ``positions[item]`` (refined when position
    correction is on), then ``status[item] = 1``. The store's detector mask,
    when it has one, marks the bad pixels left free (``use_detector_mask``).

    Parameters
    ----------
    store_path : str
        Store with result arrays made by :func:`prepare_results`.
    item : int
        Item index.
    params : PtychoParams or dict
    init_probe_from : int, optional
        Warm start: take the initial probe from this finished item (scaled to
        this item's counts) instead of the model probe.
    after : any
        Ignored; a dask future passed here makes the task wait for it.

    Returns
    -------
    dict
        ``item``, ``seconds`` (whole task), ``compute_seconds`` (engine only),
        ``final_error``, ``backend``, ``worker`` (host:pid), ``started`` and
        ``finished`` (epoch s), ``already_done`` (True when it found status 1).

    Raises
    ------
    RuntimeError
        ``init_probe_from`` is not finished.
    """
    from .lock import item_lock  # noqa: PLC0415

    if isinstance(params, dict):
        params = PtychoParams(**params)
    started = time.time()
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with item_lock(store_path, item):
        group = open_store(store_path, mode="r+")
        if int(group[layout.PTYCHO_STATUS][item]) == 1:
            return {"item": item, "seconds": time.perf_counter() - t0, "compute_seconds": 0.0,
                    "final_error": float(group[layout.PTYCHO_ERROR][item, -1]), "backend": None, "worker": worker,
                    "started": started, "finished": time.time(), "already_done": True}
        if not params.resolved:   # called directly (reconstruct-item): the choice prepare_results made
            params, _ = resolve_params(group, params)
        frames, positions, probe, common, grid, xp = item_engine_inputs(group, item, params, init_probe_from)
        tc = time.perf_counter()
        if params.engine == "chain":
            result = reconstruct_chain(frames, positions, probe, grid.pixel_size_m, params.stages, **common)
        else:
            stop = None
            if params.stop_when_stalled:
                from ..ptycho.defaults import stalled as stop  # noqa: PLC0415
            result = reconstruct(frames, positions, probe, grid.pixel_size_m, engine=params.engine,
                                 n_iter=params.n_iter, stop=stop, **common)
        compute = time.perf_counter() - tc
        check_item_result(item, expected_results(group, result))   # finite, the right shapes
        # Data first, status last: a crash in between leaves status 0 and the item is redone.
        group[layout.PTYCHO_OBJECT][item] = result.object
        group[layout.PTYCHO_PROBE][item] = result.probe
        group[layout.PTYCHO_ERROR][item] = result.error
        group[layout.PTYCHO_ILLUMINATION][item] = result.illumination
        group[layout.PTYCHO_POSITIONS][item] = result.info["positions_m"]
        clear_failure(group, item)
        group[layout.PTYCHO_STATUS][item] = 1
    return {"item": item, "seconds": time.perf_counter() - t0, "compute_seconds": compute,
            "final_error": float(result.error[-1]), "backend": xp.__name__, "worker": worker,
            "started": started, "finished": time.time(), "already_done": False}


def prepare_results(group, params: PtychoParams, defaults_record: dict | None = None) -> ObjectGrid:
    """Create (or check, on a rerun) the result arrays of the ptycho stage.

    Settings not yet ``resolved`` get the data-driven choice first (so the arrays have its sizes);
    the choice (or ``defaults_record``) is written to the ``defaults_chosen`` attribute.

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
                                "refined": any(st["position_correction_start"] is not None
                                               for _, st in params._stage_settings())})
    require_result_array(group, layout.PTYCHO_ERROR, (n, params.n_iter), "float32", (1, params.n_iter),
                         attrs={"definition": "sum over measured pixels (|Psi| - sqrt(I))^2 / sum I"})
    require_result_array(group, layout.PTYCHO_ILLUMINATION, (n, H, W), "float32", (1, H, W), attrs=attrs)
    require_result_array(group, layout.PTYCHO_STATUS, (n,), "uint8", (1,))
    prepare_item_status(group)   # failure reasons array; status meaning 0/1/2 (item_status)
    # The regime and its geometry, so that a reader of the results knows the physics behind them;
    # not compared on a rerun (stores with results from before this attribute must still resume),
    # but this function and :func:`_item_grid` refuse results prepared for the other regime.
    res = group[layout.PTYCHO]
    res.attrs.update({"fft_shape": list(grid.fft_shape), **attrs, **prop})
    if defaults_record is not None:
        res.attrs["defaults_chosen"] = defaults_record
    group[layout.PTYCHO_OBJECT].attrs[layout.PROPAGATION_REGIME] = prop["propagation_regime"]
    return grid


def resolve_params(group, params: PtychoParams) -> tuple[PtychoParams, dict]:
    """``params`` with the store's data-driven choices (:func:`ptyhpc.ptycho.defaults.apply_data_defaults`)."""
    from dataclasses import replace  # noqa: PLC0415

    from ..ptycho.defaults import apply_data_defaults  # noqa: PLC0415

    params, record = apply_data_defaults(group, params)
    return replace(params, resolved=True), record


def task_resources(params: PtychoParams, client=None) -> dict | None:
    """The worker resources each item's task asks for.

    ``{"GPU": 1}`` when the task will run on CuPy: ``backend="cupy"``, or
    ``"auto"`` (without ``PTYHPC_BACKEND=numpy``) on a cluster whose workers
    offer a ``GPU`` resource. Then the scheduler runs one task per GPU
    whatever the worker's thread count. ``None`` otherwise: the same tasks
    run on CPU workers.

    Raises
    ------
    ValueError
        ``backend="cupy"`` but the connected workers offer no ``GPU``
        resource (the tasks would wait forever). A cluster with no worker yet
        (adaptive, jobs queued) is not checked.
    """
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"].values() if _takes_n_workers(client) else \
        client.scheduler_info()["workers"].values()
    offered = [w.get("resources", {}).get(GPU_RESOURCE, 0) for w in workers]
    want = params.backend
    if want == "auto":
        want = os.environ.get("PTYHPC_BACKEND", "auto")
    if want == "cupy":
        if offered and not any(offered):
            raise ValueError("backend 'cupy' asks every task for a GPU worker resource, but no worker offers one; "
                             "start GPU workers with '--resources GPU=1' (ptyhpc.cluster does this for gpus >= 1) "
                             "or use backend 'numpy'")
        return {GPU_RESOURCE: 1}
    if want == "auto" and any(offered):
        return {GPU_RESOURCE: 1}
    return None


def _takes_n_workers(client) -> bool:
    import inspect  # noqa: PLC0415

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def warm_start_sources(group, params: PtychoParams) -> dict[int, int | None]:
    """Where each item's initial probe comes from.

    Returns
    -------
    dict
        item -> ``None`` (the model probe) or the index of the finished item
        whose probe it starts from. Without ``params.warm_start`` every item
        maps to ``None``. With it, in each sequence of
        :func:`ptyhpc.io.energy.item_groups` (the tilt series; one
        polarisation of an energy stack) items 0, s, 2s, ... (s =
        ``warm_start_stride``) are anchors started from the model probe and
        every other item starts from its nearest anchor (the lower one on a
        tie). The choice depends on indices only, never on which task happened
        to finish first, so results do not depend on scheduling.
    """
    n = group[layout.FRAMES].shape[0]
    src = dict.fromkeys(range(n))
    if not params.warm_start:
        return src
    s = params.warm_start_stride
    for seq in item_groups(group):
        anchors = list(range(0, len(seq), s))
        for k, item in enumerate(seq):
            if k % s:
                a = min(anchors, key=lambda j: (abs(j - k), j))
                src[item] = seq[a]
    return src


def run_ptycho(store_path: str | Path, params: PtychoParams | None = None, *, client=None,
               progress: bool = True, items=None, resources: dict | str | None = "auto",
               lock: bool = True) -> dict:
    """Reconstruct every pending item of a store on a dask cluster.

    Parameters
    ----------
    store_path : path
        An ingested store (tilt series or energy stack).
    params : PtychoParams, optional
    client : distributed.Client, optional
        Where the tasks run; ``None`` runs them in this process, one by one.
    progress : bool or "lines"
        Show a progress bar counting items; ``"lines"``: plain lines on stderr instead (for logs and
        pipes, where a bar would print nothing until the end).
    items : iterable of int, optional
        Restrict to these items.
    resources : dict, "auto" or None
        Worker resources each task asks for; ``"auto"``: :func:`task_resources`
        (``{"GPU": 1}`` for CuPy tasks).
    lock : bool
        Hold the store's run lock (exclusive) while running; pass False only
        when the caller holds it already.

    Returns
    -------
    dict
        ``done`` (items computed now), ``skipped`` (already done), ``tasks``
        (per-item dicts from :func:`reconstruct_item`), ``seconds``,
        ``resources`` (what each task asked for), ``defaults`` (the data-driven choice made now,
        :func:`resolve_params`; None when ``params`` came resolved).

    Raises
    ------
    StoreLockedError
        Another run holds the store.
    StoreError
        Not a store, or existing results made with other settings.
    ItemsFailedError
        Some items raised; every other item was still computed and kept.
    """
    import contextlib  # noqa: PLC0415

    from .lock import run_lock, setup_lock  # noqa: PLC0415

    params = params or PtychoParams()
    store_path = str(Path(store_path).resolve())
    t0 = time.perf_counter()
    with run_lock(store_path) if lock else contextlib.nullcontext():
        group = open_store(store_path, mode="r+")
        record = None
        if not params.resolved:
            params, record = resolve_params(group, params)
        with setup_lock(store_path):
            prepare_results(group, params, record)
        status = np.asarray(group[layout.PTYCHO_STATUS][...])
        todo = [int(i) for i in (range(len(status)) if items is None else items) if status[i] != 1]
        skipped = [i for i in range(len(status)) if status[i] == 1]
        sources = warm_start_sources(group, params)
        # Anchors (and items whose source is already done) first; the rest wait for their source.
        need = {i: sources[i] for i in todo if sources[i] is not None and status[sources[i]] != 1}
        missing = {i: j for i, j in need.items() if j not in todo}
        if missing:
            raise ValueError(f"warm start: items {sorted(missing)} start from items {sorted(set(missing.values()))}, "
                             "which are neither finished nor in this run; add them to the items to run")
        if resources == "auto":
            resources = task_resources(params, client)
        pdict = asdict(params)
        tasks, failed = [], {}
        with _progress(progress, f"ptychography ({len(skipped)} already done)", len(todo)) as advance:
            if client is None:
                for i in sorted(todo, key=lambda i: i in need):
                    try:
                        tasks.append(reconstruct_item(store_path, i, pdict, sources[i]))
                    except Exception as exc:  # noqa: BLE001  (reported together below)
                        failed[i] = f"{type(exc).__name__}: {exc}"
                    advance()
            else:
                from distributed import as_completed  # noqa: PLC0415

                stamp = math.floor(time.time())
                futures = {}
                for i in sorted(todo, key=lambda i: i in need):
                    # A warm-started item waits for its source's task (passed as ``after``).
                    after = futures[need[i]] if i in need else None
                    futures[i] = client.submit(reconstruct_item, store_path, i, pdict, sources[i], after,
                                               key=f"ptycho-item-{i}-{stamp}", pure=False, resources=resources)
                item_of = {f.key: i for i, f in futures.items()}
                for fut in as_completed(list(futures.values())):
                    try:
                        tasks.append(fut.result())
                    except Exception as exc:  # noqa: BLE001
                        failed[item_of[fut.key]] = f"{type(exc).__name__}: {exc}"
                    advance()
    if failed:
        raise ItemsFailedError(failed)
    tasks.sort(key=lambda d: d["item"])
    return {"done": todo, "skipped": skipped, "tasks": tasks, "seconds": time.perf_counter() - t0,
            "resources": resources, "defaults": record}


class _progress:
    """A rich progress bar that counts items (a no-op when disabled; plain lines with ``"lines"``)."""

    #: Seconds between two plain progress lines (the first and the last item are always reported).
    LINE_EVERY_S = 10.0

    def __init__(self, enabled, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total

    def _lines(self):
        import sys  # noqa: PLC0415

        t0 = last = time.perf_counter()
        count = 0

        def advance():
            nonlocal count, last
            count += 1
            now = time.perf_counter()
            if count in (1, self.total) or now - last >= self.LINE_EVERY_S:
                last = now
                eta = (now - t0) / count * (self.total - count)
                # No estimate from the first item: items run in parallel, so one finished item says little.
                print(f"{self.label}: {count}/{self.total} items, {now - t0:.0f} s"
                      + (f", about {eta:.0f} s left" if 1 < count < self.total else ""), file=sys.stderr, flush=True)
        return advance

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        if self.enabled == "lines":
            self.enabled = False     # nothing to close in __exit__
            return self._lines()
        from rich.progress import Progress  # noqa: PLC0415

        self.bar = Progress()
        self.bar.__enter__()
        job = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(job)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
