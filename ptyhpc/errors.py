"""One error path: every exception a command can meet becomes an exit code and one line naming where and why.

Exit codes of every ``ptyhpc`` command (documented in ``docs/reliability.md``):

==== ============================================================================
0    success
1    some items failed (the others are kept; rerun retries them), or an unexpected error
2    bad input or settings: a raw file, a recipe, an option, a store that is not usable
3    the store is locked by another run (or a concurrent ingest)
4    I/O or disk: read-only target, disk full, permission denied, an unreadable file
==== ============================================================================

:func:`describe` maps an exception to ``(exit code, message)``; the CLI prints
the message (escaped, never read as Rich markup) and exits with the code, and
shows the traceback only with ``--debug``.
"""

from __future__ import annotations

import errno

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USER", "EXIT_LOCKED", "EXIT_IO", "describe", "PtyhpcIOError"]

EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_LOCKED, EXIT_IO = 0, 1, 2, 3, 4

# errno values that mean "the disk or the file system", not "your input is wrong".
_DISK = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
         errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EIO: "I/O error"}


class PtyhpcIOError(OSError):
    """An I/O failure on a named file or array (exit code 4); ``where`` is in the message."""


def _os_text(exc: OSError, where=None) -> str:
    what = _DISK.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        text = f"{what} ({exc})" if str(exc) and str(exc) != what else what
        return text if where is None else f"{where}: {text}"
    where = exc.filename
    extra = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
    return f"{where}{extra}: {what}"


def describe(exc: BaseException, where=None) -> tuple[int, str]:
    """Exit code and one-line message for an exception raised by a command.

    Parameters
    ----------
    exc : BaseException
    where : str or path, optional
        The file or store the command works on, named when the error itself
        names none (zarr's write errors carry no file name).

    Returns
    -------
    code : int
        :data:`EXIT_FAILED`, :data:`EXIT_USER`, :data:`EXIT_LOCKED` or :data:`EXIT_IO`.
    message : str
        Plain text (no markup) starting with the file, array or item when known.
    """
    from .io import IngestError, StoreError  # noqa: PLC0415
    from .pipeline.lock import StoreLockedError  # noqa: PLC0415
    from .pipeline.ptycho_stage import ItemsFailedError  # noqa: PLC0415
    from .slurm import SlurmError  # noqa: PLC0415

    if isinstance(exc, StoreLockedError):
        return EXIT_LOCKED, str(exc)
    if isinstance(exc, ItemsFailedError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, MemoryError):
        return EXIT_USER, f"out of memory ({exc or 'allocation failed'}); check the geometry (scan step, pixel size)"
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)):
        return EXIT_IO, str(exc) if isinstance(exc, PtyhpcIOError) else _os_text(exc, where)
    if isinstance(exc, (IngestError, StoreError, ValueError, FileNotFoundError, FileExistsError, ImportError,
                        TimeoutError, KeyError, IndexError, SlurmError)):
        text = str(exc)
        if isinstance(exc, FileNotFoundError) and exc.filename is not None:
            text = f"{exc.filename}: no such file or folder"
        return EXIT_USER, text
    return EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
