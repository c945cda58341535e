"""The ``ptyhpc`` command: ingest → reconstruct → tomo, or all of them with ``run``; SLURM submission."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

# Plain help (no Rich markup): brackets in help texts stay as written ('ptyhpc[viewer]') and flags
# carry no type hint; the same look as `ptyhpc bragg --help` (argparse).
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"max_content_width": 120},
                  help="Distributed ptychography and tomography of tilt series and energy stacks: "
                       "ingest -> reconstruct -> tomo, or all of them with `ptyhpc run RECIPE`.")
console = Console(stderr=True)

#: Exit codes (:mod:`ptyhpc.errors`): 2 bad input or settings, 3 the store is in use by another run,
#: 4 I/O or disk (read-only, full, permission), 1 some items failed.
EXIT_USER, EXIT_LOCKED, EXIT_FAILED, EXIT_IO = 2, 3, 1, 4
#: ``--debug``: let exceptions through with their tracebacks.
_DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", envvar="PTYHPC_DEBUG",
                                     help="show Python tracebacks instead of one-line errors")):
    _DEBUG["on"] = debug


def _error(label: str, text: str) -> None:
    """One red line; ``text`` is escaped, so brackets in it (``pip install 'ptyhpc[cluster]'``) print as is."""
    from rich.markup import escape  # noqa: PLC0415

    console.print(f"[bold red]{label}:[/] {escape(text)}")


@contextlib.contextmanager
def _user_errors(where=None):
    """Turn every exception into one red line and the exit code of :func:`ptyhpc.errors.describe`.

    ``where`` (the store or output) is named when an I/O error names no file.
    """
    from .errors import describe  # noqa: PLC0415

    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001  (the one error path: every error gets a code and a line)
        if _DEBUG["on"]:
            raise
        code, text = describe(exc, where)
        _error("refused" if code == EXIT_LOCKED else "error", text)
        raise typer.Exit(code) from None


def _figures_dir(store: Path, figures: Optional[Path]) -> Path:
    from .pipeline.preflight import figures_dir  # noqa: PLC0415

    return figures_dir(store, figures)


_FIGURES_HELP = ("figure folder (default: where this store's figures already are, else STORE_figures next to "
                 "the store, e.g. out/cnt_figures for out/cnt.zarr)")
_RESTART_HELP = "discard this store's existing results (ptychography, tomography) first and compute them anew"


# Cluster options shared by every command that runs tasks.
_CLUSTER_HELP = "local | slurm | mpi | address (default: the site configuration, else local)"


def _cluster_flags(cluster, scheduler, workers, gpus) -> dict:
    return {"kind": cluster, "scheduler": scheduler, "workers": workers, "gpus": gpus}


def _config(recipe_cluster: dict | None, flags: dict, site_config: Optional[Path]):
    from .cluster import resolve_config  # noqa: PLC0415

    return resolve_config(recipe_cluster, flags, site_config=site_config)


def _with_cluster(cfg, store: Path, body, preflight=None):
    """Run ``body(client)`` on the cluster holding the store's run lock.

    The lock is taken before the cluster starts (no SLURM jobs are submitted
    for a run that is refused), except under MPI where only the driver rank
    may take it. ``preflight()``, when given, runs under the lock before the
    cluster starts: it raises to refuse the run, and returns False when there
    is nothing to do (no cluster is started then).
    """
    from .cluster import run_with_client  # noqa: PLC0415
    from .io import open_store  # noqa: PLC0415
    from .pipeline.lock import run_lock  # noqa: PLC0415

    open_store(store)   # refuse a folder that is not a store before writing .ptyhpc/ or starting a cluster
    if cfg.kind == "mpi":
        def locked(client):
            with run_lock(store):
                if preflight is not None and preflight() is False:
                    return None
                return body(client)
        return run_with_client(cfg, locked)
    with run_lock(store):
        if preflight is not None and preflight() is False:
            return None
        return run_with_client(cfg, body)


def _ptycho_preflight(store: Path, params, restart: bool, hint: str, figures: Path, report_idle: bool = True):
    """Under the run lock: discard results for --restart, check the settings, say when all items are done."""
    from .pipeline.preflight import discard_results, ptycho_todo  # noqa: PLC0415

    def check() -> bool:
        if restart:
            gone = discard_results(store)
            if gone:
                console.print(f"--restart: discarded {', '.join(gone)}", markup=False, highlight=False, soft_wrap=True)
        todo, n = ptycho_todo(store, params, restart_hint=hint)
        if todo:
            return True
        if report_idle:
            if not (figures.is_dir() and any(figures.glob("*.png"))):
                _ptycho_figures(store, figures)
            console.print(f"nothing to do: all {n} items of {store} are reconstructed; figures in {figures} "
                          f"(to reconstruct again with other settings: {hint})", markup=False, highlight=False, soft_wrap=True)
        return False
    return check


def _is_energy_stack(store: Path) -> bool:
    from .io import open_store  # noqa: PLC0415
    from .io.energy import ENERGY_STACK  # noqa: PLC0415

    return open_store(store).attrs.get("kind") == ENERGY_STACK


def _ptycho_figures(store: Path, figures: Path) -> None:
    from .io import open_store  # noqa: PLC0415

    if _is_energy_stack(store):
        from .pipeline.energy_figures import energy_stack_figures  # noqa: PLC0415

        energy_stack_figures(open_store(store), figures)
    else:
        from .pipeline.figures import ptycho_figures  # noqa: PLC0415

        ptycho_figures(open_store(store), figures)
    _remember_figures(store, figures)


def _ptycho(client, store: Path, params, figures: Path) -> dict:
    from .pipeline.ome import write_ome_phase_stack  # noqa: PLC0415
    from .pipeline.ptycho_stage import run_ptycho  # noqa: PLC0415

    out = run_ptycho(store, params, client=client, lock=False, progress=_progress_mode())
    for key, why in ((out.get("defaults") or {}).get("reasons") or {}).items():
        # The data-driven choice (ptyhpc.ptycho.defaults), so a user sees what ran and can override it.
        chosen = (out["defaults"].get("chosen") or {}).get(key)
        console.print(f"default {key}{'' if chosen is None else ' = ' + str(chosen)}: {why}", markup=False,
                      highlight=False, soft_wrap=True)
    _ptycho_figures(store, figures)
    write_ome_phase_stack(store)
    gpu = " (one GPU per task)" if out.get("resources") else ""
    console.print(f"ptychography: {len(out['done'])} items reconstructed{gpu}, {len(out['skipped'])} already done, "
                  f"{out['seconds']:.1f} s; figures in {figures}", markup=False, highlight=False, soft_wrap=True)
    return out


def _tomo(client, store: Path, figures: Path, options) -> dict:
    """Run the tomography stage with ``options`` (:class:`ptyhpc.tomo.options.TomoOptions`, validated)."""
    from .pipeline.ome import write_ome_tomograms  # noqa: PLC0415
    from .tomo import stage  # noqa: PLC0415

    if _is_energy_stack(store):
        console.print("tomography skipped: the store is an energy stack")
        return {}
    out = stage.run_tomo(str(store), options, client=client, figures_dir=str(figures))
    ome = write_ome_tomograms(store)
    _remember_figures(store, figures)
    console.print(f"tomography done; figures in {figures}; for viewers: {', '.join(map(str, ome))} "
                  f"(ptyhpc view {store})", markup=False, highlight=False, soft_wrap=True)
    return out


def _remember_figures(store: Path, figures: Path) -> None:
    from .pipeline.preflight import remember_figures  # noqa: PLC0415

    remember_figures(store, figures)


def _progress_mode():
    """A rich bar on a terminal; plain lines (``progress="lines"``) when stderr is a file or a pipe."""
    import sys  # noqa: PLC0415

    return True if sys.stderr.isatty() else "lines"


def _ingest_formats() -> tuple:
    """The ``--format`` names, from the reader registry (:data:`ptyhpc.io.readers.FORMATS`)."""
    from .io.readers import FORMATS  # noqa: PLC0415

    return FORMATS


@app.command()
def ingest(files: List[Path] = typer.Argument(..., help="raw files: per-item HDF5 (tilt angles or X-ray energies), "
                                                        "CXI, NeXus NXptycho or any HDF5 with --spec"),
           output: Path = typer.Option(..., "-o", "--output", help="zarr store to create"),
           overwrite: bool = typer.Option(False, help="replace an existing store (only once the new one is complete)"),
           fmt: str = typer.Option("auto", "--format", help=" | ".join(_ingest_formats()) + " (auto: from the first "
                                   "file's content; generic when --spec is given)"),
           spec: Optional[Path] = typer.Option(None, "--spec", help="YAML of dataset paths for --format generic "
                                                                    "(docs/readers.md)"),
           dark: Optional[str] = typer.Option(None, "--dark", help="FILE[:path] of dark frames; their mean is "
                                                                  "subtracted (clipped at 0)"),
           flat: Optional[str] = typer.Option(None, "--flat", help="FILE[:path] of flat-field frames (per-pixel gain)"),
           mask: Optional[str] = typer.Option(None, "--mask", help="FILE[:path] of a bad-pixel mask (non-zero = bad, "
                                                                  "see --mask-bad)"),
           mask_bad: Optional[str] = typer.Option(None, "--mask-bad", help="nonzero | zero: mask values that flag "
                                                                          "bad pixels (default nonzero)"),
           radiation: Optional[str] = typer.Option(None, "--radiation", help="xray | electron, for NeXus files "
                                                                            "without NXsource/probe"),
           probe_semiangle: Optional[float] = typer.Option(None, "--probe-semiangle", help="probe convergence "
                                                           "semi-angle, rad (for the model initial probe)"),
           defocus: Optional[float] = typer.Option(None, "--defocus", help="probe defocus, m. X-rays: distance of "
                                                   "the sample downstream of the focus (> 0: diverging beam); "
                                                   "electrons: C10 = -defocus (> 0: converging onto the sample)"),
           zp_diameter: Optional[float] = typer.Option(None, "--zone-plate-diameter", help="X-rays: zone-plate "
                                                       "outer diameter, m (with --outer-zone-width: model probe)"),
           zp_zone: Optional[float] = typer.Option(None, "--outer-zone-width", help="X-rays: zone-plate outer "
                                                   "zone width, m"),
           zp_stop: Optional[float] = typer.Option(None, "--central-stop-diameter", help="X-rays: central stop "
                                                   "diameter, m (default 0)"),
           regime: Optional[str] = typer.Option(None, "--regime", help="far_field | near_field: propagation "
                                                "from sample to detector (no file format says it; default "
                                                "far_field, generic: the spec's)"),
           focus_to_sample: Optional[float] = typer.Option(None, "--focus-to-sample-m", "--focus-to-sample",
                                                           help="near field with a divergent beam: focus-to-"
                                                                "sample distance, m (Fresnel scaling; default: "
                                                                "parallel beam)"),
           kind: str = typer.Option("auto", help="hdf5-tilt files: auto | tilt_series | energy_stack (auto: "
                                                 "energy_stack when the files give photon_energy_eV)"),
           calibration: Optional[Path] = typer.Option(None, "--calibration", help="4D-STEM (mib|arina|empad): "
                                                      "YAML of beam_energy_eV, convergence_semiangle_rad, "
                                                      "scan_step_m, reciprocal_sampling_inv_m, scan_shape"),
           beam_energy_ev: Optional[float] = typer.Option(None, "--beam-energy-ev", help="4D-STEM: eV"),
           convergence_semiangle_rad: Optional[float] = typer.Option(None, "--convergence-semiangle-rad",
                                                                     help="4D-STEM: rad"),
           scan_step_m: Optional[float] = typer.Option(None, "--scan-step-m", help="4D-STEM: m"),
           reciprocal_sampling_inv_m: Optional[float] = typer.Option(None, "--reciprocal-sampling-inv-m",
                                                                     help="4D-STEM: 1/m per detector pixel"),
           scan_shape: Optional[str] = typer.Option(None, "--scan-shape", help="4D-STEM: scan_y,scan_x"),
           tilts: Optional[Path] = typer.Option(None, "--tilts", help="4D-STEM tilt series: CSV of file,tilt_deg "
                                                "(one item per file, sorted by angle)")):
    """Validate raw files and write them into a zarr v3 store (nothing is written when a check fails)."""
    with _user_errors(output):
        t0 = time.perf_counter()
        import warnings  # noqa: PLC0415

        from .io.scan import NearFieldWarning  # noqa: PLC0415

        stem_flags = {"beam_energy_eV": beam_energy_ev, "convergence_semiangle_rad": convergence_semiangle_rad,
                      "scan_step_m": scan_step_m, "reciprocal_sampling_inv_m": reciprocal_sampling_inv_m,
                      "scan_shape": None if scan_shape is None else [int(v) for v in scan_shape.split(",")]}
        stem_cal = None
        if calibration is not None or any(v is not None for v in stem_flags.values()):
            from .stem.calibration import load_calibration  # noqa: PLC0415

            stem_cal = load_calibration(calibration, **stem_flags)
        if tilts is not None:  # 3D ED tilt series (docs/ed3d.md)
            from .ed3d.tilts import read_tilts_csv  # noqa: PLC0415
            from .stem.calibration import Calibration  # noqa: PLC0415

            stem_cal = (stem_cal or Calibration()).model_copy(update={"tilt_angles_rad": read_tilts_csv(tilts, files)})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NearFieldWarning)
            path = _ingest(files, output, overwrite, kind, fmt=fmt, spec=spec, dark=dark, flat=flat, mask=mask,
                           mask_bad=mask_bad, radiation=radiation, probe_semiangle_rad=probe_semiangle,
                           defocus_m=defocus, regime=regime, focus_to_sample_m=focus_to_sample,
                           **({"calibration": stem_cal} if stem_cal is not None else {}),
                           **_zone_plate_option(zp_diameter, zp_zone, zp_stop))
        for w in caught:
            # Shown in the console's own colours; the regime is the user's call, so the store is kept.
            from rich.markup import escape  # noqa: PLC0415

            console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}")
        from .io import n_items, open_store, read_propagation  # noqa: PLC0415

        store = open_store(path)
        regime_note = read_propagation(store)["regime"]
        n = n_items(store)
        console.print(f"wrote {path} ({n} item{'' if n == 1 else 's'}, {store.attrs.get('kind')}, {regime_note}) "
                      f"in {time.perf_counter() - t0:.1f} s", markup=False, highlight=False, soft_wrap=True)


def _zone_plate_option(diameter, zone, stop) -> dict:
    from .io.spectro_options import zone_plate_option  # noqa: PLC0415

    return zone_plate_option(diameter, zone, stop)


def _ingest(files, output, overwrite, kind="auto", progress=True, fmt="auto", **options):
    import warnings  # noqa: PLC0415

    from rich.markup import escape  # noqa: PLC0415

    from .io.readers import ingest_files  # noqa: PLC0415

    # Plausibility, near-field and housekeeping warnings as one yellow line each (ingest and run alike).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        out = ingest_files(files, output, fmt=fmt, kind=kind, overwrite=overwrite, progress=progress, **options)
    for w in caught:
        console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}")
    return out


@app.command()
def reconstruct(store: Path = typer.Argument(..., help="ingested zarr store"),
                cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
                site_config: Optional[Path] = typer.Option(None, help="site configuration YAML (default: $PTYHPC_SITE_CONFIG)"),
                scheduler: Optional[str] = typer.Option(None, help="dask scheduler address or scheduler file (kind address)"),
                workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
                gpus: Optional[int] = typer.Option(None, help="GPU workers (local) or GPUs per job (slurm); tasks then ask for GPU=1"),
                engine: Optional[str] = typer.Option(None, help="engine name (ptyhpc.ptycho.engines.ENGINES; default: rpie, or chosen from the data; chains, probe modes, position correction: a recipe's ptycho: section)"),
                n_iter: Optional[int] = typer.Option(None, help="iterations per item (default: 60, or chosen from the data)"),
                backend: str = typer.Option("auto", help="auto | numpy | cupy"),
                warm_start: bool = typer.Option(False, help="start items from a finished neighbour's probe"),
                restart: bool = typer.Option(False, "--restart", help=_RESTART_HELP),
                figures: Optional[Path] = typer.Option(None, help=_FIGURES_HELP)):
    """Reconstruct every pending item, one dask task per item; reruns skip finished items."""
    from .ptycho.options import PtychoOptions  # noqa: PLC0415

    with _user_errors(store):
        _require_store(store)
        given = {k: v for k, v in (("engine", engine), ("n_iter", n_iter)) if v is not None}
        params = PtychoOptions(**given, backend=backend, warm_start=warm_start, user_set=tuple(given))
        cfg = _config(None, _cluster_flags(cluster, scheduler, workers, gpus), site_config)
        fig = _figures_dir(store, figures)
        hint = f"ptyhpc reconstruct {store} --restart"
        _with_cluster(cfg, store, lambda c: _ptycho(c, store, params, fig),
                      preflight=_ptycho_preflight(store, params, restart, hint, fig))


def _require_store(store: Path) -> None:
    """Open the store once before anything starts (a missing or foreign folder is refused here)."""
    from .io import open_store  # noqa: PLC0415

    open_store(store)


@app.command("reconstruct-item")
def reconstruct_item_cmd(store: Path = typer.Argument(..., help="ingested zarr store"),
                         index: int = typer.Argument(..., help="item index (0-based, e.g. $SLURM_ARRAY_TASK_ID)"),
                         recipe: Optional[Path] = typer.Option(None, help="take the ptycho settings from this recipe"),
                         n_iter: int = typer.Option(60, help="iterations (without --recipe)"),
                         engine: str = typer.Option("rpie", help="engine name, as for reconstruct (without --recipe)"),
                         backend: str = typer.Option("auto", help="auto | numpy | cupy (without --recipe)")):
    """Reconstruct one item in this process (one element of a SLURM job array).

    Elements of an array share the store; a driver run (reconstruct, run) on the same store is refused
    while any element runs, and vice versa. An item already done is skipped.
    """
    from .io import n_items, open_store  # noqa: PLC0415
    from .pipeline.lock import run_lock, setup_lock  # noqa: PLC0415
    from .pipeline.ptycho_stage import prepare_results, reconstruct_item  # noqa: PLC0415
    from .ptycho.options import PtychoOptions  # noqa: PLC0415
    from .recipe import load_recipe  # noqa: PLC0415

    with _user_errors(store):
        if recipe is not None:
            params = load_recipe(recipe)[0].ptycho_params()
        else:
            params = PtychoOptions(n_iter=n_iter, engine=engine, backend=backend)
        if params.warm_start:
            raise ValueError("warm_start is not available for single items (array elements cannot wait for "
                             "their anchor); run the store with ptyhpc reconstruct")
        with run_lock(store, shared=True):
            group = open_store(store, mode="r+")
            n = n_items(group)
            if not 0 <= index < n:
                raise ValueError(f"item {index} out of range: the store has {n} items (0..{n - 1})")
            with setup_lock(store):
                prepare_results(group, params)
            out = reconstruct_item(str(Path(store).resolve()), index, params)
        state = "already done" if out["already_done"] else f"done in {out['seconds']:.1f} s"
        console.print(f"item {index}: {state} (final error {out['final_error']:.4g})")


@app.command()
def tomo(store: Path = typer.Argument(..., help="store with finished ptychography"),
         cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
         site_config: Optional[Path] = typer.Option(None, help="site configuration YAML"),
         scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
         workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
         n_iter: int = typer.Option(100, min=1, help="SIRT iterations"),
         nonneg: bool = typer.Option(True, help="non-negativity in SIRT"),
         align: bool = typer.Option(True, help="align projections (vertical, centre of rotation, projection matching)"),
         channel: str = typer.Option("phase", help="phase | amplitude (-log |O|)"),
         center_method: str = typer.Option("consistency", help="consistency | auto | mirror | sharpness | com"),
         slab_size: Optional[int] = typer.Option(None, min=1, help="rows of the volume per dask task"),
         figures: Optional[Path] = typer.Option(None, help=_FIGURES_HELP)):
    """Offset/ramp removal, alignment, FBP and SIRT of the per-angle phases, slab-parallel."""
    from .pipeline.preflight import check_tomo_ready  # noqa: PLC0415
    from .tomo.options import TomoOptions  # noqa: PLC0415

    with _user_errors(store):
        _require_store(store)
        if not _is_energy_stack(store):
            check_tomo_ready(store)
        cfg = _config(None, _cluster_flags(cluster, scheduler, workers, None), site_config)
        fig = _figures_dir(store, figures)
        opts = TomoOptions(n_iter=n_iter, nonneg=nonneg, align=align, channel=channel,
                           center_method=center_method, slab_size=slab_size)
        _with_cluster(cfg, store, lambda c: _tomo(c, store, fig, opts))


# 4D-STEM: ``ptyhpc stem STORE`` (ptyhpc/stem/cli.py).
from .stem.cli import register as _register_stem  # noqa: E402

_register_stem(app)

# 3D ED from 4D-STEM tilt series: ``ptyhpc ed3d STORE -o OUTDIR`` (ptyhpc/ed3d/cli.py).
from .ed3d.cli import register as _register_ed3d  # noqa: E402

_register_ed3d(app)


@app.command()
def info(store: Path = typer.Argument(..., help="zarr store")):
    """Show a store's geometry and the progress of each stage as JSON."""
    from .pipeline.report import store_summary  # noqa: PLC0415

    with _user_errors():
        typer.echo(json.dumps(store_summary(store), indent=2))


