"""The audit log's guarantees as PostgreSQL enforces them (``sql/009_audit.sql``, ``sql/008_current_user.sql``).

Isolation and refusals are asserted as the application role (``app_engine``
or a bound engine on a scratch database's ``app_url``), never as a superuser.
Tests that change events behind the triggers' back (tampering, purging,
rewriting a chain) run in a scratch database of their own, so the shared
test database's chains stay intact.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import Connection, Engine, Row, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, ProgrammingError

from rls_tenancy import UsageError, as_tenant, bind_engine
from rls_tenancy.audit.chain import (
    ChainHead,
    ChainStatus,
    chain_heads,
    check_anchors,
    dump_anchors,
    event_hash,
    load_anchors,
    postgres_host,
    purge,
    verify_chain,
    verify_chains,
)
from rls_tenancy.audit.events import log_event
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested, tenancy_database
from tests.conftest import World, bind_then_become, ddl, run_in_threads

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

# --- helpers -----------------------------------------------------------------------------------------------------


def _pg_error(error: BaseException) -> psycopg.Error:
    """The PostgreSQL error behind a SQLAlchemy one."""
    assert isinstance(error, DBAPIError)
    assert isinstance(error.orig, psycopg.Error)
    return error.orig


def _refused_with(caught: pytest.ExceptionInfo[DBAPIError], sqlstate: str, *fragments: str) -> str:
    """Assert the SQLSTATE and message fragments of a refusal; return the message."""
    error = _pg_error(caught.value)
    message = error.diag.message_primary or ""
    assert error.sqlstate == sqlstate, message
    for fragment in fragments:
        assert fragment in message
    return message


def _last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(LAST_ID).scalar_one())


def _written_since(engine: Engine, last_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(WRITTEN_SINCE, {"id": last_id}).scalar_one())


@contextlib.contextmanager
def _rolled_back(superuser_engine: Engine, role: str | None = None) -> Iterator[Connection]:
    """A superuser's connection in a transaction rolled back afterwards, as ``role`` when given."""
    with superuser_engine.connect() as conn:
        conn.begin()
        try:
            if role is not None:
                conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", role))
            yield conn
        finally:
            conn.rollback()


def _add_user(app_engine: Engine, tenant_id: int) -> int:
    """A user of ``tenant_id``, created as the application role."""
    with as_tenant(tenant_id), app_engine.begin() as conn:
        return int(
            conn.execute(
                text("INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (:t, :e) RETURNING id"),
                {"t": tenant_id, "e": f"audit-{secrets.token_hex(4)}@example.com"},
            ).scalar_one()
        )


def _add_tenant(bypass_engine: Engine) -> int:
    with bypass_engine.begin() as conn:
        return int(
            conn.execute(
                text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, 'Audit test') RETURNING id"),
                {"s": f"audit-{secrets.token_hex(6)}"},
            ).scalar_one()
        )


def _chain(engine: Engine, tenant_id: int) -> list[Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(CHAIN, {"t": tenant_id}))


