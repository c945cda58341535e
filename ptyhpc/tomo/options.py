"""Options of the tomography stage: one validated model for recipes (``tomo:``), the CLI and :func:`run_tomo`."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .align import CENTER_METHODS
from .preprocess import CHANNELS

__all__ = ["TomoOptions"]

#: Offset/ramp removal methods of the stage (``background``; ``border`` uses ``border_px``).
BACKGROUNDS = ("dark", "robust", "border")


class TomoOptions(BaseModel):
    """Options of the tomography stage (those of `ptyhpc tomo`; every keyword of :func:`ptyhpc.tomo.run_tomo`).

    ``background``
        Offset/ramp removal: ``dark`` (a plane through the darkest 20 % of
        each image: vacuum, for objects that fill most of the field),
        ``robust`` (σ-clipped fit over the whole field, background ≳ 30 % of
        it) or ``border`` (a fit over a frame of ``border_px`` pixels).
    ``center_method``
        :func:`ptyhpc.tomo.find_center` method when ``rotation_axis_x_m`` is
        not given; ``consistency`` suits limited-range (±60°) series, ``auto``
        picks mirror pairs or sharpness when the series covers 180°.

    Raises
    ------
    pydantic.ValidationError
        (a ValueError) A value out of range or an unknown name, naming the key.
    """

    model_config = ConfigDict(extra="forbid")

    n_iter: int = Field(default=100, ge=1)  # SIRT iterations
    nonneg: bool = True  # non-negativity in SIRT
    align: bool = True  # align the projections (vertical, centre of rotation, projection matching)
    projection_match: bool = True  # with align: refine the shifts by projection matching (kept only if it helps)
    align_iter: int = Field(default=10, ge=1)  # maximum projection-matching iterations
    max_shift_px: Optional[float] = Field(default=None, gt=0)  # alignment shift limit, object px (null: field/4)
    center_method: str = "consistency"  # consistency | auto | mirror | sharpness | com
    rotation_axis_x_m: Optional[float] = None  # scan-frame x of the rotation axis, m (null: estimated)
    channel: str = "phase"  # phase (volume in rad/m) | amplitude (-log |O|, volume in 1/m)
    background: str = "dark"  # offset/ramp removal: dark | robust | border
    border_px: int = Field(default=4, ge=1)  # frame width for background: border, px
    illumination_threshold: float = Field(default=0.1, ge=0, lt=1)  # crop to the box lit above this × max, every item
    filter_name: Optional[str] = "ramp"  # FBP filter (ptyhpc.tomo.FILTERS; null: none)
    slab_size: Optional[int] = Field(default=None, ge=1)  # volume rows per dask task (null: the default slab)

    @field_validator("channel", "center_method", "background", "filter_name")
    @classmethod
    def _known_name(cls, v, info):
        # One check for every option that names a method; the allowed names live with the methods.
        from .fbp import FILTERS  # noqa: PLC0415

        allowed = {"channel": CHANNELS, "center_method": CENTER_METHODS, "background": BACKGROUNDS,
                   "filter_name": FILTERS}[info.field_name]
        if v is not None and v not in allowed:
            raise ValueError(f"must be one of {tuple(allowed)}")
        return v
