"""ptyhpc's iCOM/SSB/parallax against py4DSTEM's DPC and parallax on the simulated crystal of tests/test_stem.py.

    python benchmarks/stem_peers.py --py4dstem-python /work/venv-peers/bin/python   # JSON lines on stdout
    python benchmarks/stem_peers.py --quick ...                                      # one dose only

The crystal (48x48 scan, scan rotation -123 deg, transposed detector, descan) is simulated with
``ptyhpc.stem.sim`` at 10^4 and 100 e/A^2 (Poisson); ptyhpc runs its stage on a store ingested from a Merlin
file (``run_stem``: virtual images, CoM, rotation found, iCOM, SSB); py4DSTEM (not a dependency: a separate
venv, as it pins an older NumPy) runs ``DPC`` (rotation and transpose found by its own curl test) on the same
counts, in a subprocess. Every phase is scored by the test's metric: correlation with the projected phase,
both low-passed to the aperture limit 2 alpha/lambda. Parallax: the 32x32 crystal at 10 nm defocus of
``test_parallax_defocus_and_phase``; the fitted defocus and the phase correlation of each package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THETA_DEG = -123.0


def emit(**kw):
    print(json.dumps(kw), flush=True)


# --- py4DSTEM side: runs in the peers' venv, imports nothing from ptyhpc --------------------------------------
def peer(npz: str, out: str, mode: str):
    import py4DSTEM
    from py4DSTEM.process.phase import DPC, Parallax

    d = np.load(npz)
    sy, sx = d["scan_shape"]
    counts = d["counts"].reshape(sy, sx, *d["counts"].shape[1:]).astype(np.float32)
    dc = py4DSTEM.DataCube(data=counts)
    dc.calibration.set_R_pixel_size(float(d["step_m"]) * 1e10)
    dc.calibration.set_R_pixel_units("A")
    dc.calibration.set_Q_pixel_size(float(d["dk_inv_m"]) * 1e-10)
    dc.calibration.set_Q_pixel_units("A^-1")
    res = {"py4dstem": py4DSTEM.__version__}
    t0 = time.perf_counter()
    if mode == "dpc":
        r = DPC(datacube=dc, energy=float(d["energy_eV"]), verbose=False)
        r.preprocess(plot_center_of_mass=False, plot_rotation=False)
        r.reconstruct(progress_bar=False)
        phase = np.asarray(r._object_phase)
        res.update(rotation_deg=float(np.degrees(r._rotation_best_rad)), transpose=bool(r._rotation_best_transpose))
    else:
        r = Parallax(datacube=dc, energy=float(d["energy_eV"]), verbose=False)
        r.preprocess(plot_average_bf=False, edge_blend=4, threshold_intensity=0.8)
        r.reconstruct(plot_aligned_bf=False, plot_convergence=False)
        r.aberration_fit(plot_CTF_comparison=False)
        res.update(C1_A=float(r.aberrations_C1))
        r.aberration_correct(plot_corrected_phase=False, upsampled=False)
        phase = np.asarray(r.object_cropped)
    res["seconds"] = time.perf_counter() - t0
    np.savez(out, phase=phase, **{k: np.asarray(v) for k, v in res.items()})


# --- ptyhpc side --------------------------------------------------------------------------------------------
def _corr(img, truth, p):
    """The test's metric (tests/test_stem.py corr_to_truth): both low-passed to 2 alpha / lambda."""
    k = 2 * p.semiangle_rad / p.wavelength_m

    def lp(a):
        qy = np.fft.fftfreq(a.shape[0], p.step_m)[:, None]
        qx = np.fft.fftfreq(a.shape[1], p.step_m)[None]
        return np.fft.ifft2(np.fft.fft2(a - a.mean()) * (np.hypot(qy, qx) <= k)).real

    return float(np.corrcoef(lp(img).ravel(), lp(truth).ravel())[0, 1])


