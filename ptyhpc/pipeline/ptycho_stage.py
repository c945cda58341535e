"""Per-item ptychography on a dask cluster: one task per tilt angle.

Each task opens the store itself, reads only its own frames, reconstructs,
writes its own region of the result arrays (one chunk per item, so tasks
never share a chunk) and then sets its ``status`` to 1. A rerun skips items
whose status is 1; an item that crashed half-way keeps status 0 and is
redone from scratch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backend
from ..io import layout, open_store, read_geometry, read_item, require_result_array
from ..physics import electron_probe
from ..ptycho.engines import ENGINES, reconstruct
from ..ptycho.operators import ScanGeometry

__all__ = ["PtychoParams", "ObjectGrid", "object_grid", "reconstruct_item", "run_ptycho"]


@dataclass
class PtychoParams:
    """Settings of the ptychography stage (defaults serve any series; see README).

    ``fft_size`` 0 pads the detector to the next fast FFT length; the padded
    pixels are unmeasured and left free. ``probe_mask_factor`` is the radius of
    the Fourier-space probe mask in units of the convergence semi-angle (0: off).
    """

    engine: str = "rpie"
    n_iter: int = 60
    batch_size: int = 32
    alpha: float = 0.5
    beta_object: float = 0.1
    beta_probe: float = 0.1
    probe_update_start: int = 2
    noise_model: str = "poisson"
    probe_mask_factor: float = 1.2
    fft_size: int = 0
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"ptycho.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.n_iter < 1 or self.batch_size < 1:
            raise ValueError("ptycho.n_iter and ptycho.batch_size must be >= 1")


@dataclass
class ObjectGrid:
    """The object grid shared by all items (so results stack into one array)."""

    fft_shape: tuple
    pixel_size_m: tuple
    origin_m: tuple
    object_shape: tuple
    extra: dict = field(default_factory=dict)


def object_grid(group, params: PtychoParams) -> ObjectGrid:
    """Common object grid of a store: pixel 1/(N Δk), covering every item's scan.

    Raises
    ------
    ValueError
        ``fft_size`` smaller than the detector.
    """
    import scipy.fft  # noqa: PLC0415

    geom = read_geometry(group)
    det = group[layout.FRAMES].shape[2:]
    if params.fft_size:
        if params.fft_size < max(det):
            raise ValueError(f"fft_size {params.fft_size} is smaller than the detector {det}")
        fft_shape = (params.fft_size, params.fft_size)
    else:
        fft_shape = tuple(scipy.fft.next_fast_len(int(n)) for n in det)
    dk = geom["reciprocal_sampling_inv_m"]
    px = (1.0 / (fft_shape[0] * dk[0]), 1.0 / (fft_shape[1] * dk[1]))
    pos = np.asarray(group[layout.POSITIONS][...]).reshape(-1, 2)
    g = ScanGeometry.from_positions(pos, fft_shape, px)
    return ObjectGrid(fft_shape, g.pixel_size_m, g.origin_m, g.object_shape)


def _initial_probe(geom: dict, grid: ObjectGrid, intensity: float, xp):
    return electron_probe(grid.fft_shape, grid.pixel_size_m, geom["wavelength_m"],
                          geom["convergence_semiangle_rad"], defocus=geom["defocus_m"],
                          Cs=geom.get("Cs_m", 0.0) or 0.0, intensity=intensity, xp=xp)


def _probe_fourier_mask(geom: dict, grid: ObjectGrid, factor: float):
    if not factor:
        return None
    ky = np.fft.fftfreq(grid.fft_shape[0], d=grid.pixel_size_m[0])[:, None]
    kx = np.fft.fftfreq(grid.fft_shape[1], d=grid.pixel_size_m[1])[None, :]
    k_cut = factor * geom["convergence_semiangle_rad"] / geom["wavelength_m"]
    return np.hypot(ky, kx) <= k_cut


def reconstruct_item(store_path: str, item: int, params: PtychoParams | dict) -> dict:
    """Reconstruct one item and write it into the store (runs on a worker).

    Writes ``object[item]``, ``probe[item]``, ``error[item]``,
    ``illumination[item]``, then ``status[item] = 1``.

    Returns
    -------
    dict
        ``item``, ``seconds``, ``final_error``, ``backend``.
    """
    if isinstance(params, dict):
        params = PtychoParams(**params)
    t0 = time.perf_counter()
    group = open_store(store_path, mode="r+")
    res = group[layout.PTYCHO]
    grid = ObjectGrid(tuple(res.attrs["fft_shape"]), tuple(res.attrs["pixel_size_m"]),
                      tuple(res.attrs["origin_m"]), tuple(group[layout.PTYCHO_OBJECT].shape[1:]))
    geom = read_geometry(group)
    frames, positions = read_item(group, item)
    xp = backend.get_xp(params.backend)
    intensity = float(frames.sum(axis=(1, 2), dtype=np.float64).mean())
    probe = _initial_probe(geom, grid, intensity, xp)
    result = reconstruct(
        frames, positions, probe, grid.pixel_size_m, engine=params.engine, n_iter=params.n_iter,
        batch_size=params.batch_size, alpha=params.alpha, beta_object=params.beta_object,
        beta_probe=params.beta_probe, probe_update_start=params.probe_update_start,
        noise_model=params.noise_model,
        probe_fourier_mask=_probe_fourier_mask(geom, grid, params.probe_mask_factor),
        origin_m=grid.origin_m, object_shape=grid.object_shape, fft_shape=grid.fft_shape,
        seed=params.seed + item, xp=xp,
    )
    # Data first, status last: a crash in between leaves status 0 and the item is redone.
    group[layout.PTYCHO_OBJECT][item] = result.object
    group[layout.PTYCHO_PROBE][item] = result.probe
    group[layout.PTYCHO_ERROR][item] = result.error
    group[layout.PTYCHO_ILLUMINATION][item] = result.illumination
    group[layout.PTYCHO_STATUS][item] = 1
    return {"item": item, "seconds": time.perf_counter() - t0, "final_error": float(result.error[-1]),
            "backend": xp.__name__}


def prepare_results(group, params: PtychoParams) -> ObjectGrid:
    """Create (or check, on a rerun) the result arrays of the ptycho stage.

    Raises
    ------
    StoreError
        Existing results were made with another grid or iteration count.
    """
    grid = object_grid(group, params)
    n = group[layout.FRAMES].shape[0]
    H, W = grid.object_shape
    Ny, Nx = grid.fft_shape
    attrs = {"pixel_size_m": list(grid.pixel_size_m), "origin_m": list(grid.origin_m)}
    require_result_array(group, layout.PTYCHO_OBJECT, (n, H, W), "complex64", (1, H, W),
                         fill_value=1 + 0j, attrs={**attrs, "axes": ["item", "y", "x"]})
    require_result_array(group, layout.PTYCHO_PROBE, (n, Ny, Nx), "complex64", (1, Ny, Nx),
                         attrs={"pixel_size_m": list(grid.pixel_size_m), "centre": "pixel (Ny//2, Nx//2)"})
    require_result_array(group, layout.PTYCHO_ERROR, (n, params.n_iter), "float32", (1, params.n_iter),
                         attrs={"definition": "sum over measured pixels (|Psi| - sqrt(I))^2 / sum I"})
    require_result_array(group, layout.PTYCHO_ILLUMINATION, (n, H, W), "float32", (1, H, W), attrs=attrs)
    require_result_array(group, layout.PTYCHO_STATUS, (n,), "uint8", (1,),
                         attrs={"meaning": "0 = pending, 1 = done"})
    res = group[layout.PTYCHO]
    res.attrs.update({"fft_shape": list(grid.fft_shape), **attrs})
    return grid


def run_ptycho(store_path: str | Path, params: PtychoParams | None = None, *, client=None,
               progress: bool = True, items=None) -> dict:
    """Reconstruct every pending item of a store on a dask cluster.

    Parameters
    ----------
    store_path : path
        An ingested store.
    params : PtychoParams, optional
    client : distributed.Client, optional
        Where the tasks run; ``None`` runs them in this process, one by one.
    progress : bool
        Show a progress bar counting items.
    items : iterable of int, optional
        Restrict to these items.

    Returns
    -------
    dict
        ``done`` (items computed now), ``skipped`` (already done), ``tasks``
        (per-item dicts from :func:`reconstruct_item`), ``seconds``.
    """
    from rich.progress import Progress  # noqa: PLC0415

    params = params or PtychoParams()
    store_path = str(Path(store_path).resolve())
    t0 = time.perf_counter()
    group = open_store(store_path, mode="r+")
    prepare_results(group, params)
    status = np.asarray(group[layout.PTYCHO_STATUS][...])
    todo = [i for i in (range(len(status)) if items is None else items) if status[i] != 1]
    skipped = [i for i in range(len(status)) if status[i] == 1]
    pdict = asdict(params)
    tasks = []
    with Progress(disable=not progress) as bar:
        job = bar.add_task(f"ptychography ({len(skipped)} already done)", total=len(todo))
        if client is None:
            for i in todo:
                tasks.append(reconstruct_item(store_path, i, pdict))
                bar.advance(job)
        else:
            from distributed import as_completed  # noqa: PLC0415

            futures = client.map(reconstruct_item, [store_path] * len(todo), todo, [pdict] * len(todo),
                                 key=[f"ptycho-item-{i}-{math.floor(time.time())}" for i in todo],
                                 pure=False)
            for fut in as_completed(futures):
                tasks.append(fut.result())
                bar.advance(job)
    tasks.sort(key=lambda d: d["item"])
    return {"done": todo, "skipped": skipped, "tasks": tasks, "seconds": time.perf_counter() - t0}