def _first_break(
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


@pytest.fixture()
def people(app_engine: Engine, world: World) -> People:
    return People(a_user=_add_user(app_engine, world.a), b_user=_add_user(app_engine, world.b))


@dataclass(frozen=True)
class Logged:
    """Events committed for each tenant of ``world``, by id."""

    ids: dict[int, list[int]]


@pytest.fixture()
def logged(app_engine: Engine, world: World, people: People) -> Logged:
    ids: dict[int, list[int]] = {}
    for tenant, user in ((world.a, people.a_user), (world.b, people.b_user)):
        with as_tenant(tenant, user=user), app_engine.begin() as conn:
            ids[tenant] = [log_event(conn, "test.logged", f"event {n} of {tenant}") for n in range(3)]
    return Logged(ids)


# --- a scratch database, for tests that break chains on purpose --------------------------------------------------


@dataclass(frozen=True)
class Scratch:
    """A migrated database of one test's own, with an engine per role."""

    db: TenancyDatabase
    superuser: Engine
    app: Engine  # bound, like the application's
    bypass: Engine

    def tenant(self) -> int:
        return _add_tenant(self.bypass)

    def user(self, tenant_id: int) -> int:
        return _add_user(self.app, tenant_id)

    def log(self, tenant_id: int, count: int, *, user: int | None = None) -> list[int]:
        """``count`` events of ``tenant_id``, each committed in a transaction of its own."""
        ids = []
        for n in range(count):
            with as_tenant(tenant_id, user=user), self.app.begin() as conn:
                ids.append(log_event(conn, "test.event", f"event {n}", data={"n": n}, ip="192.0.2.7"))
        return ids

    def chain(self, tenant_id: int) -> list[Row[Any]]:
        return _chain(self.bypass, tenant_id)

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


@pytest.fixture()
def scratch(rls_postgres_url: URL) -> Iterator[Scratch]:
    with tenancy_database(rls_postgres_url) as database:
        engines = (
            create_engine(database.superuser_url),
            bind_engine(create_engine(database.app_url)),
            create_engine(database.bypass_url),
        )
        try:
            yield Scratch(database, *engines)
        finally:
            for engine in engines:
                engine.dispose()


# --- 1. the application role can only read, and only through the policy ------------------------------------------

APP_REFUSED = {
    "log-insert": "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, created_at) "
    "VALUES (rls_tenancy.current_tenant_id(), 'forged', 'forged.event', now())",
    "log-update": "UPDATE rls_tenancy.audit_log SET message = 'forged'",
    "log-delete": "DELETE FROM rls_tenancy.audit_log",
    "log-truncate": "TRUNCATE rls_tenancy.audit_log",
    "heads-select": "SELECT * FROM rls_tenancy.audit_chain_heads",
    "heads-insert": "INSERT INTO rls_tenancy.audit_chain_heads (chain) VALUES (rls_tenancy.current_tenant_id())",
    "heads-update": "UPDATE rls_tenancy.audit_chain_heads SET seq = 0",
    "heads-delete": "DELETE FROM rls_tenancy.audit_chain_heads",
    "heads-truncate": "TRUNCATE rls_tenancy.audit_chain_heads",
    "purge": "SELECT rls_tenancy.purge_audit_log(interval '400 days')",
    "verify-all": "SELECT * FROM rls_tenancy.verify_audit_chains()",
    "chain-heads": "SELECT * FROM rls_tenancy.audit_chain_heads()",
    "hash-at": "SELECT rls_tenancy.audit_hash_at(rls_tenancy.current_tenant_id(), 1)",
}


@pytest.mark.parametrize("action", sorted(APP_REFUSED))
def test_app_role_cannot_write_the_log_or_reach_the_chain_heads(
    app_engine: Engine, world: World, logged: Logged, action: str
) -> None:
    with as_tenant(world.a), app_engine.connect() as conn, pytest.raises(ProgrammingError) as caught:
        result = conn.execute(text(APP_REFUSED[action]))
        pytest.fail(f"{action} went through ({result.rowcount} rows)")
    # 42501 alone is not enough: RLS and the append-only trigger raise it too.
    _refused_with(caught, "42501", "permission denied for")


def test_app_role_privileges_in_the_catalog(superuser_engine: Engine, db: TenancyDatabase) -> None:
    table_privileges = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    functions = {
        "rls_tenancy.log_event(text, text, jsonb, inet, text)": True,
        "rls_tenancy.verify_audit_chain(bigint)": True,
        "rls_tenancy.verify_audit_chains()": False,
        "rls_tenancy.audit_chain_heads()": False,
        "rls_tenancy.audit_hash_at(bigint, bigint)": False,
        "rls_tenancy.purge_audit_log(interval)": False,
        "rls_tenancy.seal_audit_event()": False,
    }
    with superuser_engine.connect() as conn:
        granted = {
            (table, privilege): conn.execute(
                text("SELECT has_table_privilege(:r, CAST(:t AS regclass), :p)"),
                {"r": db.roles.app, "t": table, "p": privilege},
            ).scalar_one()
            for table in ("rls_tenancy.audit_log", "rls_tenancy.audit_chain_heads")
            for privilege in table_privileges
        }
        executable = {
            function: conn.execute(
                text("SELECT has_function_privilege(:r, CAST(:f AS regprocedure), 'EXECUTE')"),
                {"r": db.roles.app, "f": function},
            ).scalar_one()
            for function in functions
        }
    assert {key for key, allowed in granted.items() if allowed} == {("rls_tenancy.audit_log", "SELECT")}
    assert executable == functions


# --- 2. append-only for everyone, the owner and superusers included -----------------------------------------------

OWNER_REFUSED = {
    "update-message": "UPDATE rls_tenancy.audit_log SET message = 'rewritten' WHERE id = :id",
    "update-chain-fields": "UPDATE rls_tenancy.audit_log SET hash = sha256(hash) WHERE id = :id",
    "delete": "DELETE FROM rls_tenancy.audit_log WHERE id = :id",
    "truncate": "TRUNCATE rls_tenancy.audit_log",
}


@pytest.mark.parametrize("who", ["superuser", "owner"])
@pytest.mark.parametrize("action", sorted(OWNER_REFUSED))
def test_triggers_refuse_changes_even_to_superusers(
    superuser_engine: Engine, db: TenancyDatabase, world: World, logged: Logged, who: str, action: str
) -> None:
    event_id = logged.ids[world.a][0]
    with _rolled_back(superuser_engine, db.roles.owner if who == "owner" else None) as conn:
        with pytest.raises(DBAPIError) as caught:
            result = conn.execute(text(OWNER_REFUSED[action]), {"id": event_id})
            pytest.fail(f"{action} as {who} went through ({result.rowcount} rows)")
        message = _refused_with(caught, "42501", "append-only")
        assert action.partition("-")[0].upper() in message


# --- 3. tenant, user, time and writer come from the server, not from the caller ----------------------------------


def test_log_event_has_no_tenant_or_user_parameter(superuser_engine: Engine) -> None:
    with superuser_engine.connect() as conn:
        signatures = conn.execute(
            text(
                "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc "
                "WHERE proname = 'log_event' AND pronamespace = 'rls_tenancy'::regnamespace"
            )
        ).scalars()
        assert list(signatures) == ["action text, message text, data jsonb, ip inet, request_id text"]


@pytest.mark.parametrize("with_user", [True, False], ids=["user", "no-user"])
def test_event_is_attributed_to_the_bound_tenant_and_user_at_server_time(
    app_engine: Engine, bypass_engine: Engine, db: TenancyDatabase, world: World, people: People, with_user: bool
) -> None:
    user = people.a_user if with_user else None
    clock = text("SELECT clock_timestamp()")
    with as_tenant(world.a, user=user), app_engine.begin() as conn:
        before = conn.execute(clock).scalar_one()
        event_id = log_event(conn, "test.attributed", "who wrote this?")
        after = conn.execute(clock).scalar_one()
    with bypass_engine.connect() as conn:
        event = conn.execute(EVENT, {"id": event_id}).one()
    assert (event.tenant_id, event.user_id, event.db_role) == (world.a, user, db.roles.app)
    assert before <= event.created_at <= after
    assert event.seq is not None and event.hash is not None  # sealed at commit


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_insert_cannot_choose_the_time_or_the_chain_fields(
    superuser_engine: Engine, db: TenancyDatabase, world: World, who: str
) -> None:
    """Even a direct INSERT by the owner is stamped with the server's clock and left unsealed."""
    with _rolled_back(superuser_engine, db.roles.owner if who == "owner" else None) as conn:
        before = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        stamped = conn.execute(
            text(
                "INSERT INTO rls_tenancy.audit_log "
                "(tenant_id, db_role, action, created_at, seq, prev_hash, hash) "
                "VALUES (:t, 'forged', 'forged.event', '2001-01-01', 1, '\\x00', '\\x01') "
                "RETURNING created_at, seq, prev_hash, hash"
            ),
            {"t": world.a},
        ).one()
        after = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert before <= stamped.created_at <= after
    assert (stamped.seq, stamped.prev_hash, stamped.hash) == (None, None, None)


# Updates of an event its own transaction has not sealed yet: the owner's
# functions run in that transaction, so the triggers refuse these too.
UNSEALED_REFUSED = {
    "content-and-seal": "UPDATE rls_tenancy.audit_log SET message = 'x', seq = 1, hash = '\\x01' WHERE id = :id",
    "tenant-and-seal": "UPDATE rls_tenancy.audit_log SET tenant_id = tenant_id, seq = 1, hash = '\\x01' WHERE id = :id",
    "content-only": "UPDATE rls_tenancy.audit_log SET message = 'rewritten' WHERE id = :id",
    "seq-without-hash": "UPDATE rls_tenancy.audit_log SET seq = 1 WHERE id = :id",
}


@pytest.mark.parametrize("update", sorted(UNSEALED_REFUSED))
def test_owner_cannot_change_an_event_before_it_is_sealed(
    superuser_engine: Engine, db: TenancyDatabase, world: World, update: str
) -> None:
    """The one UPDATE allowed sets the chain fields and nothing else, sealed or not."""
    with _rolled_back(superuser_engine, db.roles.owner) as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(world.a)})
        event_id = conn.execute(LOG_EVENT, {**_VALID}).scalar_one()
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text(UNSEALED_REFUSED[update]), {"id": event_id})
        _refused_with(caught, "42501", "append-only", "UPDATE")


