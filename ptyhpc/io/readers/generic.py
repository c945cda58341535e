"""Reader ``generic``: any HDF5 file with a user spec of dataset paths (:mod:`ptyhpc.io.generic`).

Never chosen by sniffing: ``--spec`` chooses it (``auto`` with a spec is ``generic``).
"""

from __future__ import annotations

from os import PathLike

from ..errors import IngestError
from ..generic import Quantity, load_spec, read_generic_scan
from ..scan import Scan
from .options import ReadOptions
from .scans import ingest_read_scans

__all__ = ["NAME", "REFUSED", "sniff", "read", "ingest", "resolved_spec"]

NAME = "generic"
REFUSED = ()


def sniff(path) -> bool:
    """Always False: a layout without a spec cannot be recognised."""
    return False


def resolved_spec(options: ReadOptions):
    """The spec as a :class:`~ptyhpc.io.generic.GenericSpec`, with the command line's regime and focus distance."""
    if options.spec is None:
        raise IngestError("--format generic needs --spec FILE.yaml (the dataset paths)")
    if options.radiation is not None:
        raise IngestError("--radiation: give 'radiation' in the generic spec")
    spec = options.spec
    spec = load_spec(spec) if isinstance(spec, (str, PathLike, dict)) else spec
    update = {}
    if options.regime is not None:
        update["regime"] = options.regime
    if options.focus_to_sample_m is not None:
        update["focus_to_sample"] = Quantity(value=options.focus_to_sample_m)
    return spec.model_copy(update=update) if update else spec


def read(path, options: ReadOptions) -> list[Scan]:
    """:func:`ptyhpc.io.generic.read_generic_scan`; the command line's probe options override the spec's."""
    scan = read_generic_scan(path, resolved_spec(options))
    if options.probe_semiangle_rad is not None:
        scan.probe_semiangle_rad = options.probe_semiangle_rad
    if options.defocus_m is not None:
        scan.defocus_m = options.defocus_m
    return [scan]


def ingest(files, store_path, options: ReadOptions, *, overwrite: bool, progress: bool):
    """:func:`~ptyhpc.io.readers.scans.ingest_read_scans` over this reader (the spec resolved once)."""
    import dataclasses  # noqa: PLC0415
    import sys  # noqa: PLC0415

    options = dataclasses.replace(options, spec=resolved_spec(options), regime=None, focus_to_sample_m=None)
    return ingest_read_scans(sys.modules[__name__], files, store_path, options, overwrite=overwrite,
                             progress=progress)
