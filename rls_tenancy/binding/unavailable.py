"""Telling "the database is unavailable right now" from a bug.

A lost connection, a server restarting, a full pool, a statement timeout, a
serialization failure: SQLAlchemy raises typed errors for each
(``OperationalError``, its pool's ``TimeoutError``), and the right answer to
all of them is "try again shortly", not a 500. :func:`unavailable_reason`
names the case; the Flask extension turns them into 503 JSON with
``Retry-After``.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import exc


def unavailable_reason(error: BaseException) -> str | None:
    """Why ``error`` means the database is unavailable for now, or None if it does not."""
    if isinstance(error, exc.TimeoutError):
        return "every database connection is in use"
    if not isinstance(error, exc.OperationalError):
        return None
    cause = error.orig
    if getattr(error, "connection_invalidated", False):
        return "the connection to the database was lost"
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return "the database did not answer in time"
    if isinstance(cause, psycopg.errors.TransactionRollback):
        return "the transaction conflicted with another one"
    if isinstance(cause, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow):
        return "the database is restarting"
    if isinstance(cause, psycopg.errors.TooManyConnections):
        return "the database has no connection to spare"
    return "the database is unavailable"
