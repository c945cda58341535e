"""Cost of one engine iteration against the FFT bound of the same batch, and its peak memory.

Prints one JSON object per line (one per engine, sub-pixel mode and size):
``{"engine", "noise_model", "subpixel", "backend", "n_positions", "det_shape", "batch_size",
"seconds_per_iteration", "fft_bound_seconds", "ratio_to_fft_bound", "ratio_min", "ratio_max",
"cpu_ratio_to_fft_bound", "peak_bytes", "peak_bytes_per_position", "peak_bytes_per_detector_pixel",
"peak_growth_bytes", "dataset_bytes", "maxrss_delta_bytes"}``.

- The FFT bound is the time of the two FFTs per position that any far-field
  engine needs (forward and inverse, batched as in the engine, 32 per call),
  timed in the same process right before and after the engine (best of both).
  ``seconds_per_iteration`` is the median over the timed iterations (intervals
  between the engine's callbacks, so set-up and the final illumination pass are
  excluded);
  ``ratio_to_fft_bound`` is its ratio to the bound, ``ratio_min``/``ratio_max``
  the fastest and slowest iteration's. ``cpu_ratio_to_fft_bound`` is the same
  ratio in process CPU time, less sensitive to other jobs on a shared machine.
- Memory: every case runs in a fresh subprocess that loads the data set
  (simulated once, saved to a temporary folder). ``peak_bytes`` is the
  tracemalloc peak (NumPy reports its buffers to it) of ``reconstruct`` above
  what was allocated before the call, with the input frames already in memory
  (``dataset_bytes``); per position and per detector pixel it is divided by
  n and by n·det_y·det_x. ``peak_growth_bytes`` is the peak of a 3-iteration
  run minus that of a 1-iteration run: ≈ 0 shows that no iteration copies the
  data set (the engine holds one float32 amplitude copy, 4 B per pixel, made
  once per call). ``maxrss_delta_bytes``: growth of the process's resident-set
  high-water mark over the timed run.
- ``subpixel``: "fourier" (exact sub-pixel probe shifts, 4 FFTs per position
  in the PIE family) and, for the PIE family and LSQ-ML, "bilinear" (object
  patches interpolated at the sub-pixel positions, unshifted probe, 2 FFTs per
  position) and "none" (positions rounded to whole pixels, 2 FFTs per
  position), for the engines whose capability record lists them
  (:func:`ptyhpc.ptycho.engines.capabilities`); accuracy of each: docs/engines.md.

Usage: ``python benchmarks/ptycho_iteration.py [--quick] [--backend numpy|cupy] [--engines rpie,lsqml]
[--sizes 128] [--subpixel fourier,bilinear,none]``
(``--quick``: 100 positions of 64², about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from ptyhpc import backend
from ptyhpc.ptycho import reconstruct
from ptyhpc.ptycho.engines import ENGINES, capabilities
from ptyhpc.sim import simulate_scan

#: Noise model per engine: the default Poisson gradient where the engine has one, the modulus
#: projection for ePIE (its classic form) and the projection engines (which only have that).
NOISE_MODEL = {"rpie": "poisson", "epie": "amplitude", "mpie": "poisson", "lsqml": "poisson", "er": "amplitude",
               "dm": "amplitude"}
SUBPIXEL_MODES = ("fourier", "bilinear", "none")
SUBPIXEL_ENGINES = tuple(e for e in ENGINES if len(capabilities(e).subpixel_modes) > 1)


def _sync(xp):
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def fft_bound(xp, n_positions, shape, batch_size, repeats):
    """Best (wall, CPU) seconds of one forward and one inverse FFT per position, ``batch_size`` per call."""
    a = xp.ones((batch_size, *shape), dtype=np.complex64)
    n_batches = -(-n_positions // batch_size)
    backend.ifft2(backend.fft2(a))  # plan / warm up
    _sync(xp)
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            backend.ifft2(backend.fft2(a))
        _sync(xp)
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    return best, best_cpu


def _traced_peak(fn):
    """Peak bytes allocated (tracemalloc) while ``fn`` runs, above what was allocated before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return int(peak)


