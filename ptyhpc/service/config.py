"""``service.yaml``: one deployment's settings, validated once at start-up.

Example::

    host: 127.0.0.1                  # loopback unless a reverse proxy fronts the service
    port: 8770
    data_roots: [/data/beamline]     # input paths must resolve inside one of these
    results_root: /data/ptyhpc-results   # each job writes <results_root>/<job id>/ only
    database_url: null               # default sqlite:///<results_root>/jobs.db; or postgresql+psycopg://...
    cluster: {kind: local, workers: 4}   # the recipe's cluster mapping, for every job
    max_concurrent_jobs: 2
    max_jobs_per_user: 1
    watch:
      - folder: /data/beamline/incoming
        recipe: /data/beamline/recipes/cnt.yaml   # input.files relative to each scan folder
        marker: scan_complete                     # or last_file: "tilt_024.h5"
        user: beamline
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ServiceConfig", "WatchSpec", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WatchSpec(_Strict):
    """A beamline watch folder: each sub-folder is one scan, complete when ``marker`` or ``last_file``
    appears in it; it is then queued as a job of ``user`` with ``recipe`` (a recipe file without
    output paths whose ``input.files`` globs are relative to the scan folder)."""

    folder: Path
    recipe: Path
    marker: Optional[str] = None
    last_file: Optional[str] = None
    user: str = "watch"
    stages: Optional[list[str]] = None
    settle_s: float = Field(default=0.0, ge=0, description="seconds the marker must be older than")

    @model_validator(mode="after")
    def _one_trigger(self):
        if (self.marker is None) == (self.last_file is None):
            raise ValueError("give exactly one of 'marker' or 'last_file'")
        for name in (self.marker, self.last_file):
            if name is not None and ("/" in name or name in ("", ".", "..")):
                raise ValueError(f"{name!r}: a file name inside the scan folder, not a path")
        return self


class ServiceConfig(_Strict):
    """Settings of ``ptyhpc serve`` (see the module docstring for an example)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8770, ge=0, le=65535)
    data_roots: list[Path] = Field(min_length=1)
    results_root: Path
    database_url: Optional[str] = None
    cluster: dict = Field(default_factory=dict)
    max_concurrent_jobs: int = Field(default=2, ge=1)
    max_jobs_per_user: int = Field(default=1, ge=1)
    watch: list[WatchSpec] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="largest request body accepted")
    max_attempts: int = Field(default=3, ge=1, description="runs of a job whose process died before giving up")
    poll_s: float = Field(default=0.5, gt=0, le=60, description="executor and watch-folder poll period")
    cancel_grace_s: float = Field(default=10.0, ge=0, description="SIGTERM to SIGKILL on cancel")
    demo_recipe: Optional[dict] = Field(default=None, description="recipe the dashboard's submit form shows")

    @field_validator("data_roots", "results_root")
    @classmethod
    def _absolute(cls, v):
        for p in (v if isinstance(v, list) else [v]):
            if not p.is_absolute():
                raise ValueError(f"{p}: must be an absolute path")
        return v

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, v):
        from ..cluster import ClusterConfig  # noqa: PLC0415

        ClusterConfig.model_validate({k: x for k, x in v.items() if x is not None})
        return v

    @model_validator(mode="after")
    def _roots(self):
        roots = [r.resolve() for r in self.data_roots]
        for w in self.watch:
            if not any(w.folder.resolve().is_relative_to(r) for r in roots):
                raise ValueError(f"watch folder {w.folder} is outside the data roots")
        return self

    @property
    def db_url(self) -> str:
        """``database_url``, or the SQLite file ``<results_root>/jobs.db``."""
        return self.database_url or f"sqlite:///{self.results_root / 'jobs.db'}"


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate ``service.yaml``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not YAML, or a bad setting (the message names the file and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"service configuration {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a service configuration is a YAML mapping (data_roots, results_root, ...)")
    try:
        return ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None
