"""Cost of one engine iteration against the FFT bound of the same batch.

Prints one JSON object per line:
``{"engine", "noise_model", "backend", "n_positions", "det_shape", "batch_size",
"seconds_per_iteration", "fft_bound_seconds", "ratio_to_fft_bound"}``.
The FFT bound is the time of the two FFTs per position that any far-field
engine needs (forward and inverse, batched as in the engine), timed in the
same run on the same arrays' shapes.

Usage: ``python benchmarks/ptycho_iteration.py [--quick] [--backend numpy|cupy]``
(``--quick``: a small case in well under a minute).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ptyhpc import backend
from ptyhpc.ptycho import reconstruct
from ptyhpc.sim import simulate_scan


def _sync(xp):
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def fft_bound(xp, n_positions, shape, batch_size, repeats):
    a = xp.ones((batch_size, *shape), dtype=np.complex64)
    n_batches = -(-n_positions // batch_size)
    backend.ifft2(backend.fft2(a))  # plan / warm up
    _sync(xp)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n_batches):
            backend.ifft2(backend.fft2(a))
        _sync(xp)
        best = min(best, time.perf_counter() - t)
    return best


def run_case(det, scan, n_iter, engine, noise_model, batch_size, xp):
    sim = simulate_scan(det=det, scan=scan, step_px=det / 30, seed=0, dose_per_position=1e4)
    kw = dict(engine=engine, noise_model=noise_model, batch_size=batch_size, origin_m=sim.origin_m,
              object_shape=sim.object.shape, xp=xp, probe_update_start=0)
    reconstruct(sim.frames, sim.positions_m, sim.probe, sim.pixel_size_m, n_iter=1, **kw)  # warm up
    stamps = []
    t0 = time.perf_counter()
    reconstruct(sim.frames, sim.positions_m, sim.probe, sim.pixel_size_m, n_iter=n_iter,
                callback=lambda i, e: stamps.append(time.perf_counter()), **kw)
    _sync(xp)
    # Per-iteration time from the callback stamps excludes set-up and the final illumination pass.
    per_iter = float(np.median(np.diff([t0, *stamps])))
    bound = fft_bound(xp, len(sim.frames), (det, det), batch_size, repeats=3)
    return {"engine": engine, "noise_model": noise_model, "backend": xp.__name__,
            "n_positions": int(len(sim.frames)), "det_shape": [det, det], "batch_size": batch_size,
            "seconds_per_iteration": round(per_iter, 5), "fft_bound_seconds": round(bound, 5),
            "ratio_to_fft_bound": round(per_iter / bound, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small case, under a minute")
    ap.add_argument("--backend", default="auto", help="auto | numpy | cupy")
    args = ap.parse_args(argv)
    xp = backend.get_xp(args.backend)
    if args.quick:
        cases = [(64, (10, 10), 5)]
    else:
        cases = [(128, (20, 20), 10), (256, (20, 20), 5)]
    for det, scan, n_iter in cases:
        for engine, noise_model in (("rpie", "poisson"), ("epie", "amplitude")):
            print(json.dumps(run_case(det, scan, n_iter, engine, noise_model, 32, xp)), flush=True)


if __name__ == "__main__":
    main()
