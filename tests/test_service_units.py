"""Service pieces without a server: config, path confinement, recipe checks, tokens, migrations,
watch folders (issue 18)."""

import os
import time

import pytest
import yaml

from _service import CNT, DATA, cnt_recipe, create_token, run_cli, write_config
from ptyhpc.service.auth import create_token as make_token
from ptyhpc.service.auth import revoke_token, verify_token
from ptyhpc.service.config import ServiceConfig, load_config
from ptyhpc.service.db import Job, WatchSeen, make_engine, migrate, sessions
from ptyhpc.service.jobs import RecipeRefused, check_recipe, job_recipe
from ptyhpc.service.paths import PathRefused, confine, confine_glob


@pytest.fixture
def cfg(tmp_path):
    return ServiceConfig(data_roots=[DATA], results_root=tmp_path / "results")


@pytest.fixture
def Session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    yield sessions(engine)
    engine.dispose()


def test_config_defaults_and_errors(tmp_path):
    path = write_config(tmp_path)
    cfg = load_config(path)
    assert cfg.host == "127.0.0.1"
    assert cfg.db_url == f"sqlite:///{tmp_path / 'results' / 'jobs.db'}"
    path.write_text(yaml.safe_dump({"data_roots": ["relative/dir"], "results_root": str(tmp_path)}))
    with pytest.raises(ValueError, match="data_roots"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data_roots": [str(DATA)], "results_root": str(tmp_path), "max_jobs": 3}))
    with pytest.raises(ValueError, match="max_jobs"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data_roots": [str(DATA)], "results_root": str(tmp_path),
                                    "watch": [{"folder": "/etc", "recipe": "/etc/r.yaml", "marker": "done"}]}))
    with pytest.raises(ValueError, match="outside the data roots"):
        load_config(path)


def test_paths_confined_to_roots(tmp_path):
    root = tmp_path / "root"
    (root / "scan").mkdir(parents=True)
    (root / "scan" / "a.h5").write_bytes(b"x")
    secret = tmp_path / "secret.h5"
    secret.write_bytes(b"s")
    (root / "scan" / "link.h5").symlink_to(secret)       # a symlink escaping the root
    (root / "escape").symlink_to(tmp_path)              # a directory symlink escaping it
    assert confine(str(root / "scan" / "a.h5"), [root]) == (root / "scan" / "a.h5").resolve()
    for bad, why in [("scan/a.h5", "absolute"), (f"{root}/scan/../scan/a.h5", r"'\.\.'"),
                     (str(secret), "outside"), (f"{root}/scan/link.h5", "outside"),
                     (f"{root}/escape/secret.h5", "outside"), ("/etc/passwd", "outside")]:
        with pytest.raises(PathRefused, match=why):
            confine(bad, [root])
    assert confine_glob(f"{root}/scan/a*.h5", [root]) == [(root / "scan" / "a.h5").resolve()]
    with pytest.raises(PathRefused, match="symlink"):
        confine_glob(f"{root}/scan/*.h5", [root])        # a.h5 fine, link.h5 escapes: all refused
    with pytest.raises(FileNotFoundError):
        confine_glob(f"{root}/scan/none_*.h5", [root])


