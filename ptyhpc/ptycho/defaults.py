"""Data-driven defaults of the ptychography stage: what the store says picks the engine settings.

One pure function, :func:`choose_defaults`, maps a summary of the store (:class:`DataSummary`: counts
per pixel, propagation regime, radiation, detector mask, scan) and the settings the user gave to the
settings to run with, and a reason for each choice. A setting the user gave is never changed.

Why: the generic defaults (rPIE, Poisson gradient, steps 0.1, 60 iterations) were tuned on low-dose
electron data (~0.2 counts per pixel, docs/engines.md), where small steps keep the shot noise out.
At thousands of counts per pixel the noise is negligible and those small steps leave the slowest
components unconverged; in the near field these are the low spatial frequencies, which the
propagator transfers only weakly into intensity (the contrast-transfer function sin(πλz|k|²) → 0 as
k → 0), so a washed-out, smoothly wrong phase remains (issue 13; measured in docs/real_data.md).

Rules (the thresholds and values are measured in docs/real_data.md):

- ``counts_per_pixel`` < :data:`HIGH_DOSE_COUNTS` (low dose): the generic defaults, unchanged.
- high dose: the modulus (amplitude) data term, whose Gaussian noise model is the Poisson one's
  limit at high counts and allows larger steps (β = :data:`HIGH_DOSE_STEP` for object and probe);
  up to :data:`HIGH_DOSE_MAX_ITER` iterations with the stopping rule of :func:`stalled` (stop when
  the data error improves by less than :data:`STALL_TOL` over :data:`STALL_WINDOW` iterations).
- high dose: an incoherent background, started at :data:`HIGH_DOSE_BACKGROUND` of the mean counts
  per pixel and refined with the object (the multiplicative update of
  :func:`ptyhpc.ptycho.engines.reconstruct`).
- high dose in the near field: :data:`NEAR_FIELD_PROBE_MODES` incoherent probe modes (Thibault &
  Menzel, Nature 494, 68 (2013)). A partially coherent beam blurs the near-field fringes; a single
  coherent mode can only explain the blur by a weaker object, which is what washed out the phase of
  the PETRA III scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DataSummary", "summarize_store", "choose_defaults", "stalled", "explicit_settings", "apply_data_defaults",
           "HIGH_DOSE_COUNTS", "HIGH_DOSE_BACKGROUND"]

#: Mean counts per measured detector pixel per pattern above which the data count as high dose.
#: The bundled CNT series has ~0.2, the PETRA III near-field scan ~970.
HIGH_DOSE_COUNTS = 10.0
#: Iteration cap at high dose (the stopping rule usually ends the run earlier).
HIGH_DOSE_MAX_ITER = 200
#: Stopping rule: relative improvement of the data error over the window below which a run stops.
STALL_TOL = 0.01
STALL_WINDOW = 20
#: Object and probe step β at high dose.
HIGH_DOSE_STEP = 0.5
#: Probe modes in the near field at high dose.
NEAR_FIELD_PROBE_MODES = 3
#: Initial incoherent background at high dose, as a fraction of the mean counts per pixel (it is refined).
HIGH_DOSE_BACKGROUND = 0.005


#: Settings that tune an engine by hand: a user who gives one keeps every engine setting as it is.
_ENGINE_TUNING = frozenset({"alpha", "dm_beta", "stages"})
_PIE = ("rpie", "epie", "mpie")


@dataclass(frozen=True)
class DataSummary:
    """What the choice of defaults looks at.

    Attributes
    ----------
    counts_per_pixel : float
        Mean counts per measured detector pixel per pattern.
    regime : {"far_field", "near_field"}
    radiation : str or None
        ``"xray"``, ``"electron"`` or None (not recorded).
    bad_pixel_fraction : float
        Fraction of detector pixels the mask marks bad (0 without a mask).
    n_positions : int
        Positions per item.
    """

    counts_per_pixel: float
    regime: str
    radiation: str | None
    bad_pixel_fraction: float
    n_positions: int


def summarize_store(group, item: int = 0, max_frames: int = 64) -> DataSummary:
    """The :class:`DataSummary` of a store, from ``item``'s first ``max_frames`` frames (bounded read).

    Raises
    ------
    StoreError
        Bad regime metadata or detector mask (see :func:`ptyhpc.io.read_propagation`,
        :func:`ptyhpc.io.read_mask`).
    """
    from ..io import layout, read_mask, read_propagation  # noqa: PLC0415

    frames_arr = group[layout.FRAMES]
    n_pos = int(frames_arr.shape[1])
    frames = np.asarray(frames_arr[item, :min(max_frames, n_pos)], dtype=np.float64)
    mask = read_mask(group)
    good = np.ones(frames.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    cpp = float(frames[:, good].mean()) if good.any() else 0.0
    return DataSummary(counts_per_pixel=cpp, regime=read_propagation(group)["regime"],
                       radiation=group.attrs.get("radiation"), bad_pixel_fraction=float(1 - good.mean()),
                       n_positions=n_pos)


def choose_defaults(summary: DataSummary, explicit=(), engine: str = "rpie") -> tuple[dict, dict]:
    """Settings chosen from the data, and why.

    Parameters
    ----------
    summary : DataSummary
    explicit : iterable of str
        Names of the settings the user gave; they are left out of the choice.
    engine : str
        The engine the user gave (counts only when ``"engine"`` is in ``explicit``).

    Returns
    -------
    (dict, dict)
        Settings to apply (keys of :class:`ptyhpc.pipeline.ptycho_stage.PtychoParams`) and
        ``{setting: reason}`` for each, human-readable. Empty at low dose.
    """
    explicit = set(explicit)
    dose = f"{summary.counts_per_pixel:.3g} counts per pixel"
    chosen, why = {}, {}

    def pick(key, value, reason):
        if key not in explicit:
            chosen[key], why[key] = value, reason

    if summary.counts_per_pixel < HIGH_DOSE_COUNTS:
        return chosen, {"all": f"{dose} < {HIGH_DOSE_COUNTS:g} (low dose): the generic low-dose defaults"}
    high = f"{dose} >= {HIGH_DOSE_COUNTS:g} (high dose)"
    # Settings of the PIE family below (measured with rPIE); another engine keeps its own defaults.
    tuned = explicit & _ENGINE_TUNING
    if tuned or ("engine" in explicit and engine not in _PIE):
        given = ", ".join(sorted(tuned)) or f"engine {engine!r}"
        return chosen, {"all": f"{high}, but {given} was given: that engine's settings are kept"}
    pick("noise_model", "amplitude", f"{high}: Poisson noise is near Gaussian on the amplitudes; the modulus "
                                     "step converges faster")
    pick("beta_object", HIGH_DOSE_STEP, f"{high}: shot noise is small, so larger steps (the generic 0.1 is for "
                                        "low dose)")
    pick("beta_probe", HIGH_DOSE_STEP, f"{high}: as beta_object")
    pick("n_iter", HIGH_DOSE_MAX_ITER, f"{high}: up to {HIGH_DOSE_MAX_ITER} iterations, stopped when the data "
                                       f"error improves by < {STALL_TOL:.1%} over {STALL_WINDOW}")
    pick("stop_when_stalled", True, f"{high}: iterate until the data error stalls")
    pick("background", round(HIGH_DOSE_BACKGROUND * summary.counts_per_pixel, 6),
         f"{high}: an incoherent background (scatter, dark current, detector offsets) refined with the object, "
         f"started at {HIGH_DOSE_BACKGROUND:.1%} of the mean counts; at high dose the residual it removes "
         "would otherwise go into the object")
    if summary.regime == "near_field":
        pick("n_probe_modes", NEAR_FIELD_PROBE_MODES, f"{high}, near field: incoherent probe modes take the beam's "
                                                      "partial coherence (one mode washes out the phase)")
    return chosen, why


def stalled(errors, window: int = STALL_WINDOW, tol: float = STALL_TOL) -> bool:
    """True when the data error improved by less than ``tol`` (relative) over the last ``window`` iterations.

    Parameters
    ----------
    errors : 1-D sequence of float
        The data error of each iteration so far.
    """
    e = np.asarray(errors, float)
    if e.size <= window:
        return False
    before, now = e[-window - 1], e[-1]
    return bool(before > 0 and (before - now) / before < tol)


def explicit_settings(params) -> set[str]:
    """Names of the settings of ``params`` (a PtychoParams) that the user gave.

    ``params.user_set`` (the CLI's flags, a recipe's keys, or the keywords of a Python call:
    :class:`~ptyhpc.ptycho.options.PtychoOptions` records them), plus every setting whose value
    differs from the generic default (options built without keywords, then changed).
    """
    import dataclasses  # noqa: PLC0415

    given = set(getattr(params, "user_set", None) or ())
    for f in dataclasses.fields(params):
        if f.name in ("user_set", "data_defaults"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if getattr(params, f.name) != default:
            given.add(f.name)
    return given


def apply_data_defaults(group, params):
    """``params`` with the data-driven choices applied, and the record of the choice.

    Parameters
    ----------
    group : zarr group
        The store.
    params : PtychoParams
        ``params.data_defaults`` False: returned unchanged.

    Returns
    -------
    (PtychoParams, dict)
        The settings to run with, and ``{"summary": ..., "chosen": ..., "reasons": ...}`` (JSON-able;
        the stage stores it as the ``defaults_chosen`` attribute of ``results/ptycho``).
    """
    import dataclasses  # noqa: PLC0415

    if not getattr(params, "data_defaults", True):
        return params, {"chosen": {}, "reasons": {"all": "data_defaults is off: the settings as given"}}
    summary = summarize_store(group)
    chosen, why = choose_defaults(summary, explicit_settings(params), engine=params.engine)
    record = {"summary": dataclasses.asdict(summary), "chosen": chosen, "reasons": why}
    return (dataclasses.replace(params, **chosen) if chosen else params), record
