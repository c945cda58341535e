"""The options of an ingest, one record for every reader (the keywords of :func:`ptyhpc.io.readers.ingest_files`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import IngestError

__all__ = ["ReadOptions", "FLAGS"]

#: Command-line spelling of each option, for messages.
FLAGS = {"spec": "--spec", "dark": "--dark", "flat": "--flat", "mask": "--mask", "mask_bad": "--mask-bad",
         "radiation": "--radiation", "probe_semiangle_rad": "--probe-semiangle", "defocus_m": "--defocus",
         "regime": "--regime", "focus_to_sample_m": "--focus-to-sample-m", "zone_plate": "--zone-plate-*",
         "kind": "--kind", "calibration": "--calibration"}


@dataclass
class ReadOptions:
    """What the user said about the raw files; None (``kind``: ``"auto"``) = not given.

    Meanings as in :func:`ptyhpc.io.readers.ingest_files`. A reader refuses the options it cannot honour
    (its ``REFUSED``), so nothing given is silently ignored.
    """

    spec: object = None
    dark: str | None = None
    flat: str | None = None
    mask: str | None = None
    mask_bad: str | None = None
    radiation: str | None = None
    probe_semiangle_rad: float | None = None
    defocus_m: float | None = None
    regime: str | None = None
    focus_to_sample_m: float | None = None
    zone_plate: dict | None = None
    kind: str = "auto"
    calibration: object = None

    def given(self, names) -> list[str]:
        """The flags of ``names`` that were given, in the order of ``names``."""
        return [FLAGS[n] for n in names if getattr(self, n) is not None and not (n == "kind" and self.kind == "auto")]

    def refuse(self, names, why: str) -> None:
        """Raise ``IngestError("<flags>: <why>")`` when any option of ``names`` was given."""
        given = self.given(names)
        if given:
            raise IngestError(f"{', '.join(given)}: {why}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
