"""Names and conventions of the ptyhpc zarr v3 store (schema version 1).

Every module that reads or writes the store takes its names from here, so
the layout is written down once. SI units throughout (m, rad, eV); a name
carries its unit where it is not SI.

Store layout
------------
Root group attributes
    ``ptyhpc_schema``      int, :data:`SCHEMA_VERSION`
    ``kind``               ``"tilt_series"`` | ``"energy_stack"`` (``"rocking_curve"`` later). A single
                           scan read from CXI, NeXus NXptycho or generic HDF5 is a one-item store of
                           these kinds: ``energy_stack`` for X-rays, ``tilt_series`` for electrons
                           (see :mod:`ptyhpc.io.scan`); there is no separate single-scan kind.
    ``radiation``          ``"electron"`` | ``"xray"``
    ``geometry``           dict, see :data:`GEOMETRY_KEYS`
    ``source_files``       list of str, one per item, in item order
    ``ingest_complete``    bool, written last by ingest (a store without it is not usable)

Written by the scan readers (:func:`ptyhpc.io.scan.ingest_scans`; CXI, NXptycho, generic HDF5):

    ``source_format``      ``"cxi"`` | ``"nexus"`` | ``"generic"``
    ``source_fields``      list (per item) of dict: the raw field each quantity was read from
    ``detector_distance_m``, ``detector_pixel_size_m`` (y, x)   m
    ``preprocessing``      dict, what ingest did to the counts: ``dark`` (``source`` file:path,
                           ``n_frames``, ``mean_counts``, ``operation``), ``flat`` (``source``,
                           ``n_frames``, ``n_bad_pixels``, ``operation``), ``mask`` (``source``,
                           ``bad_values``), ``mask_from_file`` (field); ``{}`` when nothing was done.
                           Counts are I' = max(I - mean dark, 0) * gain, rounded to the nearest count
                           for integer raw dtypes (the dtype is kept; error <= 0.5 count).
    ``propagation_regime`` ``"far_field"`` | ``"near_field"`` (:data:`REGIMES`): how the sample's exit
                           wave reaches the detector. ``far_field`` (Fraunhofer; ``frames`` are centred
                           diffraction patterns) is the default and what a store without the attribute
                           means (every store written before it existed). ``near_field``: free-space
                           (angular spectrum) propagation over ``detector_distance_m``; ``frames`` are
                           in-line holograms, not shifted. The readers cannot tell from CXI, NXptycho or
                           generic HDF5 metadata; the user states it at ingest (``--regime``).
    ``focus_to_sample_m``  float > 0, m, or None: distance z1 from the focus (point source) of a divergent
                           (cone) beam to the sample, near field only. The ptycho stage then works on the
                           equivalent parallel-beam geometry of the Fresnel scaling theorem
                           (:func:`ptyhpc.physics.fresnel_scaling`): object pixel Δ/M and distance z2/M
                           with M = (z1 + z2)/z1, z2 = ``detector_distance_m``. None (or absent): parallel
                           beam, object pixel = detector pixel. Check both with :func:`check_propagation`.
    ``defocus_convention`` X-ray scans: ``"xray"`` (``defocus_m`` = sample downstream of the focus); absent:
                           the electron sign C10 = −defocus (:mod:`ptyhpc.physics.xray_optics`).
    ``probe_optics``       X-ray zone plate (``outer_diameter_m``, ``outer_zone_width_m``,
                           ``central_stop_diameter_m``) given at ingest, or None.
    ``geometry``           as below; ``convergence_semiangle_rad`` and ``defocus_m`` are None when
                           neither the file nor the user gave them (CXI and NXptycho files do not
                           carry a probe model), ``scan_step_m`` is the median nearest-neighbour
                           distance of the positions.

Arrays
    ``frames``      (n_items, n_positions, det_y, det_x), raw dtype (uint16/uint32/float32),
                    diffraction patterns with zero frequency at (det_y//2, det_x//2) (centred);
                    one shard per item.
    ``positions``   (n_items, n_positions, 2) float64, m, (y, x) probe centres in the scan frame
                    (the frame of the raw files' ``scan_origin``), attribute ``axes = ["y", "x"]``.
    ``tilt_angle``  (n_items,) float64, rad, rotation about the y axis.
    ``detector_mask``  (det_y, det_x) bool, True = measured pixel; False = bad, hot, dead or gap
                    pixel, stored as 0 in ``frames`` and to be left free by the engines
                    (``reconstruct(mask=...)``). Written by the scan readers; absent in stores from
                    older ingests (read it with :func:`ptyhpc.io.store.read_mask`, None then).

Results (``results/<stage>/...``), each with a per-item ``status`` uint8 array
(0 = pending, 1 = done) written *after* the item's data, so a crash never
leaves a result that looks complete and a rerun skips finished items.

    ``results/ptycho/object``  (n_items, H, W) complex64; attributes ``pixel_size_m`` and
                               ``origin_m`` = (y, x) scan-frame position of pixel [0, 0], and
                               ``propagation_regime`` (the regime it was reconstructed with).
    ``results/ptycho`` attributes  ``fft_shape``, ``pixel_size_m``, ``origin_m``, ``propagation_regime``;
                               near field also ``propagator`` (``"angular_spectrum"``),
                               ``propagation_distance_m`` (z2/M, or z2 for a parallel beam),
                               ``magnification`` (M, 1 for a parallel beam) and ``focus_to_sample_m``.
                               Far field: object pixel = 1/(N Δk) = λ z / (N p); near field: the
                               (effective) detector pixel p/M, the same for every item and wavelength.
    ``results/ptycho/probe``   (n_items, Ny, Nx) complex64, real-space probe on the FFT grid (Ny, Nx)
                               (the detector padded to ``results/ptycho`` attribute ``fft_shape``),
                               centred at (Ny//2, Nx//2). With ``n_probe_modes`` m > 1 (mixed-state
                               probe): (n_items, m, Ny, Nx), orthogonal modes strongest first, attributes
                               ``axes = ["item", "mode", "y", "x"]`` and ``n_probe_modes``; the
                               illumination is Σ_m |P_m|². A reader that wants one 2D probe takes
                               ``probe[i]`` when ``ndim == 3`` and ``probe[i, 0]`` (or the incoherent sum
                               of intensities) when ``ndim == 4``.
    ``results/ptycho/positions``  (n_items, n_positions, 2) float64, m, (y, x): the positions each item
                               was reconstructed with (the refined ones when position correction is on,
                               attribute ``refined``); NaN for items not yet done.
    ``results/ptycho/error``   (n_items, n_iter) float32, data error per iteration.
    ``results/ptycho/illumination``  (n_items, H, W) float32, Σ_j |P_j|² on the object grid.
    ``results/ptycho/status``  (n_items,) uint8: 0 pending, 1 done, 2 failed (checked inputs or outputs
                               were unusable, or the item raised).
    ``results/ptycho/failure`` (n_items,) str, one chunk per item: the reason of a failed item, "" otherwise.
    ``results/tomo/sirt``,
    ``results/tomo/fbp``       (ny, nz, nx) float32; attributes ``axes = ["y", "z", "x"]``,
                               ``voxel_size_m``, ``origin_m`` (y, z, x) of voxel [0, 0, 0]
                               (x in the scan frame, z relative to the tilt axis),
                               ``units``: ``"rad/m"`` (phase per unit length),
                               ``rotation_axis_x_m`` (scan-frame x of the tilt axis).
    ``results/tomo/shifts``    (n_items, 2) float64, (y, x) alignment shifts, object pixels.
    ``results/tomo/projections``  (n_items, ny, nx) float32, the aligned projections the volumes were
                               reconstructed from (slab tasks read their rows here).
    ``results/tomo`` attributes ``center_px``, ``rotation_axis_x_m``, ``complete`` (written last).
    ``results/spectro/...``    energy stacks: ``aligned``, ``shifts``, ``optical_density``, ``thickness``,
                               ``residual``, ``xmcd``/``xld``, ... with ``pixel_size_m``, ``origin_m``
                               (and ``energy_eV``); see :mod:`ptyhpc.spectro.stage`. Attribute ``complete``.
    ``results/ptycho_halves/item_{i}``  ``object``, ``illumination`` (2, H, W): two reconstructions of item i
                               from the even and odd scan positions, for the FRC (:mod:`ptyhpc.spectro.halves`).

4D-STEM (:mod:`ptyhpc.stem`; readers for Merlin MIB, EMPAD, DECTRIS ARINA; docs/stem.md)
    A raster 4D scan is one item of kind ``tilt_series``: ``frames[item]`` holds its
    ``scan_y * scan_x`` frames in raster order (x fastest; position p = iy * scan_x + ix),
    detector frames as rosettasciio returns them (not centred: the bright-field disk is
    found from the data). A multi-scan acquisition (a tilt or time series of 4D scans) is
    a multi-item store, all items of one scan shape. ``frames`` chunks are a few MB of
    whole frames (the unit an analysis reads), shards ~128 MB (the unit the ingest writes).

    ``scan_shape``         root attribute [scan_y, scan_x]; its presence marks a 4D-STEM store.
    ``stem``               root attribute dict: ``scan_step_m`` [y, x], ``scan_rotation_rad``
                           (None: not known, found from the CoM), ``detector_transpose`` (None:
                           not known), ``counts_per_electron``, ``dose_e_per_m2`` (per item,
                           from the counts), ``calibration_fields`` (per item, where each value
                           came from). ``geometry`` holds the beam energy, convergence semi-angle,
                           reciprocal sampling (1/m per detector pixel), scan step and item 0's dose.
    ``positions``          (i * step_y, j * step_x) in the scan frame, m.
    ``results/stem/<name>``  (n_items, scan_y, scan_x) float32: ``bf``, ``abf``, ``adf``, ``com_y``,
                           ``com_x`` (detector pixels, detector frame), ``dpc_y``, ``dpc_x`` (beam
                           deflection in the scan frame, rad), ``icom``, ``ssb`` (rad), ``dose``
                           (e/m² per position); ``results/stem/status`` (n_items,) uint8. Attributes
                           of every array: ``pixel_size_m``, ``origin_m``, ``scan_rotation_rad``,
                           ``transpose``, ``detector`` (centre, radii, reciprocal sampling, units).
                           Convention: arrays are (row, col) = (y, x); a scan-frame momentum transfer
                           (k_x, k_y) lands at detector (col, row) = centre + R(scan_rotation_rad)
                           (k_x, k_y)/Δk, R(t) = [[cos t, -sin t], [sin t, cos t]], after the
                           detector transpose (if any) is undone.
"""

