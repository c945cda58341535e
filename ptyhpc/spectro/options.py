"""Settings of the spectro stage, validated once (CLI options and the recipe's ``spectro:`` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SpectroSpec"]


class SpectroSpec(BaseModel):
    """The ``spectro:`` section of a recipe (and the options of ``ptyhpc spectro``).

    ``references`` maps component names (in fit order) to a CSV file
    (``energy_eV,mu_per_m[,delta]``) or ``xraydb:FORMULA:DENSITY_G_CM3``; file
    paths, ``i0_mask`` and ``regions`` are relative to the recipe.
    """

    model_config = ConfigDict(extra="forbid")

    references: dict[str, str] = Field(default_factory=dict)
    i0_mask: Optional[str] = None
    regions: Optional[str] = None
    clusters: int = Field(default=3, ge=0)
    reference_item: Optional[int] = Field(default=None, ge=0)
    lowpass_sigma: float = Field(default=1.0, ge=0)
    phase_weight: float = Field(default=2.0, ge=0)
    beam_diameter_m: Optional[float] = Field(default=None, gt=0)
    density_kg_m3: Optional[float] = Field(default=None, gt=0)
    frc: bool = False                      # FRC of two half-data reconstructions (costs two reconstructions)
    frc_item: Optional[int] = Field(default=None, ge=0)
    frc_engine: str = "lsqml"
    edge_half_length_px: float = Field(default=6.0, gt=1)
    fit_rows: Optional[int] = Field(default=None, ge=1)

    def resolved(self, base: Path) -> "SpectroSpec":
        """A copy with the file paths made absolute against ``base`` (the recipe's folder)."""
        def res(p):
            return None if p is None else str((Path(base) / p).resolve())

        refs = {k: (v if v.startswith("xraydb:") else res(v)) for k, v in self.references.items()}
        return self.model_copy(update={"references": refs, "i0_mask": res(self.i0_mask), "regions": res(self.regions)})

    def run_kwargs(self) -> dict:
        """Keywords of :func:`ptyhpc.spectro.stage.run_spectro`."""
        return self.model_dump()
