"""Bragg solver: seconds per iteration on 1..N MPI ranks, strong-scaling efficiency, strain RMSE.

Prints one JSON object per line and rank count:
``{"ranks", "seconds_per_iteration", "strong_scaling_efficiency", "strain_rmse", "strain_floor",
"n_positions", "window", "n_batches", "n_iter", "max_rss_mb_per_rank", "backend", "parallel_fraction",
"allreduce_fraction", "amdahl_efficiency_2_ranks", "ms_per_iteration"}`` (parallel_fraction: share of the
1-rank time spent on positions and on the object update, the parts MPI divides; Amdahl's bound on 2-rank
efficiency follows from it; ms_per_iteration: rank 0's time per iteration on positions, object update,
probe update (replicated), collectives (including waiting) and in total)
then one line ``{"projection": ...}`` that scales the measured cost per position·voxel to the
seed's problem (400 positions, 200×160 px, 42 angles × 3 up-sampling, 1000 joint + 500 ML iterations).

strong_scaling_efficiency = t(1 rank) / (ranks · t(ranks)) on the same problem and batches
(results are identical for any rank count, see tests/test_bragg.py). machine_efficiency = t(1 rank) /
t(1 rank while R−1 other independent 1-rank solves run beside it, one per core): what the node itself
delivers to R uncoupled processes (shared caches and memory bandwidth, a virtual machine's busy host);
efficiency_vs_machine = strong_scaling_efficiency / machine_efficiency is the loss the MPI coupling adds.

Usage: ``python benchmarks/bragg.py [--quick] [--ranks 1 2] [--backend numpy] [--det 64] [--exchange messages]
[--bind none] [--no-reference]`` (the driver starts ``mpiexec -bind-to core -n R`` workers, then R
uncoupled 1-rank workers for machine_efficiency (on rows with ranks > 1); ``--quick`` runs in well under
a minute).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def worker(args) -> None:
    from mpi4py import MPI

    from ptyhpc import backend
    from ptyhpc.bragg.evaluate import strain_rmse
    from ptyhpc.bragg.sim import simulate
    from ptyhpc.bragg.solver import BraggParams, ScanFrame, object_lab_coordinates, reconstruct

    comm = MPI.COMM_WORLD
    ds = simulate(counts_per_position=1e6, scan_shape=(args.scan, args.scan), scan_step_m=(50e-9, 60e-9),
                  det_shape=(args.det, args.det))
    g = ds.geometry.upsampled(3)
    supp = ds.film.support(object_lab_coordinates(g, ScanFrame.from_positions(g, ds.positions_m))) > 0
    n_pos = len(ds.positions_m)
    n_batches = max(1, n_pos // args.per_batch)
    params = BraggParams(n_iter=args.n_iter, upsampling=3, update_probe=True, probe_start=5,
                         probe_mask_na=(0.6e-3, 0.5e-3), n_batches=n_batches, exchange=args.exchange)
    xp = backend.get_xp(args.backend)
    comm.Barrier()
    res = reconstruct(ds.data, ds.mask, ds.geometry, ds.positions_m, ds.probe, ds.probe_spacing_m, params,
                      support=supp, comm=comm if comm.Get_size() > 1 else None, xp=xp)
    rss = comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, op=MPI.MAX)
    tm = res.timing
    frac = (tm["positions"] + tm["object_update"]) / tm["total"]     # the parts that MPI divides
    if comm.Get_rank() == 0:
        s = strain_rmse(res, ds.film)
        print(json.dumps({"ranks": comm.Get_size(), "seconds_per_iteration": res.seconds_per_iteration,
                          "strain_rmse": s["rmse"], "strain_floor": s["floor"], "n_positions": n_pos,
                          "window": list(g.shape), "n_batches": n_batches, "n_iter": args.n_iter,
                          "max_rss_mb_per_rank": rss, "backend": args.backend,
                          "parallel_fraction": frac, "allreduce_fraction": tm["allreduce"] / tm["total"],
                          "ms_per_iteration": {k: 1e3 * v / args.n_iter for k, v in tm.items()},
                          "amdahl_efficiency_2_ranks": 1 / (2 * ((1 - frac) + frac / 2)) if comm.Get_size() == 1
                          else None}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n-iter", type=int, default=None)
    ap.add_argument("--scan", type=int, default=None)
    ap.add_argument("--per-batch", type=int, default=2, help="positions per mini-batch (≥ ranks for speed-up)")
    ap.add_argument("--det", type=int, default=32, help="detector pixels per side (window N x N x 30 voxels)")
    ap.add_argument("--exchange", default="auto", choices=("auto", "shared", "messages"),
                    help="how ranks combine batch sums (ptyhpc.bragg.comm)")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the side-by-side 1-rank runs that measure the machine's own efficiency")
    ap.add_argument("--bind", default="core",
                    help="MPI process binding (mpiexec -bind-to BIND; 'none' to let the OS migrate ranks)")
    args = ap.parse_args(argv)
    if args.n_iter is None:
        args.n_iter = 20 if args.quick else 100
    if args.scan is None:
        args.scan = 4 if args.quick else 6
    if args.worker:
        worker(args)
        return
    mpiexec = Path(sys.executable).with_name("mpiexec")
    rows = []
    for r in args.ranks:
        bind = [] if args.bind == "none" else ["-bind-to", args.bind]
        cmd = [str(mpiexec), *bind, "-n", str(r), sys.executable, __file__, "--worker", "--n-iter", str(args.n_iter),
               "--scan", str(args.scan), "--per-batch", str(args.per_batch), "--backend", args.backend,
               "--det", str(args.det), "--exchange", args.exchange]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
    t1 = next((row["seconds_per_iteration"] for row in rows if row["ranks"] == 1), None)
    machine = {}
    if t1 is not None and not args.no_reference:
        # the machine's own ceiling: R independent 1-rank solves side by side, one per core (no MPI
        # coupling); shared caches, memory bandwidth or a busy host slow them as they slow R ranks
        for r in sorted(set(args.ranks) - {1}):
            solo = [sys.executable, __file__, "--worker", "--n-iter", str(args.n_iter), "--scan", str(args.scan),
                    "--per-batch", str(args.per_batch), "--backend", args.backend, "--det", str(args.det)]
            procs = [subprocess.Popen((["taskset", "-c", str(i)] if shutil.which("taskset") else []) + solo,
                                      stdout=subprocess.PIPE, text=True) for i in range(r)]
            times = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds_per_iteration"] for p in procs]
            machine[r] = t1 / float(np.mean(times))
    for row in rows:
        row["strong_scaling_efficiency"] = None if t1 is None else t1 / (row["ranks"] * row["seconds_per_iteration"])
        if row["ranks"] in machine:
            row["machine_efficiency"] = machine[row["ranks"]]
            row["efficiency_vs_machine"] = row["strong_scaling_efficiency"] / machine[row["ranks"]]
        print(json.dumps(row), flush=True)
    if t1 is not None:
        n_vox = float(np.prod(rows[0]["window"]))
        per_pos_vox = t1 / (rows[0]["n_positions"] * n_vox)          # s per position·voxel, one iteration
        seed_vox = 200 * 160 * 42 * 3
        seed_iter = 1000 + 2 * 500                                     # ML: two gradient passes per iteration
        hours = per_pos_vox * 400 * seed_vox * seed_iter / 3600
        # GPU: a model, not a measurement (no GPU in this project's CI). One position·iteration
        # streams the window through memory about GPU_PASSES times (3 per FFT of the forward and
        # back transforms, ~15 element-wise passes: probe interpolation, products, modulus
        # constraint, window adds), 16 bytes (complex64 read + write) per voxel and pass.
        seconds_gpu = GPU_PASSES * 16 * seed_vox / H100_BYTES_PER_S
        gpu_hours_4 = seconds_gpu * 400 * seed_iter / 3600 / 4
        print(json.dumps({"projection": {"seed_positions": 400, "seed_window": [200, 160, 126],
                                         "iterations": seed_iter, "cpu_hours_one_rank": hours,
                                         "cpu_ranks_for_24h": hours / 24 / rows[-1]["strong_scaling_efficiency"]
                                         if rows[-1]["strong_scaling_efficiency"] else None,
                                         "gpu_model_seconds_per_position_iteration": seconds_gpu,
                                         "gpu_model_hours_4_h100": gpu_hours_4, "seed_hours_4_gpus_matlab": 24,
                                         "note": "CPU: measured cost per position·voxel, linear in voxels (FFT "
                                                 "log factor ignored); ranks for 24 h at the measured 2-rank "
                                                 "efficiency. GPU: memory-bandwidth model (see GPU_PASSES), "
                                                 "not measured"}}))


#: Memory passes over the window per position and iteration (2 FFTs x 3 + 15 element-wise), and
#: the H100 SXM's HBM3 bandwidth (3.35 TB/s) at the 70 % that large FFTs and element-wise kernels reach.
GPU_PASSES = 21
H100_BYTES_PER_S = 0.7 * 3.35e12

if __name__ == "__main__":
    main()