@app.command()
def status(store: Path = typer.Argument(..., help="zarr store"),
           as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")):
    """Per-item progress: done, running (its lock is held) or pending; who holds the store."""
    from .pipeline.progress import store_status  # noqa: PLC0415

    with _user_errors():
        st = store_status(store)
        if as_json:
            typer.echo(json.dumps(st, indent=2))
            return
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"{store} ({st['kind']})")
        cols = [c for c in ("item", "tilt_deg", "energy_eV", "polarisation", "state", "final_error", "reason")
                if any(c in row for row in st["items"])]
        for c in cols:
            table.add_column(c)
        from rich.markup import escape  # noqa: PLC0415

        for row in st["items"]:
            table.add_row(*[("" if row.get(c) is None else f"{row[c]:.4g}" if isinstance(row[c], float)
                             else escape(str(row[c]))) for c in cols])
        Console().print(table)
        c = st["counts"]
        typer.echo(f"done {c['done']}/{st['n_items']}, running {c['running']}, pending {c['pending']}, "
                   f"failed {c['failed']}; "
                   f"run lock: {st['run_lock'] or 'free'}; tomography: "
                   f"{'complete' if st['tomo_complete'] else 'not done'}")


@app.command()
def verify(store: Path = typer.Argument(..., help="zarr store"),
           repair: bool = typer.Option(False, help="reset items with damaged results to pending (a rerun "
                                                   "recomputes them); remove stale build folders"),
           as_json: bool = typer.Option(False, "--json", help="print the report as JSON")):
    """Check every chunk of a store (checksums, missing chunks) by array and item; exit 1 if damage is left."""
    from .io.verify import report_lines, verify_store  # noqa: PLC0415

    with _user_errors(store):
        rep = verify_store(store, repair=repair)
        typer.echo(json.dumps(rep, indent=2) if as_json else "\n".join(report_lines(rep)))
    if not rep["clean"]:
        raise typer.Exit(EXIT_FAILED)


