"""Warm start (``PtychoParams.warm_start``) against the model probe, on CNT angles.

    python benchmarks/warm_start.py [--quick]

Reconstructs three neighbouring angles (−5°, 0°, +5°) twice, cold (every item from the model
probe) and warm (stride 2: the 0° item starts from the −5° item's refined probe), and prints a
JSON line: the 0° item's data error per iteration for both, and the iteration at which the warm
run reaches the cold run's final error. The data error is the amplitude error of the Poisson
engine (what it minimises is the likelihood), so small differences are the expected scale.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data" / "cnt_tilt_series"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 iterations instead of 60")
    args = ap.parse_args(argv)
    from ptyhpc.io import ingest, layout, open_store
    from ptyhpc.pipeline.ptycho_stage import PtychoParams, run_ptycho

    n_iter = 20 if args.quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean = ingest([DATA / f"tilt_{i:03d}.h5" for i in (11, 12, 13)], tmp / "c.zarr", progress=False)
        err, secs = {}, {}
        for name, p in (("cold", PtychoParams(n_iter=n_iter)),
                        ("warm", PtychoParams(n_iter=n_iter, warm_start=True, warm_start_stride=2))):
            s = tmp / f"{name}.zarr"
            shutil.copytree(clean, s)
            t = time.perf_counter()
            run_ptycho(s, p, progress=False)
            secs[name] = time.perf_counter() - t
            err[name] = np.asarray(open_store(s)[layout.PTYCHO_ERROR][1], dtype=float)
    c, w = err["cold"], err["warm"]
    reach = int(np.argmax(w <= c[-1])) + 1 if np.any(w <= c[-1]) else None
    print(json.dumps({"bench": "warm_start", "n_iter": n_iter, "item": "0 deg (from -5 deg)",
                      "error_cold": np.round(c, 5).tolist(), "error_warm": np.round(w, 5).tolist(),
                      "final_error_cold": round(c[-1], 5), "final_error_warm": round(w[-1], 5),
                      "warm_reaches_cold_final_error_at_iteration": reach,
                      "seconds": {k: round(v, 1) for k, v in secs.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
