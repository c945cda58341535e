"""Spectro-ptychography analysis: energy stacks to optical density, chemical (thickness) and dichroism maps.

Modules: :mod:`~ptyhpc.spectro.stack` (common grid, alignment, I0 normalisation),
:mod:`~ptyhpc.spectro.references` (reference spectra), :mod:`~ptyhpc.spectro.fit`
(NNLS thickness maps, PCA/k-means), :mod:`~ptyhpc.spectro.dose` (overlap, exposures,
dose; seed 001 eqs. 1–5), :mod:`~ptyhpc.spectro.quality` (knife edge, sharpness, SNR),
:mod:`~ptyhpc.spectro.stage` (``ptyhpc spectro``: results in ``results/spectro``).
"""

from .stage import SPECTRO, run_spectro

__all__ = ["SPECTRO", "run_spectro"]
