"""The engine registry: capability records drive every refusal; LSQ-ML refines positions."""

import dataclasses
import re

import numpy as np
import pytest

from ptyhpc.ptycho import reconstruct
from ptyhpc.ptycho.engines import ENGINES, Capabilities, capabilities, check_supported
from ptyhpc.ptycho.propagators import NearField
from ptyhpc.sim import simulate_scan

SIM = simulate_scan(scan=(2, 2))
DET = SIM.probe.shape

#: Capability field → a reconstruct() keyword that uses it (multislice has none: reconstruct_multislice).
USES = {
    "probe_modes": {"n_probe_modes": 2},
    "position_correction": {"position_correction_start": 0},
    "background": {"background": 1.0},
    "detector_mask": {"mask": np.ones(DET, bool)},
    "near_field": {"propagator": NearField(DET, SIM.pixel_size_m, 1e-10, 2e-6)},
    "probe_support": {"probe_support": np.ones(DET, np.float32)},
    "object_amplitude_bounds": {"object_amplitude_bounds": (0.0, 1.0)},
}


def _refusals():
    """(engine, options, option name) for every combination a capability record refuses."""
    out = []
    for name in ENGINES:
        cap = capabilities(name)
        for fld, kw in USES.items():
            if not getattr(cap, fld):
                out.append((name, kw, next(iter(kw))))
        for mode in ("fourier", "bilinear", "none"):
            if mode not in cap.subpixel_modes:
                out.append((name, {"subpixel": mode}, "subpixel"))
        if "amplitude" not in cap.noise_models:
            out.append((name, {"noise_model": "amplitude"}, "noise_model"))
    return out


def test_registry_records_every_engine():
    assert list(ENGINES) == ["rpie", "epie", "mpie", "lsqml", "er", "dm"]
    assert tuple(ENGINES) == ("rpie", "epie", "mpie", "lsqml", "er", "dm")
    assert repr(ENGINES) == repr(("rpie", "epie", "mpie", "lsqml", "er", "dm"))
    for name, spec in ENGINES.items():
        assert isinstance(spec.capabilities, Capabilities) and spec.name == name
        assert (spec.batch_step is None) != (spec.run is None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.capabilities.probe_modes = True
    # Every capability field but multislice has a reconstruct() keyword that the walk below uses.
    assert {f.name for f in dataclasses.fields(Capabilities)} - set(USES) == {"subpixel_modes", "noise_models",
                                                                             "multislice"}
    assert not any(capabilities(n).multislice for n in ENGINES)   # reconstruct has one slice
    assert capabilities("lsqml").position_correction


@pytest.mark.parametrize("engine,kw,option", _refusals(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_unsupported_combination_is_refused(engine, kw, option):
    pattern = rf"\({option}\)|{option}="
    with pytest.raises(ValueError, match=pattern) as exc:
        check_supported(engine, **kw)
    assert repr(engine) in str(exc.value)
    with pytest.raises(ValueError, match=pattern) as exc:
        reconstruct(SIM.frames, SIM.positions_m, SIM.probe, SIM.pixel_size_m, engine=engine, n_iter=1, **kw)
    assert repr(engine) in str(exc.value)


def test_supported_combinations_pass_and_messages_name_the_engines_that_support_them():
    assert len(_refusals()) >= 12
    for name in ENGINES:
        cap = capabilities(name)
        kw = {k: v for fld, opts in USES.items() if getattr(cap, fld) for k, v in opts.items()}
        check_supported(name, **kw, subpixel=cap.subpixel_modes[-1])
    with pytest.raises(ValueError, match=r"probe modes \(n_probe_modes\) is implemented for rpie, epie, mpie, not "
                                         r"'lsqml'"):
        check_supported("lsqml", n_probe_modes=3)
    check_supported("er", n_probe_modes=1, position_correction_start=None, noise_model="poisson")  # defaults


def test_unknown_engine_lists_the_registered_names():
    msg = re.escape("rpie, epie, mpie, lsqml, er, dm")
    with pytest.raises(ValueError, match=msg):
        check_supported("pie2")
    with pytest.raises(ValueError, match=msg):
        capabilities("pie2")
    with pytest.raises(ValueError, match="unknown subpixel"):
        check_supported("rpie", subpixel="cubic")


def test_lsqml_position_refinement_recovers_one_pixel_errors():
    """±1 px random position errors, LSQ-ML (Poisson) from iteration 5: 0.61 → 0.033 px RMS (measured).

    The shift of each position is the least-squares one that explains LSQ-ML's exit-wave update χ_j
    (Odstrčil et al. 2018, section 4.3); before issue 11 the option was accepted and did nothing.
    """
    sim = simulate_scan(seed=8, scan=(8, 8))
    err_px = np.random.default_rng(0).uniform(-1, 1, sim.positions_m.shape)
    bad = sim.positions_m + err_px * sim.pixel_size_m[0]
    kw = dict(engine="lsqml", n_iter=60, origin_m=sim.origin_m, object_shape=sim.object.shape)

    def residual_px(res):
        d = (res.info["positions_m"] - sim.positions_m) / sim.pixel_size_m[0]
        return d - d.mean(axis=0)       # a common translation is not determined

    fixed = reconstruct(sim.frames, bad, sim.probe, sim.pixel_size_m, position_correction_start=5, **kw)
    d = residual_px(fixed)
    assert np.sqrt(np.mean(d**2)) < 0.1
    assert np.abs(d).max() < 0.3
    start = err_px - err_px.mean(axis=0)
    assert np.sqrt(np.mean(start**2)) > 0.5
    assert np.array_equal(bad, sim.positions_m + err_px * sim.pixel_size_m[0])   # input untouched
