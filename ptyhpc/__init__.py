"""ptyhpc: distributed ptychography and tomography for facility tilt series and energy stacks.

Pipeline: :mod:`ptyhpc.io` (ingest, store) -> :mod:`ptyhpc.ptycho` (per-item 2D reconstruction)
-> :mod:`ptyhpc.tomo` (alignment, FBP, SIRT) -> :mod:`ptyhpc.pipeline` (dask orchestration)
-> :mod:`ptyhpc.cli` (the ``ptyhpc`` command).
"""

__version__ = "0.1.0"
