"""ptyhpc.tomo against ASTRA (CPU) on the Shepp–Logan phantom, and slab-parallel efficiency.

Prints one JSON object per line:
``{"method", "seconds", "astra_seconds", "ratio_to_astra", "rmse", "astra_rmse", ...}``
for FBP (ram-lak), SIRT, SART and CGLS on an n² phantom with n_angles over [0°, 180°), both
reconstructing the same sinogram (ASTRA's strip projector). ``seconds`` is a cold call (no cached
projection matrix: its build is included) and ``seconds_warm`` a second call; ``astra_seconds``
covers ASTRA's data, projector and algorithm set-up and run. RMSE over the reconstruction disk,
phantom range 0..1. Iterations: SIRT and CGLS ``n_iter`` each; SART ``sart_sweeps`` sweeps over
all angles, i.e. ASTRA's SART with ``sart_sweeps × n_angles`` iterations (one projection each;
ASTRA's default relaxation 1 and random order, ours relaxation 0.5 and golden-ratio order).

Then ``{"method": "sirt_slabs", "workers": 2, "seconds", "seconds_1_worker", "efficiency", ...}``:
SIRT of an (n_rows, n, n) volume in slabs on a dask LocalCluster of 1 and of 2 single-threaded
worker processes; efficiency = T1 / (2 T2), warm workers (projection matrix built), cold in
``efficiency_cold``.

The process is pinned to one core (``os.sched_setaffinity``) for the ASTRA comparison, and ASTRA
and OpenMP to one thread; timings on a shared machine are noisy (best of ``--repeats``).

Usage: ``python benchmarks/tomo.py [--quick] [--backend numpy|cupy] [--no-slabs]``
(``--quick``: 128², 90 angles and a small slab case, well under a minute; default: the issue's
256² × 180 angles, SIRT 100 iterations). ASTRA columns are null when ``astra`` is not installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before ASTRA / BLAS load: one core each

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from skimage.data import shepp_logan_phantom  # noqa: E402
from skimage.transform import resize  # noqa: E402

from ptyhpc import backend  # noqa: E402
from ptyhpc.tomo import Projector, cgls, fbp, reconstruct_slabs, sart, sirt  # noqa: E402
from ptyhpc.tomo import projector as _projector  # noqa: E402

try:
    import astra  # noqa: E402
except ImportError:  # ASTRA is optional: the ptyhpc columns still come out
    astra = None


def _sync(xp):
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def _clear_caches():
    _projector._cached.cache_clear()


def phantom(n):
    ph = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)
    zz, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return ph, zz**2 + xx**2 < (n / 2 - 1) ** 2


def astra_run(algorithm, sino, angles, n, iterations, **options):
    """ASTRA CPU reconstruction of ``sino`` (our convention; ASTRA's image is flipped in rows)."""
    t = time.perf_counter()
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n, angles)
    pid = astra.create_projector("strip", proj_geom, vol_geom)
    sid = astra.data2d.create("-sino", proj_geom, sino)
    rid = astra.data2d.create("-vol", vol_geom, 0)
    cfg = astra.astra_dict(algorithm)
    cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
    if options:
        cfg["option"] = options
    alg = astra.algorithm.create(cfg)
    astra.algorithm.run(alg, iterations)
    rec = astra.data2d.get(rid)[::-1]
    seconds = time.perf_counter() - t
    astra.algorithm.delete(alg)
    astra.data2d.delete([sid, rid])
    astra.projector.delete(pid)
    return rec, seconds


