"""The ``ptyhpc`` command: ingest → reconstruct → tomo, or all of them with ``run``."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributed ptychography and tomography of tilt series.")
console = Console(stderr=True)


@contextlib.contextmanager
def _user_errors():
    """Turn the errors a user can fix into one red line and exit code 2."""
    from .io import IngestError, StoreError  # noqa: PLC0415

    try:
        yield
    except (IngestError, StoreError, FileNotFoundError, ValueError, FileExistsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _figures_dir(store: Path, figures: Optional[Path]) -> Path:
    return figures if figures is not None else store.parent / (store.stem + "_figures")


@app.command()
def ingest(files: List[Path] = typer.Argument(..., help="per-angle HDF5 files"),
           output: Path = typer.Option(..., "-o", "--output", help="zarr store to create"),
           overwrite: bool = typer.Option(False, help="replace an existing store (only once the new one is complete)")):
    """Validate raw per-angle HDF5 files and write them into a zarr v3 store."""
    from .io import ingest as do_ingest  # noqa: PLC0415

    with _user_errors():
        t0 = time.perf_counter()
        path = do_ingest(files, output, overwrite=overwrite)
        console.print(f"wrote {path} ({len(files)} items) in {time.perf_counter() - t0:.1f} s")


def _ptycho(store: Path, params, scheduler, workers, figures: Path) -> dict:
    from .cluster import connect  # noqa: PLC0415
    from .io import open_store  # noqa: PLC0415
    from .pipeline.figures import ptycho_figures  # noqa: PLC0415
    from .pipeline.ptycho_stage import run_ptycho  # noqa: PLC0415

    with connect(scheduler, workers) as client:
        out = run_ptycho(store, params, client=client)
    ptycho_figures(open_store(store), figures)
    console.print(f"ptychography: {len(out['done'])} items reconstructed, {len(out['skipped'])} already done, "
                  f"{out['seconds']:.1f} s; figures in {figures}")
    return out


def _tomo(store: Path, scheduler, workers, figures: Path, n_iter: int, nonneg: bool, align: bool) -> dict:
    from .cluster import connect  # noqa: PLC0415
    from .tomo.stage import run_tomo  # noqa: PLC0415

    with connect(scheduler, workers) as client:
        out = run_tomo(str(store), client=client, n_iter=n_iter, nonneg=nonneg, align=align,
                       figures_dir=str(figures))
    console.print(f"tomography done; figures in {figures}")
    return out


@app.command()
def reconstruct(store: Path = typer.Argument(..., help="ingested zarr store"),
                scheduler: Optional[str] = typer.Option(None, help="dask scheduler address or scheduler file; default: a LocalCluster"),
                workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
                engine: str = typer.Option("rpie", help="rpie | epie"),
                n_iter: int = typer.Option(60, help="iterations per item"),
                backend: str = typer.Option("auto", help="auto | numpy | cupy"),
                figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
    """Reconstruct every pending tilt angle, one dask task per angle; reruns skip finished angles."""
    from .pipeline.ptycho_stage import PtychoParams  # noqa: PLC0415

    with _user_errors():
        params = PtychoParams(engine=engine, n_iter=n_iter, backend=backend)
        _ptycho(store, params, scheduler, workers, _figures_dir(store, figures))


@app.command()
def tomo(store: Path = typer.Argument(..., help="store with finished ptychography"),
         scheduler: Optional[str] = typer.Option(None, help="dask scheduler address; default: a LocalCluster"),
         workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
         n_iter: int = typer.Option(100, help="SIRT iterations"),
         nonneg: bool = typer.Option(True, help="non-negativity in SIRT"),
         align: bool = typer.Option(True, help="align projections (vertical, centre of rotation, projection matching)"),
         figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
    """Offset/ramp removal, alignment, FBP and SIRT of the per-angle phases, slab-parallel."""
    with _user_errors():
        _tomo(store, scheduler, workers, _figures_dir(store, figures), n_iter, nonneg, align)


@app.command()
def info(store: Path = typer.Argument(..., help="zarr store")):
    """Show a store's geometry and the progress of each stage as JSON."""
    from .pipeline.report import store_summary  # noqa: PLC0415

    with _user_errors():
        typer.echo(json.dumps(store_summary(store), indent=2))


@app.command()
def run(recipe: Path = typer.Argument(..., help="recipe YAML (see ptyhpc/recipe.py)")):
    """Run ingest, ptychography and tomography from a recipe; write figures and a text report."""
    from .io import ingest as do_ingest  # noqa: PLC0415
    from .pipeline.report import write_report  # noqa: PLC0415
    from .recipe import load_recipe  # noqa: PLC0415

    with _user_errors():
        t0 = time.perf_counter()
        rc, files = load_recipe(recipe)
        store = Path(rc.store)
        figures = _figures_dir(store, Path(rc.figures) if rc.figures else None)
        timings = {}
        if store.exists() and not rc.overwrite:
            console.print(f"store {store} exists: resuming (set overwrite: true to re-ingest)")
        else:
            t = time.perf_counter()
            do_ingest(files, store, overwrite=rc.overwrite)
            timings["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        ptycho_out = _ptycho(store, rc.ptycho_params(), rc.cluster.scheduler, rc.cluster.workers, figures)
        timings["ptycho"] = time.perf_counter() - t
        t = time.perf_counter()
        tomo_out = _tomo(store, rc.cluster.scheduler, rc.cluster.workers, figures, rc.tomo.n_iter,
                         rc.tomo.nonneg, rc.tomo.align)
        timings["tomo"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        report = Path(rc.report) if rc.report else store.parent / (store.stem + "_report.txt")
        write_report(report, store, timings=timings, ptycho=ptycho_out, tomo=tomo_out, truth=rc.truth,
                     figures=figures)
        console.print(f"report: {report}")


if __name__ == "__main__":  # pragma: no cover
    app()
