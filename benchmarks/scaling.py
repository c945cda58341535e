"""Scaling of the per-item dask pipeline, ingest throughput, and the cost model built on them.

    python benchmarks/scaling.py [--quick] [--workers 1 2] [--out benchmarks/out]

Prints JSON lines:

- ``{"bench": "ingest", ...}``: ``ingest_MB_per_s`` (ptyhpc ingest of CNT files: validation,
  HDF5 read, compression, zarr write), ``raw_zarr_MB_per_s`` (the same bytes, already in memory,
  written to a zarr array with the same chunks, shards and codec, in the same run) and
  ``ingest_ratio_to_raw_zarr`` (target >= 0.7).
- ``{"bench": "scaling", "workers": W, ...}`` per worker count: ``items_per_second`` (items / wall
  time of ``run_ptycho`` on a warm LocalCluster), ``parallel_efficiency`` (items/s over W times
  the 1-worker items/s; target >= 0.9 at 2 workers), ``overhead_fraction`` ((W x wall - sum of
  task times) / sum of task times: submission, scheduling, result gathering and idle tails as a
  fraction of task time; target < 0.02), ``task_seconds_mean``, ``task_seconds_ratio_to_1_worker``
  (how much each task slowed down next to the others), ``io_fraction`` (store reads and writes
  inside the tasks, as a fraction of task time).
- ``{"bench": "cost_model", ...}``: the constants the cost model uses (see ``predict``) and its
  prediction for a 180-angle x 10^4-position series on N GPU nodes.

and writes ``scaling.png`` (items/s and overhead against workers) into ``--out``.

The machine this runs on in CI has 2 cores shared with other jobs: 2-worker numbers there are
noisy and include the scheduler, the client and the workers competing for those 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "cnt_tilt_series"


def emit(d: dict) -> None:
    print(json.dumps(d), flush=True)


def bench_ingest(files: list[Path], work: Path, repeats: int) -> dict:
    """ptyhpc ingest vs a raw zarr write of the same bytes (same chunks, shards, codec)."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle

    from ptyhpc.io import frames_chunking, ingest, read_counts

    counts = np.stack([read_counts(f) for f in files])  # untimed: the raw write starts from memory
    nbytes = counts.nbytes
    chunks, shards = frames_chunking(counts.shape[1], counts.shape[2:])
    t_ingest, t_raw = [], []
    for r in range(repeats):
        out = work / f"ingest{r}.zarr"
        t = time.perf_counter()
        ingest(files, out, progress=False)
        t_ingest.append(time.perf_counter() - t)
        shutil.rmtree(out)
        raw = work / f"raw{r}.zarr"
        t = time.perf_counter()
        g = zarr.open_group(raw, mode="w", zarr_format=3)
        a = g.create_array("frames", shape=counts.shape, dtype=counts.dtype, chunks=chunks, shards=shards,
                           compressors=BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.bitshuffle),
                           fill_value=0)
        for k in range(len(counts)):  # one shard per item, as ingest writes them
            a[k] = counts[k]
        t_raw.append(time.perf_counter() - t)
        shutil.rmtree(raw)
    ti, tr = min(t_ingest), min(t_raw)  # best of the repeats: least disturbed by other jobs
    return {"bench": "ingest", "files": len(files), "MB": round(nbytes / 1e6, 1),
            "ingest_MB_per_s": round(nbytes / 1e6 / ti, 1), "raw_zarr_MB_per_s": round(nbytes / 1e6 / tr, 1),
            "ingest_ratio_to_raw_zarr": round(tr / ti, 3), "ingest_s": round(ti, 3), "raw_zarr_s": round(tr, 3),
            "target": ">= 0.7"}


def bench_scaling(store: Path, workers: int, params, work: Path) -> dict:
    """Items per second of run_ptycho on a LocalCluster of ``workers`` (started and warmed untimed)."""
    from ptyhpc.cluster import connect
    from ptyhpc.pipeline.ptycho_stage import run_ptycho

    s = work / f"w{workers}.zarr"
    shutil.copytree(store, s)
    with connect(n_workers=workers) as client:
        # Imports happen once per worker: warm them so the timing is the steady state.
        client.run(lambda: __import__("ptyhpc.pipeline.ptycho_stage"))
        t = time.perf_counter()
        out = run_ptycho(s, params, client=client, progress=False)
        wall = time.perf_counter() - t
    shutil.rmtree(s)
    task_s = [d["seconds"] for d in out["tasks"]]
    compute_s = [d["compute_seconds"] for d in out["tasks"]]
    n = len(task_s)
    return {"bench": "scaling", "workers": workers, "items": n, "wall_s": round(wall, 3),
            "items_per_second": round(n / wall, 4),
            "overhead_fraction": round((workers * wall - sum(task_s)) / sum(task_s), 4),
            "task_seconds_mean": round(float(np.mean(task_s)), 3),
            "io_fraction": round(1 - sum(compute_s) / sum(task_s), 4)}


