"""Single-sideband (SSB) ptychography: a non-iterative phase image from the bright-field disk.

For a weak-phase object t ≈ 1 + iφ and probe aperture function A(k) =
Θ(α/λ − |k|) exp(−iχ(k)), the Fourier transform over scan positions of the
intensity at detector frequency k (exp(−2πiQ·r_p) convention) is, for Q ≠ 0,

    G(k, Q) = A(k−Q) A*(k) iΦ(Q) + A(k) A*(k+Q) (iΦ(−Q))*

so on the "trotter" where only the first disk overlaps (|k−Q| ≤ α/λ < |k+Q|)
Φ(Q) = −i G(k,Q) / (A(k−Q) A*(k)), and on the opposite one
(|k+Q| ≤ α/λ < |k−Q|) Φ(Q) = i G(k,Q) / (A(k) A*(k+Q)). Φ(Q) is the mean over
both trotters (Rodenburg et al., Ultramicroscopy 48, 304 (1993); Pennycook
et al., Ultramicroscopy 151, 160 (2015); Yang et al., Ultramicroscopy 151, 232
(2015)). G is normalised by each pixel's mean so φ comes out in rad.
Only the BF-disk pixels are needed: they are gathered per position by the
map-reduce (:class:`~ptyhpc.stem.virtual.PixelStack`), FFT'd over the scan,
and the trotter sums run in blocks of Q (cost O(n_positions · n_BF_pixels)).
"""

from __future__ import annotations

import numpy as np

from .com import to_scan_frame

__all__ = ["bf_pixels", "pixel_frequencies", "ssb_phase"]


def bf_pixels(det_shape, centre, bf_radius_px: float, margin: float = 1.0) -> np.ndarray:
    """Flat indices of the detector pixels within ``bf_radius_px + margin`` of the centre."""
    yy, xx = np.indices(det_shape)
    return np.flatnonzero(np.hypot(yy - centre[0], xx - centre[1]) <= bf_radius_px + margin)


def pixel_frequencies(pixels, det_shape, centre, dk, theta: float, transpose: bool):
    """Scan-frame spatial frequencies (k_y, k_x) (1/m) of flat detector pixels (convention of docs/stem.md)."""
    rows, cols = np.unravel_index(np.asarray(pixels), det_shape)
    dy = (rows - centre[0]) * dk[0]
    dx = (cols - centre[1]) * dk[1]
    return to_scan_frame(dy, dx, theta, transpose)


def ssb_phase(stack: np.ndarray, k_yx, *, wavelength_m: float, semiangle_rad: float, step_m,
              defocus_m: float = 0.0, aberrations: dict | None = None, q_block: int = 256, xp=np) -> np.ndarray:
    """SSB phase from the BF-pixel stack.

    Parameters
    ----------
    stack : ndarray (scan_y, scan_x, n_pixels)
        Intensities of the BF pixels at every position.
    k_yx : (ndarray, ndarray)
        Scan-frame (k_y, k_x) of each pixel, 1/m (:func:`pixel_frequencies`).
    wavelength_m, semiangle_rad : float
    step_m : (float, float)
        Scan step (y, x), m.
    defocus_m : float
        Probe defocus, m (C10 = −defocus, as :func:`ptyhpc.physics.probe.electron_probe`).
    aberrations : dict, optional
        Further coefficients for :func:`ptyhpc.physics.probe.aberration_function`.
    q_block : int
        Spatial frequencies per vectorised block (memory q_block × n_pixels complex).
    xp : module
        numpy or cupy.

    Returns
    -------
    ndarray (scan_y, scan_x) float64, rad (mean 0).
    """
    from ..backend import fft2, ifft2, to_host  # noqa: PLC0415
    from ..physics.probe import aberration_function  # noqa: PLC0415

    sy, sx, npix = stack.shape
    s = xp.asarray(stack, dtype=xp.float32)
    mean = s.mean(axis=(0, 1))
    s = s / xp.where(mean > 0, mean, 1)
    # Unitary FFT × sqrt(N) = plain DFT sum over positions.
    g = fft2(xp.moveaxis(s, -1, 0).astype(xp.complex64)) * np.float32(np.sqrt(sy * sx))
    g = xp.moveaxis(g, 0, -1).reshape(sy * sx, npix)
    ky = xp.asarray(k_yx[0], dtype=xp.float64)
    kx = xp.asarray(k_yx[1], dtype=xp.float64)
    ka = semiangle_rad / wavelength_m
    coeffs = {"C10": -defocus_m, **(aberrations or {})}

    def chi(qy, qx):
        return aberration_function(qy, qx, wavelength_m, **coeffs)

    chi0 = chi(ky, kx)
    qy = xp.asarray(np.fft.fftfreq(sy, step_m[0]))
    qx = xp.asarray(np.fft.fftfreq(sx, step_m[1]))
    qyy, qxx = xp.meshgrid(qy, qx, indexing="ij")
    qyy, qxx = qyy.ravel(), qxx.ravel()
    phi = xp.zeros(sy * sx, dtype=xp.complex128)
    inside = (ky**2 + kx**2) <= ka**2
    for a in range(0, sy * sx, q_block):
        by, bx = qyy[a:a + q_block, None], qxx[a:a + q_block, None]
        km_y, km_x = ky[None] - by, kx[None] - bx
        kp_y, kp_x = ky[None] + by, kx[None] + bx
        in_m = (km_y**2 + km_x**2) <= ka**2
        in_p = (kp_y**2 + kp_x**2) <= ka**2
        plus = inside[None] & in_m & ~in_p
        minus = inside[None] & in_p & ~in_m
        gb = g[a:a + q_block]
        # A(k) = exp(-iχ): divide by A(k−Q)A*(k) = exp(-i(χ(k−Q) − χ(k))).
        ph_p = xp.exp(1j * (chi(km_y, km_x) - chi0[None]))
        ph_m = xp.exp(1j * (chi0[None] - chi(kp_y, kp_x)))
        num = (-1j * (gb * ph_p * plus).sum(1)) + (1j * (gb * ph_m * minus).sum(1))
        cnt = plus.sum(1) + minus.sum(1)
        phi[a:a + q_block] = xp.where(cnt > 0, num / xp.maximum(cnt, 1), 0)
    phi[0] = 0
    out = ifft2(phi.reshape(sy, sx)).real / np.sqrt(sy * sx)
    return to_host(out - out.mean())