def test_db_role_is_the_login_role_not_the_current_one(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    with superuser_engine.connect() as conn:
        conn.begin()
        try:
            login = conn.execute(text("SELECT session_user")).scalar_one()
            bind_then_become(conn, world.a, db.roles.app)
            event_id = conn.execute(text("SELECT rls_tenancy.log_event('test.disguised')")).scalar_one()
            written = conn.execute(
                text("SELECT db_role FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id}
            ).scalar_one()
        finally:
            conn.rollback()
    assert login != db.roles.app
    assert written == login


def _log_in_savepoint(conn: Connection) -> pytest.ExceptionInfo[DBAPIError]:
    """log_event in a savepoint that must fail; the outer transaction goes on (and commits)."""
    with pytest.raises(DBAPIError) as caught, conn.begin_nested():
        event_id = log_event(conn, "test.forged", "should not exist")
        pytest.fail(f"event {event_id} was written")
    return caught


@pytest.mark.parametrize("how", ["as_tenant", "set_config"])
def test_user_of_another_tenant_is_refused_and_nothing_is_written(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People, how: str
) -> None:
    last = _last_id(bypass_engine)
    if how == "as_tenant":
        with as_tenant(world.a, user=people.b_user), app_engine.begin() as conn:
            caught = _log_in_savepoint(conn)
    else:
        with as_tenant(world.a), app_engine.begin() as conn:
            conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(people.b_user)})
            if signing_requested():
                _logged_as_nobody(conn, bypass_engine)
                return
            caught = _log_in_savepoint(conn)
    _refused_with(caught, "42501", f"the bound user {people.b_user} is not a user of tenant {world.a}")
    assert _written_since(bypass_engine, last) == 0


def _logged_as_nobody(conn: Connection, bypass_engine: Engine) -> None:
    """Under a signed context, a user set by SQL breaks the proof: the event names no tenant and no user."""
    event_id = log_event(conn, "test.forged", "no proof holds")
    conn.commit()
    with bypass_engine.connect() as reader:
        stamped = reader.execute(
            text("SELECT tenant_id, user_id FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id}
        ).one()
    assert tuple(stamped) == (None, None)


def test_unknown_user_of_the_bound_tenant_is_refused(app_engine: Engine, bypass_engine: Engine, world: World) -> None:
    last = _last_id(bypass_engine)
    with as_tenant(world.a, user=2**62 + secrets.randbelow(2**40)), app_engine.begin() as conn:
        caught = _log_in_savepoint(conn)
    _refused_with(caught, "42501", "is not a user of tenant")
    assert _written_since(bypass_engine, last) == 0


def test_nonexistent_tenant_is_refused(app_engine: Engine, bypass_engine: Engine) -> None:
    nobody = 2**62 + secrets.randbelow(2**40)
    last = _last_id(bypass_engine)
    with as_tenant(nobody), app_engine.begin() as conn:
        caught = _log_in_savepoint(conn)
    _refused_with(caught, "42501", f"the bound tenant {nobody} does not exist")
    assert _written_since(bypass_engine, last) == 0


def test_user_without_tenant_is_refused(app_engine: Engine, bypass_engine: Engine, people: People) -> None:
    last = _last_id(bypass_engine)
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(people.a_user)})
        if signing_requested():
            _logged_as_nobody(conn, bypass_engine)
            return
        caught = _log_in_savepoint(conn)
    _refused_with(caught, "42501", "is bound without a tenant")
    assert _written_since(bypass_engine, last) == 0


# --- 4. each tenant reads only its own events --------------------------------------------------------------------


@pytest.mark.rls_policy
def test_app_role_reads_only_the_bound_tenants_events(app_engine: Engine, world: World, logged: Logged) -> None:
    read = text("SELECT id, tenant_id FROM rls_tenancy.audit_log")
    with as_tenant(world.a), app_engine.connect() as conn:
        seen = conn.execute(read).all()
        asked_for_b = conn.execute(
            text("SELECT count(*) FROM rls_tenancy.audit_log WHERE tenant_id = :b"), {"b": world.b}
        ).scalar_one()
    assert {tenant for _, tenant in seen} == {world.a}
    assert set(logged.ids[world.a]) <= {event_id for event_id, _ in seen}
    assert asked_for_b == 0
    with app_engine.connect() as conn:
        assert conn.execute(read).all() == []


# --- 5. bad input is refused by the database, and before it by Python --------------------------------------------

_VALID: dict[str, object] = {"action": "test.valid", "message": None, "data": None, "ip": None, "request_id": None}

SQL_BAD_INPUT: dict[str, dict[str, object]] = {
    "action-empty": {"action": ""},
    "action-null": {"action": None},
    "action-upper-case": {"action": "Auth.Login"},
    "action-65-chars": {"action": "a" * 65},
    "action-with-space": {"action": "auth login"},
    "action-starts-with-digit": {"action": "1auth"},
    "message-4001-chars": {"message": "m" * 4001},
    "data-array": {"data": "[1, 2]"},
    "data-string": {"data": '"text"'},
    "data-16385-bytes": {"data": json.dumps({"k": "x" * 16376})},
    "ip-network": {"ip": "10.0.0.0/8"},
    "ip6-network": {"ip": "2001:db8::/32"},
    "request-id-with-space": {"request_id": "req 1"},
    "request-id-129-chars": {"request_id": "r" * 129},
    "request-id-empty": {"request_id": ""},
    "request-id-non-ascii": {"request_id": "réq-1"},
}


