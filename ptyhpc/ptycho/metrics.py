"""Reconstruction quality against a known object."""

from __future__ import annotations

import numpy as np

__all__ = ["phase_rmse"]


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
