"""The job service on loopback: API latency with 1,000 jobs in the database, the overhead of a job
run through the service against ``ptyhpc run`` of the same recipe, and a bounded load run.

Prints one JSON object per line:

``{"bench": "latency", "jobs_in_db", "endpoint", "requests", "p50_ms", "p95_ms", "max_ms"}``
    ``GET /v1/jobs`` (100 newest, and all 1,000), ``GET /v1/jobs/{id}`` (status) for a staff token
    and a user token; one client, sequential requests, warm token cache.
``{"bench": "overhead", "recipe", "service_s", "run_s", "overhead_s"}``
    submit → ``end`` event through the service, against ``ptyhpc run`` of the same recipe
    (same cluster settings), both cold processes, alternated, best of 3 (1 with ``--quick``).
``{"bench": "load", "jobs", "clients", "all_done", "lost", "duplicated", "wall_s", "jobs_per_min",
"api_p50_ms", "api_p95_ms", "api_requests", "service_peak_rss_mb"}``
    ``jobs`` trivially small jobs (ingest of one CNT angle) submitted by ``clients`` threads with their
    own tokens, each then polling its jobs' status until all end; API latency over every request
    made under load.

Usage: ``python benchmarks/service.py [--quick] [--jobs 200] [--clients 10]`` (``--quick``: 20 jobs
by 4 clients, fewer latency samples; about a minute). Every server is on 127.0.0.1 and every loop
is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _service import Service, cnt_recipe, follow_events, write_config  # noqa: E402

from ptyhpc.service.auth import create_token  # noqa: E402
from ptyhpc.service.db import Job, make_engine, migrate, new_job_id, sessions  # noqa: E402


def _ms(samples):
    a = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "max_ms": round(float(a.max()), 2)}


def _peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def latency(folder: Path, n_jobs: int, n_req: int):
    config = write_config(folder)
    url = f"sqlite:///{folder / 'results' / 'jobs.db'}"
    (folder / "results").mkdir()
    engine = make_engine(url)
    migrate(engine)
    S = sessions(engine)
    staff, user = create_token(S, "sam", "staff"), create_token(S, "u0", "user")
    now = time.time()
    ids = []
    with S.begin() as s:
        for i in range(n_jobs):
            jid = new_job_id()
            ids.append(jid)
            s.add(Job(id=jid, owner=f"u{i % 10}", state=("done", "failed", "queued")[i % 3], recipe="{}",
                      source="api", created_at=now - i, attempts=1))
    engine.dispose()
    service = Service(config).start()
    try:
        for who, token in (("staff", staff), ("user", user)):
            with service.client(token) as c:
                for name, path, params in (("list_100", "/v1/jobs", {}), ("list_1000", "/v1/jobs", {"limit": 1000}),
                                           ("status", None, {})):
                    c.get("/v1/jobs")  # warm
                    t = []
                    for k in range(n_req):
                        p = path or f"/v1/jobs/{ids[(k * 10) % len(ids)] if who == 'staff' else ids[0]}"
                        t0 = time.perf_counter()
                        r = c.get(p, params=params)
                        t.append(time.perf_counter() - t0)
                        assert r.status_code == 200, r.text
                    print(json.dumps({"bench": "latency", "jobs_in_db": n_jobs, "token": who, "endpoint": name,
                                      "requests": n_req, **_ms(t)}), flush=True)
    finally:
        service.stop()


def overhead(folder: Path, timeout: float, repeats: int):
    recipe = cnt_recipe(angles=(0, 8, 16), n_iter=2, tomo_iter=5)
    config = write_config(folder)
    (folder / "results").mkdir()
    engine = make_engine(f"sqlite:///{folder / 'results' / 'jobs.db'}")
    migrate(engine)
    token = create_token(sessions(engine), "alice", "user")
    engine.dispose()
    import yaml  # noqa: PLC0415

    service_s, run_s = [], []
    service = Service(config).start()
    try:
        for k in range(repeats):      # alternate the two, so a busy spell of the machine hits both
            with service.client(token) as c:
                t0 = time.perf_counter()
                job_id = c.post("/v1/jobs", json={"recipe": recipe}).json()["id"]
                events = follow_events(c, job_id, timeout=timeout)
                service_s.append(time.perf_counter() - t0)
                assert events[-1][1]["state"] == "done", events[-3:]
            local = {**recipe, "store": str(folder / f"run{k}.zarr"), "figures": str(folder / f"figs{k}"),
                     "report": str(folder / f"report{k}.txt"), "cluster": {"workers": 1}}
            (folder / "r.yaml").write_text(yaml.safe_dump(local))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ptyhpc.cli", "run", str(folder / "r.yaml")], check=True,
                           capture_output=True, timeout=timeout)
            run_s.append(time.perf_counter() - t0)
    finally:
        service.stop()
    print(json.dumps({"bench": "overhead", "recipe": "CNT 3 angles, 2 ptycho iterations, 5 SIRT iterations, 1 worker",
                      "repeats": repeats, "service_s": round(min(service_s), 2), "run_s": round(min(run_s), 2),
                      "overhead_s": round(min(service_s) - min(run_s), 2),
                      "all_service_s": [round(x, 2) for x in service_s], "all_run_s": [round(x, 2) for x in run_s]}),
          flush=True)


def load(folder: Path, n_jobs: int, n_clients: int, timeout: float):
    config = write_config(folder, max_concurrent_jobs=4, max_jobs_per_user=2, poll_s=0.2)
    (folder / "results").mkdir()
    url = f"sqlite:///{folder / 'results' / 'jobs.db'}"
    engine = make_engine(url)
    migrate(engine)
    S = sessions(engine)
    tokens = [create_token(S, f"client{i}", "user") for i in range(n_clients)]
    service = Service(config).start()
    lat, lock, mine = [], threading.Lock(), {i: [] for i in range(n_clients)}
    deadline = time.monotonic() + timeout
    errors = []

    def client(i):
        try:
            with service.client(tokens[i]) as c:
                for k in range(i, n_jobs, n_clients):
                    body = {"recipe": cnt_recipe(angles=(k % 25,)), "stages": ["ingest"]}
                    t0 = time.perf_counter()
                    r = c.post("/v1/jobs", json=body)
                    with lock:
                        lat.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    mine[i].append(r.json()["id"])
                pending = set(mine[i])
                while pending and time.monotonic() < deadline:
                    for jid in list(pending):
                        t0 = time.perf_counter()
                        r = c.get(f"/v1/jobs/{jid}")
                        with lock:
                            lat.append(time.perf_counter() - t0)
                        if r.json()["state"] in ("done", "failed", "cancelled"):
                            pending.discard(jid)
                    time.sleep(0.5)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 30))
    wall = time.perf_counter() - t0
    rss = _peak_rss_mb(service.proc.pid)
    service.stop()
    engine = make_engine(url)
    with sessions(engine)() as s:
        rows = s.query(Job.id, Job.state).all()
    engine.dispose()
    submitted = [j for ids in mine.values() for j in ids]
    states = dict(rows)
    print(json.dumps({"bench": "load", "jobs": n_jobs, "clients": n_clients,
                      "all_done": all(states.get(j) == "done" for j in submitted) and len(submitted) == n_jobs,
                      "lost": len(set(submitted) - set(states)), "duplicated": len(rows) - len(set(submitted)),
                      "wall_s": round(wall, 1), "jobs_per_min": round(60 * n_jobs / wall, 1),
                      "api_requests": len(lat), **{f"api_{k}": v for k, v in _ms(lat).items()},
                      "service_peak_rss_mb": rss, "errors": errors[:3]}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=1800, help="bound on each part, s")
    ap.add_argument("--only", choices=["latency", "overhead", "load"], default=None)
    a = ap.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    jobs = a.jobs or (20 if a.quick else 200)
    clients = a.clients or (4 if a.quick else 10)
    base = Path(tempfile.mkdtemp(prefix="ptyhpc-bench-service-"))
    try:
        if a.only in (None, "latency"):
            (base / "lat").mkdir()
            latency(base / "lat", 1000, 50 if a.quick else 200)
        if a.only in (None, "overhead"):
            (base / "ovh").mkdir()
            overhead(base / "ovh", a.timeout, 1 if a.quick else 3)
        if a.only in (None, "load"):
            (base / "load").mkdir()
            load(base / "load", jobs, clients, a.timeout)
    finally:
        from _service import kill_job_processes  # noqa: PLC0415

        for part in ("ovh", "load"):
            db = base / part / "results" / "jobs.db"
            if db.exists():
                kill_job_processes(f"sqlite:///{db}")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
