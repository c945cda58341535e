"""Spectro analysis speed: per-pixel thickness fits and stack alignment.

Prints one JSON object per line:

``{"case": "fit", "components", "energies", "pixels", "rows", "seconds", "throughput_px_energies_per_s",
"lstsq_seconds", "lstsq_throughput", "ratio_to_lstsq", "max_abs_diff_vs_scipy_nnls", "peak_mb"}``
    :func:`ptyhpc.spectro.fit.fit_thickness` (exact NNLS by active-set enumeration, chunks of
    65 536 pixels) against a plain ``numpy.linalg.lstsq`` of the same system (unconstrained, all
    pixels as right-hand sides of one call) in the same run; OD-only and joint (OD + phase) fits.
    ``max_abs_diff_vs_scipy_nnls`` checks 200 pixels against :func:`scipy.optimize.nnls`, in m.
    ``peak_mb``: the peak traced Python allocation of the fit (tracemalloc).

``{"case": "chunked_fit", "shape", "energies", "block_rows", "n_blocks", "workers", "seconds", "peak_mb",
"in_memory_peak_mb", "stack_mb", "identical_to_in_memory"}``
    The stage's fit (:mod:`ptyhpc.spectro.chunked`): OD + phase fit of a complex64 stack in a zarr
    store, read in row blocks by tasks on local threads, against reading the whole stack and fitting
    it in memory. ``peak_mb``: peak traced allocation (tracemalloc, all threads) of each way.

``{"case": "align", "shape", "energies", "seconds_per_energy"}``
    :func:`ptyhpc.spectro.stack.register` + :func:`~ptyhpc.spectro.stack.apply_shift` per energy.

Usage: ``python benchmarks/spectro.py [--quick]`` (``--quick``: 128² pixels, 20 energies; default
512² pixels, 60 energies, 3 components). Single process; best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from ptyhpc.spectro.fit import fit_thickness, nnls_batched
from ptyhpc.spectro.references import Reference
from ptyhpc.spectro.stack import apply_shift, register


def _best(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_fit(n, n_energies, n_comp, repeats, joint):
    rng = np.random.default_rng(0)
    energies = np.linspace(690.0, 730.0, n_energies)
    # Smooth positive spectra with an edge each: a realistic conditioning.
    refs = []
    for c in range(n_comp):
        edge = 1 / (1 + np.exp(-(energies - (700 + 8 * c)) / 1.5))
        mu = 1e6 * (1 + c) * (0.3 + edge + 0.1 * np.sin(energies / (5 + c)))
        delta = 1e-4 * (1 + c) * (1 + 0.2 * np.cos(energies / (7 + c)))
        refs.append(Reference(f"c{c}", mu, delta, "synthetic"))
    t = rng.uniform(0, 50e-9, (n_comp, n, n))
    mu = np.stack([r.mu_per_m for r in refs], 1)
    od = np.einsum("ek,khw->ehw", mu, t) + 0.01 * rng.standard_normal((n_energies, n, n))
    phase = None
    if joint:
        k = 2 * np.pi / (1239.84198e-9 / energies)
        phase = -np.einsum("ek,khw->ehw", k[:, None] * np.stack([r.delta for r in refs], 1), t)
    tracemalloc.start()
    seconds, (fit, _) = _best(lambda: fit_thickness(od, refs, energies, phase=phase), repeats)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    A = mu if phase is None else np.concatenate([mu, k[:, None] * np.stack([r.delta for r in refs], 1)])
    B = od.reshape(n_energies, -1) if phase is None else np.concatenate([od.reshape(n_energies, -1),
                                                                        -phase.reshape(n_energies, -1)])
    lst_seconds, _ = _best(lambda: np.linalg.lstsq(A, B, rcond=None), repeats)
    from scipy.optimize import nnls

    cols = rng.choice(B.shape[1], 200, replace=False)
    x_ref = np.stack([nnls(A, B[:, j])[0] for j in cols], 1)
    x_ours = nnls_batched(A, B[:, cols])[0]
    work = n * n * n_energies
    return {"case": "fit", "joint": joint, "components": n_comp, "energies": n_energies, "pixels": n * n,
            "rows": int(A.shape[0]), "seconds": seconds, "throughput_px_energies_per_s": work / seconds,
            "lstsq_seconds": lst_seconds, "lstsq_throughput": work / lst_seconds,
            "ratio_to_lstsq": seconds / lst_seconds,
            "max_abs_diff_vs_scipy_nnls": float(np.abs(x_ref - x_ours).max()), "peak_mb": peak}


def bench_chunked_fit(n, n_energies, n_comp, rows):
    import os
    import tempfile

    import zarr

    from ptyhpc.spectro.chunked import fit_block, prepare_fit_arrays
    from ptyhpc.spectro.stage import _compute

    rng = np.random.default_rng(2)
    energies = np.linspace(690.0, 730.0, n_energies)
    refs = []
    for c in range(n_comp):
        edge = 1 / (1 + np.exp(-(energies - (700 + 8 * c)) / 1.5))
        refs.append(Reference(f"c{c}", 1e6 * (1 + c) * (0.3 + edge), 1e-4 * (1 + c) * np.ones(n_energies), "synthetic"))
    t = rng.uniform(0, 50e-9, (n_comp, n, n))
    mu = np.stack([r.mu_per_m for r in refs], 1)
    k = 2 * np.pi / (1239.84198e-9 / energies)
    dl = np.stack([r.delta for r in refs], 1)
    which = [np.array([i]) for i in range(n_energies)]
    with tempfile.TemporaryDirectory() as tmp:
        res = zarr.open_group(tmp, mode="w", zarr_format=3).require_group("results/spectro")
        arr = res.create_array("aligned", shape=(n_energies, n, n), dtype="complex64", chunks=(n_energies, rows, n))
        for r0 in range(0, n, rows):   # written block by block: the benchmark itself never holds the stack
            tt = t[:, r0:r0 + rows]
            arr[:, r0:r0 + rows] = np.exp(-0.5 * np.einsum("ek,khw->ehw", mu, tt)
                                          - 1j * np.einsum("ek,khw->ehw", k[:, None] * dl, tt)).astype(np.complex64)
        res.create_array("valid", data=np.ones((n, n), bool), chunks=(rows, n))
        prepare_fit_arrays(res, n_comp, (n, n), rows, joint=True, attrs={"thickness": {}, "thickness_od_only": {}},
                           residual_attrs={})
        del t
        tracemalloc.start()
        t0 = time.perf_counter()
        blocks = _compute([(fit_block, (tmp, r0, min(r0 + rows, n), refs, energies, which, True, 2.0))
                           for r0 in range(0, n, rows)], None)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        chunked = np.asarray(res["thickness"][...])
        tracemalloc.start()
        a = np.asarray(res["aligned"][...])
        od, ph = -np.log(np.abs(a) ** 2), np.angle(a)
        whole, _ = fit_thickness(od, refs, energies, phase=ph, phase_weight=2.0)
        peak_mem = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return {"case": "chunked_fit", "shape": [n, n], "energies": n_energies, "components": n_comp, "block_rows": rows,
            "n_blocks": len(blocks), "workers": min(len(blocks), os.cpu_count() or 1), "seconds": seconds,
            "peak_mb": peak, "in_memory_peak_mb": peak_mem, "stack_mb": n * n * n_energies * 8 / 2**20,
            "identical_to_in_memory": bool(np.allclose(chunked, whole, rtol=1e-5, atol=1e-15))}


def bench_align(n, n_energies, repeats):
    rng = np.random.default_rng(1)
    yy, xx = np.indices((n, n))
    base = np.zeros((n, n))
    for _ in range(12):
        cy, cx, r = rng.uniform(0.2 * n, 0.8 * n, 2).tolist() + [rng.uniform(0.03 * n, 0.1 * n)]
        base += np.hypot(yy - cy, xx - cx) < r
    valid = np.hypot(yy - n / 2, xx - n / 2) < 0.45 * n
    objs = [np.exp(-(0.1 + 0.05 * e / n_energies) * base + 0.02 * rng.standard_normal((n, n)) - 0.3j * base)
            for e in range(n_energies)]

    def run():
        for o in objs:
            s = register(objs[0], o, valid, valid)
            apply_shift(o, valid, s)

    seconds, _ = _best(run, repeats)
    return {"case": "align", "shape": [n, n], "energies": n_energies, "seconds_per_energy": seconds / n_energies}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    n, ne, nc = (128, 20, 3) if a.quick else (512, 60, 3)
    for joint in (False, True):
        print(json.dumps(bench_fit(n, ne, nc, a.repeats, joint)), flush=True)
    print(json.dumps(bench_chunked_fit(n, ne, nc, 16 if a.quick else 32)), flush=True)
    print(json.dumps(bench_align(128 if a.quick else 256, 5 if a.quick else 20, a.repeats)), flush=True)


if __name__ == "__main__":
    main()
