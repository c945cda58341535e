"""Fault injection (issue 12): bad inputs, damaged stores, kills, locks, full and read-only file systems.

Real files, real processes, real kills; small tmpfs mounts where the test runs as root (skipped with the
reason otherwise). Every case must end in a clear error with its exit code, or be handled (refused,
warned, recomputed); never a traceback, never data lost.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
import zarr
from rich.console import Console
from typer.testing import CliRunner

from ptyhpc import cli
from ptyhpc.cli import app
from ptyhpc.io import IngestError, StoreError, ingest, layout, open_store, read_item
from ptyhpc.io.plausible import PlausibilityWarning, check_geometry
from ptyhpc.io.safe_write import StaleBuildWarning
from ptyhpc.io.verify import verify_store
from ptyhpc.pipeline.item_status import check_item_memory, item_memory_bytes
from ptyhpc.pipeline.progress import store_status
from ptyhpc.pipeline.ptycho_stage import ItemsFailedError, PtychoParams, run_ptycho
from ptyhpc.tomo.stage import TomoInputError, run_tomo

QUICK = PtychoParams(n_iter=2)
#: The aperture must fit inside a 16 x 16 detector of 1/48 1/Å pixels to reconstruct.
SMALL_APERTURE = {"convergence_semiangle_mrad": 5.0}
ENV = {**os.environ, "MPLBACKEND": "Agg"}


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ptyhpc.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=120, **kw)


def _invoke(*args):
    # Wide lines: the messages are checked whole (Rich wraps at the terminal width).
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


def _holder(store: Path):
    """A real second process holding the store's run lock until killed."""
    code = ("import sys, time; from ptyhpc.pipeline.lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def done3(tmp_path_factory):
    """A small synthetic 3-item tilt series, ingested and reconstructed (``QUICK``): (store, object copy)."""
    from conftest import DEFAULT_INSTRUMENT_ATTRS

    base = tmp_path_factory.mktemp("done3")
    rng = np.random.default_rng(1)
    files = []
    for k, angle in enumerate((-30.0, 0.0, 30.0)):
        path = base / f"t{k}.h5"
        with h5py.File(path, "w") as f:
            f["entry/data/counts"] = rng.poisson(5.0 + k, (4, 4, 16, 16)).astype(np.uint16)
            inst = f.create_group("entry/instrument")
            for key, v in {**DEFAULT_INSTRUMENT_ATTRS, **SMALL_APERTURE, "tilt_angle_deg": angle}.items():
                inst.attrs[key] = v
        files.append(path)
    store = ingest(files, base / "done.zarr", progress=False)
    run_ptycho(store, QUICK, progress=False)
    return store, np.asarray(open_store(store)[layout.PTYCHO_OBJECT][...])


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ptyhpc"))
    return dst


def _chunk(store: Path, name: str, item: int) -> Path:
    arr = zarr.open_array(store / name, mode="r")
    return store / name / arr.metadata.encode_chunk_key((item,) + (0,) * (arr.ndim - 1))


# --- 1. safe overwrite ---------------------------------------------------------------------------------

def test_overwrite_never_deletes_inputs_or_other_folders(make_tilt_files, tmp_path):
    files = make_tilt_files()
    folder = files[0].parent
    for target in (folder, files[0], tmp_path):      # the inputs' folder, an input file, a folder holding them
        r = _invoke("ingest", *files, "-o", target, "--overwrite")
        assert r.exit_code == 2 and "input" in r.output, r.output
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("beam time notes")
    r = _invoke("ingest", *files, "-o", other, "--overwrite")
    assert r.exit_code == 2 and "not a ptyhpc store" in r.output, r.output
    assert all(f.exists() for f in files) and (other / "keep.txt").read_text() == "beam time notes"


def test_overwrite_refused_while_a_run_holds_the_store(make_tilt_files, tmp_path):
    store = ingest(make_tilt_files(), tmp_path / "s.zarr", progress=False)
    new = make_tilt_files(n_angles=4)
    holder = _holder(store)
    try:
        r = _invoke("ingest", *new, "-o", store, "--overwrite")
        assert r.exit_code == 3 and "in use by another ptyhpc run" in r.output, r.output
        assert open_store(store)[layout.FRAMES].shape[0] == 3   # the running job's store is untouched
    finally:
        holder.kill()
        holder.wait()
    r = _invoke("ingest", *new, "-o", store, "--overwrite")
    assert r.exit_code == 0, r.output
    assert open_store(store)[layout.FRAMES].shape[0] == 4
    assert not list(tmp_path.glob("s.zarr.*"))   # no .old-*, no .partial-*


def test_failed_overwrite_keeps_the_old_store(make_tilt_files, tmp_path):
    store = ingest(make_tilt_files(), tmp_path / "s.zarr", progress=False)
    counts = np.random.default_rng(0).poisson(5, (3, 4, 4, 16, 16)).astype(np.float32)
    counts[2, 1, 1, 3, 3] = np.nan                      # found while copying the last file
    bad = make_tilt_files(counts=counts, dtype=np.float32)
    r = _invoke("ingest", *bad, "-o", store, "--overwrite")
    assert r.exit_code == 2 and "non-finite" in r.output and str(bad[2]) in r.output.replace("\n", ""), r.output
    g = open_store(store)
    assert g[layout.FRAMES].dtype == np.uint16 and read_item(g, 2)[0].any()
    assert not list(tmp_path.glob("s.zarr.*"))


def test_two_concurrent_ingests_to_one_target(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=6, scan=(6, 6), det=(32, 32))
    target = tmp_path / "s.zarr"
    procs = [subprocess.Popen([sys.executable, "-m", "ptyhpc.cli", "ingest", *map(str, files), "-o", str(target)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    outs = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 2], outs
    assert all("Traceback" not in err for _, err in outs)
    assert "already exists" in outs[1][1] + outs[0][1] or "another ingest" in outs[1][1] + outs[0][1]
    assert open_store(target)[layout.FRAMES].shape[0] == 6
    assert not list(tmp_path.glob("s.zarr.*"))


# --- 4. one error path -----------------------------------------------------------------------------------

def test_error_text_is_escaped_not_read_as_markup(monkeypatch):
    r = _invoke("info", "/nonexistent/run[bold]7[/bold].zarr")
    assert r.exit_code == 2 and "run[bold]7[/bold].zarr" in r.output.replace("\n", ""), r.output
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=300))
    with pytest.raises(typer.Exit) as ex, cli._user_errors():
        raise ImportError("cluster kind 'slurm' needs dask-jobqueue (pip install 'ptyhpc[cluster]')")
    assert ex.value.exit_code == 2
    assert "(pip install 'ptyhpc[cluster]')" in buf.getvalue()


def test_tracebacks_only_with_debug(tmp_path):
    r = _cli("info", tmp_path / "none.zarr")
    assert r.returncode == 2 and "no such store" in r.stderr and "Traceback" not in r.stderr
    r = _invoke("--debug", "info", tmp_path / "none.zarr")      # the exception itself goes through
    assert isinstance(r.exception, StoreError) and "no such store" in str(r.exception)


def test_reconstruct_on_a_folder_that_is_not_a_store_writes_nothing(tmp_path):
    (tmp_path / "scan.h5").write_bytes(b"raw")
    t0 = time.perf_counter()
    for cmd in ("reconstruct", "tomo"):
        r = _invoke(cmd, tmp_path)
        assert r.exit_code == 2 and "no such store" not in r.output and str(tmp_path) in r.output, r.output
    assert time.perf_counter() - t0 < 10        # refused before any cluster started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.h5"]


def test_damaged_hdf5_named_wherever_it_is_in_the_list(make_tilt_files, tmp_path):
    files = make_tilt_files()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(files[1].read_bytes()[:3000])
    # A chunk whose gzip stream is damaged: the file opens, the data cannot be decoded.
    filtered = tmp_path / "filtered.h5"
    filtered.write_bytes(files[2].read_bytes())
    with h5py.File(filtered, "r") as f:
        info = f["entry/data/counts"].id.get_chunk_info(3)
    with open(filtered, "r+b") as fh:
        fh.seek(info.byte_offset + 10)
        fh.write(b"\xff" * 40)
    for order in ([truncated, files[0]], [files[0], truncated], [filtered, files[0]], [files[0], filtered]):
        r = _invoke("ingest", *order, "-o", tmp_path / "x.zarr")
        bad = order[0] if order[0] in (truncated, filtered) else order[1]
        assert r.exit_code == 2 and str(bad) in r.output.replace("\n", ""), (order, r.output)
    assert not (tmp_path / "x.zarr").exists()


# --- 4. disk full, read-only (tmpfs) ---------------------------------------------------------------------

@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the disk-full and read-only cases)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_and_read_only_give_exit_code_4(make_tilt_files, tmp_path, done3):
    files = make_tilt_files(n_angles=4, scan=(8, 8), det=(64, 64))
    with _tmpfs(tmp_path / "small", "size=160k") as small:
        r = _invoke("ingest", *files, "-o", small / "s.zarr")
        assert r.exit_code == 4 and f"{small / 's.zarr'}: disk full" in r.output.replace("\n", ""), r.output
        assert list(small.iterdir()) == []            # the partial store is gone, nothing looks complete
    ro = tmp_path / "ro"
    with _tmpfs(ro, "size=4m"):
        _copy(done3[0], ro / "s.zarr")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        r = _invoke("ingest", *files, "-o", ro / "t.zarr")
        assert r.exit_code == 4 and "read-only file system" in r.output, r.output
        r = _invoke("reconstruct", ro / "s.zarr")
        assert r.exit_code == 4 and "read-only file system" in r.output, r.output


