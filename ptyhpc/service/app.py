"""The FastAPI app: the job API under ``/v1`` (OpenAPI at ``/openapi.json``) and the dashboard.

:func:`create_app` builds it from a :class:`~.config.ServiceConfig`; its lifespan migrates the
database, takes the results root's service lock (one service per results root), and runs the
executor and the watch folders in background threads.
"""


import asyncio
import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from .. import __version__
from .auth import Principal, TokenCache, verify_token
from .config import ServiceConfig
from .db import TERMINAL, Job, make_engine, migrate, new_job_id, sessions
from .executor import Executor
from .jobs import RecipeRefused, check_recipe, job_recipe, write_job_files
from .results import ResultNotFound, job_progress, list_results, read_result

__all__ = ["create_app", "submit_job", "COOKIE"]

COOKIE = "ptyhpc_token"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_STAGE = r"^[a-z][a-z0-9_]{0,31}$"


class JobRequest(BaseModel):
    """``recipe``: what ``ptyhpc run`` takes, without output paths (``store``, ``figures``, ``report``);
    input paths absolute, inside the data roots. ``stages``: a subset to run (``ptyhpc run --stages``);
    default all."""

    model_config = ConfigDict(extra="forbid")
    recipe: dict[str, Any]
    stages: Optional[list[Annotated[str, Field(pattern=_STAGE)]]] = Field(default=None, min_length=1, max_length=16)


class JobCreated(BaseModel):
    id: str


class JobSummary(BaseModel):
    id: str
    owner: str
    state: str
    source: str
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None


class JobDetail(JobSummary):
    stages: Optional[list[str]] = None
    attempts: int
    exit_code: Optional[int] = None
    error: Optional[str] = None
    timings: dict[str, Optional[float]]
    progress: Optional[dict[str, Any]] = None
    recipe: dict[str, Any]


class JobList(BaseModel):
    jobs: list[JobSummary]
    total: int


class CancelResult(BaseModel):
    id: str
    state: str


class ResultList(BaseModel):
    results: list[dict[str, Any]]


class Health(BaseModel):
    status: str
    version: str
    database: str


def _summary(job: Job) -> dict:
    return {"id": job.id, "owner": job.owner, "state": job.state, "source": job.source,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at}


def _detail(cfg: ServiceConfig, job: Job) -> dict:
    now = time.time()
    end = job.finished_at or now
    return {**_summary(job), "stages": json.loads(job.stages) if job.stages else None, "attempts": job.attempts,
            "exit_code": job.exit_code, "error": job.error, "recipe": json.loads(job.recipe),
            "timings": {"queued_s": (job.started_at or end) - job.created_at,
                        "run_s": (end - job.started_at) if job.started_at else None},
            "progress": job_progress(cfg, job.id)}


