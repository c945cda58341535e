"""3D Bragg ptychography on MPI: geometry, forward model, simulator, solver, strain maps.

Follows Nat. Commun. 12, 7059 (2021) (doi:10.1038/s41467-021-27224-5): joint
retrieval of the crystal's complex density ρ, the 3D probe (invariant along
the incident beam) and an incoherent background, with angular up-sampling.
"""

from .geometry import BraggGeometry, SamplingWarning, max_rocking_step, plan, probe_width_for_step

__all__ = ["BraggGeometry", "SamplingWarning", "max_rocking_step", "plan", "probe_width_for_step"]
