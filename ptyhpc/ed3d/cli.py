"""``ptyhpc ed3d STORE -o OUTDIR``: the 3D ED stage from the command line (registered by :mod:`ptyhpc.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``ed3d`` command to the ``ptyhpc`` app."""

    @app.command("ed3d")
    def ed3d(store: Path = typer.Argument(..., help="4D-STEM tilt-series store (ptyhpc ingest scan_*.mib --tilts "
                                                     "tilts.csv --calibration calib.yaml)"),
             outdir: Path = typer.Option(..., "-o", "--output", help="folder for tracks.csv and particle_NNN/"),
             exports: str = typer.Option("pets,mrc,xds", help="any of pets, mrc, xds (comma-separated)"),
             search_range: float = typer.Option(3.0, help="largest particle move between tilts after drift "
                                                           "removal (scan px)"),
             memory: int = typer.Option(3, help="tilts a particle may be missing from its track"),
             min_track_length: int = typer.Option(3, help="shorter tracks are dropped"),
             peak_sigma: float = typer.Option(6.0, help="diffraction peaks above this many noise sigma"),
             cluster: Optional[str] = typer.Option(None, help="local | slurm | mpi | address"),
             site_config: Optional[Path] = typer.Option(None, help="site configuration YAML"),
             scheduler: Optional[str] = typer.Option(None, help="dask scheduler address (kind address)"),
             workers: Optional[int] = typer.Option(None, help="LocalCluster workers (default: all cores)")):
        """Track particles through a 4D-STEM tilt series; export each particle's 3D ED series and unit cell."""
        from ptyhpc import cli  # noqa: PLC0415

        from .stage import ED3DOptions, run_ed3d  # noqa: PLC0415

        with cli._user_errors():
            opts = ED3DOptions(exports=tuple(e.strip() for e in exports.split(",") if e.strip()),
                               search_range_px=search_range, memory=memory, min_track_length=min_track_length,
                               peak_n_sigma=peak_sigma)
            bad = set(opts.exports) - {"pets", "mrc", "xds"}
            if bad:
                raise ValueError(f"--exports: unknown {sorted(bad)}; use pets, mrc, xds")
            cfg = cli._config(None, cli._cluster_flags(cluster, scheduler, workers, None), site_config)
            out = cli._with_cluster(cfg, store, lambda c: run_ed3d(store, outdir, opts, client=c))
            cells = [c for c in out["cells"] if "error" not in c]
            cli.console.print(f"3D ED: {out['n_particles']} particles tracked, {len(cells)} unit cells found; "
                              f"{outdir}/tracks.csv, {outdir}/particle_NNN/")
