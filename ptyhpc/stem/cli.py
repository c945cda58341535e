"""``ptyhpc stem STORE``: the 4D-STEM stage from the command line (registered by :mod:`ptyhpc.cli`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``stem`` command to the ``ptyhpc`` app."""

    @app.command("stem")
    def stem(store: Path = typer.Argument(..., help="4D-STEM store (ptyhpc ingest --format mib|arina|empad)"),
             virtual: str = typer.Option("bf,abf,adf", help="virtual detectors: any of bf, abf, adf (comma-separated)"),
             com: bool = typer.Option(True, help="centre of mass, DPC (rotation/transpose found unless given)"),
             icom: bool = typer.Option(True, help="iCOM phase (needs --com)"),
             ssb: bool = typer.Option(False, help="single-sideband ptychography phase"),
             parallax: bool = typer.Option(False, help="tilt-corrected BF with a defocus fit (needs defocus)"),
             drift: bool = typer.Option(False, help="drift between the items of a multi-scan store; drift-corrected sums"),
             drift_max_shift: Optional[float] = typer.Option(None, help="largest drift between items, scan px "
                                                             "(crystals: below half the lattice period)"),
             scan_rotation_deg: Optional[float] = typer.Option(None, help="scan-detector rotation (default: the "
                                                               "store's, else found by minimum curl)"),
             transpose: Optional[bool] = typer.Option(None, "--transpose/--no-transpose",
                                                      help="detector transpose (default: found)"),
             adf_inner: float = typer.Option(1.5, help="ADF inner radius, in bright-field radii"),
             com_mask_radius: Optional[float] = typer.Option(None, help="CoM inside this many BF radii only"),
             com_threshold: Optional[float] = typer.Option(None, help="CoM: zero pixels below this many counts"),
             backend: str = typer.Option("numpy", help="numpy | cupy | auto"),
             cluster: Optional[str] = typer.Option(None, help="local | slurm | mpi | address"),
             site_config: Optional[Path] = typer.Option(None, help="site configuration YAML"),
             scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
             workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)"),
             gpus: Optional[int] = typer.Option(None, help="GPU workers"),
             figures: Optional[Path] = typer.Option(None, help="figure folder (default: STORE_figures)")):
        """Virtual images, CoM/DPC/iCOM, SSB, dose and drift of a 4D-STEM store into results/stem."""
        from ptyhpc import cli  # noqa: PLC0415

        from .stage import StemOptions, run_stem  # noqa: PLC0415

        with cli._user_errors():
            opts = StemOptions(virtual=virtual, com=com, icom=icom and com, ssb=ssb, parallax=parallax, drift=drift, drift_max_shift_px=drift_max_shift,
                               scan_rotation_rad=None if scan_rotation_deg is None else math.radians(scan_rotation_deg),
                               transpose=transpose, adf_inner=adf_inner, com_mask_radius=com_mask_radius,
                               com_threshold=com_threshold, backend=backend)
            cfg = cli._config(None, cli._cluster_flags(cluster, scheduler, workers, gpus), site_config)
            figs = cli._figures_dir(store, figures)
            out = cli._with_cluster(cfg, store, lambda c: run_stem(store, opts, client=c, figures_dir=figs))
            rot = out.get("scan_rotation_rad")
            rot_txt = "" if rot is None else (f"; scan rotation {math.degrees(rot):.2f} deg, transpose "
                                              f"{out['transpose']} ({out['rotation_source']})")
            cli.console.print(f"4D-STEM: {len(out['done'])} items done, {len(out['skipped'])} already done in "
                              f"{out['seconds']:.1f} s{rot_txt}; figures in {figs}")
