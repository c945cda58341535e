"""Detector corrections applied at ingest: dark subtraction, flat/gain, bad-pixel mask.

The raw file keeps the raw counts; the store holds the corrected ones and
records in its ``preprocessing`` attribute what was done (see
:mod:`ptyhpc.io.layout`). Corrections follow the usual practice for
photon-counting and integrating cameras (e.g. the soft X-ray
spectro-ptychography of seed 001: the mean of 25 frames recorded without
X-rays subtracted from every diffraction image):

    I' = max(I − D̄, 0) · G

with D̄ the mean dark frame and G a per-pixel gain (from a flat field,
G = mean(F − D̄) / (F − D̄) over the measured pixels). Pixels outside the
detector mask (gaps, hot or dead pixels) are stored as 0 and flagged False
in ``detector_mask``, so the engines leave them free.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (compression filters facility files use)
import numpy as np

from .validate import IngestError

__all__ = ["DatasetRef", "read_stack", "mean_dark", "gain_from_flat", "read_mask", "correct_frames"]


@dataclass(frozen=True)
class DatasetRef:
    """One HDF5 dataset named on the command line as ``FILE[:path]``.

    Attributes
    ----------
    file : Path
    path : str or None
        Dataset path inside ``file``; None picks the file's only 2D/3D numeric dataset.
    """

    file: Path
    path: str | None = None

    @classmethod
    def parse(cls, text: str | PathLike, default_file: str | PathLike | None = None) -> "DatasetRef":
        """``"FILE"``, ``"FILE:path"``, or ``":path"`` inside ``default_file``.

        A text that exists as a file is taken whole (so file names may contain ``:``).

        Raises
        ------
        IngestError
            The file does not exist; ``":path"`` without a ``default_file``.
        """
        text = str(text)
        if Path(text).is_file():
            return cls(Path(text))
        head, sep, tail = text.rpartition(":")
        if sep and head == "":
            if default_file is None:
                raise IngestError(f"{text}: no file named before ':'")
            return cls(Path(default_file), tail or None)
        if sep and Path(head).is_file():
            return cls(Path(head), tail or None)
        raise IngestError(f"{head if sep else text}: file not found (give FILE or FILE:/path/to/dataset)")

    def __str__(self) -> str:
        return f"{self.file}:{self.path}" if self.path else str(self.file)


def _only_image_dataset(f: h5py.File, file: Path) -> str:
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3)
                 and obj.dtype.kind in "uif" else None)
    if len(found) != 1:
        raise IngestError(f"{file}: {len(found)} 2D/3D numeric datasets ({', '.join(found[:6])}); "
                          "name one as FILE:/path")
    return found[0]


def read_stack(ref: DatasetRef, det_shape: tuple[int, int], what: str) -> tuple[np.ndarray, str]:
    """Frames of ``ref`` as a (k, det_y, det_x) float64 stack.

    Parameters
    ----------
    ref : DatasetRef
    det_shape : (int, int)
        Detector shape the frames must have.
    what : str
        ``"dark"``, ``"flat"`` (for messages).

    Returns
    -------
    stack : ndarray, (k, det_y, det_x) float64
    where : str
        ``"<file>:<path>"`` actually read.

    Raises
    ------
    IngestError
        File or dataset missing, wrong shape, empty, non-finite values.
    """
    if not ref.file.is_file():
        raise IngestError(f"{ref.file}: {what}: file not found")
    if not h5py.is_hdf5(ref.file):
        raise IngestError(f"{ref.file}: {what}: not an HDF5 file")
    with h5py.File(ref.file, "r") as f:
        path = ref.path or _only_image_dataset(f, ref.file)
        ds = f.get(path)
        if not isinstance(ds, h5py.Dataset):
            raise IngestError(f"{ref.file}: {path}: {what}: missing dataset")
        if ds.ndim not in (2, 3, 4) or tuple(ds.shape[-2:]) != tuple(det_shape) or 0 in ds.shape:
            raise IngestError(f"{ref.file}: {path}: {what}: shape {ds.shape}, expected (…, {det_shape[0]}, "
                              f"{det_shape[1]}) like the frames")
        stack = np.asarray(ds[()], dtype=np.float64).reshape(-1, *det_shape)
    bad = ~np.isfinite(stack)
    if bad.any():
        raise IngestError(f"{ref.file}: {path}: {what}: {int(bad.sum())} non-finite value(s)")
    return stack, f"{ref.file.resolve()}:{path}"


def mean_dark(ref: DatasetRef, det_shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Mean dark frame D̄ of a stack of frames recorded without beam.

    Returns
    -------
    dark : ndarray, (det_y, det_x) float64, counts
    info : dict
        ``source`` (file:path), ``n_frames``, ``mean_counts`` (over the frame) for the store attrs.

    Raises
    ------
    IngestError
        See :func:`read_stack`; negative dark values.
    """
    stack, where = read_stack(ref, det_shape, "dark")
    if stack.min() < 0:
        raise IngestError(f"{where}: dark: negative value(s) (minimum {stack.min()})")
    dark = stack.mean(axis=0)
    return dark, {"source": where, "n_frames": int(stack.shape[0]), "mean_counts": float(dark.mean())}


