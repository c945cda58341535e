"""Command line of the Bragg solver: ``[mpiexec -n N] python -m ptyhpc.bragg {simulate,reconstruct,plan} ...``.

``bragg_main(argv)`` is the entry point (the ``ptyhpc bragg`` command wraps it).
Under ``mpiexec`` every rank runs the same command; positions are split over
``MPI.COMM_WORLD`` and rank 0 writes the results.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

__all__ = ["bragg_main", "strain_maps"]


def _comm():
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError:   # serial run without mpi4py
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def strain_maps(result, threshold: float = 0.1) -> tuple[dict, np.ndarray]:
    """ε_zz, ω_x, ω_y maps (seed eq. 14) on the crystal: support ∩ illumination ≥ ``threshold`` × max.

    Returns (maps dict, valid mask).
    """
    from .strain import strain_tilt  # noqa: PLC0415

    valid = np.asarray(result.support, bool)
    if result.illumination is not None:
        valid = valid & (result.illumination >= threshold * result.illumination.max())
    ezz, wx, wy = strain_tilt(result.obj, result.geometry, valid)
    return {"strain_zz": ezz, "tilt_x": wx, "tilt_y": wy}, valid


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (not "default: None" on required or unset options)."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _parser():
    fmt = _Help
    ap = argparse.ArgumentParser(prog="ptyhpc bragg", formatter_class=fmt,
                                 description="3D Bragg ptychography of a thin film: simulate a scan, reconstruct "
                                             "it (MPI-parallel under `mpiexec -n N ptyhpc bragg reconstruct STORE`), "
                                             "plan the rocking-curve sampling. `ptyhpc bragg VERB --help` for each.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{simulate,reconstruct,plan}")
    s = sub.add_parser("simulate", help="write a simulated thin-film scan to a zarr store", formatter_class=fmt,
                       description="Simulate a strained thin film with an edge dislocation (8 keV, W(220)) and "
                                   "write the scan to a zarr store.")
    s.add_argument("store", help="zarr store to write")
    s.add_argument("--counts", type=float, default=None, help="mean counts per position (Poisson); none = exact")
    s.add_argument("--scan", type=int, nargs=2, default=(4, 4), metavar=("NX", "NY"), help="raster of beam points")
    s.add_argument("--no-dislocation", action="store_true", help="a film without the edge dislocation")
    s.add_argument("--seed", type=int, default=0, help="random seed (noise)")
    r = sub.add_parser("reconstruct", help="reconstruct ρ, probe, background; write results/bragg",
                       formatter_class=fmt,
                       description="Joint reconstruction of the complex density ρ, the probe and a background "
                                   "(seed eqs. 5, 6, 11), then strain and tilt maps into results/bragg.")
    r.add_argument("store", help="zarr store written by `ptyhpc bragg simulate` (or a reader)")
    r.add_argument("--n-iter", type=int, default=200, help="joint iterations")
    r.add_argument("--n-ml", type=int, default=0, help="final maximum-likelihood (Gaussian) iterations on ρ")
    r.add_argument("--upsampling", type=int, default=3, help="angular up-sampling (virtual angles + 1 per "
                                                             "measured step; `plan` says how much is needed)")
    r.add_argument("--n-batches", type=int, default=0, help="mini-batches per iteration; 0 = one position per "
                                                            "batch (ePIE)")
    r.add_argument("--beta", type=float, default=0.05, help="object step β (seed eq. 9)")
    r.add_argument("--fixed-probe", action="store_true", help="never update the probe")
    r.add_argument("--probe-start", type=int, default=5, help="iterations with the probe fixed")
    r.add_argument("--thickness", type=float, nargs="+", default=[150e-9], metavar="M",
                   help="slab thickness stages, m (one per --stage-length iterations)")
    r.add_argument("--stage-length", type=int, default=100, help="iterations per thickness stage")
    r.add_argument("--slab-center", type=float, nargs=3, default=(0.0, 0.0, 75e-9), metavar=("X", "Y", "Z"),
                   help="a point of the film's mid-plane, lab frame, m")
    r.add_argument("--probe-na", type=float, nargs=2, default=None, metavar=("NA1", "NA2"),
                   help="probe NA (rad) along t1, t2: keeps the probe spectrum in 1.5x this rectangle")
    r.add_argument("--shrinkwrap", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="iteration window for shrink-wrap (every 5 iterations)")
    r.add_argument("--backend", default="numpy", help="numpy | cupy")
    r.add_argument("--exchange", choices=("auto", "shared", "messages"), default="auto",
                   help="how MPI ranks combine sums: shared memory on one node (auto) or messages")
    r.add_argument("--figures", default=None, help="folder for PNG figures (rank 0)")
    r.add_argument("--options", default=None, metavar="YAML",
                   help="YAML mapping of solver options: any field of ptyhpc.bragg.options.BraggParams (e.g. mu, "
                        "gamma, background, slab_tilt_rad, shrinkwrap_threshold); flags given on the command line "
                        "override it")
    p = sub.add_parser("plan", help="sampling plan (seed eqs. 2, 12) as JSON", formatter_class=fmt,
                       description="The largest rocking step for a film and probe, and the angular up-sampling "
                                   "a measured step needs (seed eqs. 2, 12, 13), as JSON.")
    p.add_argument("--wavelength", type=float, required=True, help="X-ray wavelength, m")
    p.add_argument("--bragg-deg", type=float, required=True, help="Bragg angle, degrees")
    p.add_argument("--width", type=float, required=True, help="full probe width with its side lobes, m")
    p.add_argument("--thickness", type=float, required=True, help="film thickness, m")
    p.add_argument("--step", type=float, default=None, help="measured rocking step, rad")
    return ap


def _given(argv) -> set[str]:
    """Destinations of the ``reconstruct`` flags written on the command line (not left at their defaults)."""
    ap = _parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices["reconstruct"]
    for action in sub._actions:
        action.default = argparse.SUPPRESS
    return set(vars(ap.parse_args(argv)))


def _flag_params(args) -> dict:
    """The solver options the ``reconstruct`` flags set (keys: fields of BraggParams; flag dest -> field)."""
    return {
        "n_iter": args.n_iter, "n_ml": args.n_ml, "upsampling": args.upsampling, "n_batches": args.n_batches,
        "exchange": args.exchange, "beta": args.beta, "update_probe": not args.fixed_probe,
        "probe_start": args.probe_start,
        "thickness_schedule": [(i * args.stage_length, t) for i, t in enumerate(args.thickness)],
        "slab_center_m": tuple(args.slab_center),
        "probe_mask_na": None if args.probe_na is None else tuple(args.probe_na),
        "shrinkwrap": None if args.shrinkwrap is None else tuple(args.shrinkwrap),
    }


#: Flag dest -> the BraggParams fields it sets (a flag given on the command line overrides --options).
_FLAG_FIELDS = {"n_iter": ("n_iter",), "n_ml": ("n_ml",), "upsampling": ("upsampling",), "n_batches": ("n_batches",),
                "exchange": ("exchange",), "beta": ("beta",), "fixed_probe": ("update_probe",),
                "probe_start": ("probe_start",), "thickness": ("thickness_schedule",),
                "stage_length": ("thickness_schedule",), "slab_center": ("slab_center_m",),
                "probe_na": ("probe_mask_na",), "shrinkwrap": ("shrinkwrap",)}


def solver_params(args, given: set[str]):
    """The validated :class:`~ptyhpc.bragg.options.BraggParams` of a ``reconstruct`` command line.

    Without ``--options`` the flags (and their defaults) give every setting; with it the file's
    keys replace the flags' defaults and flags written on the command line replace the file's keys.

    Raises
    ------
    SystemExit
        (status 2) An unreadable file, an unknown key or a bad value, naming the file and the key.
    """
    import yaml  # noqa: PLC0415
    from pydantic import ValidationError  # noqa: PLC0415

    from ..ptycho.options import error_lines  # noqa: PLC0415
    from .options import BraggParams  # noqa: PLC0415

    flags = _flag_params(args)
    where = "the command line"
    if args.options is not None:
        where = f"--options {args.options}"
        try:
            with open(args.options) as fh:
                loaded = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            _parser().exit(2, f"ptyhpc bragg: error: {where}: cannot read: {exc}\n")
        if not isinstance(loaded, dict):
            _parser().exit(2, f"ptyhpc bragg: error: {where}: not a YAML mapping of BraggParams fields\n")
        keep = {f for dest in given for f in _FLAG_FIELDS.get(dest, ())}
        flags = {**flags, **{k: v for k, v in loaded.items() if k not in keep}}
    try:
        return BraggParams(**flags)
    except ValidationError as exc:
        _parser().exit(2, f"ptyhpc bragg: error: {where}: {'; '.join(error_lines(exc, 'bragg', BraggParams))}\n")


def bragg_main(argv=None) -> int:
    """Run the Bragg CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.cmd == "plan":
        from .geometry import plan  # noqa: PLC0415

        print(json.dumps(plan(args.wavelength, np.deg2rad(args.bragg_deg), args.width, args.thickness, args.step)))
        return 0
    comm = _comm()
    rank = 0 if comm is None else comm.Get_rank()
    if args.cmd == "simulate":
        if rank == 0:
            from .io import write_dataset  # noqa: PLC0415
            from .sim import simulate  # noqa: PLC0415

            ds = simulate(counts_per_position=args.counts, scan_shape=tuple(args.scan),
                          dislocation=not args.no_dislocation, seed=args.seed)
            write_dataset(args.store, ds)
        return 0
    from .. import backend  # noqa: PLC0415
    from .io import read_dataset, save_figures, write_results  # noqa: PLC0415
    from .solver import reconstruct  # noqa: PLC0415

    params = solver_params(args, _given(argv))   # validated before the data are read
    ds = read_dataset(args.store)
    xp = backend.get_xp(args.backend)
    res = reconstruct(ds["data"], ds["mask"], ds["geometry"], ds["positions"], ds["probe"], ds["spacing"],
                      params, comm=comm, xp=xp)
    if rank == 0:
        maps, valid = strain_maps(res)
        write_results(args.store, res, maps)
        if args.figures:
            save_figures(args.figures, res, maps, valid)
        print(json.dumps({"seconds_per_iteration": res.seconds_per_iteration, "final_error": float(res.error[-1]),
                          "ranks": 1 if comm is None else comm.Get_size()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(bragg_main())
