"""Array backend: NumPy on CPU, CuPy on GPU, one FFT path for both.

This is the only module that imports CuPy. Engines and operators take an
array module ``xp`` (``numpy`` or ``cupy``) and call the helpers here for
FFTs, host transfer and scatter-add, so the same code runs on both.

FFTs are unitary (``norm="ortho"``) over the last two axes, so the
intensity of a wave is the same in real and reciprocal space
(Parseval); see ``CONVENTIONS.md`` in the project docs.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

__all__ = [
    "get_xp",
    "xp_of",
    "to_host",
    "fft2",
    "ifft2",
    "fftn",
    "ifftn",
    "scatter_add",
    "gpu_available",
]


def gpu_available() -> bool:
    """Return True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: PLC0415  (the one allowed CuPy import site)

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, driver missing ...
        return False


def get_xp(name: str = "auto") -> ModuleType:
    """Return the array module for ``name``.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy"}
        ``"auto"`` picks CuPy when a GPU is usable and NumPy otherwise.
        The environment variable ``PTYHPC_BACKEND`` overrides ``"auto"``.

    Raises
    ------
    ValueError
        Unknown name.
    RuntimeError
        ``"cupy"`` requested but CuPy or a GPU is not available.
    """
    if name == "auto":
        name = os.environ.get("PTYHPC_BACKEND", "auto")
        if name == "auto":
            name = "cupy" if gpu_available() else "numpy"
    if name == "numpy":
        return np
    if name == "cupy":
        if not gpu_available():
            raise RuntimeError("backend 'cupy' requested but CuPy or a CUDA device is not available")
        import cupy  # noqa: PLC0415

        return cupy
    raise ValueError(f"unknown array backend {name!r}; use 'auto', 'numpy' or 'cupy'")


def xp_of(array) -> ModuleType:
    """Array module (numpy or cupy) that owns ``array``."""
    mod = type(array).__module__
    if mod.startswith("cupy"):
        import cupy  # noqa: PLC0415

        return cupy
    return np


def to_host(array) -> np.ndarray:
    """Copy ``array`` to a NumPy array on the host (no copy for NumPy input)."""
    if xp_of(array) is np:
        return np.asarray(array)
    return array.get()


def _fft_module(xp: ModuleType):
    if xp is np:
        import scipy.fft  # noqa: PLC0415  (pocketfft with threads, faster than numpy.fft)

        return scipy.fft
    return xp.fft


def fft2(a, workers: int | None = None, overwrite_x: bool = False):
    """Unitary 2D FFT over the last two axes (zero frequency at index 0).

    Sign convention exp(-2πi k·r), as NumPy and abTEM use. ``overwrite_x=True``
    lets the FFT reuse ``a``'s memory (the result may then be ``a`` itself, and
    ``a``'s contents are undefined afterwards): it saves an allocation per call
    in the engines' inner loops.
    """
    xp = xp_of(a)
    if xp is np:
        return _fft_module(xp).fft2(a, norm="ortho", workers=workers, overwrite_x=overwrite_x)
    return xp.fft.fft2(a, norm="ortho", overwrite_x=overwrite_x)


def ifft2(a, workers: int | None = None, overwrite_x: bool = False):
    """Unitary inverse 2D FFT over the last two axes; inverse of :func:`fft2` (``overwrite_x`` as there)."""
    xp = xp_of(a)
    if xp is np:
        return _fft_module(xp).ifft2(a, norm="ortho", workers=workers, overwrite_x=overwrite_x)
    return xp.fft.ifft2(a, norm="ortho", overwrite_x=overwrite_x)


def fftn(a, axes=(-3, -2, -1), workers: int | None = None):
    """Unitary N-D FFT over ``axes`` (default the last three; zero frequency at index 0).

    Sign convention exp(-2πi k·r), as :func:`fft2`. Used by the 3D Bragg
    forward model (``ptyhpc.bragg``), which also transforms single axes.
    """
    xp = xp_of(a)
    if xp is np:
        return _fft_module(xp).fftn(a, axes=axes, norm="ortho", workers=workers, overwrite_x=False)
    return xp.fft.fftn(a, axes=axes, norm="ortho")


def ifftn(a, axes=(-3, -2, -1), workers: int | None = None):
    """Unitary inverse N-D FFT over ``axes``; inverse of :func:`fftn`."""
    xp = xp_of(a)
    if xp is np:
        return _fft_module(xp).ifftn(a, axes=axes, norm="ortho", workers=workers, overwrite_x=False)
    return xp.fft.ifftn(a, axes=axes, norm="ortho")


def scatter_add(target, flat_index, values) -> None:
    """In place ``target.flat[flat_index] += values`` with repeated indices summed.

    Parameters
    ----------
    target : ndarray, real or complex, C-contiguous
        Array accumulated into (any shape; indexed as flattened).
    flat_index : ndarray of int
        Flat indices into ``target``, any shape.
    values : ndarray
        Same shape as ``flat_index``.

    Notes
    -----
    NumPy uses ``np.add.at`` on 1-D (raveled) real arguments, which NumPy ≥ 1.25
    runs as a tight indexed loop; a complex target gets its real and imaginary
    parts added into its interleaved real view. Per 128² complex64 patch that is
    ~12 µs per part against 68 µs for ``bincount`` on the real and imaginary
    parts, whose float64 object-sized outputs dominate (measured on the 2-core
    development machine; complex or N-d ``add.at`` takes a slow generic path,
    ~1 ms). The sum is accumulated in ``target``'s precision. CuPy uses
    ``cupyx.scatter_add`` (atomic adds).
    """
    xp = xp_of(target)
    idx = flat_index.ravel()
    # reshape, not ravel: a uniformly strided view (e.g. ``w.real`` of a contiguous complex array)
    # stays a view, and add.at reads it in place (12 µs per 128² patch against 16 µs with a copy).
    val = values.reshape(-1)
    if xp is np:
        if not target.flags.c_contiguous:   # reshape would copy and the sum would be lost
            raise ValueError("scatter_add needs a C-contiguous target")
        flat = target.reshape(-1)
        val = val.astype(flat.dtype, copy=False)
        if np.iscomplexobj(flat):
            # Complex add.at has no fast indexed loop (11–15 ms per 8 × 128² patches inside the engine,
            # against 0.5 ms for the real and imaginary parts into the interleaved float view).
            pairs = flat.view(flat.real.dtype)
            idx2 = idx * 2
            np.add.at(pairs, idx2, val.real)
            idx2 += 1
            np.add.at(pairs, idx2, val.imag)
        else:
            np.add.at(flat, idx, val)
        return
    import cupyx  # noqa: PLC0415

    flat = target.reshape(-1)
    if xp.iscomplexobj(flat):
        # CuPy's scatter_add has no complex atomics: add real and imaginary parts into the
        # interleaved float view (checked on an H100 with CuPy 14).
        pairs = flat.view(flat.real.dtype)
        v = val.astype(flat.dtype, copy=False)
        cupyx.scatter_add(pairs, 2 * idx, v.real)
        cupyx.scatter_add(pairs, 2 * idx + 1, v.imag)
    else:
        cupyx.scatter_add(flat, idx, val)