#: The stages `ptyhpc run` runs unless --stages says otherwise.
_RUN_STAGES = "ingest,ptycho,tomo,spectro"


@app.command()
def run(recipe: Path = typer.Argument(..., help="recipe YAML (every key: docs/recipes.md; example: "
                                                "examples/cnt_demo.yaml)"),
        stages: str = typer.Option(_RUN_STAGES, help="comma-separated subset of ingest,ptycho,tomo,spectro,stem,"
                                   "ed3d (spectro: when the recipe has a spectro: section; a recipe with a stem: "
                                   "or ed3d: section runs ingest and those by default)"),
        cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
        site_config: Optional[Path] = typer.Option(None, help="site configuration YAML (default: $PTYHPC_SITE_CONFIG)"),
        scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
        workers: Optional[int] = typer.Option(None, help="LocalCluster workers"),
        gpus: Optional[int] = typer.Option(None, help="GPU workers (local) or GPUs per job (slurm)"),
        restart: bool = typer.Option(False, "--restart", help=_RESTART_HELP)):
    """Run ingest, ptychography and tomography from a recipe; write figures and a text report.

    The recipe's keys (input, store, figures, report, cluster, ptycho, tomo, ...) are listed with
    their defaults in docs/recipes.md; paths in a recipe are relative to the recipe file.
    """
    from .recipe import load_recipe  # noqa: PLC0415

    with _user_errors():
        wanted = [s.strip() for s in stages.split(",") if s.strip()]
        unknown = set(wanted) - {"ingest", "ptycho", "tomo", "spectro", "stem", "ed3d"}
        if unknown or not wanted:
            raise ValueError(f"--stages: unknown stage(s) {sorted(unknown)}; use ingest, ptycho, tomo, spectro, stem, "
                             "ed3d")
        rc, files = load_recipe(recipe)
        if stages == _RUN_STAGES and (rc.stem is not None or rc.ed3d is not None):
            # A 4D-STEM recipe (docs/stem.md, docs/ed3d.md) has no ptychography or tomography to run.
            wanted = ["ingest"] + (["stem"] if rc.stem is not None else []) + (["ed3d"] if rc.ed3d is not None else [])
        if "ed3d" in wanted and rc.ed3d is None:
            raise ValueError(f"{recipe}: --stages ed3d needs an ed3d: section (at least output: FOLDER)")
        cfg = _config(rc.cluster_settings(), _cluster_flags(cluster, scheduler, workers, gpus), site_config)
        if cfg.kind == "mpi":
            from .cluster import run_with_client  # noqa: PLC0415

            # Every stage, the ingest included, runs on the driver rank only.
            run_with_client(cfg, lambda c: _run_stages(c, rc, files, wanted, cfg, recipe, restart))
            return
        _run_stages(None, rc, files, wanted, cfg, recipe, restart)