import math

SCHEMA_VERSION = 1

FRAMES = "frames"
POSITIONS = "positions"
TILT_ANGLE = "tilt_angle"
DETECTOR_MASK = "detector_mask"

RESULTS = "results"
PTYCHO = "results/ptycho"
PTYCHO_OBJECT = "results/ptycho/object"
PTYCHO_PROBE = "results/ptycho/probe"
PTYCHO_ERROR = "results/ptycho/error"
PTYCHO_STATUS = "results/ptycho/status"
PTYCHO_ILLUMINATION = "results/ptycho/illumination"
PTYCHO_POSITIONS = "results/ptycho/positions"
#: (n_items,) str: why an item failed (status 2); "" otherwise (:mod:`ptyhpc.pipeline.item_status`).
PTYCHO_FAILURE = "results/ptycho/failure"
TOMO = "results/tomo"
TOMO_SIRT = "results/tomo/sirt"
TOMO_FBP = "results/tomo/fbp"
TOMO_SHIFTS = "results/tomo/shifts"
TOMO_PROJECTIONS = "results/tomo/projections"
#: 4D-STEM: root attributes and results group (see the module docstring).
SCAN_SHAPE = "scan_shape"
STEM_ATTRS = "stem"
STEM = "results/stem"
STEM_STATUS = "results/stem/status"

