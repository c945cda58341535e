"""Make docs/img/cnt_multislice.png: 3PIE optical sectioning of one CNT tilt angle (seed 000).

Runs the same reconstruction as ``tests/test_multislice.py::test_cnt_tubes_sectioned_in_depth_order``
(tilt +10°, all 400 positions, 4 slices of 6 Å, 100 iterations; about two minutes on one core), prints
the per-tube depths against truth_tubes.json as JSON and draws the phase of every slice with the
tubes' true positions marked, and each tube's strength per slice.

    python docs/multislice_cnt.py [--iterations N] [--tilt-index I] [--cache FILE.npz]
    python docs/multislice_cnt.py --simulate poisson|noise-free [--noise-seed K]   # numbers only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_multislice import (CNT_DZ, CNT_ITER, CNT_SLICES, CNT_TILT_INDEX, cnt_truth_depths,  # noqa: E402
                             cnt_tube_depth_profiles, reconstruct_cnt_angle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=CNT_ITER)
    ap.add_argument("--tilt-index", type=int, default=CNT_TILT_INDEX)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "cnt_multislice.png"))
    ap.add_argument("--noise-seed", type=int, default=0, help="seed of the simulated Poisson noise")
    ap.add_argument("--cache", help="npz file: load the reconstruction from it if present, else save it there")
    ap.add_argument("--simulate", choices=("none", "poisson", "noise-free"), default="none",
                    help="replace the data by a 3-slice simulation of the same geometry (each tube's "
                         "projected potential from truth_projected_NNN.npy in its own slice, 8 Å apart, "
                         "the shallowest at the probe plane), with or without Poisson noise at the "
                         "data's dose: separates what the dose allows from what the engine does")
    args = ap.parse_args()

    sim = None if args.simulate == "none" else args.simulate
    if args.cache and Path(args.cache).exists():
        from ptyhpc.io.hdf5_tilt import read_scan_metadata  # noqa: PLC0415
        from ptyhpc.physics import electron_wavelength  # noqa: PLC0415
        from ptyhpc.ptycho.multislice import MultisliceResult  # noqa: PLC0415

        c = np.load(args.cache)
        res = MultisliceResult(c["objects"], c["probe"], c["error"], c["illumination"], tuple(c["pixel_size_m"]),
                               tuple(c["origin_m"]), CNT_DZ)
        meta = read_scan_metadata(ROOT / "data" / "cnt_tilt_series" / f"tilt_{args.tilt_index:03d}.h5")
        lam = electron_wavelength(meta.beam_energy_eV)
    else:
        res, meta, lam = reconstruct_cnt_angle(args.tilt_index, n_iter=args.iterations, simulate=sim,
                                               noise_seed=args.noise_seed)
        if args.cache:
            np.savez(args.cache, objects=res.objects, probe=res.probe, error=res.error,
                     illumination=res.illumination, pixel_size_m=res.pixel_size_m, origin_m=res.origin_m)
    x_t, z_t, r_t = cnt_truth_depths(meta.tilt_angle_rad)
    prof = cnt_tube_depth_profiles(res.objects, res.illumination, res.pixel_size_m, res.origin_m, x_t, r_t)
    z_slices = np.arange(CNT_SLICES) * CNT_DZ * 1e10
    w = np.clip(prof, 0, None)
    depth = (w * z_slices).sum(1) / w.sum(1)
    alpha = meta.convergence_semiangle_rad
    summary = {
        "tilt_deg": round(float(np.degrees(meta.tilt_angle_rad)), 2),
        "slices": CNT_SLICES, "slice_thickness_A": CNT_DZ * 1e10, "iterations": args.iterations,
        "depth_resolution_lambda_over_alpha2_A": round(lam / alpha**2 * 1e10, 1),
        "error_first_last": [round(float(res.error[0]), 5), round(float(res.error[-1]), 5)],
        "tube_x_A": np.round(x_t, 2).tolist(),
        "truth_depth_A": np.round(z_t, 2).tolist(),
        "truth_depth_relative_A": np.round(z_t - z_t.mean(), 2).tolist(),
        "found_depth_below_probe_plane_A": np.round(depth, 2).tolist(),
        "found_depth_relative_A": np.round(depth - depth.mean(), 2).tolist(),
        "strength_per_slice": np.round(prof, 3).tolist(),
    }
    summary["data"] = args.simulate if sim else "tilt series"
    print(json.dumps(summary, indent=1))
    if sim:
        return

    good = res.illumination > 0.5 * res.illumination.max()
    rows, cols = np.nonzero(good)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    x_A = (res.origin_m[1] + np.arange(res.objects.shape[2]) * res.pixel_size_m[1]) * 1e10
    y_A = (res.origin_m[0] + np.arange(res.objects.shape[1]) * res.pixel_size_m[0]) * 1e10
    extent = [x_A[crop[1]][0], x_A[crop[1]][-1], y_A[crop[0]][-1], y_A[crop[0]][0]]
    # Images low-passed to 0.6 1/Å for display (one grey scale for the slices); below each, the
    # phase averaged along the tubes (y), unfiltered: the tube walls stand out of the noise there.
    H, W = res.objects.shape[1:]
    k = np.hypot(np.fft.fftfreq(H, res.pixel_size_m[0] * 1e10)[:, None],
                 np.fft.fftfreq(W, res.pixel_size_m[1] * 1e10)[None])

    def centred(obj):
        p = np.angle(obj)
        return (p - p[good].mean()) * good

    def shown(obj):
        return np.real(np.fft.ifft2(np.fft.fft2(centred(obj)) * (k <= 0.6)))[crop]

    stack = [np.prod(res.objects, axis=0)] + list(res.objects)
    titles = ["projection (product of slices)"] + [f"slice {s}: {z_slices[s]:.0f} Å below probe plane"
                                                   for s in range(CNT_SLICES)]
    images = [shown(o) for o in stack]
    lim = np.percentile(np.abs(np.stack(images[1:])), 99.5)
    colours = ["tab:red", "tab:blue", "tab:green"]
    ncol = len(stack) + 1
    fig, axes = plt.subplots(2, ncol, figsize=(3.0 * ncol, 6.0), gridspec_kw={"height_ratios": [3, 1.4]})
    for j, (img, title, obj) in enumerate(zip(images, titles, stack)):
        ax = axes[0, j]
        scale = np.percentile(np.abs(img), 99.5) if j == 0 else lim
        ax.imshow(img, cmap="gray", extent=extent, vmin=-scale, vmax=scale)
        ax.set_title(title, fontsize=8)
        profile = centred(obj)[crop].mean(axis=0)
        axes[1, j].plot(x_A[crop[1]], profile, "k-", lw=0.8)
        axes[1, j].set_xlabel("x (Å)")
        if j > 0:
            axes[1, j].set_ylim(-0.06, 0.1)
        for ax_ in (ax, axes[1, j]):
            for i, (xt, rt) in enumerate(zip(x_t, r_t)):
                for edge in (xt - rt, xt + rt):
                    ax_.axvline(edge, color=colours[i], lw=0.8, ls="--")
    axes[0, 0].set_ylabel("y (Å)")
    axes[1, 0].set_ylabel("phase, mean over y (rad)")
    axes[1, -1].axis("off")
    ax = axes[0, -1]
    for i in range(len(x_t)):
        ax.plot(z_slices, prof[i], "o-", color=colours[i],
                label=f"tube {i}: true {z_t[i] - z_t.mean():+.1f} Å, found {depth[i] - depth.mean():+.2f} Å")
    ax.set_xlabel("slice depth below probe plane (Å)")
    ax.set_ylabel("tube strength (share of projection)")
    ax.legend(fontsize=6, title="depth rel. to the mean of the three", title_fontsize=6)
    fig.suptitle(f"3PIE, CNT tilt {summary['tilt_deg']:+.0f}°, {CNT_SLICES} slices × {CNT_DZ * 1e10:.0f} Å, "
                 f"{args.iterations} iterations; phase low-passed at 0.6 1/Å (slices on one grey scale); "
                 "dashed: true tube walls", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
