"""Seeded reconstructions before and after the engine refactor (issue 11) agree to float32 rounding.

Reference: commit ee52045 (the last one with ``ptyhpc/ptycho/engines.py`` as one module). Make the
reference tree and its results, then compare the working tree with them::

    git archive ee52045 | (mkdir -p /tmp/ref_engines && tar -x -C /tmp/ref_engines)
    PYTHONPATH=/tmp/ref_engines python benchmarks/engine_equivalence.py --save /tmp/eq_ref
    PYTHONPATH=. python benchmarks/engine_equivalence.py --compare /tmp/eq_ref

Each case (engine × probe modes / position correction / sub-pixel mode / background / detector mask /
noise model / near field / multislice / chain, where supported) runs a few iterations on a small
simulated scan (seed 3, 6 × 6 positions of 64²) and prints one JSON line: the case, and with
``--compare`` the largest difference relative to the reference's largest magnitude, for the object,
the probe, the error curve and the refined positions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE_COMMIT = "ee52045"


def _cases():
    pie = ("rpie", "epie", "mpie")
    cases = {}
    for eng in (*pie, "lsqml"):
        for noise in ("poisson", "amplitude"):
            for sub in ("fourier", "bilinear", "none"):
                cases[f"{eng}-{noise}-{sub}"] = dict(engine=eng, noise_model=noise, subpixel=sub)
        cases[f"{eng}-mask"] = dict(engine=eng, mask="gap")
        cases[f"{eng}-background"] = dict(engine=eng, background="low")
        cases[f"{eng}-background-amplitude"] = dict(engine=eng, background="low", noise_model="amplitude")
        cases[f"{eng}-constraints"] = dict(engine=eng, probe_support="disc", object_amplitude_bounds=(0.0, 1.0),
                                           probe_fourier_mask="aperture")
        cases[f"{eng}-nearfield"] = dict(engine=eng, propagator="near")
    for eng in pie:
        cases[f"{eng}-modes"] = dict(engine=eng, n_probe_modes=2)
        cases[f"{eng}-positions"] = dict(engine=eng, position_correction_start=2)
        cases[f"{eng}-positions-bilinear"] = dict(engine=eng, position_correction_start=2, subpixel="bilinear")
        cases[f"{eng}-positions-affine"] = dict(engine=eng, position_correction_start=2, position_model="affine")
        cases[f"{eng}-modes-mask-background"] = dict(engine=eng, n_probe_modes=2, mask="gap", background="low")
    for eng in ("er", "dm"):
        for noise in ("poisson", "amplitude"):
            cases[f"{eng}-{noise}"] = dict(engine=eng, noise_model=noise)
        cases[f"{eng}-mask"] = dict(engine=eng, mask="gap")
        cases[f"{eng}-nearfield"] = dict(engine=eng, propagator="near")
    cases["dm-beta0.7"] = dict(engine="dm", dm_beta=0.7)
    cases["multislice-2"] = dict(engine="multislice", n_slices=2)
    cases["multislice-1"] = dict(engine="multislice", n_slices=1)
    cases["chain-er-lsqml"] = dict(engine="chain")
    return cases


def _run(name, case, sim):
    from ptyhpc.ptycho import reconstruct, reconstruct_chain, reconstruct_multislice
    from ptyhpc.ptycho.propagators import NearField

    case = dict(case)
    det = sim.probe.shape
    kw = dict(n_iter=6, batch_size=8, origin_m=sim.origin_m, object_shape=sim.object.shape, probe_update_start=1,
              seed=0)
    frames, probe = sim.frames, sim.probe
    if case.pop("mask", None):
        m = np.ones(det, bool)
        m[:, det[1] // 2 + 5:det[1] // 2 + 8] = False     # a detector gap
        kw["mask"] = m
    if case.pop("probe_support", None):
        yy, xx = np.mgrid[:det[0], :det[1]]
        kw["probe_support"] = ((yy - det[0] // 2) ** 2 + (xx - det[1] // 2) ** 2 < (0.45 * det[0]) ** 2)
    if case.pop("probe_fourier_mask", None):
        spec = np.abs(np.fft.fft2(probe))
        kw["probe_fourier_mask"] = (spec > 1e-2 * spec.max()).astype(np.float32)
    if case.pop("propagator", None) == "near":
        prop = NearField(det, sim.pixel_size_m, 1e-10, 2e-6)
        # Near-field data of the same object: |H[P·O]|² per position.
        from ptyhpc.ptycho import operators as ops
        geom = ops.ScanGeometry.from_positions(sim.positions_m, det, sim.pixel_size_m, origin_m=sim.origin_m,
                                               object_shape=sim.object.shape)
        idx = np.arange(geom.n_positions)
        probes = ops.shifted_probes(np.fft.fft2(probe), ops.shift_ramps(geom.frac, det))
        frames = np.abs(prop.forward(ops.exit_waves(sim.object, probes, geom.flat_index(idx)))) ** 2
        kw["propagator"] = prop
    if case.get("background") == "low":
        # 1 % of the mean counts per pixel (a background far above the signal makes LSQ-ML's Poisson step,
        # which ignores it, diverge: a known limit, the same in the reference).
        case["background"] = 0.01 * float(np.mean(frames))
    engine = case.pop("engine")
    if engine == "multislice":
        kw.pop("seed")
        res = reconstruct_multislice(frames, sim.positions_m, probe, sim.pixel_size_m, slice_thickness_m=20e-10,
                                     wavelength_m=4.87e-12, **case, **kw)
        return {"object": res.objects, "probe": res.probe, "error": res.error}
    if engine == "chain":
        kw.pop("n_iter")
        res = reconstruct_chain(frames, sim.positions_m, probe, sim.pixel_size_m,
                                stages=[{"engine": "er", "n_iter": 3},
                                        {"engine": "lsqml", "n_iter": 3, "noise_model": "amplitude"}], **kw)
    else:
        res = reconstruct(frames, sim.positions_m, probe, sim.pixel_size_m, engine=engine, **case, **kw)
    out = {"object": res.object, "probe": res.probe, "error": res.error,
           "positions": np.asarray(res.info.get("positions_m", sim.positions_m)) / sim.pixel_size_m[0]}
    if res.info.get("background") is not None:
        out["background"] = res.info["background"]
    return out


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    nan_a, nan_b = ~np.isfinite(a), ~np.isfinite(b)
    if not np.array_equal(nan_a, nan_b):
        return float("inf")
    if nan_b.all():
        return 0.0
    scale = max(float(np.max(np.abs(b[~nan_b]))), 1e-30)
    return float(np.max(np.abs(a - b)[~nan_b]) / scale)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path, help="write each case's result to DIR/<case>.npz")
    g.add_argument("--compare", type=Path, help="compare with the results in DIR")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args(argv)
    from ptyhpc.sim import simulate_scan

    sim = simulate_scan(seed=3, scan=(6, 6))
    cases = _cases()
    names = [n for n in args.only.split(",") if n] or list(cases)
    worst = 0.0
    for name in names:
        t0 = time.perf_counter()
        out = _run(name, cases[name], sim)
        import ptyhpc

        rec = {"case": name, "reference": REFERENCE_COMMIT, "seconds": round(time.perf_counter() - t0, 2),
               "ptyhpc": str(Path(ptyhpc.__file__).parents[1])}
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez(args.save / f"{name}.npz", **out)
        else:
            ref = np.load(args.compare / f"{name}.npz")
            diffs = {k: _rel(out[k], ref[k]) for k in ref.files}
            rec.update({f"max_rel_{k}": v for k, v in diffs.items()})
            worst = max(worst, *diffs.values())
        print(json.dumps(rec), flush=True)
    if args.compare:
        print(json.dumps({"summary": "max relative difference over all cases", "reference": REFERENCE_COMMIT,
                          "max_rel": worst, "n_cases": len(names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