@pytest.mark.parametrize("case", sorted(SQL_BAD_INPUT))
def test_log_event_refuses_bad_input_in_sql(app_engine: Engine, bypass_engine: Engine, world: World, case: str) -> None:
    last = _last_id(bypass_engine)
    with as_tenant(world.a), app_engine.begin() as conn:
        with pytest.raises(DBAPIError) as caught, conn.begin_nested():
            conn.execute(LOG_EVENT, {**_VALID, **SQL_BAD_INPUT[case]})
        message = _refused_with(caught, "22023")
        assert message.startswith("rls_tenancy: ")
    assert _written_since(bypass_engine, last) == 0


@pytest.mark.parametrize("case", sorted(SQL_BAD_INPUT))
def test_owner_insert_is_checked_like_log_event(
    superuser_engine: Engine, db: TenancyDatabase, world: World, case: str
) -> None:
    """The INSERT trigger does the checking, so a direct INSERT by the owner meets it too."""
    values = {**_VALID, "data": "{}", **SQL_BAD_INPUT[case], "t": world.a}
    with _rolled_back(superuser_engine, db.roles.owner) as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(
            text(
                "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, message, data, ip, request_id) "
                "VALUES (:t, session_user, :action, :message, CAST(:data AS jsonb), CAST(:ip AS inet), :request_id)"
            ),
            values,
        )
    assert _refused_with(caught, "22023").startswith("rls_tenancy: ")


def test_log_event_accepts_input_at_the_limits(app_engine: Engine, world: World) -> None:
    """The refusals above are the limits, not more: the largest valid values go in whole."""
    at_limits = {
        "action": "a" + "z0_.:-" * 10 + "abc",
        "message": "é" * 4000,  # characters, not bytes
        "data": json.dumps({"k": "x" * 16375}),  # 16384 bytes as jsonb text
        "ip": "2001:db8::1",
        "request_id": "~" * 128,
    }
    assert len(at_limits["action"]) == 64
    with as_tenant(world.a), app_engine.connect() as conn:
        event_id = conn.execute(LOG_EVENT, at_limits).scalar_one()
        stored = conn.execute(
            text(
                "SELECT action, message, octet_length(data::text) AS data_bytes, host(ip) AS ip, request_id "
                "FROM rls_tenancy.audit_log WHERE id = :id"
            ),
            {"id": event_id},
        ).one()
        conn.rollback()
    assert (stored.action, stored.message, stored.data_bytes, stored.ip, stored.request_id) == (
        at_limits["action"],
        at_limits["message"],
        16384,
        at_limits["ip"],
        at_limits["request_id"],
    )


PYTHON_BAD_INPUT: dict[str, dict[str, Any]] = {
    "action-empty": {"action": ""},
    "action-none": {"action": None},
    "action-upper-case": {"action": "Auth.Login"},
    "action-65-chars": {"action": "a" * 65},
    "action-with-space": {"action": "auth login"},
    "action-trailing-newline": {"action": "auth.login\n"},
    "message-4001-chars": {"message": "m" * 4001},
    "message-nul": {"message": "a\x00b"},
    "message-surrogate": {"message": "\ud800"},
    "message-not-text": {"message": 42},
    "data-list": {"data": [1, 2]},
    "data-not-json": {"data": {"k": object()}},
    "data-nan": {"data": {"k": float("nan")}},
    "data-nul": {"data": {"k": "a\x00b"}},
    "data-16385-bytes": {"data": {"k": "x" * 16376}},
    "ip-network": {"ip": "10.0.0.0/8"},
    "ip-garbage": {"ip": "not-an-address"},
    "request-id-with-space": {"request_id": "req 1"},
    "request-id-129-chars": {"request_id": "r" * 129},
    "request-id-empty": {"request_id": ""},
}


@pytest.mark.parametrize("case", sorted(PYTHON_BAD_INPUT))
def test_python_log_event_refuses_bad_input_before_the_database(app_engine: Engine, world: World, case: str) -> None:
    arguments = {"action": "test.valid", **PYTHON_BAD_INPUT[case]}
    action = arguments.pop("action")
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises(UsageError):
            log_event(conn, action, **arguments)
        # Any statement would have begun a transaction: none was sent.
        assert not conn.in_transaction()


