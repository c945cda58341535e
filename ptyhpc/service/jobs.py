"""A submitted recipe made into a job's recipe: validated by the recipe's own models, its input paths
confined to the data roots, its outputs placed under ``<results_root>/<job id>/``.

Errors are :class:`RecipeRefused` carrying FastAPI-style ``detail`` entries (``loc``, ``msg``,
``type``), so the API answers 422 naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .config import ServiceConfig
from .paths import PathRefused, confine, confine_glob

__all__ = ["RecipeRefused", "check_recipe", "job_recipe", "write_job_files", "job_dir", "OUTPUT_KEYS"]

#: Recipe keys that name outputs: the service sets them (``<results_root>/<job id>/...``).
OUTPUT_KEYS = ("store", "figures", "report")
#: ``input`` keys that name files (``FILE[:path]`` for dark/flat/mask).
_INPUT_FILE_KEYS = ("spec", "dark", "flat", "mask")
_PLACEHOLDER_STORE = "/nonexistent/ptyhpc-service-placeholder.zarr"


class RecipeRefused(ValueError):
    """The recipe cannot run here; ``detail`` lists the fields and why."""

    def __init__(self, detail: list[dict]):
        super().__init__("; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail))
        self.detail = detail


def _err(loc: tuple, msg: str, typ: str = "value_error") -> dict:
    return {"loc": ["body", "recipe", *loc], "msg": msg, "type": typ}


def _file_part(value: str) -> Optional[str]:
    """The file of ``FILE[:path]`` (``None`` for ``:path``, a dataset inside the first raw file)."""
    if value.startswith(":"):
        return None
    return value.split(":", 1)[0]


def _walk_paths(node: Any, loc: tuple, roots, errors: list) -> None:
    """Stage sections may name files too: every absolute path found is confined, and ``..`` refused."""
    if isinstance(node, dict):
        for k, v in node.items():
            _walk_paths(v, (*loc, k), roots, errors)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk_paths(v, (*loc, i), roots, errors)
    elif isinstance(node, str) and "/" in node:
        part = _file_part(node)
        if part is None:
            return
        try:
            if part.startswith("/"):
                confine(part, roots)
            elif ".." in Path(part).parts:
                raise PathRefused(f"{part}: '..' is not allowed in paths")
        except PathRefused as exc:
            errors.append(_err(loc, str(exc), "path_refused"))


def check_recipe(recipe: Any, cfg: ServiceConfig, *, files_from: Optional[Path] = None) -> dict:
    """Validate a submitted recipe mapping; return it ready for :func:`job_recipe`.

    Parameters
    ----------
    recipe : mapping
        What ``ptyhpc run`` takes, without ``store``/``figures``/``report``; input paths absolute
        (or, with ``files_from``, ``input.files`` globs relative to that folder: watch folders).
    cfg : ServiceConfig

    Returns
    -------
    dict
        The recipe with ``input.files`` made absolute.

    Raises
    ------
    RecipeRefused
        Not a mapping, output paths given, invalid settings (pydantic's loc), or paths refused.
    """
    from ..recipe import Recipe  # noqa: PLC0415

    if not isinstance(recipe, dict):
        raise RecipeRefused([_err((), "a recipe is a mapping with at least 'input'", "type_error")])
    errors = [_err((k,), f"output paths are set by the service (results go to {cfg.results_root}/<job id>/); "
                         f"remove '{k}'", "output_refused") for k in OUTPUT_KEYS if k in recipe]
    if errors:
        raise RecipeRefused(errors)
    recipe = json.loads(json.dumps(recipe))  # a plain copy (and refuses what JSON cannot hold)
    try:
        Recipe.model_validate({**recipe, "store": _PLACEHOLDER_STORE})
    except ValidationError as exc:
        raise RecipeRefused([_err(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]) from None
    roots = cfg.data_roots
    inp = recipe["input"]
    if files_from is not None:
        inp["files"] = [str(files_from / f) if not f.startswith("/") else f for f in inp["files"]]
    for i, pattern in enumerate(inp["files"]):
        try:
            confine_glob(pattern, roots)
        except PathRefused as exc:
            errors.append(_err(("input", "files", i), str(exc), "path_refused"))
        except FileNotFoundError as exc:
            errors.append(_err(("input", "files", i), str(exc), "file_not_found"))
    for key in _INPUT_FILE_KEYS:
        value = inp.get(key)
        part = _file_part(value) if isinstance(value, str) else None
        if part is not None:
            try:
                p = confine(part, roots)
                if not p.exists():
                    errors.append(_err(("input", key), f"{part}: no such file", "file_not_found"))
            except PathRefused as exc:
                errors.append(_err(("input", key), str(exc), "path_refused"))
    if recipe.get("truth") is not None:
        try:
            confine(recipe["truth"], roots)
        except PathRefused as exc:
            errors.append(_err(("truth",), str(exc), "path_refused"))
    for key, section in recipe.items():
        if key not in ("input", "truth", "cluster"):
            _walk_paths(section, (key,), roots, errors)
    if errors:
        raise RecipeRefused(errors)
    return recipe


def job_dir(cfg: ServiceConfig, job_id: str) -> Path:
    return cfg.results_root / job_id


def job_recipe(recipe: dict, cfg: ServiceConfig, job_id: str) -> dict:
    """The recipe the job runs: outputs under its folder, the deployment's cluster, never ``overwrite``
    (a resumed run must keep the store it has: finished items are not recomputed)."""
    d = job_dir(cfg, job_id)
    return {**recipe, "store": str(d / "store.zarr"), "figures": str(d / "figures"),
            "report": str(d / "report.txt"), "overwrite": False, "cluster": dict(cfg.cluster)}


def write_job_files(recipe: dict, cfg: ServiceConfig, job_id: str) -> Path:
    """Create ``<results_root>/<job id>/recipe.yaml`` (atomically); returns the folder."""
    d = job_dir(cfg, job_id)
    d.mkdir(parents=True, exist_ok=False)
    tmp = d / ".recipe.yaml.tmp"
    tmp.write_text(yaml.safe_dump(recipe, sort_keys=False))
    os.replace(tmp, d / "recipe.yaml")
    return d
