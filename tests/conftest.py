"""Shared fixtures."""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest

#: Attributes of ``entry/instrument`` written by ``make_tilt_files`` (CNT dataset values).
DEFAULT_INSTRUMENT_ATTRS = {
    "beam_energy_eV": 60000.0,
    "convergence_semiangle_mrad": 25.0,
    "nominal_defocus_A": 200.0,
    "detector_sampling_inv_A": np.array([1 / 48, 1 / 48]),
    "scan_origin_A": np.array([10.0, 10.0]),
    "scan_step_A": 1.5,
    "tilt_axis": "y",
    "dose_e_per_A2": 1500.0,
}


def _write_instrument(f, attrs):
    """``entry/instrument`` attributes; a value of None leaves that attribute out."""
    inst = f.create_group("entry/instrument")
    for key, value in attrs.items():
        if value is not None:
            inst.attrs[key] = value


@pytest.fixture
def make_tilt_files(tmp_path):
    """Factory writing small synthetic per-angle HDF5 files in the CNT dataset format.

    ``make(n_angles=3, scan=(4, 4), det=(16, 16), angles_deg=None, dtype=np.uint16,
    counts=None, seed=0, **overrides) -> list[Path]``

    - files ``tilt_000.h5`` ... in a fresh directory under ``tmp_path`` per call,
      in the order of ``angles_deg`` (default ``linspace(-30, 30, n_angles)``);
    - ``counts``: optional array (n_angles, scan_y, scan_x, det_y, det_x) to
      write; default Poisson noise (mean depends on the file index), cast to ``dtype``;
    - ``overrides``: ``entry/instrument`` attributes replacing the defaults in
      :data:`DEFAULT_INSTRUMENT_ATTRS` in every file; ``None`` removes one.
      ``tilt_angle_deg`` may be overridden too (e.g. ``None`` to omit it).
    """
    calls = itertools.count()

    def make(
        n_angles: int = 3,
        scan: tuple[int, int] = (4, 4),
        det: tuple[int, int] = (16, 16),
        angles_deg=None,
        dtype=np.uint16,
        counts=None,
        seed: int = 0,
        **overrides,
    ) -> list[Path]:
        folder = tmp_path / f"raw{next(calls)}"
        folder.mkdir()
        if angles_deg is None:
            angles_deg = np.linspace(-30.0, 30.0, n_angles)
        angles_deg = list(angles_deg)
        n_angles = len(angles_deg)
        rng = np.random.default_rng(seed)
        if counts is None:
            lam = 5.0 + np.arange(n_angles)[:, None, None, None, None]
            counts = rng.poisson(lam, size=(n_angles, *scan, *det)).astype(dtype)
        paths = []
        for k, angle in enumerate(angles_deg):
            path = folder / f"tilt_{k:03d}.h5"
            attrs = {**DEFAULT_INSTRUMENT_ATTRS, "tilt_angle_deg": float(angle), **overrides}
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("entry/data/counts", data=counts[k], chunks=(1, *counts.shape[2:]),
                                      compression="gzip")
                ds.attrs["axes"] = "scan_y, scan_x, ky, kx"
                _write_instrument(f, attrs)
            paths.append(path)
        return paths

    return make