def test_python_and_sql_agree_on_the_data_size_limit(app_engine: Engine, world: World) -> None:
    largest = {"k": "x" * 16375}
    with as_tenant(world.a), app_engine.connect() as conn:
        event_id = log_event(conn, "test.largest", data=largest)
        size = conn.execute(
            text("SELECT octet_length(data::text) FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id}
        ).scalar_one()
        conn.rollback()
    assert size == 16384


# --- 6. concurrent writers: every chain gapless and intact --------------------------------------------------------

THREADS = 8
TRANSACTIONS_PER_THREAD = 25


def test_concurrent_writers_leave_gapless_intact_chains(
    app_engine: Engine, bypass_engine: Engine, db: TenancyDatabase
) -> None:
    tenants = [_add_tenant(bypass_engine) for _ in range(3)]
    committed: dict[int, list[int]] = {tenant: [] for tenant in tenants}
    rolled_back: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def write(thread: int) -> None:
        try:
            for n in range(TRANSACTIONS_PER_THREAD):
                tenant = tenants[(thread + n) % len(tenants)]
                with as_tenant(tenant), app_engine.connect() as conn:
                    transaction = conn.begin()
                    ids = [log_event(conn, "test.concurrent", f"thread {thread} transaction {n}")]
                    if n % 7 == 0:  # now and then two events in one transaction
                        ids.append(log_event(conn, "test.concurrent", f"thread {thread} transaction {n}, second"))
                    if (thread + n) % 5 == 0:
                        transaction.rollback()
                        with lock:
                            rolled_back.extend(ids)
                    else:
                        transaction.commit()
                        with lock:
                            committed[tenant].extend(ids)
        except Exception as error:  # reported below, not swallowed
            with lock:
                errors.append(error)

    run_in_threads(write, [(thread,) for thread in range(THREADS)])
    assert errors == []
    assert rolled_back and all(committed.values())

    with bypass_engine.connect() as conn:
        statuses = {status.tenant_id: status for status in verify_chains(conn)}
        present = conn.execute(
            text("SELECT count(*) FROM rls_tenancy.audit_log WHERE id = ANY(:ids)"), {"ids": rolled_back}
        ).scalar_one()
    assert present == 0
    for tenant in tenants:
        rows = _chain(bypass_engine, tenant)
        assert [row.seq for row in rows] == list(range(1, len(committed[tenant]) + 1))
        assert sorted(row.id for row in rows) == sorted(committed[tenant])
        assert statuses[tenant] == ChainStatus(tenant, len(committed[tenant]))
        assert _first_break(rows) is None  # recomputed in Python, too
        with as_tenant(tenant), app_engine.connect() as conn:
            assert verify_chain(conn, tenant) is None


def test_events_are_sealed_at_commit_in_commit_order(app_engine: Engine, bypass_engine: Engine, world: World) -> None:
    """An open transaction holding an event does not block another writer of the same tenant."""
    with as_tenant(world.a), app_engine.connect() as first:
        first.begin()
        written_first = log_event(first, "test.written-first")
        unsealed = first.execute(
            text("SELECT seq, prev_hash, hash FROM rls_tenancy.audit_log WHERE id = :id"), {"id": written_first}
        ).one()
        with app_engine.begin() as second:
            # Sealed at insert, the first event would hold the chain's head until `first` ends.
            second.execute(text("SET LOCAL lock_timeout = '10s'"))
            written_second = log_event(second, "test.written-second")
        first.commit()
    assert tuple(unsealed) == (None, None, None)
    with bypass_engine.connect() as conn:
        seq: dict[int, int] = {
            row.id: row.seq
            for row in conn.execute(
                text("SELECT id, seq FROM rls_tenancy.audit_log WHERE id IN (:a, :b)"),
                {"a": written_first, "b": written_second},
            )
        }
    assert written_first < written_second
    assert seq[written_first] == seq[written_second] + 1  # chain order is commit order


# --- 7. tampering is evident -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoChains:
    x: int
    y: int
    x_ids: list[int]
    y_ids: list[int]


@pytest.fixture()
def two_chains(scratch: Scratch) -> TwoChains:
    """Two tenants of five events each (all of x's written before y's), both intact."""
    x, y = scratch.tenant(), scratch.tenant()
    x_ids = scratch.log(x, 5, user=scratch.user(x))
    y_ids = scratch.log(y, 5, user=scratch.user(y))
    assert scratch.broken(x) is None and scratch.broken(y) is None
    return TwoChains(x, y, x_ids, y_ids)


EDITS = {
    "message": "UPDATE rls_tenancy.audit_log SET message = 'nothing happened' WHERE id = :id",
    "action": "UPDATE rls_tenancy.audit_log SET action = 'test.harmless' WHERE id = :id",
    "user_id": "UPDATE rls_tenancy.audit_log SET user_id = NULL WHERE id = :id",
    "db_role": "UPDATE rls_tenancy.audit_log SET db_role = 'someone_else' WHERE id = :id",
    "ip": "UPDATE rls_tenancy.audit_log SET ip = '198.51.100.1' WHERE id = :id",
    "request_id": "UPDATE rls_tenancy.audit_log SET request_id = 'other' WHERE id = :id",
    "data": "UPDATE rls_tenancy.audit_log SET data = data || '{\"n\": 99}' WHERE id = :id",
    "created_at": "UPDATE rls_tenancy.audit_log SET created_at = created_at + interval '1 microsecond' WHERE id = :id",
}


@pytest.mark.parametrize("column", sorted(EDITS))
def test_edited_event_is_named(scratch: Scratch, two_chains: TwoChains, column: str) -> None:
    edited = two_chains.x_ids[2]
    scratch.tamper(EDITS[column], id=edited)
    problem = (edited, 3, "its content does not match its hash: changed after it was written")
    assert scratch.broken(two_chains.x) == problem
    assert _first_break(scratch.chain(two_chains.x)) == (edited, "content")
    statuses = scratch.statuses()
    assert statuses[two_chains.x] == ChainStatus(two_chains.x, 5, *problem)
    assert statuses[two_chains.y].intact


def test_deleted_middle_event_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=two_chains.x_ids[2])
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[3],
        4,
        "expected event 3 of the chain here: events were removed or added",
    )
    assert _first_break(scratch.chain(two_chains.x)) == (two_chains.x_ids[3], "seq")
    assert scratch.broken(two_chains.y) is None


def test_deleted_last_event_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=two_chains.x_ids[4])
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[4],
        5,
        "the chain stops at event 4 but its head records 5: events at the end were removed",
    )
    assert scratch.broken(two_chains.y) is None


def test_event_moved_to_another_tenant_breaks_both_chains(scratch: Scratch, two_chains: TwoChains) -> None:
    moved = two_chains.x_ids[2]
    scratch.tamper("UPDATE rls_tenancy.audit_log SET tenant_id = :y WHERE id = :id", id=moved, y=two_chains.y)
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[3],
        4,
        "expected event 3 of the chain here: events were removed or added",
    )
    # In y's chain it sits at seq 3, before y's own third event (lower id), linked to x's second.
    assert scratch.broken(two_chains.y) == (moved, 3, "does not link to the event before it")


def test_rewritten_prev_hash_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    rewritten = two_chains.x_ids[2]
    scratch.tamper("UPDATE rls_tenancy.audit_log SET prev_hash = :h WHERE id = :id", id=rewritten, h=bytes(32))
    assert scratch.broken(two_chains.x) == (rewritten, 3, "does not link to the event before it")
    assert _first_break(scratch.chain(two_chains.x)) == (rewritten, "link")


def test_deleted_head_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_chain_heads WHERE chain = :x", x=two_chains.x)
    assert scratch.broken(two_chains.x) == (two_chains.x_ids[0], 1, "the chain has events but no recorded head")