# --- 2. item integrity ------------------------------------------------------------------------------------

def test_item_without_data_fails_with_its_reason_and_is_named_downstream(make_tilt_files, tmp_path):
    counts = np.random.default_rng(0).poisson(5, (3, 4, 4, 16, 16)).astype(np.uint16)
    counts[1] = 0                                     # a raw file of all-zero counts
    store = ingest(make_tilt_files(counts=counts, **SMALL_APERTURE), tmp_path / "s.zarr", progress=False)
    with pytest.raises(ItemsFailedError, match="item 1") as err:
        run_ptycho(store, QUICK, progress=False)
    assert set(err.value.failed) == {1}
    st = store_status(store)
    assert [r["state"] for r in st["items"]] == ["done", "failed", "done"]
    assert "every count is zero" in st["items"][1]["reason"] and st["counts"]["failed"] == 1
    r = _invoke("status", store)
    assert "failed" in r.output and "every count is zero" in r.output.replace("\n", "")
    with pytest.raises(TomoInputError, match=r"item\(s\) 1 .*failed.*every count is zero"):
        run_tomo(store, n_iter=1, progress=False)


def test_deleted_and_corrupted_results_found_repaired_and_recomputed(done3, tmp_path):
    store = _copy(done3[0], tmp_path / "s.zarr")
    _chunk(store, layout.PTYCHO_OBJECT, 1).unlink()                    # a lost chunk
    probe = _chunk(store, layout.PTYCHO_PROBE, 2)                       # 2 kB overwritten
    data = bytearray(probe.read_bytes())
    data[8:2056] = os.urandom(2048)[: len(data) - 8]
    probe.write_bytes(bytes(data[: len(probe.read_bytes())]))
    with pytest.raises(StoreError, match=r"results/ptycho/object: chunks of item\(s\) \[1\] are missing"):
        run_tomo(store, n_iter=1, progress=False)                       # not silently the fill value
    with pytest.raises(ValueError, match="checksum"):
        open_store(store)[layout.PTYCHO_PROBE][2]                       # never decoded into values
    rep = verify_store(store)
    found = {(p["array"], p["kind"], tuple(p["items"])) for p in rep["problems"]}
    assert found == {(layout.PTYCHO_OBJECT, "missing", (1,)), (layout.PTYCHO_PROBE, "corrupt", (2,))}
    assert _invoke("verify", store).exit_code == 1
    r = _invoke("verify", store, "--repair")
    assert r.exit_code == 0 and "reset to pending: item(s) [1, 2]" in r.output, r.output
    assert np.asarray(open_store(store)[layout.PTYCHO_STATUS][...]).tolist() == [1, 0, 0]
    out = run_ptycho(store, QUICK, progress=False)
    assert out["done"] == [1, 2] and out["skipped"] == [0]
    np.testing.assert_array_equal(np.asarray(open_store(store)[layout.PTYCHO_OBJECT][...]), done3[1])
    assert verify_store(store)["clean"]


