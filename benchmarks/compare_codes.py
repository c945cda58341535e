"""ptyhpc against py4DSTEM and ptypy on one simulated dataset: time per iteration and phase error.

One electron-like far-field scan (``ptyhpc.sim.simulate_scan``: 60 keV, 25 mrad, 150 Å defocus,
weak-phase "L" object of 0.3 rad with known truth, 10⁴ counts per pattern, Poisson noise, scan
positions with ±0.3 px jitter) is reconstructed by

- ptyhpc ``rpie`` and ``lsqml`` (their defaults: Poisson data term, batches of 32),
- py4DSTEM ``SingleslicePtychography`` (gradient descent: its default full batch, ``gd``, and
  mini-batches of 32 like ptyhpc's, ``gd_batch32``; probe from its own energy/semi-angle/defocus
  model, hard aperture),
- ptypy ``EPIE_serial``, ``DM_serial``, ``ML_serial`` (its vectorised CPU engines; ML there has only
  the Gaussian model) and ``ML`` with ``ML_type="poisson"`` (its plain NumPy engine),

with their own default parameters, for the same number of iterations from the same nominal probe and
a flat object, all single-threaded (OMP/MKL/OpenBLAS threads = 1, scipy.fft with one worker). ptypy
gets the frames through an in-memory ``PtyScan`` subclass (``ArrayScan`` below) and the electron
wavelength as an equivalent photon energy, with z = 1 m so its Fresnel factor is negligible.

Prints JSON lines: one ``"code": "env"`` line (versions, machine, dataset), then per code and engine

- ``seconds_per_iteration``: steady state, the median interval between iteration ends after the
  first iteration (set-up and first iteration excluded); the best of ``--repeats`` rounds, each
  round going over all engines in turn (``seconds_per_iteration_runs``, ``spread_percent``);
- ``phase_rmse`` (rad): :func:`ptyhpc.ptycho.metrics.phase_rmse` on the square of probe centres,
  after mapping the code's object onto the simulation grid from the code's own probe-centre pixels;
  ``phase_rmse_at_iteration`` at ten checkpoints, ``iterations_to_target`` / ``cpu_seconds_to_target``
  for ``--target-rmse``;
- the orientation check: the best of the 16 flips/transposes/conjugations of the mapped object
  (``"identity"``: the code's conventions equal ours; ``conjugate_rmse`` is the score of the
  phase-flipped object);
- ``ratio_ptyhpc_rpie`` / ``ratio_ptyhpc_lsqml``: ptyhpc's time per iteration / this code's
  (below 1: ptyhpc is faster).

A code that cannot be imported, or fails, gives a line with ``"skipped"`` and the reason.

Usage (py4DSTEM and ptypy live in their own venv, with ptyhpc installed editable there; see
benchmarks/README.md)::

    /work/venv-cmp/bin/python benchmarks/compare_codes.py [--quick] [--codes ptyhpc,py4dstem,ptypy]

Default: 128² patterns, 20 × 20 positions, 50 iterations. ``--quick``: 64² patterns, 12 × 12
positions, 30 iterations, about 2 minutes.
"""

from __future__ import annotations

import os

# Single-threaded comparison: set before NumPy/SciPy load their BLAS and FFT back-ends.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from ptyhpc.ptycho import reconstruct  # noqa: E402
from ptyhpc.ptycho.metrics import phase_rmse, register_shift  # noqa: E402
from ptyhpc.sim import simulate_scan  # noqa: E402

ANGSTROM = 1e-10


# --------------------------------------------------------------------------------------------
# The dataset and how a reconstruction is scored
# --------------------------------------------------------------------------------------------

