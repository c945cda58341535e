"""2D ptychography: forward operators and engines."""

from .chain import reconstruct_chain
from .engines import (ENGINES, PtychoResult, capabilities, check_supported, prepare_amplitudes, probe_from_mean_pattern,
                      reconstruct)
from .multislice import MultisliceResult, focal_series, reconstruct_multislice

__all__ = ["ENGINES", "PtychoResult", "capabilities", "check_supported", "prepare_amplitudes",
           "probe_from_mean_pattern", "reconstruct", "reconstruct_chain", "MultisliceResult", "focal_series",
           "reconstruct_multislice"]
