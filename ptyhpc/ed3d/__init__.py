"""Single-particle 3D electron diffraction from 4D-STEM tilt series (docs/ed3d.md).

Pipeline: ``tilts`` (angles into the store) → ``detect`` (virtual images, beam centres, segmentation)
→ ``track`` (drift removed, linking with gap closing) → ``series`` (per-particle diffraction patterns)
→ ``cell`` (reciprocal-space map, unit cell) → ``export`` (PETS2, MRC, JSON) → ``stage`` / ``cli``.
"""
