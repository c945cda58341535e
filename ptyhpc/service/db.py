"""The job database: SQLAlchemy 2 models and their Alembic migrations.

SQLite (one file, the default) or PostgreSQL (``postgresql+psycopg://user@host/db``). The schema is
created and upgraded only by the migrations in ``ptyhpc/service/migrations`` (:func:`migrate`), run
at every start of the service and of ``ptyhpc token``. Times are UNIX seconds (float, UTC).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Optional

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = ["Base", "Token", "Job", "WatchSeen", "make_engine", "migrate", "new_job_id",
           "JOB_STATES", "TERMINAL"]

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})


class Base(DeclarativeBase):
    pass


class Token(Base):
    """An API token: only the argon2 hash of its secret is kept."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    revoked_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)


class Job(Base):
    """One submitted recipe. ``state`` is one of :data:`JOB_STATES`; ``pid``/``pid_start`` identify the
    running ``ptyhpc run`` process (its session leader) so a restarted service can re-attach to it."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    recipe: Mapped[str] = mapped_column(Text)           # the job's recipe as written (JSON)
    stages: Mapped[Optional[str]] = mapped_column(String(256), nullable=True)
    source: Mapped[str] = mapped_column(String(256), default="api")
    created_at: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    started_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    finished_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    pid_start: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class WatchSeen(Base):
    """A scan folder a watch folder has queued (so a restart never queues it twice)."""

    __tablename__ = "watch_seen"
    __table_args__ = (UniqueConstraint("folder", "scan"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    folder: Mapped[str] = mapped_column(String(1024))
    scan: Mapped[str] = mapped_column(String(512))
    job_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


def new_job_id() -> str:
    """A random job id (32 hex digits): ids are not guessable, nor do they count the jobs of others."""
    return uuid.uuid4().hex


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode and a busy timeout (the executor thread and the
    request handlers write concurrently)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is current)."""
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
