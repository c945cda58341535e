"""The facility service: an authenticated job API (``/v1``), a job database, live progress and a dashboard.

Layout: :mod:`.config` (``service.yaml``), :mod:`.db` (SQLAlchemy models, Alembic migrations),
:mod:`.auth` (API tokens), :mod:`.paths` (confinement to the data roots), :mod:`.jobs` (a submitted
recipe made into a job's recipe), :mod:`.executor` (runs jobs as ``ptyhpc run`` subprocesses),
:mod:`.results` (figures, report, arrays), :mod:`.watch` (beamline watch folders), :mod:`.app`
(the FastAPI app), :mod:`.dashboard` (server-rendered pages), :mod:`.cli` (``ptyhpc serve``,
``ptyhpc token``). See ``docs/service.md``.
"""
