"""Option models as the one source of truth: recipes, CLI and stages see the same validated options."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from ptyhpc import cli
from ptyhpc.bragg import cli as bragg_cli
from ptyhpc.ptycho.options import GROUPS, PtychoOptions, options_from_section
from ptyhpc.recipe import load_recipe
from ptyhpc.tomo import stage as tomo_stage
from ptyhpc.tomo.options import TomoOptions

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "cnt_tilt_series"

#: ``run_tomo``'s keywords before the options model (ee52045); each must still be reachable.
OLD_RUN_TOMO_KEYWORDS = ("client", "n_iter", "nonneg", "align", "figures_dir", "progress", "filter_name",
                         "rotation_axis_x_m", "illumination_threshold", "background", "border_px", "align_iter",
                         "max_shift_px", "slab_size", "projection_match", "channel", "center_method")
#: Plumbing that is not a setting: where the tasks run, where figures go, how progress is shown.
PLUMBING = ("client", "figures_dir", "progress")
#: A value other than the default for each text option (the others are made from their type below).
OTHER_TEXT = {"center_method": "com", "channel": "amplitude", "background": "border", "filter_name": "hann"}


def _other_value(name, field):
    """A valid value different from the field's default, from its type."""
    if name in OTHER_TEXT:
        return OTHER_TEXT[name]
    kinds = {a for a in (field.annotation, *typing.get_args(field.annotation)) if a is not type(None)}
    default = field.default
    if bool in kinds:
        return not default
    if int in kinds:
        return (default or 1) + 2
    if float in kinds:
        return 0.25 if default is None else default / 2
    raise AssertionError(f"tomo.{name}: no rule to make a non-default value of {field.annotation}")


def _recipe(tmp_path, **sections) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"input": {"files": [str(DATA / "tilt_000.h5")]}, "store": "s.zarr",
                                    **sections}))
    return path


def test_every_run_tomo_option_is_settable_from_a_recipe_and_reaches_run_tomo(tmp_path, monkeypatch):
    fields = TomoOptions.model_fields
    assert set(OLD_RUN_TOMO_KEYWORDS) - set(PLUMBING) == set(fields)     # every setting has a recipe key
    values = {name: _other_value(name, f) for name, f in fields.items()}
    assert all(values[k] != f.default for k, f in fields.items())
    rc, _ = load_recipe(_recipe(tmp_path, tomo=values))
    assert rc.tomo.model_dump() == values

    seen = {}

    def fake_run_tomo(store_path, options=None, *, client=None, figures_dir=None, progress=True, **settings):
        seen["options"] = tomo_stage.tomo_options(options, settings)
        return {}

    monkeypatch.setattr(tomo_stage, "run_tomo", fake_run_tomo)
    monkeypatch.setattr(cli, "_is_energy_stack", lambda store: False)
    monkeypatch.setattr("ptyhpc.pipeline.ome.write_ome_tomograms", lambda store: [])
    monkeypatch.setattr(cli, "_remember_figures", lambda store, figures: None)
    cli._tomo(None, tmp_path / "s.zarr", tmp_path / "fig", rc.tomo)       # as `ptyhpc run` calls it
    assert seen["options"].model_dump() == values
    # run_tomo's own keywords go through the same model (one by one, or overriding an options object).
    assert tomo_stage.tomo_options(None, values) == rc.tomo
    assert tomo_stage.tomo_options(rc.tomo, {"n_iter": 7}).n_iter == 7


def test_old_style_and_grouped_ptycho_sections_give_the_same_options():
    flat = {"engine": "rpie", "n_iter": 5, "beta_probe": 0.2, "n_probe_modes": 2, "alpha": 0.3,
            "position_correction_start": 1, "position_model": "affine", "noise_model": "amplitude",
            "use_detector_mask": False}
    grouped = {"engine": "rpie", "n_iter": 5, "probe": {"beta_probe": 0.2, "n_probe_modes": 2},
               "object": {"alpha": 0.3}, "positions": {"position_correction_start": 1, "position_model": "affine"},
               "data": {"noise_model": "amplitude", "use_detector_mask": False}}
    assert options_from_section(flat) == options_from_section(grouped) == PtychoOptions(**flat)
    assert options_from_section(grouped) != PtychoOptions(n_iter=5)
    # Every grouped key is a field (the groups add no name of their own).
    names = set(PtychoOptions.__dataclass_fields__)
    assert all(set(keys) <= names for keys in GROUPS.values())


