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
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .io import layout
from .ptycho.options import PtychoOptions, options_from_section
from .spectro.options import SpectroSpec
from .tomo.options import TomoOptions

__all__ = ["Recipe", "load_recipe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """Raw files and how to read them: the options of ``ptyhpc ingest`` (``format`` is its ``--format``;
    the rest are the keywords of :func:`ptyhpc.io.readers.ingest_files`). Paths are relative to the
    recipe."""

    files: list[str] = Field(min_length=1)  # raw files or globs, relative to the recipe
    format: str = "auto"  # auto | hdf5-tilt | cxi | nexus | generic (auto: from the first file's content)
    kind: str = "auto"  # hdf5-tilt files: auto | tilt_series | energy_stack
    spec: Optional[str] = None  # YAML of dataset paths for format generic (docs/readers.md)
    dark: Optional[str] = None  # FILE[:path] of dark frames; their mean is subtracted (clipped at 0)
    flat: Optional[str] = None  # FILE[:path] of flat-field frames (per-pixel gain)
    mask: Optional[str] = None  # FILE[:path] of a bad-pixel mask
    mask_bad: Optional[str] = None  # nonzero | zero: the mask values that flag bad pixels (default nonzero)
    radiation: Optional[str] = None  # xray | electron, for NeXus files without NXsource/probe
    probe_semiangle_rad: Optional[float] = None  # probe convergence semi-angle, rad (model initial probe)
    defocus_m: Optional[float] = None  # probe defocus, m (sample downstream of the focus)
    regime: Optional[str] = None  # far_field | near_field (no file format says it; default far_field)
    focus_to_sample_m: Optional[float] = None  # near field, divergent beam: focus-to-sample distance z1, m
    calibration: Optional[dict] = None  # 4D-STEM formats (mib|arina|empad): keys of ptyhpc.stem.calibration
    zone_plate: Optional[dict] = None  # X-rays: outer_diameter_m, outer_zone_width_m[, central_stop_diameter_m]
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


#: The ``tomo:`` section's model under its original name.
TomoSpec = TomoOptions


class Recipe(_Strict):
    input: InputSpec  # raw files and how to read them (below)
    store: str  # the zarr store to write, relative to the recipe
    figures: Optional[str] = None  # PNG folder (default: where the store's figures are, else STORE_figures)
    report: Optional[str] = None  # text report (default: STORE_report.txt next to the store)
    overwrite: bool = False  # re-ingest into an existing store (else the run resumes)
    cluster: dict = Field(default_factory=dict)  # where the tasks run (below); command-line flags override it
    ptycho: dict = Field(default_factory=dict)  # settings (below; flat or grouped), defaults of `ptyhpc reconstruct`
    tomo: TomoOptions = TomoOptions()  # tomography settings (below)
    spectro: Optional[SpectroSpec] = None  # energy stacks: ptyhpc.spectro (paths relative to the recipe)
    stem: Optional[dict] = None  # 4D-STEM stage settings (ptyhpc.stem.stage.StemOptions); runs stage "stem"
    ed3d: Optional[dict] = None  # 3D ED stage: output (folder) + ptyhpc.ed3d.stage.ED3DOptions; runs stage "ed3d"
    truth: Optional[str] = None  # folder with a simulation's ground truth: adds figures of merit to the report

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

    #: The ``ptycho`` section as options, made on first use (the section was checked on loading).
    _ptycho_options: Optional[PtychoOptions] = PrivateAttr(default=None)

    @field_validator("ptycho")
    @classmethod
    def _check_ptycho(cls, v):
        options_from_section(v)  # raises naming ptycho.KEY; the section stays as written (flat or grouped)
        return v

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, v):
        from .cluster import ClusterConfig  # noqa: PLC0415

        ClusterConfig.model_validate({k: x for k, x in v.items() if x is not None})  # names a bad key
        return v

    def ptycho_params(self) -> PtychoOptions:
        """The ``ptycho`` section as :class:`~ptyhpc.ptycho.options.PtychoOptions` (groups merged), validated."""
        if self._ptycho_options is None:
            # The recipe's keys become the options' user_set (the data-driven defaults leave them alone).
            self._ptycho_options = options_from_section(self.ptycho)
        return self._ptycho_options

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
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(recipe_error_text(path, exc)) from None
    base = path.resolve().parent

    def resolve(p):
        return None if p is None else str((base / p).resolve())

    files = []
    for pattern in recipe.input.files:
        matched = sorted(glob.glob(str(base / pattern)))
        if not matched:
            raise FileNotFoundError(f"{path}: input.files: {pattern!r} matches no file (paths in a recipe are "
                                    f"relative to the recipe's folder, {base})")
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
                                       "input": inp,
                                       "spectro": recipe.spectro and recipe.spectro.resolved(base)})
    return recipe, files


def _model_at(loc) -> type[BaseModel] | None:
    """The option model that holds the key at ``loc`` (a pydantic error location), or None."""
    model = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def recipe_error_text(path, exc: ValidationError) -> str:
    """Pydantic's validation errors of a recipe as plain lines naming the file and each key.

    ``recipe.yaml: ptycho.n_itre: unknown setting ...`` rather than pydantic's text and URL.
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if p != "__root__"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        msg = msg.replace("Input should be", "should be")
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            known = f" (known keys here: {', '.join(model.model_fields)})" if model is not None else ""
            lines.append(f"{key}: unknown key{known}")
        elif kind == "missing":
            lines.append(f"{key}: missing (this key is required)")
        elif msg.startswith(f"{key}."):
            lines.extend(msg.split("; "))   # a section checked by its own model names each key itself
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{key}: {msg}{shown}")
    where = "settings" if len(lines) == 1 else f"{len(lines)} settings"
    return f"recipe {path}: bad {where}:\n  " + "\n  ".join(lines) + \
        "\n(every recipe key, its type and default: docs/recipes.md)"