def test_edited_then_restored_event_verifies_again(scratch: Scratch, two_chains: TwoChains) -> None:
    edited = two_chains.x_ids[1]
    (original,) = [row.message for row in scratch.chain(two_chains.x) if row.id == edited]
    update = "UPDATE rls_tenancy.audit_log SET message = :m WHERE id = :id"
    scratch.tamper(update, id=edited, m="nothing to see")
    assert scratch.broken(two_chains.x) is not None
    scratch.tamper(update, id=edited, m=original)
    assert scratch.broken(two_chains.x) is None
    assert scratch.statuses()[two_chains.x].intact


# --- 8. the encoding is pinned -----------------------------------------------------------------------------------

SQL_HASH = text(
    "SELECT rls_tenancy.audit_event_hash(:id, :tenant_id, :seq, :user_id, :db_role, :action, :message, "
    "CAST(:ip AS inet), :request_id, CAST(:data AS jsonb), CAST(:created_at AS timestamptz), :prev_hash) AS hash, "
    "CAST(:data AS jsonb)::text AS data_text"
)
VECTOR_TIME = "2026-01-02 03:04:05.123456+00"
VECTORS: dict[str, tuple[dict[str, object], str]] = {
    "every-field": (
        {
            "id": 1234567890123,
            "tenant_id": 42,
            "seq": 7,
            "user_id": 99,
            "db_role": "rls_app",
            "action": "auth.login",
            "message": "Grüße, 世界 🔐",
            "ip": "2001:db8::1",
            "request_id": "req-0001",
            "data": '{"b": [1, 2.50, {"c": null}], "a": "ü"}',
            "created_at": VECTOR_TIME,
            "prev_hash": b"\xab" * 32,
        },
        "a7a68ce7e0c1a98e108ac63ca4c1b778a8a95efed35115c030b76a3e72b3594e",
    ),
    "nulls": (
        {
            "id": 1,
            "tenant_id": None,
            "seq": 1,
            "user_id": None,
            "db_role": "rls_admin",
            "action": "bypass.used",
            "message": None,
            "ip": None,
            "request_id": None,
            "data": "{}",
            "created_at": VECTOR_TIME,
            "prev_hash": None,
        },
        "ca63df11e4544ed2378d2aee66ceae86c01c8b613d1513b1940b8a89fa94787e",
    ),
}


@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kathmandu", "America/St_Johns"])
def test_hash_matches_the_pinned_test_vector(app_engine: Engine, vector: str, timezone: str) -> None:
    fields, expected = VECTORS[vector]
    with app_engine.connect() as conn:
        conn.execute(text("SELECT set_config('timezone', :tz, true)"), {"tz": timezone})
        conn.execute(text("SET LOCAL DateStyle = 'SQL, DMY'"))
        conn.execute(text("SET LOCAL extra_float_digits = 3"))
        computed = conn.execute(SQL_HASH, fields).one()
    assert computed.hash.hex() == expected
    # The Python re-implementation, on the same event (data in jsonb's text form), whatever the time zone.
    instant = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC).astimezone(ZoneInfo(timezone))
    event = SimpleNamespace(**{**fields, "data": computed.data_text, "created_at": instant})
    assert event_hash(event).hex() == expected


def test_python_hash_equals_stored_hash(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    with as_tenant(world.a), app_engine.begin() as conn:
        bare = log_event(conn, "test.bare")  # no user, message, ip, request id or data
    with as_tenant(world.a, user=people.a_user), app_engine.begin() as conn:
        rich = [
            log_event(conn, "test.unicode", 'Zürich → 東京 🔐, "quoted"\n\ttabbed', ip="192.0.2.44"),
            log_event(conn, "test.ipv6", "v6", ip="2001:db8:0:0:1:0:0:1", request_id="req-v6"),
            log_event(
                conn,
                "test.nested",
                data={"z": [1, 2.5, {"deep": None, "ü": True}], "a": {"b": {"c": "d"}}, "n": -0.001, "big": 10**20},
            ),
        ]
    with bypass_engine.connect() as conn:
        rows = [conn.execute(EVENT, {"id": event_id}).one() for event_id in [bare, *rich]]
    assert (rows[0].user_id, rows[0].message, rows[0].ip, rows[0].request_id) == (None, None, None, None)
    for row in rows:
        assert event_hash(row) == row.hash, row.action


@pytest.mark.parametrize("ip", ["::ffff:192.0.2.1", "::192.0.2.1"])
def test_python_hash_equals_stored_hash_for_ipv4_mapped_addresses(
    app_engine: Engine, bypass_engine: Engine, world: World, ip: str
) -> None:
    with as_tenant(world.a), app_engine.begin() as conn:
        event_id = log_event(conn, "test.mapped", ip=ip)
    with bypass_engine.connect() as conn:
        row = conn.execute(EVENT, {"id": event_id}).one()
    assert event_hash(row) == row.hash


ADDRESSES = [
    "192.0.2.1", "0.0.0.0", "::", "::1", "::2", "::ffff:192.0.2.1", "::192.0.2.1", "::0.0.1.2", "::ffff:0:0",
    "::ffff:0.0.0.1", "1::", "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:0:0:1::1", "fe80::1:2:3:4",
    "1:0:1:1:1:1:1:1", "0:0:0:0:0:1:0:0", "::1:0:0:0", "ffff::ffff:1.2.3.4", "0:0:0:0:1:ffff:1.2.3.4",
]  # fmt: skip


def test_python_formats_addresses_as_postgres_host_does(bypass_engine: Engine) -> None:
    with bypass_engine.connect() as conn:
        for address in ADDRESSES:
            expected = conn.execute(text("SELECT host(CAST(:ip AS inet))"), {"ip": address}).scalar_one()
            assert postgres_host(address) == expected, address


# --- 9. purge ----------------------------------------------------------------------------------------------------


def _old_events(scratch: Scratch, tenant_id: int | None, count: int, *, age: str = "40 days") -> list[int]:
    """Events stamped ``age`` ago: inserted by the owner with the stamp trigger off, sealed as usual."""
    with scratch.superuser.begin() as conn:
        conn.execute(text("ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_stamp"))
        conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", scratch.db.roles.owner))
        ids = [
            int(
                conn.execute(
                    text(
                        "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, message, created_at) "
                        "VALUES (:t, session_user, 'test.old', :m, now() - CAST(:age AS interval)) RETURNING id"
                    ),
                    {"t": tenant_id, "m": f"old event {n}", "age": age},
                ).scalar_one()
            )
            for n in range(count)
        ]
        conn.execute(text("RESET ROLE"))
        # Seal now: ALTER TABLE refuses while seals are pending.
        conn.execute(text("SET CONSTRAINTS rls_tenancy.audit_log_seal IMMEDIATE"))
        conn.execute(text("ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER audit_log_stamp"))
    return ids


def _purged_events(scratch: Scratch) -> list[Row[Any]]:
    with scratch.bypass.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT tenant_id, seq, db_role, data FROM rls_tenancy.audit_log "
                    "WHERE action = 'audit.purged' ORDER BY tenant_id NULLS FIRST"
                )
            )
        )