def test_damaged_raw_frames_fail_the_item_and_name_the_source(done3, tmp_path):
    store = _copy(done3[0], tmp_path / "s.zarr")
    for p in (store / layout.FRAMES / "c" / "0").rglob("*"):
        if p.is_file():
            p.unlink()
    g = zarr.open_group(store, mode="r+")
    g[layout.PTYCHO_STATUS][0] = 0
    with pytest.raises(ItemsFailedError, match="missing from the store"):
        run_ptycho(store, QUICK, progress=False)
    shard = next(p for p in (store / layout.FRAMES / "c" / "1").rglob("*") if p.is_file())
    data = bytearray(shard.read_bytes())
    data[100:140] = bytes(40)                                            # inside an inner chunk of item 1
    shard.write_bytes(bytes(data))
    rep = verify_store(store, repair=True)
    assert [(p["array"], p["kind"], p["items"], p["repairable"]) for p in rep["problems"]] == \
        [(layout.FRAMES, "missing", [0], False), (layout.FRAMES, "corrupt", [1], False)]
    assert not rep["clean"] and rep["reingest"] == open_store(store).attrs["source_files"][:2]


def test_old_store_without_checksums_still_reads(done3, tmp_path):
    store = _copy(done3[0], tmp_path / "s.zarr")
    g = zarr.open_group(store, mode="r+")
    for name in (layout.FRAMES, layout.POSITIONS, layout.TILT_ANGLE, layout.PTYCHO_OBJECT):
        a = g[name]
        data, attrs = np.asarray(a[...]), dict(a.attrs)
        g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=a.chunks, shards=a.shards,
                       fill_value=a.fill_value, attributes=attrs, overwrite=True)[...] = data   # as before issue 12
    frames, _ = read_item(open_store(store), 1)
    assert frames.any()
    rep = verify_store(store)
    assert rep["clean"] and set(rep["not_checksummed"]) >= {layout.FRAMES, layout.PTYCHO_OBJECT}


