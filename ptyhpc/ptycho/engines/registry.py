"""The engine registry: each engine's entry points and its capability record.

Every "not supported" error of :func:`~ptyhpc.ptycho.engines.reconstruct` (and of the pipeline,
which calls :func:`check_supported`) is generated here from the records, so what an engine supports
is written once. Adding an engine: one module with its batch step (or whole loop) and one line in
:data:`ENGINES` (docs/architecture.md, "How to add an engine").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from .. import projection
from . import lsqml, pie

__all__ = ["Capabilities", "EngineSpec", "ENGINES", "capabilities", "check_supported"]

SUBPIXEL_MODES = ("fourier", "bilinear", "none")
NOISE_MODELS = ("poisson", "amplitude")


@dataclass(frozen=True)
class Capabilities:
    """What one engine supports.

    Attributes
    ----------
    probe_modes : bool
        ``n_probe_modes`` > 1 (mixed-state probe).
    position_correction : bool
        ``position_correction_start`` (and ``position_model``).
    subpixel_modes : tuple of str
        Accepted values of ``subpixel``.
    background : bool
        Incoherent ``background`` refined with the object.
    detector_mask : bool
        ``mask`` (unmeasured pixels left free).
    near_field : bool
        A near-field ``propagator``.
    multislice : bool
        Several object slices (only :func:`~ptyhpc.ptycho.multislice.reconstruct_multislice` so far).
    probe_support : bool
        Real-space ``probe_support``.
    object_amplitude_bounds : bool
        ``object_amplitude_bounds``.
    noise_models : tuple of str
        Data terms the engine implements (``noise_model``). ER and DM project onto the measured
        moduli (``"amplitude"``); they accept ``reconstruct``'s default ``"poisson"`` and ignore it.
    """

    probe_modes: bool
    position_correction: bool
    subpixel_modes: tuple
    background: bool
    detector_mask: bool
    near_field: bool
    multislice: bool
    probe_support: bool
    object_amplitude_bounds: bool
    noise_models: tuple


@dataclass(frozen=True)
class EngineSpec:
    """One registered engine.

    Attributes
    ----------
    name : str
    summary : str
        One line, with the source.
    capabilities : Capabilities
    batch_step : callable or None
        ``(obj, prb, batch, ctx, *, update_probe, shifts) -> (obj, prb, err)`` for the mini-batch loop.
    run : callable or None
        A whole-loop engine (ER/DM: :func:`~ptyhpc.ptycho.projection.projection_engine`).
    start, end_of_pass : callable or None
        Hooks of the mini-batch loop (mPIE's momentum).
    fixed : dict
        Parameters the engine fixes (ePIE: α = 1).
    """

    name: str
    summary: str
    capabilities: Capabilities
    batch_step: Callable | None = None
    run: Callable | None = None
    start: Callable | None = None
    end_of_pass: Callable | None = None
    fixed: dict | None = None


class _Registry(Mapping):
    """Name → :class:`EngineSpec`, in registration order; prints as the tuple of names."""

    def __init__(self, specs):
        self._specs = {s.name: s for s in specs}

    def __getitem__(self, name):
        return self._specs[name]

    def __iter__(self):
        return iter(self._specs)

    def __len__(self):
        return len(self._specs)

    def __repr__(self):
        return repr(tuple(self._specs))

    __str__ = __repr__


_PIE = Capabilities(probe_modes=True, position_correction=True, subpixel_modes=SUBPIXEL_MODES, background=True,
                    detector_mask=True, near_field=True, multislice=False, probe_support=True,
                    object_amplitude_bounds=True, noise_models=NOISE_MODELS)
_LSQML = Capabilities(probe_modes=False, position_correction=True, subpixel_modes=SUBPIXEL_MODES, background=True,
                      detector_mask=True, near_field=True, multislice=False, probe_support=True,
                      object_amplitude_bounds=True, noise_models=NOISE_MODELS)
_PROJECTION = Capabilities(probe_modes=False, position_correction=False, subpixel_modes=("fourier",),
                           background=False, detector_mask=True, near_field=True, multislice=False,
                           probe_support=False, object_amplitude_bounds=False, noise_models=("amplitude",))

#: The engines of :func:`~ptyhpc.ptycho.engines.reconstruct`: iterate for the names, index for the spec.
ENGINES = _Registry([
    EngineSpec("rpie", "regularised PIE (Maiden, Johnson & Li, Optica 4, 736 (2017))", _PIE,
               batch_step=pie.pie_batch),
    EngineSpec("epie", "extended PIE, rPIE with α = 1 (Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009))",
               _PIE, batch_step=pie.pie_batch, fixed={"alpha": 1.0}),
    EngineSpec("mpie", "momentum PIE (Maiden, Johnson & Li, Optica 4, 736 (2017), Algorithm 1)", _PIE,
               batch_step=pie.pie_batch, start=pie.mpie_start, end_of_pass=pie.mpie_end_of_pass),
    EngineSpec("lsqml", "least-squares maximum likelihood (Odstrčil et al., Opt. Express 26, 3108 (2018))", _LSQML,
               batch_step=lsqml.lsqml_batch),
    EngineSpec("er", "error reduction / alternating projections (Fienup 1982; Thibault et al. 2009)", _PROJECTION,
               run=projection.projection_engine),
    EngineSpec("dm", "difference map (Thibault et al., Ultramicroscopy 109, 338 (2009))", _PROJECTION,
               run=projection.projection_engine),
])

#: Option of ``reconstruct`` → (capability field, words for the message, "is the option in use").
_FEATURES = {
    "n_probe_modes": ("probe_modes", "probe modes", lambda v: v is not None and v > 1),
    "position_correction_start": ("position_correction", "position correction", lambda v: v is not None),
    "background": ("background", "the incoherent background", lambda v: v is not None),
    "mask": ("detector_mask", "a detector mask", lambda v: v is not None),
    "propagator": ("near_field", "near-field propagation",
                   lambda v: v is not None and not getattr(v, "centred_data", True)),
    "probe_support": ("probe_support", "a real-space probe support", lambda v: v is not None),
    "object_amplitude_bounds": ("object_amplitude_bounds", "object amplitude bounds", lambda v: v is not None),
}


def capabilities(name: str) -> Capabilities:
    """The capability record of engine ``name``.

    Raises
    ------
    ValueError
        ``name`` is not registered (the message lists the registered names).
    """
    return _spec(name).capabilities


def _spec(name):
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; registered engines: {', '.join(ENGINES)}")
    return ENGINES[name]


def _supporting(field_name, value=None):
    """Names of the engines whose record allows ``field_name`` (and ``value``, for the tuple fields)."""
    out = []
    for name, spec in ENGINES.items():
        cap = getattr(spec.capabilities, field_name)
        if (value in cap) if isinstance(cap, tuple) else cap:
            out.append(name)
    return ", ".join(out) or "no engine"


def check_supported(engine: str, **options) -> None:
    """Refuse options that ``engine`` does not implement.

    Parameters
    ----------
    engine : str
        A registered engine name.
    **options
        Keyword arguments of :func:`~ptyhpc.ptycho.engines.reconstruct` (others are ignored):
        ``n_probe_modes``, ``position_correction_start``, ``subpixel``, ``background``, ``mask``,
        ``propagator``, ``probe_support``, ``object_amplitude_bounds``, ``noise_model``. An option
        at its ``reconstruct`` default is never refused.

    Raises
    ------
    ValueError
        Unknown engine (listing the registered names), an unknown ``subpixel`` or ``noise_model``
        value, or an option the engine does not support: the message names the engine, the option
        and the engines that support it.
    """
    cap = capabilities(engine)
    subpixel = options.get("subpixel")
    if subpixel is not None:
        if subpixel not in SUBPIXEL_MODES:
            raise ValueError(f"unknown subpixel {subpixel!r}; use 'fourier', 'bilinear' or 'none'")
        if subpixel not in cap.subpixel_modes:
            raise ValueError(f"subpixel={subpixel!r} is implemented for {_supporting('subpixel_modes', subpixel)}, "
                             f"not {engine!r}")
    noise_model = options.get("noise_model")
    if noise_model is not None:
        if noise_model not in NOISE_MODELS:
            raise ValueError(f"unknown noise_model {noise_model!r}; use 'poisson' or 'amplitude'")
        # "poisson" is reconstruct()'s default; engines without it (ER, DM) accept and ignore it.
        if noise_model != "poisson" and noise_model not in cap.noise_models:
            raise ValueError(f"noise_model={noise_model!r} is implemented for "
                             f"{_supporting('noise_models', noise_model)}, not {engine!r}")
    for option, (field_name, words, used) in _FEATURES.items():
        if option in options and used(options[option]) and not getattr(cap, field_name):
            raise ValueError(f"{words} ({option}) is implemented for {_supporting(field_name)}, not {engine!r}")

