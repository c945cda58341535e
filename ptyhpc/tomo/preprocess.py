"""Projections for tomography from ptychographic objects or X-ray transmission images.

Two channels of a ptychographic object O = exp(iφ − μ) (per projection):

- phase: φ = arg O, after removing the arbitrary global phase, unwrapped
  with scikit-image's ``unwrap_phase`` (Herráez et al. 2002, Appl. Opt. 41,
  7437) where it may wrap; the projected potential σ∫V dz for electrons.
- amplitude: μ = −log |O|, the projected absorption (half the −log of the
  transmitted intensity), positive where matter absorbs.

For absorption tomography (micro-CT, e.g. Data Exchange files) the line
integrals are ``−log((I − dark) / (flat − dark))`` (Beer–Lambert; TomoPy's
``normalize`` + ``minus_log``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["phase_projections", "amplitude_projections", "normalize_flat_dark", "minus_log", "CHANNELS"]

#: Projection channels of a complex object.
CHANNELS = ("phase", "amplitude")


def _check_complex_stack(obj) -> np.ndarray:
    obj = np.asarray(obj)
    if obj.ndim == 2:
        obj = obj[None]
    if obj.ndim != 3:
        raise ValueError(f"object must be (H, W) or (n, H, W), got {obj.shape}")
    if not np.iscomplexobj(obj):
        raise ValueError("object must be complex (the ptychographic transmission function)")
    return obj


def phase_projections(obj, *, unwrap="auto") -> tuple[np.ndarray, list[int]]:
    """Phase of each complex image after removing its global phase, unwrapped where needed.

    Parameters
    ----------
    obj : array_like of complex, shape (n, H, W) or (H, W)
        Ptychographic objects (transmission functions).
    unwrap : {"auto", True, False}
        ``"auto"``: unwrap (``skimage.restoration.unwrap_phase``) only the
        images whose phase comes within 10 % of ±π after centring, i.e. that
        may have wrapped; True: all; False: none.

    Returns
    -------
    phase : ndarray of float32, shape (n, H, W)
        Radians; the global phase (circular mean of the unit phasors) is
        removed first, which keeps weak objects away from ±π.
    unwrapped : list of int
        Indices of the unwrapped images.

    Raises
    ------
    ValueError
        Real input, bad shapes or an unknown ``unwrap``.
    """
    from skimage.restoration import unwrap_phase  # noqa: PLC0415

    if unwrap not in ("auto", True, False):
        raise ValueError(f"unwrap must be 'auto', True or False, got {unwrap!r}")
    obj = _check_complex_stack(obj)
    unit = obj / np.maximum(np.abs(obj), np.finfo(np.float32).tiny)
    # the ptycho phase has an arbitrary offset; centring it keeps weak objects away from ±π
    obj = obj * np.exp(-1j * np.angle(unit.mean(axis=(1, 2))))[:, None, None]
    phase = np.angle(obj).astype(np.float32)
    unwrapped = []
    for i in range(phase.shape[0]):
        if unwrap is True or (unwrap == "auto" and np.abs(phase[i]).max() > 0.9 * np.pi):
            phase[i] = unwrap_phase(phase[i].astype(np.float64))
            unwrapped.append(i)
    return phase, unwrapped


def amplitude_projections(obj, *, min_amplitude: float = 1e-6) -> np.ndarray:
    """Projected absorption ``−log |O|`` of complex images.

    Parameters
    ----------
    obj : array_like of complex, shape (n, H, W) or (H, W)
    min_amplitude : float
        Amplitudes are clipped here before the logarithm (no infinities
        where the reconstruction is 0).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        ``−log |O|``; an arbitrary amplitude scale of the ptychographic
        reconstruction becomes an offset, removed afterwards with
        :func:`ptyhpc.tomo.remove_offset_ramp` as for the phase.
    """
    obj = _check_complex_stack(obj)
    return (-np.log(np.maximum(np.abs(obj), min_amplitude))).astype(np.float32)


def normalize_flat_dark(data, flat, dark, *, min_denominator: float = 1e-6) -> np.ndarray:
    """Flat/dark-field normalisation ``(data − dark) / (flat − dark)`` (transmission).

    Parameters
    ----------
    data : array_like of float, shape (n_angles, n_rows, n_cols)
        Raw projections (counts).
    flat, dark : array_like of float, shape (n_flat, n_rows, n_cols) or (n_rows, n_cols)
        Open-beam and no-beam images; stacks are averaged (mean) over their
        first axis.
    min_denominator : float
        ``flat − dark`` is clipped here (dead pixels give no division by 0).

    Returns
    -------
    ndarray of float32, shape of ``data``
        Transmission, ≈ 1 in the open beam.

    Raises
    ------
    ValueError
        Shapes that do not match.
    """
    data = np.asarray(data, dtype=np.float32)
    flat = np.asarray(flat, dtype=np.float32)
    dark = np.asarray(dark, dtype=np.float32)
    flat = flat.mean(axis=0) if flat.ndim == 3 else flat
    dark = dark.mean(axis=0) if dark.ndim == 3 else dark
    if data.ndim != 3 or flat.shape != data.shape[1:] or dark.shape != data.shape[1:]:
        raise ValueError(f"data {data.shape}, flat {flat.shape} and dark {dark.shape} do not match: "
                         "expected (n_angles, n_rows, n_cols) and (n_rows, n_cols) images")
    return (data - dark) / np.maximum(flat - dark, np.float32(min_denominator))


def minus_log(transmission, *, min_transmission: float = 1e-6) -> np.ndarray:
    """Line integrals ``−log T`` (Beer–Lambert), T clipped at ``min_transmission``.

    Returns
    -------
    ndarray of float32, shape of ``transmission``
    """
    t = np.asarray(transmission, dtype=np.float32)
    return -np.log(np.maximum(t, np.float32(min_transmission)))
