"""Options of the Bragg solver: one validated model for the CLI (flags and ``--options FILE``) and the API."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

__all__ = ["BraggParams"]

NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


@dataclass(config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class BraggParams:
    """Solver settings (defaults: the seed's Methods, "Inversion parameters", scaled to short runs).

    A pydantic dataclass: types and ranges are checked when it is built.

    Attributes
    ----------
    n_iter : int
        Joint (eqs. 5, 6, 11) iterations.
    n_ml : int
        Final maximum-likelihood (Gaussian) iterations on ρ.
    alpha, beta, gamma : float
        Eqs. (10), (9), (11); seed: α = 1, β = 0.5, γ = 0.1. Default β = 0.05
        (larger steps: on the simulated films β = 0.5 needs > 500 iterations).
    mu : float
        Support-thickness regularisation (μ_j = μ |P|²_max); seed 0.02.
    probe_start : int
        Iterations with the probe fixed (seed: 5). ``update_probe=False`` keeps it fixed.
    probe_mask_na : (float, float) or None
        Estimated NA (rad) along the probe's t1, t2; the probe spectrum is kept in 1.5× this rectangle
        (applied after every iteration).
    upsampling : int
        Angular up-sampling factor (seed: 3); virtual angles are left free (eq. 13).
    thickness_schedule : list of (int, float)
        (first iteration, slab thickness m) stages (seed: 0.5, 0.7, 0.9 µm every 100 iterations).
    slab_center_m : (3,) float
        A point of the film's mid-plane, lab frame, m.
    slab_tilt_rad : (float, float)
        Rotations of the slab normal about x and y (right-handed), rad.
    shrinkwrap : (int, int) or None
        Iteration window for shrink-wrap (every 5 iterations, 15 % threshold).
    background : float or None
        Initial constant background per pixel (seed 0.1); None = no background.
    n_batches : int
        Mini-batches per iteration (position j in batch j mod K); the object and
        probe are updated after each, as ePIE updates after each position.
        0 (default) = one position per batch, the seed's sequential ePIE, which
        converges fastest per iteration here (batches of 2–4 positions stagnate
        on the dislocation's phase vortex); MPI ranks share a batch's positions,
        so parallel speed-up needs batches of ≥ ranks positions.
    exchange : {"auto", "shared", "messages"}
        How MPI ranks combine a batch's sums (:mod:`ptyhpc.bragg.comm`): MPI-3 shared
        memory where every rank is on one node and arrays are NumPy ("auto"), else
        messages; results are the same either way.
    cache_batches : bool
        Keep each batch's probe-interpolation tables, indices and √I in memory
        (~50 bytes per window voxel and position); False rebuilds them per use.
    object_init : float or ndarray
        Constant inside the initial slab, or an (S1, S2, S3) array.

    Raises
    ------
    pydantic.ValidationError
        (a ValueError) A value of the wrong type or out of range, naming the field.
    """

    n_iter: NonNegInt = 100
    n_ml: NonNegInt = 0
    alpha: PosFloat = 1.0
    beta: PosFloat = 0.05
    gamma: Annotated[float, Field(ge=0)] = 0.1
    mu: Annotated[float, Field(ge=0)] = 0.02
    probe_start: NonNegInt = 5
    update_probe: bool = True
    probe_mask_na: Optional[tuple[PosFloat, PosFloat]] = None
    upsampling: Annotated[int, Field(ge=1)] = 1
    thickness_schedule: list[tuple[NonNegInt, PosFloat]] = field(default_factory=lambda: [(0, 150e-9)])
    slab_center_m: tuple[float, float, float] = (0.0, 0.0, 75e-9)
    slab_tilt_rad: tuple[float, float] = (0.0, 0.0)
    shrinkwrap: Optional[tuple[NonNegInt, NonNegInt]] = None
    shrinkwrap_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.15
    shrinkwrap_every: Annotated[int, Field(ge=1)] = 5
    background: Optional[Annotated[float, Field(ge=0)]] = None
    n_batches: NonNegInt = 0
    cache_batches: bool = True
    exchange: Literal["auto", "shared", "messages"] = "auto"
    object_init: Any = 1.0   # constant inside the initial slab, or an (S1, S2, S3) array
