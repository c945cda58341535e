"""Physics against tabulated values and the conventions in README (signs, focus, Parseval)."""

import numpy as np
import pytest

from ptyhpc import backend
from ptyhpc.physics import (aberration_function, electron_probe, electron_wavelength, far_field,
                            far_field_adjoint, fresnel_propagator, interaction_constant, propagate,
                            transmission_function)


@pytest.mark.parametrize("kv,lam_A,sigma", [
    # Kirkland (2010), Table 2.2 / abTEM's energy2wavelength and energy2sigma.
    (60, 0.048661, 1.1357e-3),
    (200, 0.025079, 7.2884e-4),
    (300, 0.019687, 6.5262e-4),
])
def test_wavelength_and_interaction_constant_tabulated(kv, lam_A, sigma):
    assert electron_wavelength(kv * 1e3) * 1e10 == pytest.approx(lam_A, rel=5e-5)
    assert interaction_constant(kv * 1e3) * 1e-10 == pytest.approx(sigma, rel=5e-4)


def test_wavelength_rejects_bad_energy():
    with pytest.raises(ValueError, match="positive"):
        electron_wavelength(-1.0)


def test_transmission_positive_potential_positive_phase():
    v = np.array([0.0, 100e-10])  # V·m (100 V·Å)
    t = transmission_function(v, 60e3)
    assert t.dtype == np.complex64
    assert np.angle(t[1]) == pytest.approx(interaction_constant(60e3) * 100e-10, rel=1e-6) and np.angle(t[1]) > 0


def test_defocus_convention():
    # χ = πλC10|k|² with C10 = −defocus: a probe of defocus Δf is A·exp(+iπλΔf|k|²).
    lam = electron_wavelength(60e3)
    k = np.array([[0.3e10]])
    chi = aberration_function(k, np.zeros_like(k), lam, C10=-200e-10)
    assert chi[0, 0] == pytest.approx(np.pi * lam * (-200e-10) * 0.3e10**2)


def test_defocused_probe_focuses_after_propagating_by_defocus():
    lam, px, df = electron_wavelength(60e3), 0.25e-10, 100e-10
    p = electron_probe((128, 128), (px, px), lam, 25e-3, defocus=df).astype(np.complex128)
    peak = lambda w: float(np.max(np.abs(w) ** 2))  # noqa: E731
    focused = propagate(p, +df, (px, px), lam)
    wrong = propagate(p, -df, (px, px), lam)
    in_focus = electron_probe((128, 128), (px, px), lam, 25e-3, defocus=0.0)
    assert peak(focused) == pytest.approx(peak(in_focus), rel=1e-3)
    assert peak(focused) > 4 * peak(p) and peak(wrong) < peak(p)
    # centred at (n//2, n//2)
    assert np.unravel_index(np.argmax(np.abs(focused)), focused.shape) == (64, 64)


def test_probe_intensity_and_aperture():
    lam, px = electron_wavelength(60e3), 48e-10 / 128
    p = electron_probe((128, 128), (px, px), lam, 25e-3, defocus=200e-10, intensity=3256.0)
    assert p.dtype == np.complex64
    assert np.sum(np.abs(p) ** 2) == pytest.approx(3256.0, rel=1e-5)
    spec = np.abs(np.fft.fftshift(backend.fft2(p))) ** 2
    ky = np.fft.fftshift(np.fft.fftfreq(128, px))
    kk = np.hypot(ky[:, None], ky[None, :])
    # all intensity inside the aperture α/λ (plus the one-pixel soft edge)
    assert spec[kk > 25e-3 / lam + 2 / (128 * px)].sum() < 1e-6 * spec.sum()
    with pytest.raises(ValueError, match="Nyquist"):
        electron_probe((16, 16), (3e-10, 3e-10), lam, 25e-3)


def test_far_field_adjoint_and_parseval():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))
    y = rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))
    assert np.vdot(far_field(x).ravel(), y.ravel()) == pytest.approx(np.vdot(x.ravel(), far_field_adjoint(y).ravel()))
    assert np.sum(np.abs(far_field(x)) ** 2) == pytest.approx(np.sum(np.abs(x) ** 2))


def test_fresnel_propagator_unitary_and_adjoint_is_back_propagation():
    lam, px = electron_wavelength(60e3), 0.4e-10
    h = fresnel_propagator((32, 32), (px, px), lam, 50e-10, dtype=np.complex128)
    assert np.allclose(np.abs(h), 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    y = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    lhs = np.vdot(propagate(x, 50e-10, (px, px), lam).ravel(), y.ravel())
    rhs = np.vdot(x.ravel(), propagate(y, -50e-10, (px, px), lam).ravel())
    assert lhs == pytest.approx(rhs)


def test_backend_selection():
    assert backend.get_xp("numpy") is np
    with pytest.raises(ValueError, match="unknown"):
        backend.get_xp("jax")
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="cupy"):
            backend.get_xp("cupy")


def test_scatter_add_sums_repeated_indices():
    t = np.zeros(5, np.complex64)
    backend.scatter_add(t, np.array([1, 1, 3]), np.array([1 + 1j, 2, 3j], np.complex64))
    assert np.allclose(t, [0, 3 + 1j, 0, 3j, 0])


def test_zone_plate_probe_focus_and_annular_pupil():
    from ptyhpc.physics import zone_plate_probe

    # Seed 001-like soft X-ray zone plate: 240 µm diameter, 80 µm stop; 700 eV.
    lam, px = 1.771e-9, 20e-9
    D, stop = 240e-6, 80e-6
    f = D * 30e-9 / lam  # focal length of a zone plate with 30 nm outermost zones: f = D·Δr/λ
    focus = zone_plate_probe((128, 128), (px, px), lam, D, f, central_stop_diameter=stop, intensity=100.0)
    off = zone_plate_probe((128, 128), (px, px), lam, D, f, central_stop_diameter=stop, defocus=20e-6)
    assert np.sum(np.abs(focus) ** 2) == pytest.approx(100.0, rel=1e-5)
    assert np.unravel_index(np.argmax(np.abs(focus)), focus.shape) == (64, 64)
    assert np.abs(focus).max() ** 2 > 5 * (np.abs(off).max() ** 2 * 100 / np.sum(np.abs(off) ** 2))
    spec = np.abs(np.fft.fftshift(backend.fft2(focus))) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftshift(np.fft.fftfreq(128, px)), np.fft.fftshift(np.fft.fftfreq(128, px))))
    assert spec[k < 0.9 * stop / (2 * f * lam)].sum() < 1e-8 * spec.sum()   # the central stop is dark
    with pytest.raises(ValueError, match="central_stop"):
        zone_plate_probe((64, 64), (px, px), lam, D, f, central_stop_diameter=2 * D)


def test_probe_from_mean_pattern_far_field_has_measured_spectrum():
    from ptyhpc.ptycho import probe_from_mean_pattern
    from ptyhpc.sim import simulate_scan

    sim = simulate_scan(scan=(3, 3))
    p = probe_from_mean_pattern(sim.frames)
    assert p.shape == sim.probe.shape and p.dtype == np.complex64
    assert np.sum(np.abs(p) ** 2) == pytest.approx(sim.frames.sum(axis=(1, 2)).mean(), rel=1e-4)
    spec = np.fft.fftshift(np.abs(backend.fft2(p)) ** 2)
    assert np.allclose(spec, sim.frames.mean(0), rtol=1e-3, atol=1e-9)
