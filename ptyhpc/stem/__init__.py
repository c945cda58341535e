"""4D-STEM: detector readers, a map-reduce over frames, virtual imaging, CoM/DPC/iCOM, SSB, dose and drift.

Modules (pipeline order): :mod:`.calibration` (user calibration, checked),
:mod:`.readers` (Merlin MIB, EMPAD, DECTRIS ARINA through rosettasciio),
:mod:`.ingest` (bounded-block writer into the store), :mod:`.mapreduce`
(analyses over the store's chunks on dask), :mod:`.virtual` (virtual detectors,
CoM), :mod:`.com` (rotation/transpose, DPC, iCOM), :mod:`.ssb` (single sideband),
:mod:`.lowdose` (dose, drift), :mod:`.stage` (results and figures), :mod:`.sim`
(weak-phase 4D-STEM simulation for tests). Conventions: docs/stem.md.
"""
