"""A bound engine's context key, and its check against the database's at each new connection.

The key lives on the engine's dialect, as the binding's hook does, so that
engines derived with ``execution_options()`` sign too. A wrong, missing or
unwanted key is a :class:`~rls_tenancy.ContextKeyError` when a connection
is made, never a database that silently shows nothing.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.errors import ContextKeyError

#: Where configuration gives the key: ``<slot>:<32 hex digits>``.
ENVIRONMENT = "RLS_TENANCY_CONTEXT_KEY"
#: In a pooled connection's info: the backend its proofs name (0: any, behind a pooler).
PINNED = "rls_tenancy.pinned_backend"
#: A connection's info: whether its engine has a context key (signs), as its connect found.
SIGNED = "rls_tenancy.signed"

_ATTRIBUTE = "_rls_tenancy_context_key"
_CHECK = (
    "SELECT rls_tenancy.context_signing_required(), rls_tenancy.context_key_fingerprint(%s),"
    " pg_catalog.pg_backend_pid()"
)


def configured_key(given: ContextKey | str | None) -> ContextKey | None:
    """The key given, parsed, or else the one in :data:`ENVIRONMENT`; ``None`` without either."""
    if isinstance(given, ContextKey):
        return given
    text = given if given is not None else os.environ.get(ENVIRONMENT)
    return None if not text else ContextKey.parse(text)


def set_key(dialect: Dialect, key: ContextKey | None) -> None:
    setattr(dialect, _ATTRIBUTE, key)


def key_of(dialect: object) -> ContextKey | None:
    key: ContextKey | None = getattr(dialect, _ATTRIBUTE, None)
    return key


def proof(dialect: Dialect, info: dict[Any, Any], ids: tuple[int | None, ...]) -> str:
    """``app.context_proof`` for binding ``ids`` (tenant, user) on this connection; empty without a key."""
    key: ContextKey | None = getattr(dialect, _ATTRIBUTE, None)
    if key is None:
        return ""
    return key.proof(ids[0], ids[1], pid=info.get(PINNED, 0))


def check_key(dialect: Dialect) -> Any:
    """A ``connect`` listener: the engine's key against the database's, and whether proofs can name the backend."""

    def check(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        key = key_of(dialect)
        record.info[SIGNED] = key is not None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_CHECK, (1 if key is None else key.slot,))
            row = cursor.fetchone()
        except psycopg.errors.UndefinedFunction:
            dbapi_connection.rollback()
            if key is not None:
                dbapi_connection.close()
                raise ContextKeyError(
                    "this engine has a context key, but the database has no signed context yet: "
                    "upgrade it to the library's head (rls-tenancy migrate, or alembic upgrade heads)"
                ) from None
            return
        finally:
            cursor.close()
        dbapi_connection.rollback()
        assert row is not None
        required, fingerprint, server_pid = row
        problem = _problem(key, bool(required), fingerprint)
        if problem is not None:
            dbapi_connection.close()  # useless, and the pool would not close it
            raise ContextKeyError(problem)
        # Behind a pooler the client's backend is not the server's: proofs then name none, and psycopg
        # prepares nothing. Every transaction there begins with the reset, which deallocates all; and
        # the names psycopg gives its statements (_pg3_0, ...) are every other client's too, so one
        # another client prepared would pass for this one's and run in its transaction.
        driver = record.driver_connection
        record.info[PINNED] = server_pid if driver is not None and server_pid == driver.info.backend_pid else 0
        if record.info[PINNED] == 0 and driver is not None:
            driver.prepare_threshold = None

    return check


def _problem(key: ContextKey | None, required: bool, fingerprint: str | None) -> str | None:
    if key is None:
        if required:
            return (
                "the database requires a signed tenant context, and this engine has no key: set "
                f"{ENVIRONMENT} (or give bind_engine(context_key=...)) to the key installed in the database"
            )
        return None
    if fingerprint is None:
        return (
            f"the engine's context key is for slot {key.slot}, which holds no key in this database: "
            f"install it there (rls-tenancy context-key install --slot {key.slot})"
        )
    if fingerprint != key.fingerprint():
        return (
            f"the engine's context key is not the one in slot {key.slot} of this database "
            f"(fingerprints {key.fingerprint()} and {fingerprint})"
        )
    return None