def test_purge_removes_old_events_and_keeps_chains_verifiable(scratch: Scratch) -> None:
    p, q, r = scratch.tenant(), scratch.tenant(), scratch.tenant()
    old = {p: _old_events(scratch, p, 3), q: _old_events(scratch, q, 2), None: _old_events(scratch, None, 1)}
    with scratch.bypass.connect() as conn:
        anchors_at_the_cut = chain_heads(conn)  # p's head is its last old event
    new = {p: scratch.log(p, 2), q: scratch.log(q, 1), r: scratch.log(r, 2)}
    assert all(status.intact for status in scratch.statuses().values())
    everything = _last_id(scratch.bypass)

    with scratch.bypass.begin() as conn:
        removed = purge(conn, timedelta(days=30))
    assert removed == 6

    with scratch.bypass.connect() as conn:
        remaining = set(conn.execute(text("SELECT id FROM rls_tenancy.audit_log")).scalars())
        heads = {row.tenant_id: row for row in conn.execute(text("SELECT * FROM rls_tenancy.audit_chain_heads()"))}
        assert check_anchors(conn, anchors_at_the_cut) == []  # the anchor at the cut is still checkable
        # An anchor older than the cut names an event the database says it purged: only the database
        # says so, and anchors exist to not take its word (a wiped chain would look the same).
        [older] = check_anchors(conn, [ChainHead(p, 1, b"\x00" * 32, None)])
        assert "says it was purged (cut at 3)" in older
        # At the cut, the recorded hash still has to match.
        assert len(check_anchors(conn, [ChainHead(p, 3, b"\x00" * 32, None)])) == 1
    assert not remaining & {event_id for ids in old.values() for event_id in ids}
    assert {event_id for ids in new.values() for event_id in ids} <= remaining
    assert (heads[p].anchor_seq, heads[q].anchor_seq, heads[None].anchor_seq, heads[r].anchor_seq) == (3, 2, 1, 0)

    purged = _purged_events(scratch)
    assert [(row.tenant_id, row.data["removed"], row.data["through_seq"]) for row in purged] == [
        (None, 1, 1),
        (p, 3, 3),
        (q, 2, 2),
    ]
    assert {row.db_role for row in purged} == {scratch.db.roles.bypass}
    assert _last_id(scratch.bypass) == everything + 3

    statuses = scratch.statuses()
    assert all(status.intact for status in statuses.values())
    assert (statuses[p].events, statuses[q].events, statuses[r].events) == (3, 2, 2)
    for tenant in (p, q):
        rows = scratch.chain(tenant)
        assert rows[0].prev_hash == heads[tenant].anchor_hash
        assert rows[-1].seq == heads[tenant].seq
        assert _first_break(rows, anchor_seq=heads[tenant].anchor_seq, anchor_hash=heads[tenant].anchor_hash) is None

    # Nothing more is old enough: nothing removed, nothing recorded; the chains go on.
    with scratch.bypass.begin() as conn:
        assert purge(conn, timedelta(days=30)) == 0
    assert len(_purged_events(scratch)) == 3
    scratch.log(p, 1)
    assert scratch.broken(p) is None

    # Removing the first event after the cut is still caught: verification starts at the anchor.
    first_kept = scratch.chain(p)[0].id
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=first_kept)
    assert scratch.broken(p) is not None


@pytest.mark.parametrize("retention", ["23 hours 59 minutes", "-400 days", None])
def test_purge_refuses_a_retention_under_a_day(scratch: Scratch, retention: str | None) -> None:
    tenant = scratch.tenant()
    _old_events(scratch, tenant, 2)
    before = _last_id(scratch.bypass)
    with scratch.bypass.begin() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT rls_tenancy.purge_audit_log(CAST(:r AS interval))"), {"r": retention})
    _refused_with(caught, "22023", "rls_tenancy: the audit retention must be at least one day")
    with scratch.bypass.connect() as conn, pytest.raises(UsageError):
        purge(conn, timedelta(hours=23))
    assert len(scratch.chain(tenant)) == 2
    assert _last_id(scratch.bypass) == before


def test_app_role_cannot_purge(scratch: Scratch) -> None:
    tenant = scratch.tenant()
    _old_events(scratch, tenant, 2)
    with as_tenant(tenant), scratch.app.connect() as conn, pytest.raises(ProgrammingError) as caught:
        purge(conn, timedelta(days=30))
    _refused_with(caught, "42501", "permission denied for function purge_audit_log")
    assert len(scratch.chain(tenant)) == 2


# --- 10. anchors catch a consistent rewrite ----------------------------------------------------------------------


def test_anchors_round_trip(scratch: Scratch) -> None:
    x, y = scratch.tenant(), scratch.tenant()
    scratch.log(x, 3)
    scratch.log(y, 1)
    with scratch.bypass.connect() as conn:
        heads = chain_heads(conn)
    loaded = load_anchors(dump_anchors(heads))
    assert [(h.tenant_id, h.seq, h.hash) for h in loaded] == [(h.tenant_id, h.seq, h.hash) for h in heads]
    assert {(h.tenant_id, h.seq) for h in loaded} == {(x, 3), (y, 1)}
    for garbage in ("", "[]", '{"format": "something else", "heads": []}', dump_anchors(heads).replace('"seq"', '"n"')):
        with pytest.raises(UsageError):
            load_anchors(garbage)