def run_case(data_path, engine, subpixel, n_iter, batch_size, xp):
    """One engine on the saved data set: timing against the FFT bound, then peak memory."""
    d = np.load(data_path)
    frames = np.array(d["frames"])           # in memory, as a worker holds its angle's frames
    det = frames.shape[-1]
    kw = dict(engine=engine, noise_model=NOISE_MODEL[engine], batch_size=batch_size,
              origin_m=tuple(d["origin_m"]), object_shape=tuple(int(v) for v in d["object_shape"]), xp=xp,
              probe_update_start=0)
    if engine in SUBPIXEL_ENGINES:
        kw["subpixel"] = subpixel
    args = (frames, d["positions_m"], d["probe"], tuple(d["pixel_size_m"]))
    reconstruct(*args, n_iter=1, **kw)  # warm up (FFT plans, allocator)
    bound0 = fft_bound(xp, len(frames), (det, det), batch_size, repeats=3)
    stamps, cpu = [], []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stamp(i, e):
        _sync(xp)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    reconstruct(*args, n_iter=n_iter, callback=stamp, **kw)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bound1 = fft_bound(xp, len(frames), (det, det), batch_size, repeats=3)
    bound, bound_cpu = min(bound0[0], bound1[0]), min(bound0[1], bound1[1])
    # Between callbacks only: the first interval would include the set-up (amplitudes, geometry).
    per_iter = np.diff(stamps)
    per_iter_cpu = np.diff(cpu)
    out = {"engine": engine, "noise_model": NOISE_MODEL[engine], "subpixel": subpixel, "backend": xp.__name__,
           "n_positions": int(len(frames)), "det_shape": [det, det], "batch_size": batch_size,
           "seconds_per_iteration": round(float(np.median(per_iter)), 5), "fft_bound_seconds": round(bound, 5),
           "ratio_to_fft_bound": round(float(np.median(per_iter)) / bound, 3),
           "ratio_min": round(float(per_iter.min()) / bound, 3), "ratio_max": round(float(per_iter.max()) / bound, 3),
           "cpu_ratio_to_fft_bound": round(float(np.median(per_iter_cpu)) / bound_cpu, 3)}
    if xp is np:
        peak1 = _traced_peak(lambda: reconstruct(*args, n_iter=1, **kw))
        peak3 = _traced_peak(lambda: reconstruct(*args, n_iter=3, **kw))
        n_pix = frames.shape[0] * frames.shape[1] * frames.shape[2]
        out.update({"peak_bytes": peak3, "peak_bytes_per_position": round(peak3 / len(frames)),
                    "peak_bytes_per_detector_pixel": round(peak3 / n_pix, 2), "peak_growth_bytes": peak3 - peak1,
                    "dataset_bytes": int(frames.nbytes),
                    # ru_maxrss is in KiB on Linux
                    "maxrss_delta_bytes": int(rss1 - rss0) * 1024})
    return out


def _simulate(det, scan, path):
    sim = simulate_scan(det=det, scan=scan, step_px=det / 30, seed=0, dose_per_position=1e4)
    np.savez(path, frames=sim.frames, positions_m=sim.positions_m, probe=sim.probe,
             pixel_size_m=np.array(sim.pixel_size_m), origin_m=np.array(sim.origin_m),
             object_shape=np.array(sim.object.shape))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small case, about a minute")
    ap.add_argument("--backend", default="auto", help="auto | numpy | cupy")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated (default: all of ENGINES)")
    ap.add_argument("--sizes", default=None, help="e.g. 128 or 128,256 (default: both full sizes)")
    ap.add_argument("--subpixel", default=",".join(SUBPIXEL_MODES),
                    help=f"comma-separated sub-pixel modes for {', '.join(SUBPIXEL_ENGINES)} (default: all)")
    ap.add_argument("--_case", nargs=5, metavar=("DATA", "ENGINE", "SUBPIXEL", "N_ITER", "BACKEND"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._case:
        data, engine, subpixel, n_iter, name = args._case
        print(json.dumps(run_case(data, engine, subpixel, int(n_iter), 32, backend.get_xp(name))), flush=True)
        return
    engines = [e for e in args.engines.split(",") if e]
    modes = [m for m in args.subpixel.split(",") if m]
    if set(modes) - set(SUBPIXEL_MODES):
        ap.error(f"unknown sub-pixel modes {sorted(set(modes) - set(SUBPIXEL_MODES))}; choose from {SUBPIXEL_MODES}")
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    # (detector, raster, timed iterations): 400 × 128² and 1000 × 256² (issue 3).
    cases = [(64, (10, 10), 5)] if args.quick else [(128, (20, 20), 6), (256, (25, 40), 4)]
    if args.sizes:
        cases = [c for c in cases if str(c[0]) in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for det, scan, n_iter in cases:
            path = os.path.join(tmp, f"scan_{det}.npz")
            _simulate(det, scan, path)
            for engine in engines:
                for subpixel in [m for m in modes if m in capabilities(engine).subpixel_modes]:
                    # A fresh interpreter per case: its memory high-water mark and allocator state are its own.
                    cmd = [sys.executable, os.path.abspath(__file__), "--_case", path, engine, subpixel,
                           str(n_iter), args.backend]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(json.dumps({"engine": engine, "subpixel": subpixel, "det_shape": [det, det],
                                          "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
                    else:
                        print(proc.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
