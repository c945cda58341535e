"""Shared fixtures."""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest

#: Attributes of ``entry/instrument`` written by ``make_tilt_files`` (CNT dataset values).
DEFAULT_INSTRUMENT_ATTRS = {
    "beam_energy_eV": 60000.0,
    "convergence_semiangle_mrad": 25.0,
    "nominal_defocus_A": 200.0,
    "detector_sampling_inv_A": np.array([1 / 48, 1 / 48]),
    "scan_origin_A": np.array([10.0, 10.0]),
    "scan_step_A": 1.5,
    "tilt_axis": "y",
    "dose_e_per_A2": 1500.0,
}


@pytest.fixture
def make_tilt_files(tmp_path):
    """Factory writing small synthetic per-angle HDF5 files in the CNT dataset format.

    ``make(n_angles=3, scan=(4, 4), det=(16, 16), angles_deg=None, dtype=np.uint16,
    counts=None, seed=0, **overrides) -> list[Path]``

    - files ``tilt_000.h5`` ... in a fresh directory under ``tmp_path`` per call,
      in the order of ``angles_deg`` (default ``linspace(-30, 30, n_angles)``);
    - ``counts``: optional array (n_angles, scan_y, scan_x, det_y, det_x) to
      write; default Poisson noise (mean depends on the file index), cast to ``dtype``;
    - ``overrides``: ``entry/instrument`` attributes replacing the defaults in
      :data:`DEFAULT_INSTRUMENT_ATTRS` in every file; ``None`` removes one.
      ``tilt_angle_deg`` may be overridden too (e.g. ``None`` to omit it).
    """
    calls = itertools.count()

    def make(
        n_angles: int = 3,
        scan: tuple[int, int] = (4, 4),
        det: tuple[int, int] = (16, 16),
        angles_deg=None,
        dtype=np.uint16,
        counts=None,
        seed: int = 0,
        **overrides,
    ) -> list[Path]:
        folder = tmp_path / f"raw{next(calls)}"
        folder.mkdir()
        if angles_deg is None:
            angles_deg = np.linspace(-30.0, 30.0, n_angles)
        angles_deg = list(angles_deg)
        n_angles = len(angles_deg)
        rng = np.random.default_rng(seed)
        if counts is None:
            lam = 5.0 + np.arange(n_angles)[:, None, None, None, None]
            counts = rng.poisson(lam, size=(n_angles, *scan, *det)).astype(dtype)
        paths = []
        for k, angle in enumerate(angles_deg):
            path = folder / f"tilt_{k:03d}.h5"
            attrs = {**DEFAULT_INSTRUMENT_ATTRS, "tilt_angle_deg": float(angle), **overrides}
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("entry/data/counts", data=counts[k], chunks=(1, *counts.shape[2:]),
                                      compression="gzip")
                ds.attrs["axes"] = "scan_y, scan_x, ky, kx"
                inst = f.create_group("entry/instrument")
                for key, value in attrs.items():
                    if value is not None:
                        inst.attrs[key] = value
            paths.append(path)
        return paths

    return make