def _rewrite_consistently(scratch: Scratch, tenant_id: int, from_seq: int) -> None:
    """What verification alone cannot see: edit an event and re-hash it, every later one, and the head."""
    with scratch.superuser.begin() as conn:
        conn.execute(DISABLE_APPEND_ONLY)
        events = conn.execute(
            text("SELECT id, seq, prev_hash FROM rls_tenancy.audit_log WHERE tenant_id = :t ORDER BY seq"),
            {"t": tenant_id},
        ).all()
        prev_hash: bytes | None = None
        for event in events:
            if event.seq < from_seq:
                continue
            if event.seq == from_seq:
                prev_hash = event.prev_hash
                conn.execute(
                    text("UPDATE rls_tenancy.audit_log SET message = 'nothing happened here' WHERE id = :id"),
                    {"id": event.id},
                )
            prev_hash = conn.execute(
                text(
                    "UPDATE rls_tenancy.audit_log SET prev_hash = :prev, hash = rls_tenancy.audit_event_hash("
                    "id, tenant_id, seq, user_id, db_role, action, message, ip, request_id, data, created_at, "
                    "CAST(:prev AS bytea)) WHERE id = :id RETURNING hash"
                ),
                {"id": event.id, "prev": prev_hash},
            ).scalar_one()
        conn.execute(
            text("UPDATE rls_tenancy.audit_chain_heads SET hash = :h WHERE chain = :t"),
            {"h": prev_hash, "t": tenant_id},
        )
        conn.execute(ENABLE_APPEND_ONLY)


def test_anchors_catch_a_consistent_rewrite_that_verification_misses(scratch: Scratch) -> None:
    x, y = scratch.tenant(), scratch.tenant()
    scratch.log(x, 5)
    scratch.log(y, 2)
    with scratch.bypass.connect() as conn:
        anchors = load_anchors(dump_anchors(chain_heads(conn)))
        assert check_anchors(conn, anchors) == []
    scratch.log(x, 2)  # events after the anchor do not disturb it
    with scratch.bypass.connect() as conn:
        assert check_anchors(conn, anchors) == []

    _rewrite_consistently(scratch, x, from_seq=2)

    assert [row.message for row in scratch.chain(x)][1] == "nothing happened here"
    assert all(status.intact for status in scratch.statuses().values())  # verification is fooled
    assert _first_break(scratch.chain(x)) is None  # and so is a verifier outside the database
    with scratch.bypass.connect() as conn:
        assert check_anchors(conn, anchors) == [
            f"chain of tenant {x}: event 5 was anchored, the database has a different hash"
        ]


# --- 11. the application role verifies its own tenant's chain only -----------------------------------------------


def test_app_role_verifies_only_the_bound_tenants_chain(app_engine: Engine, world: World, logged: Logged) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        assert verify_chain(conn, world.a) is None
        with pytest.raises(DBAPIError) as caught:
            verify_chain(conn, world.b)
    _refused_with(caught, "42501", "may verify only the audit chain of the tenant bound to its transaction")
    with app_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        verify_chain(conn, world.a)
    _refused_with(caught, "42501", "may verify only")
    # Nor the chain of events without a tenant, which no tenant owns.
    for bound in (None, world.a):
        with app_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
            with as_tenant(bound) if bound is not None else contextlib.nullcontext():
                verify_chain(conn, None)
        _refused_with(caught, "42501", "may verify only")


# --- 12. SECURITY DEFINER functions are pinned and closed to PUBLIC ----------------------------------------------


def test_security_definer_functions_pin_search_path_and_grant_no_public_execute(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    with superuser_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.proname, p.proconfig, "
                "ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END "
                "      FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
                "      WHERE a.privilege_type = 'EXECUTE' ORDER BY 1) AS executors "
                "FROM pg_proc p WHERE p.pronamespace = 'rls_tenancy'::regnamespace AND p.prosecdef"
            )
        ).all()
    definers = {row.proname: row for row in rows}
    roles = db.roles
    expected_executors = {
        "log_event": {roles.owner, roles.app, roles.bypass},
        "verify_audit_chain": {roles.owner, roles.app, roles.bypass},
        "verify_audit_chains": {roles.owner, roles.bypass},
        "audit_chain_heads": {roles.owner, roles.bypass},
        "audit_hash_at": {roles.owner, roles.bypass},
        "purge_audit_log": {roles.owner, roles.bypass},
        "seal_audit_event": {roles.owner},
    }
    assert set(expected_executors) <= set(definers)
    for name, row in definers.items():
        assert "search_path=pg_catalog, pg_temp" in (row.proconfig or []), name
        assert "PUBLIC" not in row.executors, name
    for name, executors in expected_executors.items():
        assert set(definers[name].executors) == executors, name


def test_purge_cuts_only_a_prefix_that_is_old_throughout(scratch: Scratch) -> None:
    """Chain order is commit order: an old event sealed after a new one must not take the new one with it."""
    p = scratch.tenant()
    [first] = _old_events(scratch, p, 1)
    [newer] = scratch.log(p, 1)
    [late_old] = _old_events(scratch, p, 1)  # created long ago, sealed after `newer`
    with scratch.bypass.begin() as conn:
        purge(conn, timedelta(days=30))
    with scratch.bypass.connect() as conn:
        kept = set(conn.execute(text("SELECT id FROM rls_tenancy.audit_log WHERE tenant_id = :t"), {"t": p}).scalars())
    assert first not in kept
    assert {newer, late_old} <= kept
    assert scratch.broken(p) is None


def test_no_tenant_can_have_id_0_which_names_the_chain_without_a_tenant(bypass_engine: Engine) -> None:
    with bypass_engine.connect() as conn, pytest.raises(DBAPIError, match="tenants_id_positive"):
        conn.execute(text("INSERT INTO rls_tenancy.tenants (id, slug, name) VALUES (0, 'zero', 'Zero')"))


def test_injected_sql_names_another_user_of_its_tenant_only_where_the_context_is_unsigned(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """The user filters no rows, it attributes: unsigned, SQL that sets it is believed within its tenant."""
    other = _add_user(app_engine, world.a)
    with as_tenant(world.a, user=people.a_user), app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(other)})
        event_id = log_event(conn, "test.impersonated", "as another user of A")
    with bypass_engine.connect() as reader:
        stamped = reader.execute(
            text("SELECT tenant_id, user_id FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id}
        ).one()
    expected = (None, None) if signing_requested() else (world.a, other)  # signed: the proof no longer holds
    assert tuple(stamped) == expected