def _fit_shape(img, shape):
    """Crop (centred) or zoom an image of another grid onto ``shape`` (py4DSTEM pads/upsamples)."""
    from scipy.ndimage import zoom

    img = np.asarray(img, float)
    if img.shape != tuple(shape) and all(a % b == 0 for a, b in zip(img.shape, shape)) and img.shape[0] // shape[0] > 1:
        img = zoom(img, (shape[0] / img.shape[0], shape[1] / img.shape[1]), order=1)
    if img.shape != tuple(shape):
        oy, ox = (img.shape[0] - shape[0]) // 2, (img.shape[1] - shape[1]) // 2
        img = img[oy:oy + shape[0], ox:ox + shape[1]]
    return img


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--py4dstem-python", default=None, help="python of a venv with py4DSTEM")
    ap.add_argument("--no-parallax", action="store_true")
    ap.add_argument("--peer", nargs=3, metavar=("NPZ", "OUT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        return peer(*args.peer)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _stem_files import write_mib

    from ptyhpc.io import open_store
    from ptyhpc.stem.calibration import Calibration
    from ptyhpc.stem.ingest import ingest_stem
    from ptyhpc.stem.sim import StemSim, simulate_4dstem
    from ptyhpc.stem.stage import run_stem

    cases = [("dpc", dose, StemSim(weights_rad=(1.0, 0.5), scan_rotation_rad=np.deg2rad(THETA_DEG), transpose=True,
                                   descan_px_per_step=(0.05, -0.03), scan_shape=(48, 48)), {"ssb": True})
             for dose in ((1e4,) if args.quick else (1e4, 100))]
    if not args.no_parallax:
        cases.append(("parallax", 1e4, StemSim(weights_rad=(1.0, 0.5), scan_rotation_rad=np.deg2rad(30),
                                               scan_shape=(32, 32), defocus_m=100e-10),
                      {"ssb": True, "parallax": True, "scan_rotation_rad": np.deg2rad(30), "transpose": False}))
    with tempfile.TemporaryDirectory(prefix="stem_peers_") as tmp:
        tmp = Path(tmp)
        for j, (mode, dose, p, opts) in enumerate(cases):
            sim = simulate_4dstem(p)
            counts = np.random.default_rng(0).poisson(sim["frames"] * dose * (p.step_m * 1e10) ** 2).astype(np.uint16)
            cal = dict(sim["calibration"], **({"defocus_m": p.defocus_m} if p.defocus_m else {}))
            mib = write_mib(tmp / f"{j}.mib", counts, scan_x=p.scan_shape[1])
            t0 = time.perf_counter()
            store = ingest_stem([mib], tmp / f"{j}.zarr", calibration=Calibration(**cal), progress=False)
            t_ingest = time.perf_counter() - t0
            times = {}
            if mode == "dpc":  # the stage without SSB on a copy: what py4DSTEM's DPC does (CoM, rotation, phase)
                only = ingest_stem([mib], tmp / f"{j}_icom.zarr", calibration=Calibration(**cal), progress=False)
                t0 = time.perf_counter()
                run_stem(only, {"ssb": False}, progress=False)
                times["stage_icom_seconds"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            out = run_stem(store, opts, progress=False)
            times["stage_seconds"] = round(time.perf_counter() - t0, 2)
            res = open_store(store)["results/stem"]
            names = ("icom", "ssb") if mode == "dpc" else ("parallax", "ssb")
            row = dict(bench=f"ptyhpc_{mode}", dose_e_per_A2=dose, scan=list(p.scan_shape),
                       ingest_seconds=round(t_ingest, 2), **times, stage=sorted(k for k, v in opts.items() if v is True),
                       **{f"corr_{n}": round(_corr(res[n][0], sim["phase"], p), 3) for n in names})
            if mode == "dpc":
                err = (np.degrees(out["scan_rotation_rad"]) - THETA_DEG + 180) % 360 - 180
                row.update(rotation_error_deg=round(float(err), 2), transpose=bool(out["transpose"]))
            else:
                row.update(defocus_m=res.attrs["parallax_fit"]["0"]["defocus_m"], defocus_true_m=p.defocus_m)
            emit(**row)
            if args.py4dstem_python is None:
                continue
            npz = tmp / f"{j}.npz"
            np.savez(npz, counts=counts, scan_shape=np.array(p.scan_shape), step_m=p.step_m, dk_inv_m=p.dk,
                     energy_eV=p.energy_eV)
            r = subprocess.run([args.py4dstem_python, __file__, "--peer", str(npz), str(tmp / f"{j}_out.npz"), mode],
                               capture_output=True, text=True)
            if r.returncode:
                emit(bench=f"py4dstem_{mode}", dose_e_per_A2=dose, failed=r.stderr.strip().splitlines()[-3:])
                continue
            o = np.load(tmp / f"{j}_out.npz")
            ph = _fit_shape(o["phase"], p.scan_shape)
            row = dict(bench=f"py4dstem_{mode}", dose_e_per_A2=dose, scan=list(p.scan_shape),
                       seconds=round(float(o["seconds"]), 2), py4dstem=str(o["py4dstem"]),
                       phase_shape=list(o["phase"].shape), corr=round(_corr(ph, sim["phase"], p), 3))
            if mode == "dpc":
                row.update(rotation_deg=round(float(o["rotation_deg"]), 2), transpose=bool(o["transpose"]))
            else:
                row.update(C1_A=round(float(o["C1_A"]), 1))
            emit(**row)


if __name__ == "__main__":
    main()
