"""Confinement of user-given paths to the deployment's data roots.

A path is accepted when it is absolute, has no ``..`` component, and resolves (symlinks followed)
inside one of the data roots (also resolved). Globs are checked twice: the fixed part before the
first wildcard, and every file they match.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path, PurePosixPath
from typing import Sequence

__all__ = ["PathRefused", "confine", "confine_glob"]

_WILD = set("*?[")


class PathRefused(ValueError):
    """A path outside the data roots, relative, or with ``..``; the message says which."""


def _roots(roots: Sequence[os.PathLike | str]) -> list[Path]:
    return [Path(r).resolve() for r in roots]


def _check_form(path: str) -> PurePosixPath:
    if not isinstance(path, str) or not path:
        raise PathRefused("a path must be a non-empty string")
    if "\x00" in path:
        raise PathRefused(f"{path!r}: NUL in path")
    p = PurePosixPath(path)
    if not p.is_absolute():
        raise PathRefused(f"{path}: input paths must be absolute")
    if ".." in p.parts:
        raise PathRefused(f"{path}: '..' is not allowed in paths")
    return p


def _inside(resolved: Path, roots: list[Path]) -> bool:
    return any(resolved == r or resolved.is_relative_to(r) for r in roots)


def confine(path: str, roots: Sequence[os.PathLike | str]) -> Path:
    """The resolved path, if ``path`` lies inside a data root.

    Raises
    ------
    PathRefused
        Relative, with ``..``, or resolving (after symlinks) outside every root.
    """
    _check_form(path)
    resolved = Path(path).resolve()
    if not _inside(resolved, _roots(roots)):
        raise PathRefused(f"{path}: outside the data roots of this service")
    return resolved


def confine_glob(pattern: str, roots: Sequence[os.PathLike | str]) -> list[Path]:
    """Files matched by an absolute glob, each resolved inside a data root (sorted).

    Raises
    ------
    PathRefused
        The pattern or any match lies outside the roots.
    FileNotFoundError
        The pattern matches no file.
    """
    p = _check_form(pattern)
    r = _roots(roots)
    fixed = []
    for part in p.parts:
        if _WILD & set(part):
            break
        fixed.append(part)
    base = Path(*fixed).resolve()
    if not _inside(base, r) and not any(root.is_relative_to(base) for root in r):
        raise PathRefused(f"{pattern}: outside the data roots of this service")
    matched = sorted(glob.glob(pattern))
    if not matched:
        raise FileNotFoundError(f"{pattern}: matches no file")
    out = []
    for m in matched:
        resolved = Path(m).resolve()
        if not _inside(resolved, r):
            raise PathRefused(f"{m}: outside the data roots of this service (symlink?)")
        out.append(resolved)
    return out