#: Keys of the root ``geometry`` attribute (all SI).
GEOMETRY_KEYS = (
    "beam_energy_eV",             # float, eV
    "wavelength_m",               # float, m (relativistic for electrons)
    "convergence_semiangle_rad",  # float, rad (None: not known, see the scan readers above)
    "defocus_m",                  # float, m; C10 = -defocus (abTEM convention) (None: not known)
    "Cs_m",                       # float, m (C30), 0 when not given
    "reciprocal_sampling_inv_m",  # [dky, dkx], 1/m per detector pixel
    "scan_step_m",                # float, m (nominal)
    "scan_origin_m",              # [y, x], m
    "dose_e_per_m2",              # float or None
)

#: Root attribute: the propagation regime of the scan(s) (absent = :data:`FAR_FIELD`).
PROPAGATION_REGIME = "propagation_regime"
#: Root attribute: focus-to-sample distance z1 of a divergent beam, m (None or absent = parallel beam).
FOCUS_TO_SAMPLE = "focus_to_sample_m"
#: Root attribute: sample-to-detector distance z2, m (written by the scan readers).
DETECTOR_DISTANCE = "detector_distance_m"
FAR_FIELD = "far_field"
NEAR_FIELD = "near_field"
#: Values of :data:`PROPAGATION_REGIME`.
REGIMES = (FAR_FIELD, NEAR_FIELD)


