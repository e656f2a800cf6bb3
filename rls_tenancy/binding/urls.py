"""Database URLs as users write them, made into SQLAlchemy + psycopg URLs."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

from rls_tenancy.errors import UsageError


def database_url(url: str | URL | None = None) -> URL:
    """``url``, else ``$DATABASE_URL``, with the driver set to psycopg 3.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://``.
    """
    raw = url if url is not None else os.environ.get("DATABASE_URL")
    if not raw:
        raise UsageError("no database URL: pass one or set DATABASE_URL")
    parsed = make_url(raw)
    if parsed.get_backend_name() not in ("postgres", "postgresql"):
        raise UsageError(f"rls_tenancy needs PostgreSQL, not {parsed.get_backend_name()}")
    return parsed.set(drivername="postgresql+psycopg")