def _run_stages(client, rc, files, wanted, cfg, recipe_path=None, restart=False):
    from .pipeline.lock import run_lock  # noqa: PLC0415
    from .pipeline.report import write_report  # noqa: PLC0415

    t0 = time.perf_counter()
    store = Path(rc.store)
    timings, ptycho_out, tomo_out = {}, {}, {}
    if "ingest" in wanted:
        if store.exists() and not rc.overwrite:
            console.print(f"store {store} exists: resuming (set overwrite: true to re-ingest)",
                          markup=False, highlight=False, soft_wrap=True)
        else:
            t = time.perf_counter()
            _ingest(files, store, rc.overwrite, progress=_progress_mode() is True, **rc.input.ingest_options())
            timings["ingest"] = time.perf_counter() - t
            console.print(f"ingested {len(files)} items into {store} in {timings['ingest']:.1f} s",
                          markup=False, highlight=False, soft_wrap=True)
    if rc.spectro is None:
        wanted = [w for w in wanted if w != "spectro"]
    if not ({"ptycho", "tomo", "spectro", "stem", "ed3d"} & set(wanted)):
        return
    _require_store(store)
    figures = _figures_dir(store, Path(rc.figures) if rc.figures else None)
    if "tomo" in wanted and "ptycho" not in wanted and not _is_energy_stack(store):
        from .pipeline.preflight import check_tomo_ready  # noqa: PLC0415

        check_tomo_ready(store)
    preflight = None
    if "ptycho" in wanted:
        hint = f"ptyhpc run {recipe_path or 'RECIPE'} --restart"
        # With the tomography to do as well, a cluster is needed whatever the ptychography's state.
        preflight = _ptycho_preflight(store, rc.ptycho_params(), restart, hint, figures,
                                      report_idle="tomo" not in wanted)
        if "tomo" in wanted:
            check = preflight
            preflight = lambda: check() or True  # noqa: E731

    def compute(c):
        if "stem" in wanted:
            from .stem.stage import run_stem  # noqa: PLC0415

            t = time.perf_counter()
            out = run_stem(store, rc.stem or {}, client=c, figures_dir=figures)
            timings["stem"] = time.perf_counter() - t
            console.print(f"4D-STEM: {len(out['done'])} items done in {timings['stem']:.1f} s; figures in {figures}")
        if "ed3d" in wanted:
            from .ed3d.stage import run_ed3d  # noqa: PLC0415

            t = time.perf_counter()
            opts = {k: v for k, v in (rc.ed3d or {}).items() if k != "output"}
            out = run_ed3d(store, rc.ed3d["output"], opts, client=c)
            timings["ed3d"] = time.perf_counter() - t
            console.print(f"3D ED: {out['n_particles']} particles in {timings['ed3d']:.1f} s; {rc.ed3d['output']}")
        if "ptycho" in wanted:
            t = time.perf_counter()
            ptycho_out.update(_ptycho(c, store, rc.ptycho_params(), figures))
            timings["ptycho"] = time.perf_counter() - t
        if "tomo" in wanted:
            t = time.perf_counter()
            tomo_out.update(_tomo(c, store, figures, rc.tomo))
            timings["tomo"] = time.perf_counter() - t
        if "spectro" in wanted:
            t = time.perf_counter()
            _spectro(c, store, rc.spectro.run_kwargs(), figures)
            timings["spectro"] = time.perf_counter() - t

    if client is not None:  # MPI: already on the cluster, on the driver rank
        with run_lock(store):
            if preflight is not None and preflight() is False:
                return
            compute(client)
    elif _with_cluster(cfg, store, lambda c: compute(c) or True, preflight=preflight) is None:
        return   # nothing to do; said so by the preflight
    timings["total"] = time.perf_counter() - t0
    if not ({"ptycho", "tomo"} & set(wanted)):  # 4D-STEM / 3D ED only: the report is about ptychography
        console.print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        return
    report = Path(rc.report) if rc.report else store.parent / (store.stem + "_report.txt")
    # Figures of merit against the truth need the tomogram (and a tilt series).
    truth = rc.truth if tomo_out else None
    write_report(report, store, timings=timings, ptycho=ptycho_out, tomo=tomo_out, truth=truth, figures=figures)
    console.print(f"report: {report}")


