"""Who and when an event names comes from the server (``sql/009_audit.sql``, ``sql/008_current_user.sql``).

The bound tenant and user, the login role and the server's clock, never the caller's word; a user the tenant does not
have is refused and nothing is written.
"""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant
from rls_tenancy.audit.events import log_event
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.audit.support import (
    EVENT,
    LOG_EVENT,
    VALID,
    People,
    add_user,
    last_event_id,
    refused_with,
    rolled_back_connection,
    written_since,
)
from tests.conftest import World, bind_then_become

# --- tenant, user, time and writer come from the server, not from the caller -------------------------------------


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
    with rolled_back_connection(superuser_engine, db.roles.owner if who == "owner" else None) as conn:
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
    with rolled_back_connection(superuser_engine, db.roles.owner) as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(world.a)})
        event_id = conn.execute(LOG_EVENT, {**VALID}).scalar_one()
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text(UNSEALED_REFUSED[update]), {"id": event_id})
        refused_with(caught, "42501", "append-only", "UPDATE")


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
    last = last_event_id(bypass_engine)
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
    refused_with(caught, "42501", f"the bound user {people.b_user} is not a user of tenant {world.a}")
    assert written_since(bypass_engine, last) == 0


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
    last = last_event_id(bypass_engine)
    with as_tenant(world.a, user=2**62 + secrets.randbelow(2**40)), app_engine.begin() as conn:
        caught = _log_in_savepoint(conn)
    refused_with(caught, "42501", "is not a user of tenant")
    assert written_since(bypass_engine, last) == 0


def test_nonexistent_tenant_is_refused(app_engine: Engine, bypass_engine: Engine) -> None:
    nobody = 2**62 + secrets.randbelow(2**40)
    last = last_event_id(bypass_engine)
    with as_tenant(nobody), app_engine.begin() as conn:
        caught = _log_in_savepoint(conn)
    refused_with(caught, "42501", f"the bound tenant {nobody} does not exist")
    assert written_since(bypass_engine, last) == 0


def test_user_without_tenant_is_refused(app_engine: Engine, bypass_engine: Engine, people: People) -> None:
    last = last_event_id(bypass_engine)
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(people.a_user)})
        if signing_requested():
            _logged_as_nobody(conn, bypass_engine)
            return
        caught = _log_in_savepoint(conn)
    refused_with(caught, "42501", "is bound without a tenant")
    assert written_since(bypass_engine, last) == 0


def test_injected_sql_names_another_user_of_its_tenant_only_where_the_context_is_unsigned(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """The user filters no rows, it attributes: unsigned, SQL that sets it is believed within its tenant."""
    other = add_user(app_engine, world.a)
    with as_tenant(world.a, user=people.a_user), app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(other)})
        event_id = log_event(conn, "test.impersonated", "as another user of A")
    with bypass_engine.connect() as reader:
        stamped = reader.execute(
            text("SELECT tenant_id, user_id FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id}
        ).one()
    expected = (None, None) if signing_requested() else (world.a, other)  # signed: the proof no longer holds
    assert tuple(stamped) == expected