def check_propagation(regime: str | None = None, focus_to_sample_m: float | None = None,
                      detector_distance_m: float | None = None) -> tuple[str, float | None]:
    """Check and normalise the propagation metadata of a scan or store.

    Parameters
    ----------
    regime : {"far_field", "near_field"} or None
        None means ``"far_field"`` (stores written before the attribute existed).
    focus_to_sample_m : float or None
        z1, m; near field only (None: parallel beam).
    detector_distance_m : float or None
        z2, m; required (finite, > 0) for the near field, which propagates over it.

    Returns
    -------
    regime : str
        One of :data:`REGIMES`.
    focus_to_sample_m : float or None

    Raises
    ------
    ValueError
        Unknown regime; a focus distance or detector distance that is not a
        finite number > 0; a focus distance given for the far field (it would
        be ignored, which hides a forgotten ``near_field``); near field without
        a detector distance.
    """
    regime = FAR_FIELD if regime is None else regime
    if regime not in REGIMES:
        raise ValueError(f"{PROPAGATION_REGIME}: unknown regime {regime!r}; use one of {', '.join(REGIMES)}")
    if focus_to_sample_m is not None:
        z1 = _positive(FOCUS_TO_SAMPLE, focus_to_sample_m)
        if regime == FAR_FIELD:
            raise ValueError(f"{FOCUS_TO_SAMPLE} = {z1} m is only used in the near field (Fresnel scaling of a "
                             f"divergent beam); set {PROPAGATION_REGIME} to {NEAR_FIELD!r} (--regime near_field) "
                             "or leave the focus distance out")
        focus_to_sample_m = z1
    if regime == NEAR_FIELD:
        if detector_distance_m is None:
            raise ValueError(f"{PROPAGATION_REGIME} {NEAR_FIELD!r} needs {DETECTOR_DISTANCE} "
                             "(sample-to-detector distance, m)")
        _positive(DETECTOR_DISTANCE, detector_distance_m)
    return regime, focus_to_sample_m


def _positive(name: str, value) -> float:
    """``value`` as a float when it is a finite number > 0 (m); ValueError naming ``name`` otherwise."""
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a distance in m, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: must be a finite distance > 0 (m), got {value!r}")
    return v
