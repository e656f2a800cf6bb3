"""What the SQL audit tests share: the queries that read the log, how a refusal is asserted, and a scratch database.

Isolation and refusals are asserted as the application role (``app_engine``
or a bound engine on a scratch database's ``app_url``), never as a superuser.
Tests that change events behind the triggers' back (tampering, purging,
rewriting a chain) run in a scratch database of their own, so the shared
test database's chains stay intact.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant
from rls_tenancy.audit.chain import ChainStatus, event_hash, verify_chains
from rls_tenancy.audit.events import log_event
from rls_tenancy.identity.users import grant_user_write
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import ddl

# Every column, with data in its jsonb text form: what event_hash() needs.
EVENT_COLUMNS = (
    "id, tenant_id, seq, user_id, db_role, action, message, ip, request_id, data::text AS data, "
    "created_at, prev_hash, hash"
)
CHAIN = text("SELECT " + EVENT_COLUMNS + " FROM rls_tenancy.audit_log WHERE tenant_id = :t ORDER BY seq, id")
EVENT = text("SELECT " + EVENT_COLUMNS + " FROM rls_tenancy.audit_log WHERE id = :id")
BROKEN_LINK = text("SELECT event_id, chain_seq, problem FROM rls_tenancy.verify_audit_chain(:t)")
LOG_EVENT = text(
    "SELECT rls_tenancy.log_event(:action, :message, CAST(:data AS jsonb), CAST(:ip AS inet), :request_id)"
)
LAST_ID = text("SELECT coalesce(max(id), 0) FROM rls_tenancy.audit_log")
WRITTEN_SINCE = text("SELECT count(*) FROM rls_tenancy.audit_log WHERE id > :id")
DISABLE_APPEND_ONLY = text(
    "ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_append_only,"
    " DISABLE TRIGGER audit_log_content_fixed, DISABLE TRIGGER audit_log_no_delete"
)
ENABLE_APPEND_ONLY = text(
    "ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER audit_log_append_only,"
    " ENABLE TRIGGER audit_log_content_fixed, ENABLE TRIGGER audit_log_no_delete"
)
VALID: dict[str, object] = {"action": "test.valid", "message": None, "data": None, "ip": None, "request_id": None}


def pg_error(error: BaseException) -> psycopg.Error:
    """The PostgreSQL error behind a SQLAlchemy one."""
    assert isinstance(error, DBAPIError)
    assert isinstance(error.orig, psycopg.Error)
    return error.orig


def refused_with(caught: pytest.ExceptionInfo[DBAPIError], sqlstate: str, *fragments: str) -> str:
    """Assert the SQLSTATE and message fragments of a refusal; return the message."""
    error = pg_error(caught.value)
    message = error.diag.message_primary or ""
    assert error.sqlstate == sqlstate, message
    for fragment in fragments:
        assert fragment in message
    return message


def last_event_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(LAST_ID).scalar_one())


def written_since(engine: Engine, last_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(WRITTEN_SINCE, {"id": last_id}).scalar_one())


@contextlib.contextmanager
def rolled_back_connection(superuser_engine: Engine, role: str | None = None) -> Iterator[Connection]:
    """A superuser's connection in a transaction rolled back afterwards, as ``role`` when given."""
    with superuser_engine.connect() as conn:
        conn.begin()
        try:
            if role is not None:
                conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", role))
            yield conn
        finally:
            conn.rollback()


def add_user(app_engine: Engine, tenant_id: int) -> int:
    """A user of ``tenant_id``, created as the application role (with its grant, where signed)."""
    email = f"audit-{secrets.token_hex(4)}@example.com"
    with as_tenant(tenant_id), app_engine.begin() as conn:
        grant_user_write(conn, email=email)
        return int(
            conn.execute(
                text("INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (:t, :e) RETURNING id"),
                {"t": tenant_id, "e": email},
            ).scalar_one()
        )


def add_tenant(bypass_engine: Engine) -> int:
    with bypass_engine.begin() as conn:
        return int(
            conn.execute(
                text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, 'Audit test') RETURNING id"),
                {"s": f"audit-{secrets.token_hex(6)}"},
            ).scalar_one()
        )


def read_chain(engine: Engine, tenant_id: int) -> list[Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(CHAIN, {"t": tenant_id}))


def first_break(
    rows: Sequence[Row[Any]], *, anchor_seq: int = 0, anchor_hash: bytes | None = None
) -> tuple[int, str] | None:
    """The first broken link found by recomputing the chain in Python, as an outside verifier would."""
    expected_seq, expected_prev = anchor_seq + 1, anchor_hash
    for row in rows:
        if row.seq != expected_seq:
            return row.id, "seq"
        if row.prev_hash != expected_prev:
            return row.id, "link"
        if event_hash(row) != row.hash:
            return row.id, "content"
        expected_seq, expected_prev = expected_seq + 1, row.hash
    return None


@dataclass(frozen=True)
class People:
    a_user: int
    b_user: int


@dataclass(frozen=True)
class Logged:
    """Events committed for each tenant of ``world``, by id."""

    ids: dict[int, list[int]]


@dataclass(frozen=True)
class Scratch:
    """A migrated database of one test's own, with an engine per role."""

    db: TenancyDatabase
    superuser: Engine
    app: Engine  # bound, like the application's
    bypass: Engine

    def tenant(self) -> int:
        return add_tenant(self.bypass)

    def user(self, tenant_id: int) -> int:
        return add_user(self.app, tenant_id)

    def log(self, tenant_id: int, count: int, *, user: int | None = None) -> list[int]:
        """``count`` events of ``tenant_id``, each committed in a transaction of its own."""
        ids = []
        for n in range(count):
            with as_tenant(tenant_id, user=user), self.app.begin() as conn:
                ids.append(log_event(conn, "test.event", f"event {n}", data={"n": n}, ip="192.0.2.7"))
        return ids

    def chain(self, tenant_id: int) -> list[Row[Any]]:
        return read_chain(self.bypass, tenant_id)

    def broken(self, tenant_id: int | None) -> tuple[int, int, str] | None:
        """verify_audit_chain(tenant_id), as the bypass role: (event id, seq, problem) or None."""
        with self.bypass.connect() as conn:
            found = conn.execute(BROKEN_LINK, {"t": tenant_id}).first()
        return None if found is None else (found.event_id, found.chain_seq, found.problem)

    def statuses(self) -> dict[int | None, ChainStatus]:
        with self.bypass.connect() as conn:
            return {status.tenant_id: status for status in verify_chains(conn)}

    def tamper(self, statement: str, **params: object) -> None:
        """Run ``statement`` as the superuser with the append-only trigger disabled, and commit."""
        with self.superuser.begin() as conn:
            conn.execute(DISABLE_APPEND_ONLY)
            conn.execute(text(statement), params)
            conn.execute(ENABLE_APPEND_ONLY)