def make_dataset(quick: bool):
    """The one simulated scan every code gets, and the region where it is scored."""
    # The scan spans about one probe window, so the scanned region holds the test object's "L".
    # Probe: 60 keV, 25 mrad, 150 Å defocus, 7.5 Å across; the steps overlap it by 70-80 %.
    if quick:
        det, scan, pixel, step = 64, (12, 12), 0.4 * ANGSTROM, 2.0 * ANGSTROM
    else:
        det, scan, pixel, step = 128, (20, 20), 0.2 * ANGSTROM, 1.4 * ANGSTROM
    # simulate_scan adds ±0.3 px of jitter, so positions are sub-pixel.
    sim = simulate_scan(det=det, scan=scan, step_px=step / pixel, energy_eV=60e3,
                        convergence_semiangle=25e-3, defocus=150 * ANGSTROM, pixel_size_m=pixel,
                        dose_per_position=1e4, max_phase=0.3, seed=0)
    pos_px = (sim.positions_m - np.asarray(sim.origin_m)) / np.asarray(sim.pixel_size_m)
    lo = np.ceil(pos_px.min(0)).astype(int)
    hi = np.floor(pos_px.max(0)).astype(int)
    region = np.zeros(sim.object.shape, bool)
    n = int(min(hi - lo)) + 1  # square, so that transposed candidates can be scored too
    region[lo[0]:lo[0] + n, lo[1]:lo[1] + n] = True  # the square of probe centres
    return sim, pos_px, region, scan


_TRANSFORMS = {
    "identity": lambda a: a, "flipud": lambda a: a[::-1], "fliplr": lambda a: a[:, ::-1],
    "rot180": lambda a: a[::-1, ::-1], "transpose": lambda a: a.T, "rot90": lambda a: np.rot90(a),
    "rot270": lambda a: np.rot90(a, -1), "antitranspose": lambda a: np.rot90(a, 2).T,
}


def map_to_grid(obj, code_pos_px, our_pos_px, shape):
    """Put a code's object onto the simulation grid from the two sets of probe-centre pixels.

    The whole-pixel part of the offset places the array, the sub-pixel part is a Fourier shift.
    Returns the mapped object (ones where the code has nothing), the mean offset (pixels) and
    the largest deviation of a position's offset from it (0 when the code kept the positions).
    """
    d = np.asarray(our_pos_px, float) - np.asarray(code_pos_px, float)
    off = d.mean(0)
    spread = float(np.abs(d - off).max())
    o = np.rint(off).astype(int)
    out = np.ones(shape, np.complex64)
    # out[y + o] = obj[y]
    ys, yd = max(0, -o[0]), max(0, o[0])
    xs, xd = max(0, -o[1]), max(0, o[1])
    ny = min(obj.shape[0] - ys, shape[0] - yd)
    nx = min(obj.shape[1] - xs, shape[1] - xd)
    out[yd:yd + ny, xd:xd + nx] = obj[ys:ys + ny, xs:xs + nx]
    frac = off - o
    if np.any(frac != 0):
        out = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(out), frac)).astype(np.complex64)
    return out, off, spread


def score(obj_on_grid, truth, region):
    """Phase error on the region, and which flip/transpose/conjugation of the result fits best.

    ``phase_rmse``: :func:`ptyhpc.ptycho.metrics.phase_rmse` (sub-pixel registration, offset and
    ramp removed). The orientation check scores the 16 candidates on the region's square crop
    without registration (the mapping from the positions is already exact): on this object the
    truth against its own nearest wrong candidate (flipud) scores 0.089 rad (0.085 ``--quick``), a
    flat object 0.100 (0.095).
    """
    rows, cols = np.nonzero(region)
    sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    rec, tru = obj_on_grid[sl], truth[sl]
    full = np.ones_like(rec, bool)
    cands = {}
    for name, f in _TRANSFORMS.items():
        for conj in (False, True):
            cand = np.ascontiguousarray(f(rec))
            cands[name + ("+conj" if conj else "")] = phase_rmse(np.conj(cand) if conj else cand, tru,
                                                                 full, register=False)
    best = sorted(cands, key=cands.get)
    return {"phase_rmse": round(phase_rmse(obj_on_grid, truth, region), 4),
            "phase_rmse_unregistered": round(cands["identity"], 4),
            "registration_shift_px": [round(float(v), 3) for v in register_shift(obj_on_grid, truth, region)],
            "orientation_best": best[0], "orientation_runner_up": best[1],
            "orientation_runner_up_rmse": round(cands[best[1]], 4),
            "conjugate_rmse": round(cands["identity+conj"], 4)}


