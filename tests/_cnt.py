"""Shared helpers of the issue-4 tests: small CNT stores and their reference results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyhpc.io import layout, open_store
from ptyhpc.pipeline.ptycho_stage import PtychoParams

DATA = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"
#: Small, fast settings: 3 iterations of the default engine (about 1.5 s per item on one core).
FAST = PtychoParams(n_iter=3)
RESULTS = (layout.PTYCHO_OBJECT, layout.PTYCHO_PROBE, layout.PTYCHO_ERROR, layout.PTYCHO_ILLUMINATION,
           layout.PTYCHO_STATUS)


def cnt_files(indices):
    return [DATA / f"tilt_{i:03d}.h5" for i in indices]


def results(store) -> dict:
    g = open_store(store)
    return {name: np.asarray(g[name][...]) for name in RESULTS}


def assert_same_results(a: dict, b: dict) -> None:
    for name in RESULTS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
