"""The starting probe of an X-ray far-field item: from the optics, or estimated from the data.

Order (first that applies), for stores whose ``defocus_convention`` is
``"xray"`` (:mod:`ptyhpc.physics.xray_optics`; older stores keep their
electron-sign model probe):

1. zone plate recorded at ingest (``probe_optics``) and ``geometry.defocus_m``:
   the zone-plate probe at that defocus;
2. a convergence semi-angle and defocus: a circular pupil at that defocus;
3. otherwise the pupil (outer and inner radius of the bright annulus) is read
   from the mean diffraction pattern, and the defocus, when not given, is
   chosen among a few candidates (focused, and beam diameters from 1.5 scan
   steps to 0.6 of the window) by a short trial reconstruction of each on the item's own
   data, keeping the lowest data error. A flat-phase start (a focused beam)
   does not converge for a 1 µm defocused spot (data error 0.0024 → 0.0022,
   issue 16); the trial picks a defocus within a factor ~1.3 of the truth.
"""

from __future__ import annotations

import numpy as np

from ..physics.xray_optics import ZonePlate, defocus_convention, xray_probe

__all__ = ["pupil_from_mean_pattern", "xray_start_probe", "choose_defocus"]


def pupil_from_mean_pattern(frames, reciprocal_sampling_inv_m, wavelength_m) -> tuple[float, float]:
    """Outer and inner semi-angle of the bright-field annulus of the mean far-field pattern.

    Parameters
    ----------
    frames : (n, det_y, det_x) counts, centred patterns
    reciprocal_sampling_inv_m : (float, float)
        1/m per detector pixel.
    wavelength_m : float

    Returns
    -------
    (outer, inner) : float
        rad; ``inner`` 0 when the centre is bright (no central stop). Radii at half the annulus's
        brightness (90th percentile of the radial profile inside the disc).
    """
    mean = np.asarray(frames, dtype=np.float64).mean(axis=0)
    ny, nx = mean.shape
    y, x = np.indices(mean.shape)
    dk = np.asarray(reciprocal_sampling_inv_m, float)
    r = np.hypot((y - ny // 2) * dk[0], (x - nx // 2) * dk[1])
    step = float(dk.min())
    bins = np.minimum((r / step).astype(int), int(r.max() / step))
    prof = np.bincount(bins.ravel(), mean.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    level = 0.5 * np.percentile(prof, 90)
    bright = np.nonzero(prof >= level)[0]
    outer = (bright.max() + 0.5) * step
    inner = bright.min() * step if bright.min() > 1 else 0.0
    return float(outer * wavelength_m), float(inner * wavelength_m)


def _annular_probe(shape, sampling, wavelength, outer, inner, defocus, intensity, xp):
    """Annular-pupil probe of semi-angles (outer, inner) at ``defocus`` (sample downstream of the focus)."""
    # A zone plate of NA = outer with a stop: Δr = λ/(2 outer); D/d = outer/inner (any D works: f scales).
    zp = ZonePlate(1e-4, wavelength / (2 * outer), 1e-4 * inner / outer)
    return xray_probe(shape, sampling, wavelength, defocus_m=defocus, optics=zp, intensity=intensity, xp=xp)


def choose_defocus(frames, positions_m, make_probe, candidates, *, pixel_size_m, fft_shape, origin_m,
                   object_shape, mask=None, n_iter: int = 12, max_positions: int = 192, xp=np) -> tuple[float, dict]:
    """The candidate defocus whose probe reconstructs the data best after a few iterations.

    Parameters
    ----------
    frames : (n, det_y, det_x)
    positions_m : (n, 2)
    make_probe : callable
        defocus (m) -> probe on ``fft_shape``.
    candidates : sequence of float
        m.
    pixel_size_m, fft_shape, origin_m, object_shape :
        The item's object grid.
    n_iter : int
        rPIE iterations per trial (probe update from iteration 2).
    max_positions : int
        Trials use at most this many positions (those nearest the scan centre).

    Returns
    -------
    (float, dict)
        Chosen defocus (m) and ``{defocus: final data error}`` of every trial.
    """
    from .engines import reconstruct  # noqa: PLC0415

    pos = np.asarray(positions_m, float)
    keep = np.argsort(np.hypot(*(pos - np.median(pos, 0)).T))[:max_positions]
    errors = {}
    for dz in candidates:
        res = reconstruct(frames[keep], pos[keep], make_probe(dz), pixel_size_m, engine="rpie", n_iter=n_iter,
                          probe_update_start=2, mask=mask, origin_m=origin_m, object_shape=object_shape,
                          fft_shape=fft_shape, xp=xp)
        errors[float(dz)] = float(res.error[-1])
    best = min(errors, key=errors.get)
    return best, errors


def xray_start_probe(attrs, geom: dict, grid, intensity: float, frames, positions_m, xp=np, mask=None):
    """Starting probe of an X-ray far-field item, or None when the store is not of the X-ray convention.

    Parameters
    ----------
    attrs : mapping
        The store's root attributes (``radiation``, ``defocus_convention``, ``probe_optics``).
    geom : dict
        The item's geometry (:func:`ptyhpc.io.energy.item_geometry`).
    grid : ObjectGrid
        The item's object grid.
    intensity : float
        Mean counts per pattern (Σ|P|² of the result).
    frames, positions_m :
        The item's data (for the estimate when the optics or defocus are unknown).

    Returns
    -------
    ndarray (Ny, Nx) complex64 or None
        None: not an X-ray store of the ``"xray"`` convention (the caller keeps its own start).
    """
    if attrs.get("radiation") != "xray" or defocus_convention(attrs) != "xray":
        return None
    lam = geom["wavelength_m"]
    shape, px = tuple(grid.fft_shape), tuple(grid.pixel_size_m)
    optics = attrs.get("probe_optics")
    if optics:
        zp = ZonePlate.from_dict(optics)
        outer, inner = zp.numerical_aperture(lam), zp.numerical_aperture(lam) * zp.central_stop_diameter_m / \
            zp.outer_diameter_m

        def make(dz):
            return xray_probe(shape, px, lam, defocus_m=dz, optics=zp, intensity=intensity, xp=np)
    elif geom.get("convergence_semiangle_rad"):
        outer, inner = float(geom["convergence_semiangle_rad"]), 0.0

        def make(dz):
            return xray_probe(shape, px, lam, defocus_m=dz, semiangle_rad=outer, intensity=intensity, xp=np)
    else:
        outer, inner = pupil_from_mean_pattern(frames, geom["reciprocal_sampling_inv_m"], lam)

        def make(dz):
            return _annular_probe(shape, px, lam, outer, inner, dz, intensity, np)
    dz = geom.get("defocus_m")
    if dz is None:
        from ..io.scan import estimate_scan_step  # noqa: PLC0415

        step = estimate_scan_step(np.asarray(positions_m, float))
        window = min(shape[0] * px[0], shape[1] * px[1])
        lo, hi = max(1.5 * step, 4 * max(px)), 0.6 * window
        diam = np.geomspace(lo, max(hi, lo * 1.01), 8)
        # A focused beam (Δz = 0) is a candidate too: the estimate must not defocus a focused scan.
        dz, _ = choose_defocus(frames, positions_m, make, [0.0, *(diam / (2 * outer))], pixel_size_m=px,
                               fft_shape=shape, origin_m=grid.origin_m, object_shape=grid.object_shape, mask=mask,
                               xp=xp)
    return xp.asarray(make(float(dz)))