# --- 7. tomo settings, memory, housekeeping ------------------------------------------------------------------

def test_tomo_refuses_zero_slabs_and_iterations_at_once(done3):
    for kw in ({"slab_size": 0}, {"n_iter": 0}):
        with pytest.raises(ValueError, match=">= 1"):
            run_tomo(done3[0], progress=False, **kw)
    for flag in ("--slab-size", "--n-iter"):
        r = _invoke("tomo", done3[0], flag, 0)
        assert r.exit_code == 2 and "Traceback" not in r.output


def test_item_that_cannot_fit_in_memory_is_refused_before_allocation(done3, tmp_path):
    store = _copy(done3[0], tmp_path / "s.zarr")
    import shutil

    shutil.rmtree(store / layout.RESULTS)
    g = zarr.open_group(store, mode="r+")
    g[layout.POSITIONS][...] = np.asarray(g[layout.POSITIONS][...]) * 1e6   # 1.5 Å steps become 0.15 mm
    with pytest.raises(ValueError, match=r"needs at least .*PiB|needs at least .*TiB"):
        run_ptycho(store, QUICK, progress=False)
    assert layout.PTYCHO_OBJECT not in open_store(store)
    assert item_memory_bytes(100, (16, 16), (16, 16), (10, 10), 8) < 1e6
    with pytest.raises(ValueError, match="more than"):
        check_item_memory("s", 2 << 30, "test", limit=1 << 30)


