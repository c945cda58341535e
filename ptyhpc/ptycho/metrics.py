"""Reconstruction quality against a known object."""

from __future__ import annotations

import numpy as np

__all__ = ["phase_rmse", "register_shift", "frc", "frc_resolution", "half_bit_threshold"]


def register_shift(recon, truth, region, upsample=20):
    """Sub-pixel shift (dy, dx) that best aligns ``recon`` to ``truth`` over ``region``.

    Phase cross-correlation (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008)) of the
    offset-removed phases, via scikit-image.
    """
    from skimage.registration import phase_cross_correlation  # noqa: PLC0415

    def prep(o):
        p = np.angle(o) * region
        return p - p[region].mean() * region

    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        # skimage's RMS-error side result needs intensity normalisation we do not use.
        warnings.simplefilter("ignore", UserWarning)
        shift, _, _ = phase_cross_correlation(prep(truth), prep(recon), upsample_factor=upsample,
                                              normalization=None)
    return shift


def phase_rmse(recon, truth, region, *, remove_ramp=True, register=True) -> float:
    """RMS phase error (rad) of ``recon`` against ``truth`` over ``region``.

    With ``register`` the reconstruction is first moved by the sub-pixel
    shift of :func:`register_shift` (a probe retrieved from a wrong start
    may carry the object along by a fraction of a pixel). The phase difference arg(recon · conj(truth)) is taken pixelwise (no
    unwrapping needed for differences below π), then the global offset and,
    with ``remove_ramp``, a least-squares linear ramp a + b·y + c·x (the
    ambiguities of ptychography with probe retrieval) are removed.

    Parameters
    ----------
    recon, truth : (H, W) complex
    region : (H, W) bool
        Pixels compared (e.g. well-illuminated ones).
    """
    if register:
        from scipy import ndimage  # noqa: PLC0415

        shift = register_shift(recon, truth, region)
        recon = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(recon), shift))
    d = np.angle(recon * np.conj(truth))[region]
    # Reference the difference to its circular mean so the offset cannot wrap.
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))
    if remove_ramp:
        yy, xx = np.nonzero(region)
        A = np.stack([np.ones_like(yy), yy, xx], 1).astype(np.float64)
        coef, *_ = np.linalg.lstsq(A, d, rcond=None)
        d = d - A @ coef
    else:
        d = d - d.mean()
    return float(np.sqrt(np.mean(d**2)))


def frc(image_a, image_b, pixel_size_m=1.0, *, n_bins=None):
    """Fourier ring correlation of two images (van Heel & Schatz, J. Struct. Biol. 151, 250 (2005), eq. 2).

    FRC(k) = Re Σ_ring A·B* / √(Σ_ring |A|² · Σ_ring |B|²) over rings of |k|.

    Parameters
    ----------
    image_a, image_b : (H, W) real or complex
        Two independent reconstructions of the same field (e.g. from two
        halves of the data), registered; apodise them beforehand.
    pixel_size_m : float
        m, sets the frequency axis.
    n_bins : int, optional
        Rings; default min(H, W) // 2.

    Returns
    -------
    k : (n_bins,) float
        Ring centres, 1/m, up to the Nyquist frequency.
    frc : (n_bins,) float
    n_pixels : (n_bins,) int
        Pixels per ring (for the half-bit threshold).
    """
    a, b = np.fft.fft2(image_a), np.fft.fft2(image_b)
    H, W = a.shape
    ky = np.fft.fftfreq(H)[:, None]
    kx = np.fft.fftfreq(W)[None, :]
    kr = np.hypot(ky, kx)
    n_bins = n_bins or min(H, W) // 2
    ring = np.minimum((kr / 0.5 * n_bins).astype(int), n_bins)
    keep = ring < n_bins
    num = np.bincount(ring[keep], (a * np.conj(b)).real[keep], n_bins)
    pa = np.bincount(ring[keep], (np.abs(a) ** 2)[keep], n_bins)
    pb = np.bincount(ring[keep], (np.abs(b) ** 2)[keep], n_bins)
    npix = np.bincount(ring[keep], minlength=n_bins)
    k = (np.arange(n_bins) + 0.5) / n_bins * 0.5 / pixel_size_m
    return k, num / np.sqrt(np.maximum(pa * pb, np.finfo(float).tiny)), npix


def half_bit_threshold(n_pixels):
    """Half-bit FRC threshold per ring of ``n_pixels`` pixels (van Heel & Schatz 2005, eq. 17)."""
    n = np.maximum(np.asarray(n_pixels, float), 1)
    return (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n))


def frc_resolution(k, frc_values, n_pixels):
    """Half-period resolution (m): the highest ring at which the FRC is above the half-bit threshold.

    Half-bit threshold of van Heel & Schatz (2005), eq. 17, with n the pixels
    per ring. The highest crossing, not the first: ptychographic phase is
    weakly determined at the lowest frequencies (offsets, ramps), where two
    half-data reconstructions can disagree without limiting the resolution.
    Returns the Nyquist half-period when the FRC never drops below it.
    """
    t = half_bit_threshold(n_pixels)
    above = np.nonzero(frc_values >= t)[0]
    k_cut = k[above[-1]] if len(above) else k[0]
    return float(1.0 / (2.0 * k_cut))
