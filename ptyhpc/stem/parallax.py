"""Tilt-corrected bright field (parallax): per-pixel image shifts, a defocus/aberration fit, a phase image.

Each bright-field (BF) detector pixel k sees the specimen through a beam
tilted by λk; with aberration χ its image is shifted by ∇χ(k)/(2π) (for
defocus, −λ C10 k, C10 = −defocus). The shifts are measured by cross-correlating
each pixel's (low-passed) image with the mean BF image (refined against the
aligned mean), fitted by a linear map s = M k (defocus, two-fold astigmatism
and any residual rotation); the images are moved back by M k and averaged:
the tilt-corrected BF (Yu et al., 2024, arXiv:2309.05250; Varnavides et al.,
py4DSTEM parallax). For a weak-phase object with defocus only, the corrected
average is 2Φ(Q) sin(πλC10|Q|²) in Fourier space; the phase (rad) follows by
a Wiener division by that transfer function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ParallaxResult", "parallax"]


@dataclass
class ParallaxResult:
    """``tcbf`` (scan_y, scan_x) tilt-corrected BF (relative contrast); ``phase`` (rad); ``shift_matrix`` M
    (2×2, m per 1/m: s = M k, (y, x)); ``defocus_m`` = −C10 = trace(M)/(2λ); ``shifts_px`` (n_pix, 2) measured."""

    tcbf: np.ndarray
    phase: np.ndarray
    shift_matrix: np.ndarray
    defocus_m: float
    shifts_px: np.ndarray


def _shift(img, s):
    ny, nx = img.shape[-2:]
    qy = np.fft.fftfreq(ny)[:, None]
    qx = np.fft.fftfreq(nx)[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (qy * s[..., 0, None, None] + qx * s[..., 1, None, None]))).real


def parallax(stack: np.ndarray, k_yx, *, wavelength_m: float, step_m, upsample: int = 20, lowpass_px: float = 1.0,
             wiener: float = 0.1, n_iter: int = 2, group_inv_m: float | None = None) -> ParallaxResult:
    """Tilt-corrected BF and its defocus from the BF-pixel stack.

    Parameters
    ----------
    stack : ndarray (scan_y, scan_x, n_pixels)
        Intensities of the BF pixels (descan removed, e.g. by
        :class:`~ptyhpc.stem.virtual.PixelStack` with ``descan``).
    k_yx : (ndarray, ndarray)
        Scan-frame spatial frequency of each pixel, 1/m.
    wavelength_m : float
    step_m : (float, float)
        Scan step (y, x), m.
    wiener : float
        Regularisation of the division by sin(πλC10|Q|²).
    group_inv_m : float, optional
        Sum the pixels into cells of this size in k (1/m) first: a few counts
        per pixel give unreliable single-pixel correlations.

    Returns
    -------
    ParallaxResult

    Raises
    ------
    ValueError
        Fewer than 3 pixels, or no measurable parallax (the shifts do not
        fit a linear map: in focus there is none, use SSB or iCOM).
    """
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    from .lowdose import lowpass  # noqa: PLC0415

    s = np.asarray(stack, dtype=np.float64)
    k = np.stack([np.asarray(k_yx[0], float), np.asarray(k_yx[1], float)], 1)  # (npix, 2) 1/m
    if group_inv_m:
        cell = np.floor(k / group_inv_m).astype(np.int64)
        _, gid = np.unique(cell, axis=0, return_inverse=True)
        gid = gid.ravel()
        n_g = gid.max() + 1
        s = np.stack([s[..., gid == g].sum(-1) for g in range(n_g)], -1)
        k = np.stack([k[gid == g].mean(0) for g in range(n_g)])
    sy, sx, npix = s.shape
    if npix < 3:
        raise ValueError("parallax needs at least 3 bright-field pixels")
    mean = s.mean(axis=(0, 1))
    imgs = np.moveaxis(s / np.where(mean > 0, mean, 1) - 1, -1, 0)  # (npix, sy, sx) relative contrast
    filt = np.stack([lowpass(im, lowpass_px) for im in imgs])
    step = np.asarray(step_m, float)
    shifts = np.zeros((npix, 2))
    ref = filt.mean(0)
    for _ in range(max(1, n_iter)):
        for j in range(npix):
            r, _, _ = phase_cross_correlation(ref, filt[j], upsample_factor=upsample, normalization=None)
            shifts[j] = -np.asarray(r)
        # Linear fit s (m) = M k; the mean image is the zero-shift reference.
        a = np.c_[k, np.ones(npix)]
        coef, *_ = np.linalg.lstsq(a, shifts * step, rcond=None)
        m_lin = coef[:2].T
        model = (k @ m_lin.T) / step
        ref = _shift(filt, -model).mean(0)
    resid = shifts - ((np.c_[k, np.ones(npix)] @ coef) / step)
    spread = np.abs(shifts - shifts.mean(0)).max()
    if spread < 0.3:
        raise ValueError("no measurable parallax (bright-field pixel images shifted by < 0.3 px): the probe is "
                         "(nearly) in focus; use SSB or iCOM for the phase")
    if np.sqrt((resid**2).mean()) > 0.5 * spread:
        raise ValueError("the bright-field pixel shifts do not follow a linear (defocus/astigmatism) map")
    model = (k @ m_lin.T) / step
    tcbf = _shift(imgs, -model).mean(0)
    # FT over the scan of pixel k's image carries exp(+2πi λ C10 k·Q), i.e. the image moved by s = −λ C10 k.
    c10 = float(-np.trace(m_lin) / (2 * wavelength_m))
    qy = np.fft.fftfreq(sy, step[0])[:, None]
    qx = np.fft.fftfreq(sx, step[1])[None, :]
    ctf = 2 * np.sin(np.pi * wavelength_m * c10 * (qy**2 + qx**2))
    ph = np.fft.ifft2(np.fft.fft2(tcbf) * ctf / (ctf**2 + wiener)).real
    return ParallaxResult(tcbf, ph - ph.mean(), m_lin, -c10, shifts)
