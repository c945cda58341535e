"""Engines run in sequence (e.g. DM to get close, then LSQ-ML to refine with the right noise model).

Each stage is one :func:`ptyhpc.ptycho.engines.reconstruct` call that starts
from the previous stage's object (``object_init``), probe and refined scan
positions, on one object grid fixed by the first stage. This is the usual
practice of ptypy ("engines" list), PtychoShelves (``eng`` cell array) and
PyNX (operator chains such as ``DM**100 * ML**50``): a projection algorithm
that explores well but does not converge on noisy data, followed by a
likelihood method that does.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import numpy as np

from .engines import ENGINES, PtychoResult, check_supported, reconstruct

__all__ = ["reconstruct_chain", "validate_stages"]

#: Arguments the chain sets itself; a stage may not override them.
_RESERVED = ("frames", "positions_m", "probe", "pixel_size_m", "object_init", "xp", "callback")
#: Keyword arguments a stage (or the common settings) may give: those of :func:`reconstruct`.
STAGE_KEYS = tuple(p for p in inspect.signature(reconstruct).parameters if p not in _RESERVED)


def validate_stages(stages) -> list[dict]:
    """Check a list of stages and return normalised copies.

    Parameters
    ----------
    stages : sequence of dict
        Each with ``"engine"`` (one of :data:`ENGINES`), ``"n_iter"`` (int ≥ 1)
        and optionally any other keyword argument of :func:`reconstruct`.

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        Empty chain, a stage that is not a mapping, an unknown engine or key,
        a missing or non-positive ``n_iter``, or a reserved key (``object_init``,
        ``probe``, ... are handed over by the chain).
    """
    if isinstance(stages, (str, bytes)) or not hasattr(stages, "__iter__"):
        raise ValueError(f"stages must be a list of dicts, got {type(stages).__name__}")
    out = []
    for k, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ValueError(f"stage {k}: expected a dict with 'engine' and 'n_iter', got {type(stage).__name__}")
        stage = dict(stage)
        if stage.get("engine") not in ENGINES:
            raise ValueError(f"stage {k}: engine must be one of {ENGINES}, got {stage.get('engine')!r}")
        n_iter = stage.get("n_iter")
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
            raise ValueError(f"stage {k}: n_iter must be an integer >= 1, got {n_iter!r}")
        reserved = sorted(set(stage) & set(_RESERVED))
        if reserved:
            raise ValueError(f"stage {k}: {reserved} are handed from stage to stage and cannot be set")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise ValueError(f"stage {k}: unknown settings {unknown}; allowed: {STAGE_KEYS}")
        out.append(stage)
    if not out:
        raise ValueError("stages is empty: give at least one {'engine': ..., 'n_iter': ...}")
    return out


def _single_mode(probe: np.ndarray) -> np.ndarray:
    # Modes are orthogonal and sorted strongest first (SVD); the dominant one, scaled to the
    # total power, keeps Σ|P|² (the counts per pattern) for an engine without modes.
    if probe.ndim == 2:
        return probe
    total = float(np.sum(np.abs(probe) ** 2))
    first = probe[0]
    return (first * np.sqrt(total / max(float(np.sum(np.abs(first) ** 2)), 1e-30))).astype(np.complex64)


def reconstruct_chain(frames, positions_m, probe, pixel_size_m, stages, *, object_init=None,
                      xp: ModuleType = np, callback=None, **common) -> PtychoResult:
    """Run engines one after the other, each starting where the previous one stopped.

    Parameters
    ----------
    frames : (n, det_y, det_x)
        Diffraction patterns (counts), centred.
    positions_m : (n, 2) float
        Probe centres (y, x), m.
    probe : (Ny, Nx) or (m, Ny, Nx) complex
        Initial probe.
    pixel_size_m : (float, float)
        Object pixel, m.
    stages : sequence of dict
        e.g. ``[{"engine": "dm", "n_iter": 50}, {"engine": "lsqml", "n_iter": 30}]``;
        each stage's keys override ``common`` (see :func:`validate_stages`).
    object_init : (H, W) complex, optional
        Starting object of the first stage.
    xp : module
        numpy or cupy.
    callback : callable(iteration, error), optional
        Called with the iteration counted over the whole chain.
    **common
        Keyword arguments of :func:`reconstruct` shared by all stages.

    Returns
    -------
    PtychoResult
        The last stage's object, probe, illumination and grid; ``error``
        (sum of the stages' ``n_iter``,) float32 is the stages' error curves
        concatenated (the same normalised amplitude error for every engine).
        ``info["stages"]`` lists per stage its ``engine``, ``n_iter``, ``first``
        (index of its first iteration in ``error``) and ``final_error``;
        ``info["positions_m"]`` holds the refined positions of the last stage.

    Raises
    ------
    ValueError
        Invalid stages or common settings (see :func:`validate_stages`), and
        whatever :func:`reconstruct` raises for a stage, prefixed with the stage.

    Notes
    -----
    The object grid (``origin_m``, ``object_shape``) is fixed by the first
    stage so later stages can start from its object even when positions move.
    Refined positions (``position_correction_start``) are handed on. A probe
    with modes passed to an engine without them (its capability record, ``er``, ``dm``, ``lsqml``)
    becomes its dominant mode scaled to the modes' total power (the weak
    modes' power would otherwise be lost from the intensity scale).
    """
    stages = validate_stages(stages)
    bad = sorted(set(common) - set(STAGE_KEYS))
    if bad:
        raise ValueError(f"unknown settings {bad}; allowed: {STAGE_KEYS}")
    reserved = sorted(set(common) & {"engine", "n_iter"})
    if reserved:
        raise ValueError(f"{reserved} are per stage: put them in the stages")
    # Every stage's options against its engine's capabilities before any stage runs.
    for k, stage in enumerate(stages):
        try:
            check_supported(stage["engine"], **{k2: v for k2, v in {**common, **stage}.items() if k2 != "engine"})
        except ValueError as exc:
            raise ValueError(f"stage {k} ({stage['engine']}): {exc}") from exc
    positions = np.asarray(positions_m, dtype=np.float64)
    obj = object_init
    prb = probe
    errors, info_stages = [], []
    grid = {}
    offset = 0
    result = None
    for k, stage in enumerate(stages):
        kw = {**common, **grid, **stage}
        if kw.get("n_probe_modes", 1) <= 1 and np.ndim(prb) == 3:
            prb = _single_mode(np.asarray(prb))
        cb = None if callback is None else (lambda it, e, _o=offset: callback(_o + it, e))
        try:
            result = reconstruct(frames, positions, prb, pixel_size_m, object_init=obj, xp=xp, callback=cb, **kw)
        except ValueError as exc:
            raise ValueError(f"stage {k} ({stage['engine']}): {exc}") from exc
        obj, prb = result.object, result.probe
        positions = np.asarray(result.info["positions_m"], dtype=np.float64)
        # Later stages must use the first stage's grid, or object_init would not fit.
        grid = {"origin_m": result.origin_m, "object_shape": result.object.shape}
        errors.append(result.error)
        info_stages.append({"engine": stage["engine"], "n_iter": int(stage["n_iter"]), "first": offset,
                            "final_error": float(result.error[-1])})
        offset += int(stage["n_iter"])
    result.error = np.concatenate(errors).astype(np.float32)
    result.info = {**result.info, "stages": info_stages, "n_iter": offset, "engine": "chain"}
    return result