def test_recipe_checks_name_the_field(cfg):
    ok = check_recipe(cnt_recipe(), cfg)
    full = job_recipe(ok, cfg, "abc")
    assert full["store"] == str(cfg.results_root / "abc" / "store.zarr") and full["overwrite"] is False
    for recipe, loc in [({**cnt_recipe(), "store": "/tmp/x.zarr"}, ["body", "recipe", "store"]),
                        ({**cnt_recipe(), "report": "r.txt"}, ["body", "recipe", "report"]),
                        ({**cnt_recipe(), "ptycho": {"n_iter": 0}}, ["body", "recipe", "ptycho"]),
                        ({**cnt_recipe(), "tomo": {"n_iter": "many"}}, ["body", "recipe", "tomo", "n_iter"]),
                        ({**cnt_recipe(), "bogus": 1}, ["body", "recipe", "bogus"]),
                        ({"input": {"files": ["/etc/passwd"]}}, ["body", "recipe", "input", "files", 0]),
                        ({"input": {"files": [f"{CNT}/../cnt_tilt_series/tilt_000.h5"]}},
                         ["body", "recipe", "input", "files", 0]),
                        ({**cnt_recipe(), "truth": "/etc"}, ["body", "recipe", "truth"]),
                        ({"input": {"files": [str(CNT / "tilt_000.h5")], "dark": "/etc/shadow:/x"}},
                         ["body", "recipe", "input", "dark"])]:
        with pytest.raises(RecipeRefused) as exc:
            check_recipe(recipe, cfg)
        assert any(d["loc"][:len(loc)] == loc for d in exc.value.detail), (loc, exc.value.detail)
    with pytest.raises(RecipeRefused):
        check_recipe(["not", "a", "mapping"], cfg)


def test_tokens_hashed_verified_revoked(Session):
    token = make_token(Session, "alice", "staff")
    with Session() as s:
        from ptyhpc.service.db import Token
        row = s.get(Token, token.split("_")[1])
    assert token.split("_", 2)[2] not in row.secret_hash and row.secret_hash.startswith("$argon2")
    who = verify_token(Session, token)
    assert (who.user, who.role, who.sees_all) == ("alice", "staff", True)
    assert verify_token(Session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert verify_token(Session, "Bearer nonsense") is None
    revoke_token(Session, token)
    assert verify_token(Session, token) is None
    with pytest.raises(ValueError, match="role"):
        make_token(Session, "bob", "root")


def test_token_cli_prints_only_the_token(tmp_path):
    config = write_config(tmp_path)
    token = create_token(config, "carol", "user")
    assert token.startswith("pty_") and "\n" not in token and " " not in token
    r = run_cli("token", "revoke", token.split("_")[1], "--config", config)
    assert r.returncode == 0 and "revoked" in r.stderr and r.stdout == ""


def test_watch_folder_queues_each_complete_scan_once(tmp_path):
    from ptyhpc.service.app import create_app

    root = tmp_path / "beamline"
    incoming = root / "incoming"
    for scan in ("scan1", "scan2"):
        (incoming / scan).mkdir(parents=True)
        for i in (0, 1):
            os.symlink(CNT / f"tilt_{i:03d}.h5", incoming / scan / f"tilt_{i:03d}.h5")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"files": ["tilt_*.h5"]}, "ptycho": {"n_iter": 1}}))
    cfg = ServiceConfig(data_roots=[root, DATA], results_root=tmp_path / "results",
                        watch=[{"folder": incoming, "recipe": recipe, "marker": "scan_complete", "user": "p25"}])
    app = create_app(cfg, background=False)
    state = app.state.svc
    state.open(background=False)
    try:
        from ptyhpc.service.watch import Watcher

        w = Watcher(state)
        assert w.poll() == []                              # no marker yet: nothing queued
        (incoming / "scan1" / "scan_complete").touch()
        first = w.poll()
        assert len(first) == 1 and w.poll() == []          # queued once
        with state.Session() as s:
            job = s.get(Job, first[0])
            assert (job.owner, job.state, job.source) == ("p25", "queued", f"watch:{incoming / 'scan1'}")
            assert s.query(WatchSeen).count() == 1
        written = yaml.safe_load((cfg.results_root / first[0] / "recipe.yaml").read_text())
        assert written["input"]["files"] == [str(incoming / "scan1" / "tilt_*.h5")]
        assert written["store"] == str(cfg.results_root / first[0] / "store.zarr")
    finally:
        state.close()
    # a restarted service (new state on the same database) does not queue scan1 again
    state2 = create_app(cfg, background=False).state.svc
    state2.open(background=False)
    try:
        (incoming / "scan2" / "scan_complete").touch()
        again = Watcher(state2).poll()
        assert len(again) == 1 and again != first
    finally:
        state2.close()
