"""Low-dose tools: dose in e⁻/Å² and drift correction of image series (seed 003: low-pass, then cross-correlate).

Drift: each image is low-pass filtered ("amplitude filtering": a Gaussian
in Fourier space at ``lowpass_px`` px, which keeps the lattice/particle
contrast and drops the shot noise) and cross-correlated with a reference
(the first image, then the mean of the aligned series, ``n_iter`` times);
the peak is refined by an upsampled DFT around it (Guizar-Sicairos et al.,
Opt. Lett. 33, 156 (2008), through :func:`skimage.registration.phase_cross_correlation`
with plain — not phase-normalised — correlation, which is the robust choice at
a few counts per pixel). Shifts are then smoothed by a fit of ``order`` in frame number
(0: none; 1: linear drift) when the data call for a drift model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dose_e_per_A2", "lowpass", "measure_drift", "shift_image", "drift_corrected_sum"]


def dose_e_per_A2(counts, step_m, counts_per_electron: float = 1.0):
    """Dose per scan position from the counts of its frame: counts / counts_per_electron / (step_y step_x) in Å²."""
    sy, sx = (step_m, step_m) if np.isscalar(step_m) else step_m
    return np.asarray(counts, float) / counts_per_electron / (sy * sx * 1e20)


def lowpass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass of width ``sigma_px`` (real-space σ, px) by FFT (periodic)."""
    ny, nx = image.shape[-2:]
    qy = np.fft.fftfreq(ny)[:, None]
    qx = np.fft.fftfreq(nx)[None, :]
    g = np.exp(-2 * (np.pi * sigma_px) ** 2 * (qy**2 + qx**2))
    return np.fft.ifft2(np.fft.fft2(image) * g).real


def shift_image(image: np.ndarray, shift) -> np.ndarray:
    """``image`` moved by ``shift`` (y, x) px (Fourier shift, periodic): out(r) = image(r − shift)."""
    ny, nx = image.shape
    qy = np.fft.fftfreq(ny)[:, None]
    qx = np.fft.fftfreq(nx)[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2j * np.pi * (qy * shift[0] + qx * shift[1]))).real


def measure_drift(images: np.ndarray, *, lowpass_px: float = 2.0, upsample: int = 50, n_iter: int = 2,
                  order: int = 0, max_shift_px: float | None = None) -> np.ndarray:
    """Shift (y, x) px of every image of a series with respect to image 0.

    Parameters
    ----------
    images : ndarray (n, ny, nx)
    lowpass_px : float
        Gaussian σ (px) of the low-pass before correlating.
    upsample : int
        Sub-pixel precision 1/upsample px.
    n_iter : int
        Rounds of re-referencing to the mean of the aligned series.
    order : int
        0: shifts as measured; ≥ 1: a polynomial in frame number fitted to them (smooth drift).
    max_shift_px : float, optional
        Largest shift between consecutive images considered (px). Crystal images
        correlate equally well at every lattice vector: set it below half the
        lattice period. None: a quarter of the image.

    Returns
    -------
    ndarray (n, 2) float64
        Image k shows the specimen moved by ``shifts[k]``: ``shift_image(images[k], -shifts[k])`` aligns it.
    """
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    imgs = np.asarray(images, dtype=np.float64)
    ny, nx = imgs.shape[-2:]
    filt = np.stack([lowpass(im - im.mean(), lowpass_px) for im in imgs])
    # Coarse: windowed images against image 0 (a Tukey window keeps the content leaving and entering at
    # the edges out, but biases towards zero shift)...
    win = np.outer(_tukey(ny), _tukey(nx))
    shifts = np.zeros((len(imgs), 2))
    limit = min(ny, nx) / 4 if max_shift_px is None else float(max_shift_px)
    qy = np.fft.fftfreq(ny, 1 / ny)[:, None]
    qx = np.fft.fftfreq(nx, 1 / nx)[None, :]
    allowed = np.hypot(qy, qx) <= limit  # lags (px) of the circular cross-correlation within reach
    for k in range(1, len(imgs)):
        # Each image against its predecessor (drift between neighbours is small), peak within max_shift_px.
        xc = np.fft.ifft2(np.fft.fft2(filt[k] * win) * np.conj(np.fft.fft2(filt[k - 1] * win))).real
        iy, ix = np.unravel_index(np.argmax(np.where(allowed, xc, -np.inf)), xc.shape)
        shifts[k] = shifts[k - 1] + (qy[iy, 0], qx[0, ix])
    # ... refined: each image moved back by its shift, its central crop (free of the wrapped-around edge)
    # against the crop of the mean aligned series; the residuals are small, so is the window's bias.
    m = int(np.ceil(np.abs(shifts).max())) + 2
    if 2 * m >= min(ny, nx) // 2:
        m = min(ny, nx) // 4
    cw = np.outer(_tukey(ny - 2 * m), _tukey(nx - 2 * m))
    for _ in range(max(1, n_iter)):
        aligned = np.stack([shift_image(im, -s)[m:ny - m, m:nx - m] for im, s in zip(filt, shifts)])
        ref = aligned.mean(0) * cw
        for k in range(len(imgs)):
            mov = aligned[k] * cw
            # The residual is small: take the correlation peak within 1.5 px (a crystal has others a
            # lattice vector away), then its sub-pixel position by the upsampled DFT.
            lag = _peak_within(ref, mov, 1.5)
            r, _, _ = phase_cross_correlation(ref, shift_image(mov, lag), upsample_factor=upsample,
                                              normalization=None)
            r = np.asarray(r) if np.abs(r).max() <= 1.0 else np.zeros(2)
            shifts[k] -= lag + r
        shifts -= shifts[0]
    if order >= 1 and len(imgs) > order + 1:
        t = np.arange(len(imgs))
        shifts = np.stack([np.polyval(np.polyfit(t, shifts[:, j], order), t) for j in range(2)], 1)
        shifts -= shifts[0]
    return shifts


def _peak_within(ref: np.ndarray, mov: np.ndarray, limit: float) -> np.ndarray:
    """Integer shift (y, x) moving ``mov`` onto ``ref``: the circular cross-correlation peak within ``limit`` px."""
    ny, nx = ref.shape
    xc = np.fft.ifft2(np.fft.fft2(ref) * np.conj(np.fft.fft2(mov))).real
    qy = np.fft.fftfreq(ny, 1 / ny)[:, None]
    qx = np.fft.fftfreq(nx, 1 / nx)[None, :]
    iy, ix = np.unravel_index(np.argmax(np.where(np.hypot(qy, qx) <= limit, xc, -np.inf)), xc.shape)
    return np.array([qy[iy, 0], qx[0, ix]])


def _tukey(n: int, frac: float = 0.25) -> np.ndarray:
    w = np.ones(n)
    m = max(1, int(frac * n / 2))
    ramp = 0.5 * (1 - np.cos(np.pi * np.arange(m) / m))
    w[:m], w[n - m:] = ramp, ramp[::-1]
    return w


def drift_corrected_sum(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Sum of the series aligned to image 0 (Fourier shifts)."""
    return np.sum([shift_image(np.asarray(im, float), -np.asarray(s)) for im, s in zip(images, shifts)], axis=0)
