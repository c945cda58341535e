"""2D ptychography: forward operators and engines."""

from .engines import ENGINES, PtychoResult, prepare_amplitudes, probe_from_mean_pattern, reconstruct

__all__ = ["ENGINES", "PtychoResult", "prepare_amplitudes", "probe_from_mean_pattern", "reconstruct"]