def _spectro(client, store: Path, options: dict, figures: Path) -> dict:
    from .spectro.stage import run_spectro  # noqa: PLC0415

    out = run_spectro(store, client=client, figures_dir=figures, progress=True, **options)
    if "resolution_m" in out:
        console.print(f"spectro: FRC resolution (half-bit, half period) {out['resolution_m'] * 1e9:.1f} nm "
                      f"on item {out['frc_item']} (halves: {out['frc_halves']})")
    console.print(f"spectro: {len(set(out['energies_eV']))} energies, components {out['components'] or '-'} "
                  f"(fit {out.get('fit', '-')}), XMCD at {out['xmcd_energies'] or '-'} eV, XLD at "
                  f"{out['xld_energies'] or '-'} eV, {out['seconds']:.1f} s; results/spectro, figures in {figures}")
    return out


@app.command()
def spectro(store: Path = typer.Argument(..., help="energy-stack store with finished ptychography"),
            reference: List[str] = typer.Option([], "--reference", help="NAME=FILE (CSV energy_eV,mu_per_m[,delta]) "
                                                "or NAME=xraydb:FORMULA:DENSITY_G_CM3; repeat, in fit order"),
            i0_mask: Optional[Path] = typer.Option(None, "--i0-mask", help=".npy/.tif mask of the empty (I0) area on "
                                                   "item 0's reconstruction grid (default: found automatically)"),
            clusters: int = typer.Option(3, "--clusters", help="k-means clusters on the PCA scores (0: none)"),
            regions: Optional[Path] = typer.Option(None, "--regions", help="label image on item 0's grid for "
                                                   "region spectra (default: the clusters)"),
            beam_diameter: Optional[float] = typer.Option(None, "--beam-diameter", help="beam diameter, m, for the "
                                                          "exposure map (default: from the probe)"),
            density: Optional[float] = typer.Option(None, "--density", help="specimen density, kg/m3: writes the "
                                                    "stack's absorbed dose map dose_Gy (needs --reference)"),
            frc: bool = typer.Option(False, "--frc", help="resolution by FRC of two half-data reconstructions of "
                                     "one item (the store's results/ptycho_halves, else reconstructed now)"),
            frc_item: Optional[int] = typer.Option(None, "--frc-item", help="item for --frc (default: the "
                                                   "alignment's reference item)"),
            cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
            site_config: Optional[Path] = typer.Option(None, help="site configuration YAML"),
            scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
            workers: Optional[int] = typer.Option(None, help="LocalCluster workers"),
            figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
    """Optical density, thickness maps, dichroism and exposure maps of a reconstructed energy stack."""
    from .spectro.options import SpectroSpec  # noqa: PLC0415
    from .spectro.references import parse_reference_option  # noqa: PLC0415

    with _user_errors():
        refs = dict(parse_reference_option(r) for r in reference)
        spec = SpectroSpec(references=refs, i0_mask=None if i0_mask is None else str(i0_mask), clusters=clusters,
                           regions=None if regions is None else str(regions), beam_diameter_m=beam_diameter,
                           density_kg_m3=density, frc=frc, frc_item=frc_item)
        cfg = _config(None, _cluster_flags(cluster, scheduler, workers, None), site_config)
        if cfg.kind == "local" and not workers:
            # Per-energy tasks are small: threads in this process, no cluster to start.
            from .pipeline.lock import run_lock  # noqa: PLC0415

            with run_lock(store):
                _spectro(None, store, spec.run_kwargs(), _figures_dir(store, figures))
            return
        _with_cluster(cfg, store, lambda c: _spectro(c, store, spec.run_kwargs(), _figures_dir(store, figures)))


@app.command()
def submit(recipe: Path = typer.Argument(..., help="recipe YAML"),
           slurm: bool = typer.Option(False, "--slurm", help="submit to SLURM (the only scheduler supported)"),
           mode: str = typer.Option("array", help="array (job array, one element per item) | jobqueue "
                                                 "(dask-jobqueue driver job) | mpi (one dask-mpi job)"),
           sbatch_arg: List[str] = typer.Option([], "--sbatch-arg", help="extra sbatch option for every job, repeatable "
                                                                          "(e.g. --sbatch-arg=--partition=gpu)"),
           site_config: Optional[Path] = typer.Option(None, help="site configuration YAML (jobqueue mode)"),
           dry_run: bool = typer.Option(False, help="write the job scripts and print the sbatch commands only"),
           wait: bool = typer.Option(False, help="wait for the jobs to end; exit 1 if any failed or items are pending")):
    """Submit a recipe as SLURM jobs; follow it with `ptyhpc status STORE`."""
    from .slurm import submit as do_submit  # noqa: PLC0415
    from .slurm import wait_for_jobs  # noqa: PLC0415

    with _user_errors():
        if not slurm:
            raise ValueError("say where to submit: --slurm (SLURM is the only batch system supported)")
        out = do_submit(recipe, mode=mode, sbatch_args=sbatch_arg, site_config=site_config, dry_run=dry_run)
        for job in out["jobs"]:
            typer.echo(f"{job['name']:8s} {job['id'] or '(dry run)'}  {job['command']}")
        console.print(f"job scripts and logs in {out['jobs_dir']}; progress: ptyhpc status {out['store']}")
        if wait and not dry_run:
            states = wait_for_jobs([j["id"] for j in out["jobs"]], timeout_s=24 * 3600)
            typer.echo(json.dumps(states))
            bad = {k: v for k, v in states.items() if v not in ("COMPLETED", "UNKNOWN")}
            if bad:
                _error("error", f"jobs ended {bad}; logs in {out['jobs_dir']}; resubmit to redo the unfinished items")
                raise typer.Exit(EXIT_FAILED)


@app.command()
def view(store: Path = typer.Argument(..., help="zarr store with results"),
         print_only: bool = typer.Option(False, "--print", help="only print the OME-Zarr paths, even with napari")):
    """Open the store's tomograms and phase images in napari (the viewer extra), else print their
    OME-Zarr paths for any NGFF viewer and two lines of Python that read them."""
    from .pipeline.view import view_store  # noqa: PLC0415

    with _user_errors():
        view_store(store, print_only=print_only, echo=typer.echo)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bragg(ctx: typer.Context):
    """3D Bragg ptychography: ptyhpc bragg {simulate,reconstruct,plan} ... (--help after the verb).

    Runs MPI-parallel under `mpiexec -n N ptyhpc bragg reconstruct STORE`.
    """
    from .bragg.cli import bragg_main  # noqa: PLC0415

    raise typer.Exit(bragg_main(list(ctx.args)) or 0)


# The facility service (ptyhpc/service/): `ptyhpc serve --config service.yaml`, `ptyhpc token create|revoke|list`.
from .service.cli import serve as _serve, token_app as _token_app  # noqa: E402

app.command("serve")(_serve)
app.add_typer(_token_app, name="token")


if __name__ == "__main__":  # pragma: no cover
    app()
