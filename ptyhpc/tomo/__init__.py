"""Tomography of ptychographic tilt series: preprocessing, alignment, FBP, SIRT, SART, CGLS.

Geometry (``CONVENTIONS.md``): rotation about y; a point (x, z) relative to
the axis projects to detector column ``center + x cos θ + z sin θ``, with
``center`` = (n_cols − 1) / 2 by default (ASTRA's convention). Volumes are
(n_rows, n_cols, n_cols) float32 with axes (y, z, x); slices are [z, x], on
ASTRA's default volume grid (ASTRA's image rows run the other way: our
slice is ASTRA's ``img[::-1]`` for the same angles).
"""

from .align import (
    apply_shifts,
    consistency_residual,
    find_center,
    mirror_pairs,
    projection_matching,
    reference_index,
    remove_offset_ramp,
    sharpness,
    sharpness_curve,
    vertical_alignment,
)
from .fbp import angular_weights, backproject, fbp, filter_projections, ramp_filter
from .iterative import cgls, sart
from .parallel import reconstruct_slabs
from .preprocess import amplitude_projections, minus_log, normalize_flat_dark, phase_projections
from .projector import Projector, backprojection_matrix, projection_matrix
from .sirt import sirt
from .stage import run_tomo

__all__ = [
    "fbp",
    "sirt",
    "sart",
    "cgls",
    "angular_weights",
    "ramp_filter",
    "filter_projections",
    "backproject",
    "phase_projections",
    "amplitude_projections",
    "normalize_flat_dark",
    "minus_log",
    "remove_offset_ramp",
    "apply_shifts",
    "vertical_alignment",
    "find_center",
    "mirror_pairs",
    "sharpness",
    "sharpness_curve",
    "consistency_residual",
    "projection_matching",
    "reference_index",
    "reconstruct_slabs",
    "run_tomo",
    "Projector",
    "projection_matrix",
    "backprojection_matrix",
]
