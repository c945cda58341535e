"""3D ED throughput: scans per second from the store to exported per-particle series, against the 4D-STEM
virtual-image pass over the same scans. JSON lines on stdout.

    python benchmarks/ed3d.py --quick              # the test series: 20 scans of 24x24 frames of 48x48
    python benchmarks/ed3d.py --tilts 60 --workers 2

The series is the simulator's (ptyhpc.sim.ed3d, MIB files) ingested with ``--tilts``. ``virtual`` is one
BF/ADF + beam-centre pass per scan (what any 4D-STEM analysis pays); ``ed3d`` is the whole stage
(virtual pass, segmentation, tracking, per-particle pass, exports, unit cells). Both on a dask
LocalCluster (``--workers``) or in process (``--workers 0``); peak RSS of this process.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 tilts (the test series)")
    ap.add_argument("--tilts", type=int, default=40)
    ap.add_argument("--workers", type=int, default=0, help="dask LocalCluster workers; 0: in process")
    args = ap.parse_args(argv)
    n_t = 20 if args.quick else args.tilts
    from ptyhpc.ed3d.detect import nominal_centre, scan_images
    from ptyhpc.ed3d.stage import run_ed3d
    from ptyhpc.io.store import open_store
    from ptyhpc.sim.ed3d import simulate_ed3d, write_ed3d_series
    from ptyhpc.stem.calibration import load_calibration
    from ptyhpc.stem.ingest import ingest_stem
    from ptyhpc.ed3d.tilts import read_tilts_csv

    tilts = np.linspace(-19.0, 19.0, n_t)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        truth = simulate_ed3d(tilts_deg=tilts)
        files = write_ed3d_series(tmp / "raw", truth)
        emit(stage="simulate", tilts=n_t, seconds=round(time.perf_counter() - t0, 2))
        cal = load_calibration(files["calibration"])
        cal = cal.model_copy(update={"tilt_angles_rad": read_tilts_csv(files["tilts"], files["files"])})
        t0 = time.perf_counter()
        ingest_stem(files["files"], tmp / "s.zarr", calibration=cal, progress=False)
        raw_mb = truth.frames.nbytes / 1e6
        emit(stage="ingest", raw_mb=round(raw_mb, 1), seconds=round(time.perf_counter() - t0, 2))
        client = None
        if args.workers:
            from distributed import Client, LocalCluster

            client = Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
        try:
            centre = nominal_centre(open_store(tmp / "s.zarr"))
            t0 = time.perf_counter()
            for k in range(n_t):
                scan_images(tmp / "s.zarr", k, centre, client=client)
            tv = time.perf_counter() - t0
            emit(stage="virtual", scans=n_t, seconds=round(tv, 2), scans_per_s=round(n_t / tv, 2),
                 mb_per_s=round(raw_mb / tv, 1))
            t0 = time.perf_counter()
            out = run_ed3d(tmp / "s.zarr", tmp / "out", client=client, progress=False)
            te = time.perf_counter() - t0
            emit(stage="ed3d", scans=n_t, particles=out["n_particles"], seconds=round(te, 2),
                 scans_per_s=round(n_t / te, 2), ratio_to_virtual=round(te / tv, 2), workers=args.workers,
                 peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        finally:
            if client is not None:
                client.cluster.close()
                client.close()


if __name__ == "__main__":
    main()
