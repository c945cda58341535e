"""Alembic migrations of the job database (run by :func:`ptyhpc.service.db.migrate`)."""
