"""The exception every reader and ingest raises for input it cannot take.

Its own module so that readers, checks and writers import it without importing each other.
"""

from __future__ import annotations

__all__ = ["IngestError"]


class IngestError(ValueError):
    """Raw input cannot be ingested; the message names the file and the field."""
