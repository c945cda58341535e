"""The ``ptyhpc`` command: ingest → reconstruct → tomo, or all of them with ``run``; SLURM submission."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributed ptychography and tomography of tilt series and energy stacks.")
console = Console(stderr=True)

#: Exit codes: 2 bad input or settings, 3 the store is in use by another run, 1 some items failed.
EXIT_USER, EXIT_LOCKED, EXIT_FAILED = 2, 3, 1


@contextlib.contextmanager
def _user_errors():
    """Turn the errors a user can fix into one red line and an exit code."""
    from .io import IngestError, StoreError  # noqa: PLC0415
    from .pipeline.lock import StoreLockedError  # noqa: PLC0415
    from .pipeline.ptycho_stage import ItemsFailedError  # noqa: PLC0415
    from .slurm import SlurmError  # noqa: PLC0415

    try:
        yield
    except StoreLockedError as exc:
        console.print(f"[bold red]refused:[/] {exc}")
        raise typer.Exit(EXIT_LOCKED) from None
    except ItemsFailedError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    except (IngestError, StoreError, FileNotFoundError, ValueError, FileExistsError, ImportError,
            SlurmError, TimeoutError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USER) from None


def _figures_dir(store: Path, figures: Optional[Path]) -> Path:
    return figures if figures is not None else store.parent / (store.stem + "_figures")


# Cluster options shared by every command that runs tasks.
_CLUSTER_HELP = "local | slurm | mpi | address (default: the site configuration, else local)"


def _cluster_flags(cluster, scheduler, workers, gpus) -> dict:
    return {"kind": cluster, "scheduler": scheduler, "workers": workers, "gpus": gpus}


def _config(recipe_cluster: dict | None, flags: dict, site_config: Optional[Path]):
    from .cluster import resolve_config  # noqa: PLC0415

    return resolve_config(recipe_cluster, flags, site_config=site_config)


def _with_cluster(cfg, store: Path, body):
    """Run ``body(client)`` on the cluster holding the store's run lock.

    The lock is taken before the cluster starts (no SLURM jobs are submitted
    for a run that is refused), except under MPI where only the driver rank
    may take it.
    """
    from .cluster import run_with_client  # noqa: PLC0415
    from .pipeline.lock import run_lock  # noqa: PLC0415

    if cfg.kind == "mpi":
        def locked(client):
            with run_lock(store):
                return body(client)
        return run_with_client(cfg, locked)
    with run_lock(store):
        return run_with_client(cfg, body)


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


def _ptycho(client, store: Path, params, figures: Path) -> dict:
    from .pipeline.ptycho_stage import run_ptycho  # noqa: PLC0415

    out = run_ptycho(store, params, client=client, lock=False)
    _ptycho_figures(store, figures)
    gpu = " (one GPU per task)" if out.get("resources") else ""
    console.print(f"ptychography: {len(out['done'])} items reconstructed{gpu}, {len(out['skipped'])} already done, "
                  f"{out['seconds']:.1f} s; figures in {figures}")
    return out


def _tomo(client, store: Path, figures: Path, n_iter: int, nonneg: bool, align: bool, **options) -> dict:
    from .tomo.stage import run_tomo  # noqa: PLC0415

    if _is_energy_stack(store):
        console.print("tomography skipped: the store is an energy stack")
        return {}
    out = run_tomo(str(store), client=client, n_iter=n_iter, nonneg=nonneg, align=align, figures_dir=str(figures),
                   **{k: v for k, v in options.items() if v is not None})
    console.print(f"tomography done; figures in {figures}")
    return out


@app.command()
def ingest(files: List[Path] = typer.Argument(..., help="raw files: per-item HDF5 (tilt angles or X-ray energies), "
                                                        "CXI, NeXus NXptycho or any HDF5 with --spec"),
           output: Path = typer.Option(..., "-o", "--output", help="zarr store to create"),
           overwrite: bool = typer.Option(False, help="replace an existing store (only once the new one is complete)"),
           fmt: str = typer.Option("auto", "--format", help="auto | hdf5-tilt | cxi | nexus | generic | mib | arina | empad (auto: from "
                                                            "the first file's content; generic when --spec is given)"),
           spec: Optional[Path] = typer.Option(None, "--spec", help="YAML of dataset paths for --format generic "
                                                                    "(see README, Readers)"),
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
           defocus: Optional[float] = typer.Option(None, "--defocus", help="probe defocus, m (sample downstream "
                                                                          "of the focus)"),
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
    with _user_errors():
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
                           **({"calibration": stem_cal} if stem_cal is not None else {}))
        for w in caught:
            # Shown in the console's own colours; the regime is the user's call, so the store is kept.
            console.print(f"[bold yellow]warning:[/] {w.message}")
        from .io import n_items, open_store, read_propagation  # noqa: PLC0415

        store = open_store(path)
        regime_note = read_propagation(store)["regime"]
        console.print(f"wrote {path} ({n_items(store)} items, {regime_note}) in {time.perf_counter() - t0:.1f} s")


def _ingest(files, output, overwrite, kind="auto", progress=True, fmt="auto", **options):
    from .io.readers import ingest_files  # noqa: PLC0415

    return ingest_files(files, output, fmt=fmt, kind=kind, overwrite=overwrite, progress=progress, **options)


@app.command()
def reconstruct(store: Path = typer.Argument(..., help="ingested zarr store"),
                cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
                site_config: Optional[Path] = typer.Option(None, help="site configuration YAML (default: $PTYHPC_SITE_CONFIG)"),
                scheduler: Optional[str] = typer.Option(None, help="dask scheduler address or scheduler file (kind address)"),
                workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
                gpus: Optional[int] = typer.Option(None, help="GPU workers (local) or GPUs per job (slurm); tasks then ask for GPU=1"),
                engine: str = typer.Option("rpie", help="rpie | epie | mpie | lsqml | er | dm (chains, probe modes, position correction: a recipe's ptycho: section)"),
                n_iter: int = typer.Option(60, help="iterations per item"),
                backend: str = typer.Option("auto", help="auto | numpy | cupy"),
                warm_start: bool = typer.Option(False, help="start items from a finished neighbour's probe"),
                figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
    """Reconstruct every pending item, one dask task per item; reruns skip finished items."""
    from .pipeline.ptycho_stage import PtychoParams  # noqa: PLC0415

    with _user_errors():
        params = PtychoParams(engine=engine, n_iter=n_iter, backend=backend, warm_start=warm_start)
        cfg = _config(None, _cluster_flags(cluster, scheduler, workers, gpus), site_config)
        _with_cluster(cfg, store, lambda c: _ptycho(c, store, params, _figures_dir(store, figures)))


@app.command("reconstruct-item")
def reconstruct_item_cmd(store: Path = typer.Argument(..., help="ingested zarr store"),
                         index: int = typer.Argument(..., help="item index (0-based, e.g. $SLURM_ARRAY_TASK_ID)"),
                         recipe: Optional[Path] = typer.Option(None, help="take the ptycho settings from this recipe"),
                         n_iter: int = typer.Option(60, help="iterations (without --recipe)"),
                         engine: str = typer.Option("rpie", help="rpie | epie | mpie | lsqml | er | dm (without --recipe)"),
                         backend: str = typer.Option("auto", help="auto | numpy | cupy (without --recipe)")):
    """Reconstruct one item in this process (one element of a SLURM job array).

    Elements of an array share the store; a driver run (reconstruct, run) on the same store is refused
    while any element runs, and vice versa. An item already done is skipped.
    """
    from .io import n_items, open_store  # noqa: PLC0415
    from .pipeline.lock import run_lock, setup_lock  # noqa: PLC0415
    from .pipeline.ptycho_stage import PtychoParams, prepare_results, reconstruct_item  # noqa: PLC0415
    from .recipe import load_recipe  # noqa: PLC0415

    with _user_errors():
        if recipe is not None:
            params = load_recipe(recipe)[0].ptycho_params()
        else:
            params = PtychoParams(n_iter=n_iter, engine=engine, backend=backend)
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
         n_iter: int = typer.Option(100, help="SIRT iterations"),
         nonneg: bool = typer.Option(True, help="non-negativity in SIRT"),
         align: bool = typer.Option(True, help="align projections (vertical, centre of rotation, projection matching)"),
         channel: str = typer.Option("phase", help="phase | amplitude (-log |O|)"),
         center_method: str = typer.Option("consistency", help="consistency | auto | mirror | sharpness | com"),
         slab_size: Optional[int] = typer.Option(None, help="rows of the volume per dask task"),
         figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
    """Offset/ramp removal, alignment, FBP and SIRT of the per-angle phases, slab-parallel."""
    with _user_errors():
        cfg = _config(None, _cluster_flags(cluster, scheduler, workers, None), site_config)
        _with_cluster(cfg, store, lambda c: _tomo(c, store, _figures_dir(store, figures), n_iter, nonneg, align,
                                                  channel=channel, center_method=center_method,
                                                  slab_size=slab_size))


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
        cols = [c for c in ("item", "tilt_deg", "energy_eV", "polarisation", "state", "final_error")
                if any(c in row for row in st["items"])]
        for c in cols:
            table.add_column(c)
        for row in st["items"]:
            table.add_row(*[("" if row.get(c) is None else f"{row[c]:.4g}" if isinstance(row[c], float)
                             else str(row[c])) for c in cols])
        Console().print(table)
        c = st["counts"]
        typer.echo(f"done {c['done']}/{st['n_items']}, running {c['running']}, pending {c['pending']}; "
                   f"run lock: {st['run_lock'] or 'free'}; tomography: "
                   f"{'complete' if st['tomo_complete'] else 'not done'}")


@app.command()
def run(recipe: Path = typer.Argument(..., help="recipe YAML (see ptyhpc/recipe.py)"),
        stages: str = typer.Option("ingest,ptycho,tomo", help="comma-separated subset of ingest,ptycho,tomo,stem "
                                                             "(a recipe with a stem: section: ingest,stem)"),
        cluster: Optional[str] = typer.Option(None, help=_CLUSTER_HELP),
        site_config: Optional[Path] = typer.Option(None, help="site configuration YAML (default: $PTYHPC_SITE_CONFIG)"),
        scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
        workers: Optional[int] = typer.Option(None, help="LocalCluster workers"),
        gpus: Optional[int] = typer.Option(None, help="GPU workers (local) or GPUs per job (slurm)")):
    """Run ingest, ptychography and tomography from a recipe; write figures and a text report."""
    from .recipe import load_recipe  # noqa: PLC0415

    with _user_errors():
        wanted = [s.strip() for s in stages.split(",") if s.strip()]
        unknown = set(wanted) - {"ingest", "ptycho", "tomo", "stem", "ed3d"}
        if unknown or not wanted:
            raise ValueError(f"--stages: unknown stage(s) {sorted(unknown)}; use ingest, ptycho, tomo, stem, ed3d")
        rc, files = load_recipe(recipe)
        if rc.stem is not None and stages == "ingest,ptycho,tomo":
            wanted = ["ingest", "stem"]
        if rc.ed3d is not None and stages == "ingest,ptycho,tomo":  # 3D ED (docs/ed3d.md)
            wanted = ["ingest"] + (["stem"] if rc.stem is not None else []) + ["ed3d"]
        if "ed3d" in wanted and rc.ed3d is None:
            raise ValueError(f"{recipe}: --stages ed3d needs an ed3d: section (at least output: FOLDER)")
        cfg = _config(rc.cluster_settings(), _cluster_flags(cluster, scheduler, workers, gpus), site_config)
        if cfg.kind == "mpi":
            from .cluster import run_with_client  # noqa: PLC0415

            # Every stage, the ingest included, runs on the driver rank only.
            run_with_client(cfg, lambda c: _run_stages(c, rc, files, wanted, cfg))
            return
        _run_stages(None, rc, files, wanted, cfg)


def _run_stages(client, rc, files, wanted, cfg):
    from .pipeline.lock import run_lock  # noqa: PLC0415
    from .pipeline.report import write_report  # noqa: PLC0415

    t0 = time.perf_counter()
    store = Path(rc.store)
    figures = _figures_dir(store, Path(rc.figures) if rc.figures else None)
    timings, ptycho_out, tomo_out = {}, {}, {}
    if "ingest" in wanted:
        if store.exists() and not rc.overwrite:
            console.print(f"store {store} exists: resuming (set overwrite: true to re-ingest)")
        else:
            t = time.perf_counter()
            _ingest(files, store, rc.overwrite, **rc.input.ingest_options())
            timings["ingest"] = time.perf_counter() - t
            console.print(f"ingested {len(files)} items into {store} in {timings['ingest']:.1f} s")
    if not ({"ptycho", "tomo", "stem", "ed3d"} & set(wanted)):
        return

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
            tomo_out.update(_tomo(c, store, figures, rc.tomo.n_iter, rc.tomo.nonneg, rc.tomo.align))
            timings["tomo"] = time.perf_counter() - t

    if client is not None:  # MPI: already on the cluster, on the driver rank
        with run_lock(store):
            compute(client)
    else:
        _with_cluster(cfg, store, compute)
    timings["total"] = time.perf_counter() - t0
    if not ({"ptycho", "tomo"} & set(wanted)):  # 4D-STEM / 3D ED only: the report is about ptychography
        console.print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        return
    report = Path(rc.report) if rc.report else store.parent / (store.stem + "_report.txt")
    # Figures of merit against the truth need the tomogram (and a tilt series).
    truth = rc.truth if tomo_out else None
    write_report(report, store, timings=timings, ptycho=ptycho_out, tomo=tomo_out, truth=truth, figures=figures)
    console.print(f"report: {report}")


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
                console.print(f"[bold red]error:[/] jobs ended {bad}; logs in {out['jobs_dir']}; resubmit to redo "
                              "the unfinished items")
                raise typer.Exit(EXIT_FAILED)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def bragg(ctx: typer.Context):
    """3D Bragg ptychography: ``ptyhpc bragg {simulate,reconstruct,plan} ...`` (``--help`` after the verb).

    Runs MPI-parallel under ``mpiexec -n N ptyhpc bragg reconstruct STORE``.
    """
    from .bragg.cli import bragg_main  # noqa: PLC0415

    raise typer.Exit(bragg_main(list(ctx.args)) or 0)


if __name__ == "__main__":  # pragma: no cover
    app()