def test_killed_ingest_leaves_no_store_and_its_build_folder_is_cleaned(make_tilt_files, tmp_path):
    files = make_tilt_files(n_angles=16, scan=(8, 8), det=(64, 64))
    target = tmp_path / "s.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "ptyhpc.cli", "ingest", *map(str, files), "-o", str(target)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob("s.zarr.partial-*/frames")):
        assert proc.poll() is None, "the ingest ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists() and len(list(tmp_path.glob("s.zarr.partial-*"))) == 1
    other = tmp_path / f"other.zarr.partial-{proc.pid}"
    other.mkdir()
    with pytest.warns(StaleBuildWarning, match="removed 1 build folder"):
        ingest(files[:3], target, progress=False)
    assert not list(tmp_path.glob("s.zarr.partial-*")) and other.exists()   # another store's is only reported


# --- 5. plausibility at the door -------------------------------------------------------------------------------

@pytest.mark.parametrize("override, match", [
    ({"beam_energy_eV": 60.0}, "60 eV .*impossible for electrons"),
    ({"convergence_semiangle_mrad": 10000.0}, "10 rad is impossible"),
    ({"scan_step_A": 1e6}, "scan step .* times the far-field window"),
])
def test_impossible_geometry_refused_at_ingest(make_tilt_files, tmp_path, override, match):
    files = make_tilt_files(**override)
    with pytest.raises(IngestError, match=match):
        ingest(files, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_angles_positions_distance_and_counts(make_tilt_files, tmp_path):
    with pytest.raises(IngestError, match="duplicates"):
        ingest(make_tilt_files(angles_deg=[0.0, 1e-6, 10.0]), tmp_path / "a.zarr", progress=False)
    with pytest.warns(PlausibilityWarning, match="same projection twice"):
        ingest(make_tilt_files(angles_deg=[0.0, 10.0, 360.0]), tmp_path / "b.zarr", progress=False)
    frac = np.random.default_rng(0).random((3, 4, 4, 16, 16)).astype(np.float32) * 10
    with pytest.warns(PlausibilityWarning, match="not whole numbers"):
        ingest(make_tilt_files(counts=frac, dtype=np.float32), tmp_path / "c.zarr", progress=False)
    from test_readers import write_nxptycho

    frames = np.random.default_rng(0).poisson(5.0, (6, 8, 8)).astype(np.uint16)
    nxs = write_nxptycho(tmp_path / "zero.nxs", frames, np.zeros((6, 2)))
    r = _invoke("ingest", nxs, "-o", tmp_path / "n.zarr")
    assert r.exit_code == 2 and "all 6 positions are identical" in r.output.replace("\n", ""), r.output
    far = write_nxptycho(tmp_path / "far.nxs", frames, np.arange(12.0).reshape(6, 2) * 1e-7, distance=(5200.0, "m"))
    r = _invoke("ingest", far, "-o", tmp_path / "f.zarr")
    assert r.exit_code == 2 and "5200 m is impossible" in r.output.replace("\n", ""), r.output
    from test_nearfield_store import write_cxi

    cxi = write_cxi(tmp_path / "nm.cxi", frames, np.arange(12.0).reshape(6, 2) * 1e-7, wavelength=0.1)  # 0.1 nm
    r = _invoke("ingest", cxi, "-o", tmp_path / "x.zarr")
    assert r.exit_code == 2 and "(wavelength 0.1 m) is impossible for X-rays" in r.output, r.output
    with pytest.raises(IngestError, match="impossible"):
        check_geometry("s.h5", radiation="xray", energy_eV=5e6)
