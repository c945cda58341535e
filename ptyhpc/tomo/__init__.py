"""Tomography of ptychographic tilt series: preprocessing, alignment, FBP, SIRT.

Geometry (``CONVENTIONS.md``): rotation about y; a point (x, z) relative to
the axis projects to detector column ``center + x cos θ + z sin θ``, with
``center`` = (n_cols − 1) / 2 by default (ASTRA's convention). Volumes are
(n_rows, n_cols, n_cols) float32 with axes (y, z, x); slices are [z, x].
"""

from .align import (
    apply_shifts,
    find_center,
    projection_matching,
    reference_index,
    remove_offset_ramp,
    vertical_alignment,
)
from .fbp import angular_weights, fbp, ramp_filter
from .parallel import reconstruct_slabs
from .projector import Projector, projection_matrix
from .sirt import sirt
from .stage import run_tomo

__all__ = [
    "fbp",
    "sirt",
    "angular_weights",
    "ramp_filter",
    "remove_offset_ramp",
    "apply_shifts",
    "vertical_alignment",
    "find_center",
    "projection_matching",
    "reference_index",
    "reconstruct_slabs",
    "run_tomo",
    "Projector",
    "projection_matrix",
]