def submit_job(app_state, owner: str, recipe: Any, stages: Optional[list[str]] = None, *,
               source: str = "api", files_from: Optional[Path] = None, also=None) -> str:
    """Validate, write ``<results_root>/<id>/recipe.yaml`` and queue; returns the job id.

    ``also(job_id)`` may return more rows to commit in the job's own transaction (a watch folder's
    record of the scan: queued and recorded together, or neither).

    Raises
    ------
    RecipeRefused
        Nothing is written then.
    """
    cfg = app_state.cfg
    checked = check_recipe(recipe, cfg, files_from=files_from)
    job_id = new_job_id()
    full = job_recipe(checked, cfg, job_id)
    write_job_files(full, cfg, job_id)
    with app_state.Session.begin() as s:
        s.add(Job(id=job_id, owner=owner, state="queued", recipe=json.dumps(full),
                  stages=json.dumps(stages) if stages else None, source=source, created_at=time.time(), attempts=0))
        for row in (also(job_id) if also else ()):
            s.add(row)
    app_state.executor.wake()
    return job_id


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
        if length is not None:
            try:
                if int(length) > self.limit:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await JSONResponse({"detail": "bad Content-Length"}, status_code=400)(scope, receive, send)
        if length is not None:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read up to the limit here, then hand the body on in one piece.
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client left
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _AppState:
    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.engine = make_engine(cfg.db_url)
        self.Session = sessions(self.engine)
        self.tokens = TokenCache()
        self.executor = Executor(cfg, self.Session)
        self.watcher = None
        self._lock_fd = None

    def open(self, background: bool) -> None:
        self.cfg.results_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cfg.results_root / ".service.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self.cfg.results_root}: another ptyhpc service runs on this results root") from None
        self._lock_fd = fd
        migrate(self.engine)
        if background:
            self.executor.start()
            if self.cfg.watch:
                from .watch import Watcher  # noqa: PLC0415

                self.watcher = Watcher(self)
                self.watcher.start()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.stop()
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def create_app(cfg: ServiceConfig, *, background: bool = True) -> FastAPI:
    """The service's ASGI app. ``background=False`` runs no executor or watcher (tests, schema)."""
    state = _AppState(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.open(background)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="ptyhpc service", version=__version__, lifespan=lifespan,
                  description="Job API of ptyhpc: submit recipes, follow progress, fetch results. "
                              "Every endpoint but /v1/health needs `Authorization: Bearer <token>`.")
    app.state.svc = state

    def principal(request: Request) -> Principal:
        token = None
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
        if token is None:
            token = request.cookies.get(COOKIE)
        who = verify_token(state.Session, token, state.tokens) if token else None
        if who is None:
            raise HTTPException(401, "a valid API token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return who

    Who = Annotated[Principal, Depends(principal)]

    def own_job(job_id: str, who: Principal) -> Job:
        """The job, if the caller may see it; another user's job is indistinguishable from none."""
        if not _JOB_ID.match(job_id):
            raise HTTPException(404, "no such job")
        with state.Session() as s:
            job = s.get(Job, job_id)
        if job is None or (job.owner != who.user and not who.sees_all):
            raise HTTPException(404, "no such job")
        return job

    app.state.principal = principal
    app.state.own_job = own_job

    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health():
        try:
            with state.Session() as s:
                s.execute(select(1))
            db = "ok"
        except Exception as exc:  # noqa: BLE001
            db = f"error: {type(exc).__name__}"
        return {"status": "ok" if db == "ok" else "degraded", "version": __version__, "database": db}

    @app.post("/v1/jobs", status_code=201, response_model=JobCreated, tags=["jobs"],
              responses={422: {"description": "invalid recipe; the detail names the field"},
                         413: {"description": "body too large"}})
    def create_job(body: JobRequest, who: Who):
        try:
            job_id = submit_job(state, who.user, body.recipe, body.stages)
        except RecipeRefused as exc:
            raise HTTPException(422, exc.detail) from None
        return {"id": job_id}

    @app.get("/v1/jobs", response_model=JobList, tags=["jobs"])
    def jobs(who: Who, state_: Annotated[Optional[str], Query(alias="state", pattern="^(queued|running|done|failed|cancelled)$")] = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        q = select(Job)
        n = select(func.count()).select_from(Job)
        if not who.sees_all:
            q, n = q.where(Job.owner == who.user), n.where(Job.owner == who.user)
        if state_:
            q, n = q.where(Job.state == state_), n.where(Job.state == state_)
        with state.Session() as s:
            rows = s.scalars(q.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
            total = s.scalar(n)
        return {"jobs": [_summary(j) for j in rows], "total": total}

    @app.get("/v1/jobs/{job_id}", response_model=JobDetail, tags=["jobs"], responses={404: {"description": "no such job"}})
    def job(job_id: str, who: Who):
        return _detail(cfg, own_job(job_id, who))

    @app.post("/v1/jobs/{job_id}/cancel", response_model=CancelResult, tags=["jobs"],
              responses={404: {"description": "no such job"}})
    def cancel(job_id: str, who: Who):
        own_job(job_id, who)
        return {"id": job_id, "state": state.executor.cancel(job_id)}

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events: "
                              "`state` (state changes), `progress` (per-stage and per-item counts), `end`"}})
    async def events(job_id: str, request: Request, who: Who):
        await anyio.to_thread.run_sync(own_job, job_id, who)
        return StreamingResponse(_event_stream(state, job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/results", response_model=ResultList, tags=["results"])
    def results(job_id: str, who: Who):
        own_job(job_id, who)
        return {"results": list_results(cfg, job_id)}

    @app.get("/v1/jobs/{job_id}/results/{name:path}", tags=["results"],
             responses={200: {"content": {"image/png": {}, "text/plain": {}, "application/json": {},
                                          "application/octet-stream": {}}}})
    def result(job_id: str, name: str, who: Who,
               format: Annotated[Optional[str], Query(pattern="^(json|npy)$")] = None):  # noqa: A002
        own_job(job_id, who)
        try:
            content, media = read_result(cfg, job_id, name, format)
        except ResultNotFound:
            raise HTTPException(404, f"no result {name!r} (see the results list)") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if isinstance(content, Path):
            return FileResponse(content, media_type=media)
        return Response(content, media_type=media)

    from .dashboard import add_dashboard  # noqa: PLC0415

    add_dashboard(app, state)
    app.add_middleware(_BodyLimit, limit=cfg.max_body_bytes)
    return app


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _event_stream(state: _AppState, job_id: str, request: Request, heartbeat_s: float = 15.0):
    """State changes and progress until the job ends (or the client leaves)."""
    last_state, last_progress, last_beat = None, None, time.monotonic()

    def snapshot():
        with state.Session() as s:
            job = s.get(Job, job_id)
        prog = job_progress(state.cfg, job_id) if job.state != "queued" else None
        return job, prog

    while True:
        job, prog = await anyio.to_thread.run_sync(snapshot)
        if job.state != last_state:
            last_state = job.state
            yield _sse("state", {"id": job.id, "state": job.state, "error": job.error,
                                 "started_at": job.started_at, "finished_at": job.finished_at})
        short = None if prog is None else {k: prog.get(k) for k in ("stages", "counts", "items", "tomo_complete")}
        if short is not None and short != last_progress:
            last_progress = short
            yield _sse("progress", {"id": job.id, **short})
        if job.state in TERMINAL:
            yield _sse("end", {"id": job.id, "state": job.state})
            return
        if time.monotonic() - last_beat > heartbeat_s:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(state.cfg.poll_s)
