"""Options of the ptychography stage: one validated model for recipes, CLI flags and task payloads.

:class:`PtychoOptions` is a pydantic dataclass (validated once, when it is built; a real
dataclass, so ``dataclasses.asdict`` and pickling carry it to the dask workers unchanged). Its
engine field names are the keyword names of :func:`ptyhpc.ptycho.engines.reconstruct`.

A recipe's ``ptycho:`` section may give the options flat (the original style) or in per-feature
groups, which :func:`flatten_section` merges::

    ptycho:
      engine: rpie
      n_iter: 60
      probe: {n_probe_modes: 2, beta_probe: 0.2}
      positions: {position_correction_start: 5, position_model: affine}

Both spellings give the same :class:`PtychoOptions`. Every engine-capability check of the
pipeline is in :func:`_check_capabilities`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Optional

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ArgsKwargs
from pydantic.dataclasses import dataclass

__all__ = ["PtychoOptions", "GROUPS", "STAGE_KEYS", "flatten_section", "options_from_section", "error_lines"]


def _no_bool(v):
    # YAML's `yes`/`true` is a bool, and bool is an int in Python: an iteration count of True is a typo.
    if isinstance(v, bool):
        raise ValueError("must be an integer, not true/false")
    return v


Int = Annotated[int, BeforeValidator(_no_bool)]

#: Settings a stage of a chain may change; the grid, masks, seed and backend are the stage's.
STAGE_KEYS = ("engine", "n_iter", "alpha", "beta_object", "beta_probe", "probe_update_start", "noise_model",
              "batch_size", "dm_beta", "n_probe_modes", "position_correction_start", "position_step",
              "max_position_shift_px", "position_model", "subpixel", "background")

#: Per-feature groups a recipe may use instead of flat keys: group -> the flat keys it holds.
GROUPS = {
    "probe": ("beta_probe", "probe_update_start", "n_probe_modes", "probe_mask_factor"),
    "object": ("alpha", "beta_object"),
    "positions": ("position_correction_start", "position_step", "max_position_shift_px", "position_model",
                  "subpixel"),
    "data": ("noise_model", "use_detector_mask", "fft_size", "background"),
}


@dataclass(config=ConfigDict(extra="forbid"))
class PtychoOptions:
    """Settings of the ptychography stage (defaults serve any series; see docs/engines.md). The keys may
    also be grouped: `probe:` (beta_probe, probe_update_start, n_probe_modes, probe_mask_factor),
    `object:` (alpha, beta_object), `positions:` (position_correction_start, position_step,
    max_position_shift_px, position_model, subpixel), `data:` (noise_model, use_detector_mask, fft_size).

    ``fft_size`` 0 pads the detector to the next fast FFT length; the padded
    pixels are unmeasured and left free. ``probe_mask_factor`` is the radius of
    the Fourier-space probe mask in units of the convergence semi-angle (0: off).
    ``warm_start`` starts every item that is not an anchor from the final probe
    of the nearest anchor of its sequence (anchors: every
    ``warm_start_stride``-th item); see
    :func:`ptyhpc.pipeline.orchestrate.warm_start_sources`.

    The groups are :data:`GROUPS`; see :func:`flatten_section`.

    ``engine``
        A name of :data:`ptyhpc.ptycho.engines.ENGINES`, or ``"chain"`` to run
        ``stages`` in sequence (:func:`ptyhpc.ptycho.chain.reconstruct_chain`),
        e.g. ``[{"engine": "dm", "n_iter": 50}, {"engine": "lsqml", "n_iter": 30}]``;
        a stage may set any of :data:`STAGE_KEYS`. With ``"chain"``, ``n_iter``
        becomes the stages' total (the length of the stored error curve).
    ``dm_beta``
        β of the difference map (1: classic).
    ``n_probe_modes``
        Incoherent probe modes. The stored probe is (n_items, Ny, Nx) for one
        mode and (n_items, modes, Ny, Nx) for more (:mod:`ptyhpc.io.layout`).
    ``position_correction_start``, ``position_step``, ``max_position_shift_px``, ``position_model``
        Position refinement; None: off; ``affine`` keeps the positions an
        affine map of the scan. The positions used are stored in
        ``results/ptycho/positions``.
    ``subpixel``
        Sub-pixel scan positions: ``"fourier"``, ``"bilinear"`` or ``"none"``
        (:func:`ptyhpc.ptycho.engines.reconstruct`).
    ``use_detector_mask``
        Leave the store's bad detector pixels (``detector_mask``) free.
    ``background``
        Initial incoherent background (counts per detector pixel, uniform), refined with the object
        (:func:`ptyhpc.ptycho.engines.reconstruct`); None: no background term.
    ``data_defaults``, ``user_set``, ``stop_when_stalled``
        With ``data_defaults`` (on), the settings the user did not give are chosen from the store
        (counts per pixel, regime; :func:`ptyhpc.ptycho.defaults.apply_data_defaults`) and the
        choice is recorded in ``results/ptycho`` attribute ``defaults_chosen``. ``user_set`` names
        the given settings: recorded from the keywords of the call (even at default values), or passed
        by the CLI and recipes; a setting whose value differs from the default here also counts.
        ``stop_when_stalled`` ends an item's run when its data error stalls (the stored error
        curve then repeats its last value).

    Raises
    ------
    pydantic.ValidationError
        (a ValueError) Any setting out of range or an unsupported combination,
        naming the ``ptycho.`` key.
    """

    engine: str = "rpie"
    n_iter: Annotated[Int, Field(ge=1)] = 60  # iterations per item
    batch_size: Annotated[Int, Field(ge=1)] = 32  # positions per mini-batch (one set of batched array operations)
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.5  # rPIE regularisation α (1: ePIE-like)
    beta_object: Annotated[float, Field(gt=0)] = 0.1  # object step size β
    beta_probe: Annotated[float, Field(gt=0)] = 0.1  # probe step size β
    probe_update_start: Annotated[Int, Field(ge=0)] = 2  # first iteration that updates the probe
    noise_model: str = "poisson"  # poisson (likelihood gradient) | amplitude (modulus projection)
    probe_mask_factor: Annotated[float, Field(ge=0)] = 1.2  # Fourier probe mask radius, semi-angles (0: off)
    fft_size: Annotated[Int, Field(ge=0)] = 0  # padded detector size (0: next fast FFT length; padded pixels left free)
    seed: Int = 0  # random seed (initial guesses, batch order)
    backend: str = "auto"  # auto | numpy | cupy
    warm_start: bool = False  # start non-anchor items from the nearest anchor's final probe
    warm_start_stride: Annotated[Int, Field(ge=2)] = 4  # every stride-th item of a sequence is an anchor
    stages: Optional[list] = None  # engine: chain: [{engine: dm, n_iter: 50}, {engine: lsqml, n_iter: 30}]
    dm_beta: float = 1.0
    n_probe_modes: Annotated[Int, Field(ge=1)] = 1
    position_correction_start: Optional[Annotated[Int, Field(ge=0)]] = None  # first refining iteration (null: off)
    position_step: Annotated[float, Field(gt=0)] = 1.0  # step of the position update
    max_position_shift_px: Annotated[float, Field(gt=0)] = 0.5  # largest position change per iteration, object px
    position_model: str = "free"  # free | affine (positions an affine map of the scan: a miscalibrated stage)
    subpixel: str = "fourier"
    use_detector_mask: bool = True
    # Initial incoherent background, counts per detector pixel, refined with the object (null: none).
    background: Optional[Annotated[float, Field(gt=0)]] = None
    stop_when_stalled: bool = False  # end an item when its data error stalls (ptyhpc.ptycho.defaults.stalled)
    data_defaults: bool = True  # let the store's data choose the settings not given (ptyhpc.ptycho.defaults)
    # Bookkeeping, not settings (left out of equality): the names the user gave, which the data-driven
    # choice never changes, and whether that choice has been applied.
    user_set: Optional[tuple] = dataclasses.field(default=None, compare=False)
    resolved: bool = dataclasses.field(default=False, compare=False)

    @model_validator(mode="before")
    @classmethod
    def _record_given(cls, data):
        # A Python caller's keywords are the settings it gave (even at their default values): the
        # data-driven defaults must leave them alone. Callers that know better (CLI, recipe, a copy
        # made by dataclasses.replace) pass user_set themselves.
        if isinstance(data, ArgsKwargs) and data.kwargs and "user_set" not in data.kwargs:
            given = tuple(k for k in data.kwargs if k not in ("resolved", "data_defaults"))
            return ArgsKwargs(data.args, {**data.kwargs, "user_set": given})
        return data

    def __post_init__(self):
        # Runs after the field checks (types and ranges above); here what depends on several fields.
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"ptycho.backend must be 'auto', 'numpy' or 'cupy', got {self.backend!r}")
        if self.engine == "chain":
            self.stages = _checked_stages(self.stages)
            self.n_iter = sum(int(st["n_iter"]) for st in self.stages)  # the stored curve holds every stage
        elif self.stages is not None:
            raise ValueError(f"ptycho.stages is given but ptycho.engine is {self.engine!r}; set engine: chain "
                             "to run the stages")
        for where, st in self.stage_settings():
            _check_ranges(where, st)
            _check_capabilities(where, st)

    def stage_settings(self) -> list[tuple[str, dict]]:
        """(label, effective settings) of each stage (one for a plain engine)."""
        base = {k: getattr(self, k) for k in STAGE_KEYS}
        if self.engine != "chain":
            return [("ptycho", base)]
        return [(f"ptycho.stages[{k}]", {**base, **st}) for k, st in enumerate(self.stages)]

    _stage_settings = stage_settings   # the name used before the options had their own module

    @property
    def final_probe_modes(self) -> int:
        """Probe modes of the stored probe (those of the last stage)."""
        return int(self.stage_settings()[-1][1]["n_probe_modes"])

    @property
    def positions_refined(self) -> bool:
        """True when any stage refines the positions."""
        return any(st["position_correction_start"] is not None for _, st in self.stage_settings())

    def engine_kwargs(self) -> dict:
        """Keywords of :func:`ptyhpc.ptycho.engines.reconstruct` common to every stage (no grid, masks, seed)."""
        return {k: getattr(self, k) for k in STAGE_KEYS if k not in ("engine", "n_iter")}


def _checked_stages(stages) -> list[dict]:
    from .chain import validate_stages  # noqa: PLC0415  (chain imports the engines; only chains need it)

    if not stages:
        raise ValueError("ptycho.engine 'chain' needs ptycho.stages, e.g. "
                         "[{engine: dm, n_iter: 50}, {engine: lsqml, n_iter: 30}]")
    try:
        stages = validate_stages([flatten_section(st) if isinstance(st, dict) else st for st in stages])
    except ValueError as exc:
        raise ValueError(f"ptycho.stages: {exc}") from None
    for k, stage in enumerate(stages):
        extra = sorted(set(stage) - set(STAGE_KEYS))
        if extra:
            raise ValueError(f"ptycho.stages: stage {k}: {extra} cannot be set per stage; "
                             f"a stage may set {STAGE_KEYS}")
    return stages


def _is_int(v) -> bool:
    import numpy as np  # noqa: PLC0415

    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_ranges(where: str, st: dict) -> None:
    """Value ranges of one stage's settings (a chain's stages are plain dicts); ValueError naming the key."""
    if st["noise_model"] not in ("poisson", "amplitude"):
        raise ValueError(f"{where}.noise_model must be 'poisson' or 'amplitude', got {st['noise_model']!r}")
    if not 0 < st["alpha"] <= 1:
        raise ValueError(f"{where}.alpha must be in (0, 1], got {st['alpha']}")
    for key in ("beta_object", "beta_probe", "position_step", "max_position_shift_px"):
        if not st[key] > 0:
            raise ValueError(f"{where}.{key} must be > 0, got {st[key]}")
    if st["subpixel"] not in ("fourier", "bilinear", "none"):
        raise ValueError(f"{where}.subpixel must be 'fourier', 'bilinear' or 'none', got {st['subpixel']!r}")
    if st["position_model"] not in ("free", "affine"):
        raise ValueError(f"{where}.position_model must be 'free' or 'affine', got {st['position_model']!r}")
    if not _is_int(st["probe_update_start"]) or st["probe_update_start"] < 0:
        raise ValueError(f"{where}.probe_update_start must be an integer >= 0, got {st['probe_update_start']!r}")
    if not _is_int(st["batch_size"]) or st["batch_size"] < 1:
        raise ValueError(f"{where}.batch_size must be an integer >= 1, got {st['batch_size']!r}")
    if not st["dm_beta"]:
        raise ValueError(f"{where}.dm_beta must be non-zero (1: the classic difference map)")
    if not _is_int(st["n_probe_modes"]) or st["n_probe_modes"] < 1:
        raise ValueError(f"{where}.n_probe_modes must be an integer >= 1, got {st['n_probe_modes']!r}")
    start = st["position_correction_start"]
    if start is not None and (not _is_int(start) or start < 0):
        raise ValueError(f"{where}.position_correction_start must be None or an integer >= 0, got {start!r}")


#: Engines that take probe modes and position correction today (the others raise in ``reconstruct``).
def _check_capabilities(where: str, st: dict) -> None:
    """Refuse an engine/option combination the engine does not support; ValueError naming both.

    The pipeline's only engine-capability check (the CLI, recipes and tasks all reach it through
    :class:`PtychoOptions`); the verdict and its wording come from the engine registry
    (:func:`ptyhpc.ptycho.engines.check_supported`), with ``where.key`` (``ptycho.n_probe_modes``,
    ``ptycho.stages[k].subpixel``) in front.
    """
    from .engines import ENGINES, check_supported  # noqa: PLC0415

    engine = st["engine"]
    if engine not in ENGINES:
        names = (*ENGINES, "chain") if where == "ptycho" else tuple(ENGINES)
        raise ValueError(f"{where}.engine must be one of {names}, got {engine!r}")
    for key, value in st.items():  # one key at a time, so the message names ``where.key``
        if key == "engine":
            continue
        try:
            check_supported(engine, **{key: value})
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from None


def flatten_section(section: dict) -> dict:
    """A ``ptycho:`` mapping with its :data:`GROUPS` merged into flat keys (the original recipe style).

    Raises
    ------
    ValueError
        A group that is not a mapping, a key that does not belong to its group,
        or a key given both flat and in a group (naming ``ptycho.GROUP.KEY``).
    """
    flat = {k: v for k, v in section.items() if k not in GROUPS}
    for group, keys in GROUPS.items():
        if group not in section:
            continue
        body = section[group]
        if not isinstance(body, dict):
            raise ValueError(f"ptycho.{group} must be a mapping of {', '.join(keys)}, got {body!r}")
        for key, value in body.items():
            if key not in keys:
                raise ValueError(f"ptycho.{group}.{key}: unknown key (known keys here: {', '.join(keys)})")
            if key in flat:
                raise ValueError(f"ptycho.{group}.{key}: also given as ptycho.{key}; give it once")
            flat[key] = value
    return flat


def options_from_section(section: dict[str, Any]) -> PtychoOptions:
    """Validate a recipe's ``ptycho:`` section (flat or grouped) into :class:`PtychoOptions`.

    Raises
    ------
    ValueError
        Bad keys or values; one line per problem, each naming ``ptycho.KEY``.
    """
    flat = flatten_section(section)
    try:
        return PtychoOptions(**flat)
    except ValidationError as exc:
        lines = error_lines(exc, "ptycho", PtychoOptions)
    # Name a grouped key as the recipe writes it (ptycho.probe.n_probe_modes).
    for group, keys in GROUPS.items():
        for key in set(keys) & set(section.get(group) or {}):
            lines = [re.sub(rf"^ptycho\.{key}\b", f"ptycho.{group}.{key}", ln) for ln in lines]
    raise ValueError("; ".join(lines))


#: pydantic's range constraints as the short form used in messages.
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def error_lines(exc: ValidationError, prefix: str, model=None) -> list[str]:
    """Pydantic's errors as ``prefix.key: message`` lines, without pydantic's type codes and URLs."""
    import dataclasses  # noqa: PLC0415

    known = [f.name for f in dataclasses.fields(model)] if dataclasses.is_dataclass(model) else \
        list(getattr(model, "model_fields", {}))
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        key = ".".join([prefix, *loc])
        msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "should be")
        bound = next(((op, err["ctx"][k]) for k, op in _BOUNDS.items() if k in err.get("ctx", {})), None)
        if bound is not None:
            msg = f"must be {bound[0]} {bound[1]}"
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            groups = f"; groups: {', '.join(GROUPS)}" if model is PtychoOptions else ""
            lines.append(f"{key}: unknown key (known keys here: {', '.join(known)}{groups})")
        elif not loc and msg.startswith(f"{prefix}."):
            lines.append(msg)    # a cross-field check names its key itself
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or not loc else f" (got {got!r})"
            lines.append(f"{key}: {msg}{shown}")
    return lines