def compare(n, n_angles, n_iter, sart_sweeps, cgls_iter, xp, repeats):
    ph, disk = phantom(n)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    sino = Projector(angles, n).forward(ph)          # = ASTRA's strip sinogram (tests/test_tomo_astra.py)
    _clear_caches()

    def rmse(a):
        return float(np.sqrt(np.mean((a - ph)[disk] ** 2)))

    cases = [
        ("fbp", lambda s: fbp(s, angles), ("FBP", 1, {"FilterType": "ram-lak"}), {}),
        ("sirt", lambda s: sirt(s, angles, n_iter=n_iter), ("SIRT", n_iter, {}), {"n_iter": n_iter}),
        ("sart", lambda s: sart(s, angles, n_iter=sart_sweeps), ("SART", sart_sweeps * n_angles, {}),
         {"n_iter": sart_sweeps, "astra_iterations": sart_sweeps * n_angles}),
        ("cgls", lambda s: cgls(s, angles, n_iter=cgls_iter), ("CGLS", cgls_iter, {}), {"n_iter": cgls_iter}),
    ]
    s_dev = xp.asarray(sino)
    for name, ours, (alg, iters, opts), extra in cases:
        cold, warm = np.inf, np.inf
        for _ in range(repeats):
            _clear_caches()
            t = time.perf_counter()
            rec = ours(s_dev)
            _sync(xp)
            cold = min(cold, time.perf_counter() - t)
            t = time.perf_counter()
            rec = ours(s_dev)
            _sync(xp)
            warm = min(warm, time.perf_counter() - t)
        rec = backend.to_host(rec)
        row = {"method": name, "seconds": cold, "seconds_warm": warm, "astra_seconds": None,
               "ratio_to_astra": None, "rmse": rmse(rec), "astra_rmse": None, "n": n, "n_angles": n_angles,
               "backend": xp.__name__, **extra}
        if astra is not None:
            best = np.inf
            for _ in range(repeats):
                ref, sec = astra_run(alg, sino, angles, n, iters, **opts)
                best = min(best, sec)
            row.update(astra_seconds=best, ratio_to_astra=cold / best, astra_rmse=rmse(ref))
        print(json.dumps(row), flush=True)
        _clear_caches()


def slabs(n_rows, n, n_angles, n_iter, slab_size):
    import distributed  # noqa: PLC0415

    ph, _ = phantom(n)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    vol = np.stack([ph * (0.5 + 0.5 * np.cos(np.pi * k / n_rows)) for k in range(n_rows)])
    p = Projector(angles, n).forward(vol)
    kw = dict(method="sirt", n_iter=n_iter, nonneg=True, slab_size=slab_size)
    times, results = {}, {}
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            t = time.perf_counter()
            results[workers] = reconstruct_slabs(p, angles, client=client, **kw)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            reconstruct_slabs(p, angles, client=client, **kw)
            times[workers] = (cold, time.perf_counter() - t)
    row = {"method": "sirt_slabs", "workers": 2, "seconds": times[2][1], "seconds_1_worker": times[1][1],
           "efficiency": times[1][1] / (2 * times[2][1]), "efficiency_cold": times[1][0] / (2 * times[2][0]),
           "identical_1_vs_2_workers": bool(np.array_equal(results[1], results[2])),
           "shape": [n_rows, n, n], "n_angles": n_angles, "n_iter": n_iter, "slab_size": slab_size,
           "cores_seen": len(os.sched_getaffinity(0)),
           "astra_seconds": None, "ratio_to_astra": None, "rmse": None, "astra_rmse": None}
    print(json.dumps(row), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="128², 90 angles, small slab case (< 1 min)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--no-slabs", action="store_true", help="skip the dask slab-efficiency case")
    ap.add_argument("--no-compare", action="store_true", help="skip the ASTRA comparison")
    ap.add_argument("--repeats", type=int, default=None, help="best of this many runs (default 1, quick 2)")
    args = ap.parse_args(argv)
    xp = backend.get_xp(args.backend)
    repeats = args.repeats or (2 if args.quick else 1)
    if not args.no_compare:
        all_cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(all_cores)})   # one core for ptyhpc and ASTRA alike
        if args.quick:
            compare(128, 90, 100, 10, 20, xp, repeats)
        else:
            compare(256, 180, 100, 10, 20, xp, repeats)
        os.sched_setaffinity(0, all_cores)
    if not args.no_slabs:
        if args.quick:
            slabs(32, 96, 60, 30, 8)
        else:
            slabs(64, 192, 120, 50, 16)


if __name__ == "__main__":
    main()
