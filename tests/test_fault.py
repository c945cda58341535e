"""Fault tolerance: lost workers, killed runs, concurrent runs, partial writes (real processes, real kills)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr
from _cnt import FAST, assert_same_results, results

from ptyhpc.cluster import connect
from ptyhpc.io import layout, open_store
from ptyhpc.pipeline.lock import StoreLockedError, item_lock, run_lock
from ptyhpc.pipeline.ptycho_stage import ItemsFailedError, run_ptycho


def _status(store):
    return np.asarray(zarr.open_array(store / layout.PTYCHO_STATUS, mode="r")[...])


def _cli(*args):
    return [sys.executable, "-m", "ptyhpc.cli", *map(str, args)]


def test_worker_killed_mid_task_results_identical(cnt3, tmp_path):
    """SIGKILL a worker while it runs an item: the nanny restarts it, the item is redone, nothing differs."""
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    killed = {}
    with connect(n_workers=2) as client:
        pids = client.run(os.getpid)  # worker address -> pid

        def killer():
            # Wait until a worker is busy with an item, then kill that worker's process.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                for addr, keys in client.processing().items():
                    if keys and addr in pids:
                        time.sleep(0.5)  # well inside the task (about 1.5 s)
                        os.kill(pids[addr], signal.SIGKILL)
                        killed[addr] = list(keys)
                        return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        out = run_ptycho(store, FAST, client=client, progress=False)
        t.join()
    assert killed, "no worker was killed"
    assert sorted(out["done"]) == [0, 1, 2]
    assert_same_results(results(store), ref)


def test_killed_run_is_resumed_recomputing_only_unfinished_items(cnt3, tmp_path):
    """SIGKILL the whole run (driver, nanny, workers) after its first item; the rerun does the rest."""
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    proc = subprocess.Popen(_cli("reconstruct", store, "--workers", 1, "--n-iter", 3), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (store / layout.PTYCHO_STATUS / "zarr.json").exists() and _status(store).sum() >= 1:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the run's own process group: driver and its workers
    finally:
        proc.wait(timeout=30)
    done_before = set(np.nonzero(_status(store) == 1)[0].tolist())
    assert 1 <= len(done_before) < 3, f"the kill should land mid-run, done: {done_before}"
    before = results(store)
    out = run_ptycho(store, FAST, progress=False)  # the lock died with the killed run
    assert set(out["skipped"]) == done_before
    assert set(out["done"]) == {0, 1, 2} - done_before
    after = results(store)
    for i in done_before:  # finished items were not touched
        np.testing.assert_array_equal(before[layout.PTYCHO_OBJECT][i], after[layout.PTYCHO_OBJECT][i])
    assert_same_results(after, ref)


def test_second_run_on_the_same_store_is_refused(cnt3, tmp_path):
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    first = subprocess.Popen(_cli("reconstruct", store, "--workers", 1, "--n-iter", 3), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        lock = store / ".ptyhpc" / "run.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        # A second driver: refused at once, exit code 3, naming the holder.
        second = subprocess.run(_cli("reconstruct", store, "--workers", 1, "--n-iter", 3), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        msg = " ".join(second.stderr.split())
        assert "in use by another ptyhpc run" in msg and f"pid {first.pid}" in msg
        # A job-array element is refused too while a driver runs.
        elem = subprocess.run(_cli("reconstruct-item", store, 0, "--n-iter", 3), capture_output=True, text=True,
                              timeout=120)
        assert elem.returncode == 3 and "in use by another ptyhpc run" in elem.stderr
        # So is an in-process run.
        with pytest.raises(StoreLockedError, match="wait for that run to finish"):
            run_ptycho(store, FAST, progress=False)
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert_same_results(results(store), ref)
    # Elements of an array share the lock with each other but exclude a driver.
    with run_lock(store, shared=True), run_lock(store, shared=True):
        with pytest.raises(StoreLockedError, match="job array"):
            run_ptycho(store, FAST, progress=False)


def test_item_lock_makes_a_duplicate_task_skip(cnt3, tmp_path):
    """A resubmitted twin of a running item waits for it, then finds it done and writes nothing."""
    from ptyhpc.pipeline.ptycho_stage import prepare_results, reconstruct_item

    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    prepare_results(open_store(store, mode="r+"), FAST)
    outs = []
    with item_lock(store, 1):  # "the first task" holds item 1
        t = threading.Thread(target=lambda: outs.append(reconstruct_item(str(store), 1, FAST)))
        t.start()
        time.sleep(0.3)
        assert not outs  # waiting for the holder
        # The holder finishes the item.
        g = open_store(store, mode="r+")
        for name in (layout.PTYCHO_OBJECT, layout.PTYCHO_PROBE, layout.PTYCHO_ERROR, layout.PTYCHO_ILLUMINATION):
            g[name][1] = ref[name][1]
        g[layout.PTYCHO_STATUS][1] = 1
    t.join(timeout=60)
    assert outs[0]["already_done"] is True


def test_partially_written_item_is_never_marked_done(cnt3, tmp_path):
    """A write that fails half-way (object written, probe not) leaves status 0; a rerun completes it."""
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    run_ptycho(store, FAST, progress=False, items=[0])  # creates the result arrays
    # A file where item 1's probe chunk folder goes: a real I/O error in the middle of the item's writes.
    chunks = store / layout.PTYCHO_PROBE / "c" / "1"
    chunks.write_text("not a folder")
    with pytest.raises(ItemsFailedError, match="item 1") as err:
        run_ptycho(store, FAST, progress=False, items=[1])
    assert set(err.value.failed) == {1}
    g = open_store(store)
    # Status 2 (failed, issue 12) with the reason stored; never 1.
    assert np.asarray(g[layout.PTYCHO_STATUS][...]).tolist() == [1, 2, 0]
    assert "probe" in str(g[layout.PTYCHO_FAILURE][1]) or "Error" in str(g[layout.PTYCHO_FAILURE][1])
    # The object was written before the failure, yet the item is not done.
    np.testing.assert_array_equal(np.asarray(g[layout.PTYCHO_OBJECT][1]), ref[layout.PTYCHO_OBJECT][1])
    chunks.unlink()
    out = run_ptycho(store, FAST, progress=False)
    assert out["done"] == [1, 2] and out["skipped"] == [0]
    assert_same_results(results(store), ref)


def test_failed_item_does_not_stop_the_others(cnt3, tmp_path):
    """One item raising (its frames unreadable) leaves the other items finished; the error names it."""
    clean, ref = cnt3
    store = tmp_path / "s.zarr"
    shutil.copytree(clean, store)
    # Corrupt item 2's shard of the raw frames.
    shard = next((store / layout.FRAMES / "c" / "2").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(b"garbage")
    with connect(n_workers=2) as client:
        with pytest.raises(ItemsFailedError, match="item 2") as err:
            run_ptycho(store, FAST, client=client, progress=False)
    assert set(err.value.failed) == {2}
    assert _status(store).tolist() == [1, 1, 2]   # 2 = failed, the reason stored (issue 12)
    assert "item 2: frames/positions: damaged chunk" in str(open_store(store)[layout.PTYCHO_FAILURE][2])
    r = results(store)
    for i in (0, 1):
        np.testing.assert_array_equal(r[layout.PTYCHO_OBJECT][i], ref[layout.PTYCHO_OBJECT][i])
