"""2D ptychography: forward operators and engines."""

from .engines import ENGINES, PtychoResult, prepare_amplitudes, reconstruct

__all__ = ["ENGINES", "PtychoResult", "prepare_amplitudes", "reconstruct"]