# --------------------------------------------------------------------------------------------
# The codes
# --------------------------------------------------------------------------------------------

class _Recorder:
    """End-of-iteration time stamps; object snapshots at checkpoints are kept out of the intervals."""

    def __init__(self, checkpoints=(), snapshot=None):
        self.checkpoints, self.snapshot = set(checkpoints), snapshot
        self.ends, self.pauses, self.snaps = [], [], {}

    def __call__(self, done):
        """Call at the end of iteration ``done`` (1-based)."""
        t = (time.perf_counter(), time.process_time())
        self.ends.append(t)
        if self.snapshot is not None and done in self.checkpoints:
            self.snaps[done] = np.array(self.snapshot(), copy=True)
        self.pauses.append((time.perf_counter() - t[0], time.process_time() - t[1]))

    def seconds_per_iteration(self):
        """Median wall and CPU (this process) time between iteration ends, after the first iteration.

        Everything runs on one thread, so CPU time is the time the iteration takes on an idle
        core; unlike wall time it does not grow when other processes share the core.
        """
        d = np.diff(np.asarray(self.ends), axis=0) - np.asarray(self.pauses[:-1])
        return tuple(float(v) for v in np.median(d, axis=0))


def run_ptyhpc(sim, engine, n_iter, checkpoints=()):
    kw = dict(engine=engine, origin_m=sim.origin_m, object_shape=sim.object.shape)
    args = (sim.frames, sim.positions_m, sim.probe, sim.pixel_size_m)
    reconstruct(*args, n_iter=1, **kw)  # warm up
    rec = _Recorder()
    res = reconstruct(*args, n_iter=n_iter, callback=lambda i, e: rec(i + 1), **kw)
    # The engine's callback has no object: the state after k iterations is a k-iteration run
    # (same seed, same batch order: its first k iterations are identical), untimed.
    snaps = {k: reconstruct(*args, n_iter=k, **kw).object for k in checkpoints if k < n_iter}
    snaps[n_iter] = res.object
    # Same grid as the simulation: positions map onto themselves (code_pos None).
    return rec.seconds_per_iteration(), res.object, None, snaps


def py4dstem_version():
    import py4DSTEM  # noqa: PLC0415

    return py4DSTEM.__version__


