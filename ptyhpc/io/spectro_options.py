"""Command-line options of X-ray optics, checked once for ``ptyhpc ingest`` and recipes."""

from __future__ import annotations

from .validate import IngestError

__all__ = ["zone_plate_option"]


def zone_plate_option(diameter: float | None, outer_zone_width: float | None, stop: float | None) -> dict:
    """``{"zone_plate": {...}}`` for :func:`ptyhpc.io.readers.ingest_files`, or ``{}`` when none is given.

    Raises
    ------
    IngestError
        Only part of the zone plate given (diameter and outer zone width are both needed).
    """
    if diameter is None and outer_zone_width is None and stop is None:
        return {}
    if diameter is None or outer_zone_width is None:
        raise IngestError("--zone-plate-diameter and --outer-zone-width go together (the focal length is "
                          "D*dr/lambda); --central-stop-diameter is optional")
    return {"zone_plate": {"outer_diameter_m": diameter, "outer_zone_width_m": outer_zone_width,
                           "central_stop_diameter_m": stop or 0.0}}