# --- real SLURM (issue 4) -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM (munged, slurmctld, slurmd) on localhost for the session.

    Installs Debian's slurm-wlm and munge when missing (needs root), starts the daemons as our
    children with their own config (2 CPUs, one GPU generic resource with no device behind it),
    sets ``SLURM_CONF`` for this process and its children, and stops the daemons by PID at the end.
    Skips, saying why, only when the daemons cannot be installed or started here.
    """
    import os

    from slurm_local import LocalSlurm, SlurmUnavailable

    root = tmp_path_factory.mktemp("slurm")
    slurm = LocalSlurm(root)
    try:
        slurm.start()
    except SlurmUnavailable as exc:
        slurm.stop()
        pytest.skip(f"no SLURM daemons here: {exc}")
    old = os.environ.get("SLURM_CONF")
    os.environ.update(slurm.env)
    try:
        yield slurm
    finally:
        slurm.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


# --- X-ray energy stacks (issue 4) ----------------------------------------------------------------

#: Geometry of ``make_xray_files`` (SI): soft X-rays near 700 eV, 32-px detector, 6x6 raster.
XRAY_GEOMETRY = {"detector_distance_m": 0.011, "detector_pixel_size_m": (75e-6, 75e-6),
                 "probe_semiangle_rad": 0.04, "defocus_m": 1.2e-6, "scan_origin_m": (0.3e-6, 0.3e-6),
                 "scan_step_m": 24e-9}


def xray_truth(y, x, energy_eV):
    """Transmission of the simulated specimen at scan-frame coordinates (m) and photon energy.

    A disc whose absorption rises across an edge at 704 eV (the spectrum the test recovers) and an
    "L"-shaped bar of constant phase, on a weak smooth background.
    """
    cy, cx = 0.35e-6 + 60e-9, 0.35e-6 + 40e-9
    disc = ((y - cy) ** 2 + (x - cx) ** 2 < (35e-9) ** 2).astype(float)
    bar = (((y > 0.36e-6) & (y < 0.46e-6) & (x > 0.44e-6) & (x < 0.46e-6))
           | ((y > 0.44e-6) & (y < 0.46e-6) & (x > 0.44e-6) & (x < 0.50e-6))).astype(float)
    mu = 0.15 + 0.35 / (1 + np.exp(-(energy_eV - 704.0) / 1.5))  # absorption of the disc across the edge
    phase = 0.6 * bar + 0.3 * disc + 0.05 * np.sin(y / 40e-9) * np.cos(x / 55e-9)
    return (np.exp(-mu * disc) * np.exp(1j * phase)).astype(np.complex64)


@pytest.fixture
def make_xray_files(tmp_path):
    """Factory writing simulated per-energy X-ray HDF5 files (format of :mod:`ptyhpc.io.energy`).

    ``make(items=((700, "C+"), (704, "C+"), (708, "C+")), photons=2e5, seed=0, true_defocus_m=None,
    **overrides) -> list[Path]``
    Each item is simulated on its own pixel λz/(N p) from :func:`xray_truth`, with the
    pupil + defocus probe of the geometry and Poisson noise (``photons`` per pattern; None: none).
    ``true_defocus_m`` simulates another defocus than the files state (a probe the model misses).
    ``overrides`` replace ``entry/instrument`` attributes (``None`` removes one).
    """
    import itertools

    from ptyhpc import backend
    from ptyhpc.io.energy import photon_wavelength
    from ptyhpc.physics import electron_probe
    from ptyhpc.ptycho import operators as ops

    calls = itertools.count()
    g = XRAY_GEOMETRY
    n_det, scan = 32, (6, 6)

    def make(items=((700.0, "C+"), (704.0, "C+"), (708.0, "C+")), photons=2e5, seed=0, true_defocus_m=None,
             **overrides):
        folder = tmp_path / f"xray{next(calls)}"
        folder.mkdir()
        rng = np.random.default_rng(seed)
        i, j = np.indices(scan, dtype=np.float64)
        pos = np.stack([i.ravel(), j.ravel()], 1) * g["scan_step_m"] + np.asarray(g["scan_origin_m"])
        paths = []
        for k, (energy, pol) in enumerate(items):
            lam = photon_wavelength(energy)
            px = lam * g["detector_distance_m"] / (n_det * g["detector_pixel_size_m"][0])
            geom = ops.ScanGeometry.from_positions(pos, (n_det, n_det), (px, px))
            yy = geom.origin_m[0] + np.arange(geom.object_shape[0])[:, None] * px
            xx = geom.origin_m[1] + np.arange(geom.object_shape[1])[None, :] * px
            obj = xray_truth(yy, xx, energy)
            probe = electron_probe((n_det, n_det), (px, px), lam, g["probe_semiangle_rad"],
                                   defocus=true_defocus_m or g["defocus_m"], intensity=photons or 1.0)
            probes = ops.shifted_probes(backend.fft2(probe), ops.shift_ramps(geom.frac, (n_det, n_det)))
            psi_k = backend.fft2(ops.exit_waves(obj, probes, geom.flat_index(np.arange(len(pos)))))
            counts = np.fft.fftshift(np.abs(psi_k) ** 2, axes=(-2, -1))
            counts = rng.poisson(counts).astype(np.uint32) if photons else counts.astype(np.float32)
            attrs = {**g, "photon_energy_eV": float(energy), "polarisation": pol, **overrides}
            path = folder / f"energy_{k:03d}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("entry/data/counts", data=counts.reshape(*scan, n_det, n_det))
                _write_instrument(f, attrs)
            paths.append(path)
        return paths

    return make


# --- small CNT stores with reference results (issue 4) --------------------------------------------

@pytest.fixture(scope="session")
def cnt3(tmp_path_factory):
    """Three CNT angles (−30°, 0°, 30°): ``(clean_store, reference_results)``.

    ``clean_store`` is an ingested store without results (copy it before use);
    ``reference_results`` are those of an undisturbed in-process run with ``FAST``.
    """
    import shutil

    from _cnt import FAST, cnt_files, results

    from ptyhpc.io import ingest
    from ptyhpc.pipeline.ptycho_stage import run_ptycho

    base = tmp_path_factory.mktemp("cnt3")
    clean = ingest(cnt_files([6, 12, 18]), base / "clean.zarr", progress=False)
    ref = base / "ref.zarr"
    shutil.copytree(clean, ref)
    run_ptycho(ref, FAST, progress=False)
    return clean, results(ref)