def run_py4dstem(sim, scan, engine_kw, n_iter, checkpoints=()):
    """py4DSTEM's single-slice ptychography on the same frames, positions and nominal probe."""
    from py4DSTEM import DataCube  # noqa: PLC0415
    from py4DSTEM.process.phase import SingleslicePtychography  # noqa: PLC0415

    det = sim.frames.shape[-1]
    px = sim.pixel_size_m[0]
    dc = DataCube(data=sim.frames.reshape(scan[0], scan[1], det, det).astype(np.float32))
    centre = np.full(scan, float(det // 2), np.float32)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = SingleslicePtychography(
            energy=60e3, datacube=dc, semiangle_cutoff=sim.convergence_semiangle_rad * 1e3,
            defocus=sim.defocus_m / ANGSTROM,  # py4DSTEM: defocus = −C10, Å (as ours)
            rolloff=0.0,  # hard aperture edge, as ours: |⟨P_py4DSTEM, P_ours⟩| = 0.993
            initial_scan_positions=sim.positions_m / ANGSTROM,  # (N, 2) Å, first array axis first
            object_type="complex", verbose=False, device="cpu")
        rec.preprocess(plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False,
                       force_com_rotation=0.0, force_com_transpose=False,
                       force_com_shifts=(centre, centre),  # patterns are centred at det//2: no refit
                       force_scan_sampling=1.0,  # unused: positions are given
                       force_reciprocal_sampling=1.0 / (det * px / ANGSTROM))
        code_pos = np.asarray(rec._positions_px_initial, float).copy()
        timer = _Recorder(checkpoints, lambda: rec.object)
        # One iteration per call (continuing: reset only on the first); per-call overhead is a
        # copy of the object and the centred probe, small next to an iteration.
        for i in range(n_iter):
            rec.reconstruct(num_iter=1, reset=(i == 0), progress_bar=False, seed_random=i,
                            **engine_kw)
            timer(i + 1)
    return timer.seconds_per_iteration(), np.asarray(rec.object), code_pos, timer.snaps


def ptypy_version():
    from importlib.metadata import version  # noqa: PLC0415

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import ptypy  # noqa: F401, PLC0415  (it logs that ZeroMQ and mpi4py are absent: not needed)

    # ptypy.version appends the git hash of the *current directory*; the distribution's is the one.
    return version("ptypy")


def ptyhpc_source():
    """The commit of the ptyhpc checkout and its modified files (read-only git queries)."""
    import subprocess  # noqa: PLC0415

    import ptyhpc  # noqa: PLC0415

    root = os.path.dirname(os.path.dirname(os.path.abspath(ptyhpc.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "ptyhpc"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, sorted(line[3:] for line in dirty if line.strip())


_PTYPY_DATA: dict = {}


def _ptypy_register_scan():
    """A PtyScan subclass that hands ptypy this benchmark's frames and positions from memory."""
    from ptypy import experiment  # noqa: PLC0415
    from ptypy.core.data import PtyScan  # noqa: PLC0415

    if "ArrayScan" in experiment.PTYSCANS:
        return

    @experiment.register()
    class ArrayScan(PtyScan):
        """In-memory frames and positions (compare_codes.py).

        Defaults:

        [name]
        default = ArrayScan
        type = str
        help = Frames and positions from compare_codes.py, held in memory
        """

        def __init__(self, pars=None, **kwargs):
            p = self.DEFAULT.copy(depth=99)
            p.update(pars)
            super().__init__(p, **kwargs)

        def load_positions(self):
            return _PTYPY_DATA["positions"]

        def load_weight(self):
            return np.ones(_PTYPY_DATA["frames"].shape[-2:], np.float32)

        def load(self, indices):
            return {i: _PTYPY_DATA["frames"][i] for i in indices}, {}, {}


def run_ptypy(sim, engine_pars, n_iter, checkpoints=()):
    """ptypy on the same frames (in-memory PtyScan), positions (m) and nominal probe."""
    import ptypy  # noqa: PLC0415
    from ptypy import utils as u  # noqa: PLC0415
    from ptypy.core import Ptycho  # noqa: PLC0415

    ptypy.load_gpu_engines("serial")  # the vectorised NumPy CPU engines (EPIE_serial, ...)
    _ptypy_register_scan()
    n, det = len(sim.frames), sim.frames.shape[-1]
    px = sim.pixel_size_m[0]
    lam = sim.wavelength_m
    # ptypy's far field is λz/(N·psize) per object pixel; the electron wavelength enters through
    # an "energy" in keV that gives the same λ (ptypy converts with hc/E), z = 1 m. The Fresnel
    # curvature factor π r²/(λz) is then < 1e-5 rad over the window: a plain Fraunhofer FFT, as ours.
    energy_keV = u.keV2m(1.0) / lam
    distance = 1.0
    psize = lam * distance / (det * px)
    _PTYPY_DATA.update(frames=sim.frames, positions=np.asarray(sim.positions_m, float))

    p = u.Param()
    p.verbose_level = "error"
    p.frames_per_block = n
    p.io = u.Param(home=tempfile.mkdtemp(prefix="ptypy_"), rfile=None,
                   autosave=u.Param(active=False), autoplot=u.Param(active=False),
                   interaction=u.Param(active=False))
    p.scans = u.Param()
    p.scans.s = u.Param(name="BlockFull")
    p.scans.s.data = u.Param(name="ArrayScan", shape=det, psize=psize, distance=distance,
                             energy=energy_keV, center="fftshift", auto_center=False,
                             num_frames=n, save=None)
    p.scans.s.illumination = u.Param(model=sim.probe.astype(np.complex128), photons=None,
                                     aperture=u.Param(form=None), diversity=None,
                                     propagation=u.Param(parallel=None, focussed=None))
    p.scans.s.coherence = u.Param(num_probe_modes=1, num_object_modes=1)
    p.scans.s.sample = u.Param(model=None, fill=1.0)
    p.engines = u.Param()
    p.engines.e = u.Param(numiter=n_iter, numiter_contiguous=1, **engine_pars)
    quiet = contextlib.redirect_stdout(io.StringIO())  # its engines print timing tables
    with quiet:
        P = Ptycho(p, level=4)
    eng = P.engines["e"]
    S = list(P.obj.storages.values())[0]
    timer = _Recorder(checkpoints, lambda: S.data[0])
    orig_iterate = eng.iterate

    def stamped(*a, **k):  # Ptycho.run calls engine.iterate() once per iteration
        r = orig_iterate(*a, **k)
        timer(eng.curiter)
        return r

    eng.iterate = stamped
    with quiet:
        P.run(label="e")
    obj = np.asarray(S.data[0])
    # Each pod's object view: its centre pixel (with the sub-pixel part) and its position in m.
    views = [(pod.ob_view.pcoord, pod.ob_view.coord) for pod in P.pods.values()]
    code_pcoord = np.array([v[0] for v in views], float)
    coord = np.array([v[1] for v in views], float)
    # Match views to our positions (distinct thanks to the jitter).
    j = np.argmin(((coord[:, None, :] - sim.positions_m[None]) ** 2).sum(-1), axis=1)
    code_pos = np.full((n, 2), np.nan)
    code_pos[j] = code_pcoord
    return timer.seconds_per_iteration(), obj, code_pos, timer.snaps


# --------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small case, about 2 minutes")
    ap.add_argument("--codes", default="ptyhpc,py4dstem,ptypy")
    ap.add_argument("--n-iter", type=int, default=None, help="iterations per run (30 quick, 50 full)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds over all engines (3)")
    ap.add_argument("--timing-iters", type=int, default=10,
                    help="iterations of the timing-only rounds after the first (default 10)")
    ap.add_argument("--target-rmse", type=float, default=0.04,
                    help="phase RMSE (rad) for iterations_to_target / cpu_seconds_to_target")
    args = ap.parse_args(argv)
    n_iter = args.n_iter or (30 if args.quick else 50)
    repeats = args.repeats or 3
    codes = args.codes.split(",")
    checkpoints = sorted({max(1, round(n_iter * f / 10)) for f in range(1, 11)})
    logging.getLogger("ptypy").setLevel(logging.ERROR)

    sim, pos_px, region, scan = make_dataset(args.quick)
    import scipy  # noqa: PLC0415

    env = {"code": "env", "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "threads": os.environ["OMP_NUM_THREADS"], "n_positions": len(sim.frames),
           "det_shape": list(sim.frames.shape[-2:]), "object_shape": list(sim.object.shape),
           "region_px": int(region.sum()), "n_iter": n_iter, "repeats": repeats,
           "timing_iters": min(n_iter, args.timing_iters),
           "checkpoints": checkpoints, "target_rmse": args.target_rmse,
           "phase_rmse_flat_object": score(np.ones_like(sim.object), sim.object, region)["phase_rmse"]}
    for name, getter in (("py4DSTEM", py4dstem_version), ("ptypy", ptypy_version)):
        try:
            env[name] = getter()
        except Exception as exc:  # noqa: BLE001
            env[name] = None
            env[name + "_error"] = f"{type(exc).__name__}: {exc}"
    env["ptyhpc_commit"], env["ptyhpc_modified"] = ptyhpc_source()
    print(json.dumps(env), flush=True)

    runs = []  # (code, engine, fn(checkpoints, n_iter) -> (s/iter, object, code positions, snapshots), skip)
    if "ptyhpc" in codes:
        for engine in ("rpie", "lsqml"):
            runs.append(("ptyhpc", engine, lambda c, n, e=engine: run_ptyhpc(sim, e, n, c), None))
    if "py4dstem" in codes:
        gd = dict(reconstruction_method="gradient-descent")
        for engine, kw in (("gd", gd), ("gd_batch32", dict(gd, max_batch_size=32))):
            runs.append(("py4dstem", engine, lambda c, n, k=kw: run_py4dstem(sim, scan, k, n, c),
                         env.get("py4DSTEM_error")))
    if "ptypy" in codes:
        # ML_serial has only the Gaussian model; the Poisson model is in ptypy's plain NumPy ML.
        for engine, pars in (("EPIE", dict(name="EPIE_serial")), ("DM", dict(name="DM_serial")),
                             ("ML", dict(name="ML_serial", ML_type="gaussian", scale_precond=True)),
                             ("ML_poisson", dict(name="ML", ML_type="poisson", scale_precond=True))):
            runs.append(("ptypy", engine, lambda c, n, q=pars: run_ptypy(sim, q, n, c),
                         env.get("ptypy_error")))

    # Repeats go round all engines in turn, so that a burst of load from other processes on
    # the machine hits every code alike. The first round runs n_iter iterations and keeps the
    # checkpoint objects (accuracy); the later rounds only time timing_iters iterations.
    times = {(c, e): [] for c, e, _, _ in runs}
    first, failed = {}, {}
    for r in range(repeats):
        for code, engine, fn, skip in runs:
            key = (code, engine)
            if skip or key in failed:
                continue
            try:
                t, obj, code_pos, snaps = (fn(checkpoints, n_iter) if r == 0 else
                                           fn((), min(n_iter, args.timing_iters)))
            except Exception as exc:  # noqa: BLE001
                failed[key] = f"{type(exc).__name__}: {exc}"
                continue
            times[key].append(t)
            if r == 0:
                first[key] = (obj, code_pos, snaps)
            print(f"# round {r + 1}/{repeats} {code} {engine}: {t[0]:.4f} s/iteration wall, "
                  f"{t[1]:.4f} CPU", file=sys.stderr, flush=True)

    def best(key, which):  # 0: wall, 1: CPU
        return min(t[which] for t in times[key])

    ptyhpc_time = {e: (best((c, e), 0), best((c, e), 1)) for c, e, _, _ in runs
                   if c == "ptyhpc" and times[(c, e)]}
    for code, engine, _, skip in runs:
        key = (code, engine)
        line = {"code": code, "engine": engine}
        if skip or key in failed:
            line["skipped"] = skip or failed[key]
            print(json.dumps(line), flush=True)
            continue
        obj, code_pos, snaps = first[key]

        def mapped(o, code_pos=code_pos):
            if code_pos is None:
                return np.asarray(o, np.complex64), np.zeros(2), 0.0
            return map_to_grid(o, code_pos, pos_px, sim.object.shape)

        m, off, spread = mapped(obj)
        t, tc = best(key, 0), best(key, 1)
        line.update(seconds_per_iteration=round(t, 5),
                    seconds_per_iteration_runs=[round(v[0], 5) for v in times[key]],
                    spread_percent=round(100 * (max(v[0] for v in times[key]) / t - 1), 1),
                    cpu_seconds_per_iteration=round(tc, 5),
                    cpu_seconds_per_iteration_runs=[round(v[1], 5) for v in times[key]],
                    cpu_spread_percent=round(100 * (max(v[1] for v in times[key]) / tc - 1), 1))
        line.update(score(m, sim.object, region))
        curve = {k: round(phase_rmse(mapped(snaps[k])[0], sim.object, region), 4) for k in sorted(snaps)}
        line["phase_rmse_at_iteration"] = curve
        hit = [k for k, v in curve.items() if v <= args.target_rmse]
        line["iterations_to_target"] = hit[0] if hit else None
        line["cpu_seconds_to_target"] = round(hit[0] * tc, 3) if hit else None
        line.update(grid_offset_px=[round(float(v), 3) for v in off], position_mismatch_px=round(spread, 4))
        if code != "ptyhpc":
            for e, (te, tec) in ptyhpc_time.items():
                line[f"ratio_ptyhpc_{e}"] = round(tec / tc, 3)  # CPU time
                line[f"ratio_ptyhpc_{e}_wall"] = round(te / t, 3)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
