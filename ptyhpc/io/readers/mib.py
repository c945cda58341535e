"""Reader ``mib``: Merlin ``.mib`` files (single or quad chip), one 4D-STEM raster scan each (:mod:`ptyhpc.stem`)."""

from __future__ import annotations

from ..scan import Scan
from . import stem
from .options import ReadOptions

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest"]

NAME = "mib"
REFUSED = stem.REFUSED


def sniff(path) -> bool:
    """The file's content is mib (:func:`ptyhpc.stem.readers.sniff_stem_format`)."""
    from ...stem.readers import sniff_stem_format  # noqa: PLC0415

    return sniff_stem_format(path) == NAME


def read(path, options: ReadOptions) -> list[Scan]:
    """:func:`~ptyhpc.io.readers.stem.read_stem`."""
    return stem.read_stem(NAME, path, options)


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool):
    """:func:`~ptyhpc.io.readers.stem.ingest_stem_files`."""
    return stem.ingest_stem_files(NAME, files, store_path, options, overwrite=overwrite, progress=progress)