def predict(n_items: int, n_positions: int, n_iter: int, nodes: int, gpus_per_node: int, *,
            s_per_position_iter: float, io_s_per_item: float, overhead_fraction: float,
            cluster_start_s: float, ingest_MB_per_s: float, MB_per_item: float) -> dict:
    """Wall time of the ptychography of a series on ``nodes`` x ``gpus_per_node`` GPU workers.

    T = T_start + T_ingest + ceil(n_items / P) * t_item * (1 + overhead),
    t_item = s_per_position_iter * n_positions * n_iter + io_s_per_item,  P = nodes * gpus_per_node,
    T_ingest = n_items * MB_per_item / ingest_MB_per_s (one process; ingest is not parallel).

    Items are independent, so the item term is a whole number of waves of P tasks; the engine
    time is linear in positions x iterations at a fixed detector size (every position costs the
    same FFTs).
    """
    p = nodes * gpus_per_node
    t_item = s_per_position_iter * n_positions * n_iter + io_s_per_item
    waves = math.ceil(n_items / p)
    t_ingest = n_items * MB_per_item / ingest_MB_per_s
    total = cluster_start_s + t_ingest + waves * t_item * (1 + overhead_fraction)
    return {"nodes": nodes, "workers": p, "item_s": round(t_item, 1), "waves": waves,
            "ingest_s": round(t_ingest, 1), "total_s": round(total, 1), "total_h": round(total / 3600, 3)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = [r["workers"] for r in rows]
    ips = [r["items_per_second"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(w, ips, "o-", label="measured")
    a.plot(w, [ips[0] * k / w[0] for k in w], "k--", lw=0.8, label="ideal (linear)")
    a.set_xlabel("workers")
    a.set_ylabel("items / s")
    a.set_xticks(w)
    a.legend()
    a.set_title("per-item ptychography throughput")
    b.bar([str(k) for k in w], [100 * r["overhead_fraction"] for r in rows])
    b.axhline(2, color="r", lw=0.8, ls="--", label="target 2 %")
    b.set_xlabel("workers")
    b.set_ylabel("overhead (% of task time)")
    b.legend()
    fig.suptitle("ptyhpc scaling (2 shared cores: noisy)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items and iterations (about a minute)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--gpu-item-seconds", type=float, default=None,
                    help="measured seconds per position-iteration on one GPU (benchmarks/gpu_item.py); "
                         "default: the value measured on an H100, see README")
    args = ap.parse_args(argv)
    os.environ.setdefault("PTYHPC_BACKEND", "numpy")
    from ptyhpc.io import ingest
    from ptyhpc.pipeline.ptycho_stage import PtychoParams

    n_items, n_iter, repeats = (4, 5, 2) if args.quick else (8, 20, 3)
    files = [DATA / f"tilt_{i:03d}.h5" for i in range(0, 25, 25 // n_items)][:n_items]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ing = bench_ingest(files if args.quick else [DATA / f"tilt_{i:03d}.h5" for i in range(25)], work, repeats)
        emit(ing)
        store = ingest(files, work / "bench.zarr", progress=False)
        params = PtychoParams(n_iter=n_iter)
        t = time.perf_counter()
        from ptyhpc.cluster import connect

        with connect(n_workers=max(args.workers)):
            pass
        cluster_start = time.perf_counter() - t
        rows = []
        for w in args.workers:
            row = bench_scaling(store, w, params, work)
            rows.append(row)
        for row in rows:
            row["parallel_efficiency"] = round(row["items_per_second"] / (row["workers"] * rows[0]["items_per_second"]
                                                                         / rows[0]["workers"]), 4)
            # Per-task time against the 1-worker run: above 1 when the workers slow each other down
            # (shared cores, memory bandwidth), which no scheduling can recover.
            row["task_seconds_ratio_to_1_worker"] = round(row["task_seconds_mean"] / rows[0]["task_seconds_mean"], 3)
            row["targets"] = {"parallel_efficiency_at_2": ">= 0.9", "overhead_fraction": "< 0.02"}
            emit(row)
    plot(rows, args.out / "scaling.png")

    # Cost model constants from this run (CPU) and the GPU engine time (measured separately).
    one = rows[0]
    n_pos = 400
    cpu_s_per_pi = one["task_seconds_mean"] * (1 - one["io_fraction"]) / (n_pos * n_iter)
    io_s = one["task_seconds_mean"] * one["io_fraction"]
    gpu_s_per_pi = args.gpu_item_seconds or GPU_S_PER_POSITION_ITER
    overhead = max(r["overhead_fraction"] for r in rows)
    MB_item = ing["MB"] / ing["files"]
    common = dict(io_s_per_item=io_s * 25, overhead_fraction=overhead, cluster_start_s=60.0,
                  ingest_MB_per_s=ing["ingest_MB_per_s"], MB_per_item=MB_item * 25)
    # A 10^4-position item has 25x the positions and frames of a CNT item: its I/O scales with them.
    preds = [predict(180, 10_000, 60, nodes, 4, s_per_position_iter=gpu_s_per_pi, **common)
             for nodes in (1, 2, 4, 8, 16, 45)]
    emit({"bench": "cost_model", "cpu_s_per_position_iteration": cpu_s_per_pi,
          "gpu_s_per_position_iteration": gpu_s_per_pi, "io_s_per_item_1e4_positions": round(io_s * 25, 2),
          "overhead_fraction": overhead, "cluster_start_s_assumed": 60.0,
          "cluster_start_s_local_measured": round(cluster_start, 2),
          "ingest_MB_per_s": ing["ingest_MB_per_s"],
          "series": "180 angles x 1e4 positions, 60 iterations, 122x122 detector, 4 GPUs per node",
          "predictions": preds})
    print(f"plot: {args.out / 'scaling.png'}", file=sys.stderr)
    return 0


#: Seconds per position and iteration of the engine on one GPU (CNT geometry: 122x122 detector padded
#: to 125, batch 32, rPIE/Poisson), measured with CuPy on an H100 by benchmarks/gpu_item.py.
GPU_S_PER_POSITION_ITER = 1.2135e-4  # H100 80GB, CuPy 14.2, 2026-11-22: 2.91 s per 400-position item, 60 it

if __name__ == "__main__":
    sys.exit(main())
