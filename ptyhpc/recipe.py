"""The ``ptyhpc run`` recipe: a YAML file validated at the door.

Example (``examples/cnt_demo.yaml``)::

    input:
      files: ["../data/cnt_tilt_series/tilt_*.h5"]   # globs, relative to this file
    store: ../out/cnt.zarr
    figures: ../out/figures
    report: ../out/report.txt
    cluster: {kind: local, workers: null}          # null: all cores; see ptyhpc.cluster for
                                                   # kind slurm | mpi | address and their options
    ptycho: {n_iter: 60}
    tomo: {n_iter: 100, nonneg: true, align: true}
    truth: ../data/cnt_tilt_series                   # optional: ground truth for the report

Every key except ``input`` and ``store`` is optional; unknown keys are errors. ``input`` also takes
the options of ``ptyhpc ingest`` (see :class:`InputSpec`), e.g. for the PETRA III near-field scan::

    input:
      files: [../data/petra3_p25_nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi]
      format: cxi
      regime: near_field
      focus_to_sample_m: 3.65e-3
"""

from __future__ import annotations

import glob
from dataclasses import fields
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .io import layout
from .pipeline.ptycho_stage import PtychoParams

__all__ = ["Recipe", "load_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """Raw files and how to read them: the options of ``ptyhpc ingest`` (``format`` is its ``--format``;
    the rest are the keywords of :func:`ptyhpc.io.readers.ingest_files`). Paths are relative to the
    recipe."""

    files: list[str] = Field(min_length=1)
    format: str = "auto"
    kind: str = "auto"
    spec: Optional[str] = None
    dark: Optional[str] = None
    flat: Optional[str] = None
    mask: Optional[str] = None
    mask_bad: Optional[str] = None
    radiation: Optional[str] = None
    probe_semiangle_rad: Optional[float] = None
    defocus_m: Optional[float] = None
    regime: Optional[str] = None
    focus_to_sample_m: Optional[float] = None
    calibration: Optional[dict] = None  # 4D-STEM formats: keys of ptyhpc.stem.calibration
    tilts: Optional[str] = None  # 4D-STEM tilt series: CSV file,tilt_deg (-> calibration tilt_angles_rad)

    @model_validator(mode="after")
    def _check_propagation(self):
        # the file gives the detector distance; here only what the user states is checked (1 m stands in)
        layout.check_propagation(self.regime, self.focus_to_sample_m, 1.0)
        return self

    def ingest_options(self) -> dict:
        """Keywords for :func:`ptyhpc.io.readers.ingest_files` (``fmt`` for ``format``; unset ones left out)."""
        opts = {k: v for k, v in self.model_dump(exclude={"files", "format", "tilts"}).items() if v is not None}
        return {"fmt": self.format, **opts}


class TomoSpec(_Strict):
    n_iter: int = Field(default=100, ge=1)
    nonneg: bool = True
    align: bool = True


class Recipe(_Strict):
    input: InputSpec
    store: str
    figures: Optional[str] = None
    report: Optional[str] = None
    overwrite: bool = False
    cluster: dict = Field(default_factory=dict)
    ptycho: dict = Field(default_factory=dict)
    tomo: TomoSpec = TomoSpec()
    stem: Optional[dict] = None  # 4D-STEM stage settings (ptyhpc.stem.stage.StemOptions); runs stage "stem"
    ed3d: Optional[dict] = None  # 3D ED stage: output (folder) + ptyhpc.ed3d.stage.ED3DOptions; runs stage "ed3d"
    truth: Optional[str] = None

    @field_validator("stem")
    @classmethod
    def _check_stem(cls, v):
        from .stem.stage import StemOptions  # noqa: PLC0415

        if v is not None:
            StemOptions(**v)  # names a bad key or value
        return v

    @field_validator("ed3d")
    @classmethod
    def _check_ed3d(cls, v):
        from .ed3d.stage import ED3DOptions  # noqa: PLC0415

        if v is not None:
            if "output" not in v:
                raise ValueError("ed3d: needs output (the folder for tracks.csv and particle_NNN/)")
            ED3DOptions(**{k: x for k, x in v.items() if k != "output"})  # names a bad key or value
        return v

    @field_validator("ptycho")
    @classmethod
    def _check_ptycho(cls, v):
        known = {f.name for f in fields(PtychoParams)}
        unknown = set(v) - known
        if unknown:
            raise ValueError(f"unknown ptycho settings {sorted(unknown)}; known: {sorted(known)}")
        PtychoParams(**v)  # raises on bad values
        return v

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, v):
        from .cluster import ClusterConfig  # noqa: PLC0415

        ClusterConfig.model_validate({k: x for k, x in v.items() if x is not None})  # names a bad key
        return v

    def ptycho_params(self) -> PtychoParams:
        """The ``ptycho`` section as :class:`PtychoParams`."""
        return PtychoParams(**self.ptycho)

    def cluster_settings(self) -> dict:
        """The ``cluster`` section (unset keys left out), a layer for :func:`ptyhpc.cluster.resolve_config`."""
        return {k: v for k, v in self.cluster.items() if v is not None}


def load_recipe(path: str | Path) -> tuple[Recipe, list[Path]]:
    """Read and validate a recipe; resolve paths relative to the recipe file.

    Returns
    -------
    recipe : Recipe
        With ``store``, ``figures``, ``report``, ``truth`` made absolute.
    files : list of Path
        The input files matched by the globs, sorted.

    Raises
    ------
    FileNotFoundError
        The recipe is missing, or a glob matches no file.
    ValueError
        Invalid YAML or settings (pydantic's message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping with at least 'input' and 'store'")
    recipe = Recipe.model_validate(raw)
    base = path.resolve().parent

    def resolve(p):
        return None if p is None else str((base / p).resolve())

    files = []
    for pattern in recipe.input.files:
        matched = sorted(glob.glob(str(base / pattern)))
        if not matched:
            raise FileNotFoundError(f"{path}: input pattern {pattern!r} matches no file")
        files.extend(Path(m) for m in matched)
    def resolve_file_path(v):      # "FILE[:path]"; ":path" (inside the first raw file) stays as it is
        if v is None or v.startswith(":"):
            return v
        name, sep, inner = v.partition(":")
        return resolve(name) + sep + inner

    inp = recipe.input.model_copy(update={"spec": resolve(recipe.input.spec),
                                          **{k: resolve_file_path(getattr(recipe.input, k))
                                             for k in ("dark", "flat", "mask")}})
    if inp.tilts is not None:  # 3D ED tilt series: the table's angles go where ingest takes them
        from .ed3d.tilts import read_tilts_csv  # noqa: PLC0415

        angles = read_tilts_csv(resolve(inp.tilts), files)
        inp = inp.model_copy(update={"tilts": resolve(inp.tilts),
                                     "calibration": {**(inp.calibration or {}), "tilt_angles_rad": angles}})
    if recipe.ed3d is not None:
        recipe = recipe.model_copy(update={"ed3d": {**recipe.ed3d, "output": resolve(recipe.ed3d["output"])}})
    recipe = recipe.model_copy(update={"store": resolve(recipe.store), "figures": resolve(recipe.figures),
                                       "report": resolve(recipe.report), "truth": resolve(recipe.truth),
                                       "input": inp})
    return recipe, files
