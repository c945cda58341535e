"""Job lifecycle through the service on SQLite and on a real PostgreSQL server: per-user and overall
limits, cancel of queued and running jobs, restart with running and queued jobs (issue 18)."""

import time

import pytest

from _service import LocalPostgres, PostgresUnavailable, Service, cnt_recipe, kill_job_processes, make_tokens, \
    wait_state, write_config
from ptyhpc.service.db import Job, make_engine, sessions
from ptyhpc.service.executor import pid_alive


@pytest.fixture(scope="module")
def postgres():
    try:
        pg = LocalPostgres().start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return None  # the default: <results_root>/jobs.db
    return request.getfixturevalue("postgres").create_database(f"ptyhpc_{int(time.time() * 1e6)}")


def _row(url, job_id):
    engine = make_engine(url)
    try:
        with sessions(engine)() as s:
            return s.get(Job, job_id)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_job_lifecycle(db_url, tmp_path):
    settings = {"max_concurrent_jobs": 2, "max_jobs_per_user": 1}
    if db_url:
        settings["database_url"] = db_url
    config = write_config(tmp_path, **settings)
    url = db_url or f"sqlite:///{tmp_path / 'results' / 'jobs.db'}"
    alice, bob, staff = make_tokens(config, [("alice", "user"), ("bob", "user"), ("sam", "staff")])
    service = Service(config).start()
    try:
        with service.client(alice) as a, service.client(bob) as b:
            ingest_only = {"recipe": cnt_recipe(angles=(5,)), "stages": ["ingest"]}
            long = a.post("/v1/jobs", json={"recipe": cnt_recipe(angles=(1, 2), n_iter=400),
                                            "stages": ["ingest", "ptycho"]}).json()["id"]
            queued = a.post("/v1/jobs", json=ingest_only).json()["id"]
            other = b.post("/v1/jobs", json=ingest_only).json()["id"]
            doomed = b.post("/v1/jobs", json=ingest_only).json()["id"]
            assert a.post(f"/v1/jobs/{doomed}/cancel").status_code == 404         # not alice's
            assert b.post(f"/v1/jobs/{doomed}/cancel").json()["state"] == "cancelled"
            wait_state(a, long, {"running"})
            assert wait_state(b, other, {"done", "failed"})["state"] == "done"   # bob runs beside alice
            assert a.get(f"/v1/jobs/{queued}").json()["state"] == "queued"      # one job per user
        # a restart with one job running and one queued behind it
        service.stop()
        running = _row(url, long)
        assert running.state == "running" and pid_alive(running.pid, running.pid_start)  # the run goes on
        assert _row(url, queued).state == "queued"
        service.start()
        with service.client(alice) as a, service.client(staff) as st:
            assert a.get(f"/v1/jobs/{queued}").json()["state"] == "queued"
            assert a.get(f"/v1/jobs/{long}").json()["state"] == "running"
            assert _row(url, long).attempts == 1                                 # re-attached, not rerun
            assert a.post(f"/v1/jobs/{long}/cancel").json()["state"] == "cancelled"
            deadline = time.monotonic() + 15
            while pid_alive(running.pid, running.pid_start) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pid_alive(running.pid, running.pid_start)                 # its process group ended
            assert wait_state(a, queued, {"done", "failed"})["state"] == "done"
            assert a.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "done"  # finished: unchanged
            listing = st.get("/v1/jobs").json()
            states = {j["id"]: j["state"] for j in listing["jobs"]}
            assert listing["total"] == 4 and states == {long: "cancelled", queued: "done", other: "done",
                                                         doomed: "cancelled"}
            assert {j["id"] for j in a.get("/v1/jobs").json()["jobs"]} == {long, queued}
            assert {j["id"] for j in st.get("/v1/jobs", params={"state": "cancelled"}).json()["jobs"]} \
                == {long, doomed}
    finally:
        service.stop()
        kill_job_processes(url)
