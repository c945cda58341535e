"""The 2-D ptychography engines: one mini-batch loop, one forward step, one data term, a registry.

Layout (one job per module; docs/architecture.md, "How to add an engine"):

- :mod:`.registry` — ``ENGINES`` (name → :class:`EngineSpec`), :func:`capabilities`, :func:`check_supported`.
- :mod:`.loop` — :func:`reconstruct` and the iteration / mini-batch loop.
- :mod:`.forward` — gather, sub-pixel shift, propagate; :mod:`.fourier` — the data term.
- :mod:`.pie` (rPIE, ePIE, mPIE), :mod:`.lsqml` (LSQ-ML); ER and DM: :mod:`ptyhpc.ptycho.projection`.
- :mod:`.positions`, :mod:`.constraints`, :mod:`.modes`, :mod:`.poisson`, :mod:`.kernels`, :mod:`.data`.
"""

from .data import PtychoResult, detector_layout, prepare_amplitudes, probe_from_mean_pattern
from .fourier import fourier_residual, modulus_factor
from .kernels import CHUNK_PIXELS, illumination
from .loop import reconstruct
from .modes import init_probe_modes, orthogonalize_modes
from .poisson import poisson_step
from .registry import ENGINES, Capabilities, EngineSpec, capabilities, check_supported

#: Detector pixels per chunk of array work inside a mini-batch (cache blocking only); read by the
#: engines at call time (:func:`~ptyhpc.ptycho.engines.kernels.chunk_size`).
_CHUNK_PIXELS = CHUNK_PIXELS
# Names of the single-module engines.py, kept for existing callers and tests.
_poisson_step = poisson_step
_modulus_factor = modulus_factor
_illumination = illumination
_detector_layout = detector_layout

__all__ = ["ENGINES", "Capabilities", "EngineSpec", "capabilities", "check_supported", "PtychoResult",
           "reconstruct", "prepare_amplitudes", "probe_from_mean_pattern", "init_probe_modes", "orthogonalize_modes",
           "modulus_factor", "fourier_residual", "illumination"]
