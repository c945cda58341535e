"""The service killed with SIGKILL mid-job, then started again (issue 18): the running job is
re-attached; killed together with its run (a node crash), it resumes without recomputing finished
items; no job is lost or duplicated."""

import os
import re
import signal
import time

import pytest

from _service import Service, cnt_recipe, kill_job_processes, make_tokens, wait_state, write_config
from ptyhpc.service.db import Job, make_engine, sessions


def _row(url, job_id):
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            return s.get(Job, job_id), s.query(Job).count()
    finally:
        engine.dispose()


def _wait_done_items(client, job_id, at_least, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        prog = (job.get("progress") or {}).get("stages", {}).get("ptycho")
        if prog and prog["done"] >= at_least:
            return prog["done"]
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {at_least} items done after {timeout} s")


@pytest.mark.slow
def test_sigkill_of_the_service_loses_nothing(tmp_path):
    config = write_config(tmp_path, max_concurrent_jobs=1)
    url = f"sqlite:///{tmp_path / 'results' / 'jobs.db'}"
    token, = make_tokens(config, [("alice", "user")])
    service = Service(config).start()
    n = 5
    try:
        with service.client(token) as c:
            job_id = c.post("/v1/jobs", json={"recipe": cnt_recipe(angles=range(0, 25, 5), n_iter=5),
                                              "stages": ["ingest", "ptycho"]}).json()["id"]
            _wait_done_items(c, job_id, 1)
        service.kill()                       # the service dies; its job runs on
        service.start()
        with service.client(token) as c:
            assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
            done_at_kill = _wait_done_items(c, job_id, 2)
        row, count = _row(url, job_id)
        assert row.attempts == 1 and count == 1                     # re-attached, not restarted
        assert done_at_kill < n, "the job finished too soon for the test; raise n_iter"
        service.kill()                       # now the run dies too (a node crash)
        os.killpg(row.pid, signal.SIGKILL)
        service.start()
        with service.client(token) as c:
            job = wait_state(c, job_id, {"done", "failed"}, timeout=180)
            assert job["state"] == "done", job
            assert job["progress"]["stages"]["ptycho"] == {"done": n, "total": n}
        row, count = _row(url, job_id)
        assert row.attempts == 2 and count == 1
        log = (service.results / job_id / "run-2.log").read_text()
        m = re.search(r"(\d+) items reconstructed.*?, (\d+) already done", log)
        assert m, log[-2000:]
        redone, skipped = int(m.group(1)), int(m.group(2))
        assert skipped >= done_at_kill and redone + skipped == n     # finished items were not recomputed
        assert "resuming" in log                                     # the store was kept, not re-ingested
    finally:
        service.stop()
        kill_job_processes(url)