def test_old_recipes_keep_working(tmp_path):
    rc, files = load_recipe(ROOT / "examples" / "cnt_demo.yaml")
    assert files and rc.ptycho_params() == PtychoOptions() and rc.tomo == TomoOptions()
    # The recipe of tests/test_pipeline.py and a chain recipe as written before the option models.
    old = {"ptycho": {"n_iter": 20, "warm_start": True}, "tomo": {"n_iter": 50, "nonneg": True, "align": False},
           "cluster": {"workers": 2}}
    rc, _ = load_recipe(_recipe(tmp_path, **old))
    assert rc.ptycho_params() == PtychoOptions(n_iter=20, warm_start=True)
    assert rc.tomo == TomoOptions(n_iter=50, align=False)
    chain = {"engine": "chain", "stages": [{"engine": "dm", "n_iter": 2}, {"engine": "lsqml", "n_iter": 1}]}
    rc, _ = load_recipe(_recipe(tmp_path, ptycho=chain))
    assert rc.ptycho_params().n_iter == 3 and rc.ptycho == chain       # the section is kept as written


@pytest.mark.parametrize("sections,key", [
    ({"ptycho": {"n_iter": 0}}, "ptycho.n_iter: must be >= 1 (got 0)"),
    ({"ptycho": {"probe": {"n_probe_modes": "two"}}}, "ptycho.probe.n_probe_modes: should be a valid integer"),
    ({"ptycho": {"positions": {"position_model": "rigid"}}}, "ptycho.positions.position_model must be"),
    ({"ptycho": {"probe": {"alpha": 0.3}}}, "ptycho.probe.alpha: unknown key"),
    ({"ptycho": {"alpha": 0.3, "object": {"alpha": 0.4}}}, "ptycho.object.alpha: also given"),
    ({"ptycho": {"engine": "dm", "probe": {"n_probe_modes": 2}}}, "ptycho.probe.n_probe_modes: probe modes (n_probe_modes) is implemented for rpie, epie, mpie, not 'dm'"),
    ({"tomo": {"channel": "intensity"}}, "tomo.channel: must be one of"),
    ({"tomo": {"slab_size": 0}}, "tomo.slab_size: should be greater than or equal to 1"),
])
def test_a_bad_option_value_names_the_recipe_file_and_key(tmp_path, sections, key):
    path = _recipe(tmp_path, **sections)
    with pytest.raises(ValueError) as err:
        load_recipe(path)
    text = str(err.value)
    assert str(path) in text and key in text, text
    assert "pydantic" not in text and "Input should" not in text


def test_run_tomo_refuses_a_bad_setting_naming_it_before_reading(tmp_path):
    with pytest.raises(ValueError, match="tomo.border_px: must be >= 1"):
        tomo_stage.run_tomo(tmp_path / "nowhere.zarr", border_px=0, progress=False)
    with pytest.raises(ValueError, match="tomo.n_itre: unknown key"):
        tomo_stage.run_tomo(tmp_path / "nowhere.zarr", n_itre=3, progress=False)


def _bragg_args(argv):
    return bragg_cli._parser().parse_args(argv), bragg_cli._given(argv)


def test_bragg_options_file_reaches_every_solver_field_and_flags_override_it(tmp_path, capsys):
    opts = tmp_path / "solver.yaml"
    opts.write_text(yaml.safe_dump({"mu": 0.05, "n_iter": 9, "slab_tilt_rad": [0.01, 0.0], "background": 0.1,
                                    "thickness_schedule": [[0, 1e-7], [50, 2e-7]]}))
    p = bragg_cli.solver_params(*_bragg_args(["reconstruct", "s.zarr", "--options", str(opts), "--n-iter", "3"]))
    assert (p.mu, p.n_iter, p.slab_tilt_rad, p.background) == (0.05, 3, (0.01, 0.0), 0.1)
    assert p.thickness_schedule == [(0, 1e-7), (50, 2e-7)]
    assert bragg_cli.solver_params(*_bragg_args(["reconstruct", "s.zarr"])).n_iter == 200   # the flag's default
    opts.write_text(yaml.safe_dump({"mu": -1.0}))
    with pytest.raises(SystemExit) as err:
        bragg_cli.solver_params(*_bragg_args(["reconstruct", "s.zarr", "--options", str(opts)]))
    assert err.value.code == 2
    assert f"--options {opts}: bragg.mu: must be >= 0.0 (got -1.0)" in capsys.readouterr().err