def gain_from_flat(ref: DatasetRef, det_shape: tuple[int, int], dark: np.ndarray | None,
                   measured: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-pixel gain G = mean(F − D̄) / (F − D̄) from a flat field F.

    Pixels whose dark-subtracted flat is ≤ 0 cannot be corrected: they get
    G = 0 and are removed from the mask.

    Returns
    -------
    gain : ndarray, (det_y, det_x) float64, dimensionless (mean 1 over good pixels)
    measured : ndarray, (det_y, det_x) bool
        The mask with the uncorrectable pixels removed.
    info : dict
        ``source``, ``n_frames``, ``n_bad_pixels`` for the store attrs.

    Raises
    ------
    IngestError
        See :func:`read_stack`; no pixel with a positive flat.
    """
    stack, where = read_stack(ref, det_shape, "flat")
    flat = stack.mean(axis=0) - (0.0 if dark is None else dark)
    good = flat > 0
    if measured is not None:
        good &= measured
    if not good.any():
        raise IngestError(f"{where}: flat: no pixel with a positive (dark-subtracted) flat field")
    gain = np.zeros(det_shape)
    gain[good] = flat[good].mean() / flat[good]
    new_measured = good if measured is None else (measured & good)
    n_bad = int(np.count_nonzero(~good) - (0 if measured is None else np.count_nonzero(~measured)))
    return gain, new_measured, {"source": where, "n_frames": int(stack.shape[0]), "n_bad_pixels": n_bad}


def read_mask(ref: DatasetRef, det_shape: tuple[int, int], bad: str = "nonzero") -> tuple[np.ndarray, str]:
    """A detector mask from a file: True where a pixel is measured.

    Parameters
    ----------
    ref : DatasetRef
    det_shape : (int, int)
    bad : {"nonzero", "zero"}
        Which stored values flag a bad pixel: ``"nonzero"`` (NeXus ``pixel_mask``,
        CXI ``mask``: 0 = good) or ``"zero"`` (1 = good).

    Returns
    -------
    measured : ndarray, (det_y, det_x) bool
    where : str

    Raises
    ------
    IngestError
        Missing file/dataset, wrong shape, unknown ``bad``.
    """
    if bad not in ("nonzero", "zero"):
        raise IngestError(f"mask convention must be 'nonzero' or 'zero' (values that flag bad pixels), got {bad!r}")
    stack, where = read_stack(ref, det_shape, "mask")
    if stack.shape[0] != 1:
        raise IngestError(f"{where}: mask: expected one (det_y, det_x) image, got {stack.shape[0]}")
    return (stack[0] == 0) if bad == "nonzero" else (stack[0] != 0), where


def correct_frames(frames: np.ndarray, *, dark: np.ndarray | None = None, gain: np.ndarray | None = None,
                   measured: np.ndarray | None = None, block: int = 64) -> np.ndarray:
    """Apply I' = max(I − D̄, 0) · G and zero the unmeasured pixels, keeping the raw dtype.

    Parameters
    ----------
    frames : ndarray, (n, det_y, det_x), raw dtype
        Validated counts (finite, non-negative on measured pixels).
    dark : ndarray, (det_y, det_x), optional
        Mean dark, counts.
    gain : ndarray, (det_y, det_x), optional
        Multiplicative gain.
    measured : ndarray of bool, (det_y, det_x), optional
        False pixels are set to 0.
    block : int
        Frames corrected at a time (bounds the float64 working memory).

    Returns
    -------
    ndarray, same shape and dtype as ``frames``
        Integer dtypes: the corrected value rounded to the nearest count
        (``numpy.rint``, half to even) and clipped to the dtype's range, so
        the error is at most 0.5 count per pixel; float dtypes keep the
        fraction. Without any correction the input is returned unchanged
        (no copy).
    """
    if dark is None and gain is None and (measured is None or measured.all()):
        return frames
    out = np.empty_like(frames)
    integer = frames.dtype.kind in "iu"
    top = np.iinfo(frames.dtype).max if integer else None
    for s in range(0, frames.shape[0], block):
        x = frames[s:s + block].astype(np.float64)
        if dark is not None:
            x -= dark
            np.maximum(x, 0.0, out=x)
        if gain is not None:
            x *= gain
        if measured is not None:
            x[:, ~measured] = 0.0
        if integer:
            np.rint(x, out=x)
            np.clip(x, 0, top, out=x)
        out[s:s + block] = x.astype(frames.dtype)
    return out
