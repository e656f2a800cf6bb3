"""The audit log from Python: who an event is attributed to, which transaction it belongs to, who reads it.

Everything here runs against the real test database. Events are read back
through the bypass role's engine (which sees every chain and writes nothing
when used directly), or as the application role under a tenant.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import ColumnElement, Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rls_tenancy import (
    AuditEvent,
    NoTenantError,
    TenantChangedError,
    UnsafeBypass,
    UsageError,
    as_tenant,
    current_user_id,
    log_event,
    log_security_event,
)
from rls_tenancy.audit.events import current_origin, event_origin, read_events
from rls_tenancy.identity.tokens import authenticate_token, issue_token, revoke_token
from rls_tenancy.identity.users import User
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World

USER_SETTING = text("SELECT current_setting('app.current_user_id', true)")
TENANT_SETTING = text("SELECT current_setting('app.current_tenant', true)")


# --- helpers ---------------------------------------------------------------------------------------------------


def events(bypass_engine: Engine, *where: ColumnElement[bool]) -> list[AuditEvent]:
    """Events matching ``where``, oldest first, read as the bypass role (every chain, no event written)."""
    with Session(bypass_engine) as session:
        return list(session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id)))


def event(bypass_engine: Engine, event_id: int) -> AuditEvent | None:
    found = events(bypass_engine, AuditEvent.id == event_id)
    return found[0] if found else None


def last_event_id(bypass_engine: Engine) -> int:
    with bypass_engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(AuditEvent.id), 0))).scalar_one())


def visible_to_app(app_engine: Engine, event_id: int) -> bool:
    """Whether the application role, with whatever tenant is in context, can read the event."""
    with app_engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event_id})
        return bool(found.scalar_one())


def new_request_id() -> str:
    return f"test-{secrets.token_hex(8)}"


def add_user(app_engine: Engine, tenant_id: int, label: str) -> int:
    with as_tenant(tenant_id), Session(app_engine) as session, session.begin():
        user = User(email=f"{label}-{secrets.token_hex(3)}@example.com", roles=["projects:read"])
        session.add(user)
        session.flush()
        return user.id


@dataclass(frozen=True)
class People:
    """Two users of tenant a, one of tenant b."""

    a1: int
    a2: int
    b1: int


@pytest.fixture()
def people(app_engine: Engine, world: World) -> People:
    return People(
        a1=add_user(app_engine, world.a, "a1"),
        a2=add_user(app_engine, world.a, "a2"),
        b1=add_user(app_engine, world.b, "b1"),
    )


def raw_user_setting(engine: Engine) -> str | None:
    """app.current_user_id as the next user of the pooled connection finds it, read past every hook."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT current_setting('app.current_user_id', true)")
        row = cursor.fetchone()
        raw.rollback()
        assert row is not None
        value: str | None = row[0]
        return value
    finally:
        raw.close()


# --- binding: the user beside the tenant ---------------------------------------------------------------------------


@pytest.mark.rls_binding
def test_user_is_bound_for_the_transaction_only(pinned_engine: Engine, world: World, people: People) -> None:
    """The user an event is attributed to must never carry over into the next transaction on that connection."""
    with as_tenant(world.a, user=people.a1), pinned_engine.connect() as conn:
        assert conn.execute(USER_SETTING).scalar() == str(people.a1)
        assert conn.execute(text("SELECT rls_tenancy.current_user_id()")).scalar() == people.a1
        conn.commit()
    assert raw_user_setting(pinned_engine) in ("", None)
    with as_tenant(world.a), pinned_engine.connect() as conn:
        assert conn.execute(USER_SETTING).scalar() == ""
        assert conn.execute(text("SELECT rls_tenancy.current_user_id()")).scalar() is None
    with pinned_engine.connect() as conn:
        assert conn.execute(USER_SETTING).scalar() == ""


def test_changing_only_the_user_rebinds_it_before_the_next_statement(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """Same tenant, another user: allowed mid-transaction, and the database must follow at once."""
    with as_tenant(world.a, user=people.a1), app_engine.connect() as conn:
        assert conn.execute(USER_SETTING).scalar() == str(people.a1)
        first = log_event(conn, "test.first")
        with as_tenant(world.a, user=people.a2):
            assert conn.execute(USER_SETTING).scalar() == str(people.a2)
            second = log_event(conn, "test.second")
        assert conn.execute(USER_SETTING).scalar() == str(people.a1)
        with as_tenant(world.a):  # the same tenant, no user at all
            assert conn.execute(USER_SETTING).scalar() == ""
            nobody = log_event(conn, "test.nobody")
        assert conn.execute(TENANT_SETTING).scalar() == str(world.a)
        conn.commit()
    written = {e.id: e for e in events(bypass_engine, AuditEvent.id.in_([first, second, nobody]))}
    assert [(written[i].tenant_id, written[i].user_id) for i in (first, second, nobody)] == [
        (world.a, people.a1),
        (world.a, people.a2),
        (world.a, None),
    ]


def test_a_user_bound_in_a_savepoint_that_rolled_back_is_bound_again(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """ROLLBACK TO SAVEPOINT undoes the user's binding made inside it; the next event must still name the user."""
    with as_tenant(world.a, user=people.a1), app_engine.connect() as conn:
        conn.execute(USER_SETTING).scalar()
        savepoint = conn.begin_nested()
        with as_tenant(world.a, user=people.a2):
            assert conn.execute(USER_SETTING).scalar() == str(people.a2)  # bound inside the savepoint
            savepoint.rollback()  # the database is back to a1
            after = log_event(conn, "test.after_savepoint")
            assert conn.execute(USER_SETTING).scalar() == str(people.a2)
        conn.commit()
    (written,) = events(bypass_engine, AuditEvent.id == after)
    assert (written.tenant_id, written.user_id) == (world.a, people.a2)


def test_changing_the_tenant_mid_transaction_is_still_refused(app_engine: Engine, world: World, people: People) -> None:
    """A user may change inside a transaction; the tenant may not, with or without a user."""
    with as_tenant(world.a, user=people.a1), app_engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with as_tenant(world.b, user=people.b1), pytest.raises(TenantChangedError, match=f"bound to tenant {world.a}"):
            conn.execute(USER_SETTING)
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            conn.execute(USER_SETTING)
        assert conn.execute(USER_SETTING).scalar() == str(people.a1)  # nothing was rebound
        conn.rollback()


def test_nested_as_tenant_without_user_acts_for_no_user(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """``as_tenant(t)`` inside ``as_tenant(t, user=u)`` must not inherit u: events there are nobody's."""
    with as_tenant(world.a, user=people.a1):
        assert current_user_id() == people.a1
        with as_tenant(world.a):
            assert current_user_id() is None
            with app_engine.begin() as conn:
                assert conn.execute(USER_SETTING).scalar() == ""
                event_id = log_event(conn, "test.nested")
        assert current_user_id() == people.a1
    found = event(bypass_engine, event_id)
    assert found is not None and (found.tenant_id, found.user_id) == (world.a, None)


# --- log_event: in the caller's transaction --------------------------------------------------------------------------


def test_log_event_commits_with_the_transaction(
    app_engine: Engine, bypass_engine: Engine, db: TenancyDatabase, world: World, people: People
) -> None:
    data = {"project": 7, "tags": ["x", "ü"], "nested": {"none": None}}
    with as_tenant(world.a, user=people.a1), Session(app_engine) as session:
        event_id = log_event(session, "test.committed", "it happened", data=data)
        assert event(bypass_engine, event_id) is None  # not before the commit
        session.commit()
    found = event(bypass_engine, event_id)
    assert found is not None
    assert (found.tenant_id, found.user_id, found.db_role) == (world.a, people.a1, db.roles.app)
    assert (found.action, found.message, found.data) == ("test.committed", "it happened", data)
    assert (found.ip, found.request_id) == (None, None)  # no origin in context
    assert found.seq is not None and found.hash is not None  # sealed at commit
    with as_tenant(world.a):
        assert visible_to_app(app_engine, event_id)
    with as_tenant(world.b):
        assert not visible_to_app(app_engine, event_id)


@pytest.mark.parametrize("ending", ["rollback", "exception"])
def test_log_event_is_gone_when_the_transaction_rolls_back(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People, ending: str
) -> None:
    ids: list[int] = []
    with as_tenant(world.a, user=people.a1):
        if ending == "rollback":
            with app_engine.connect() as conn:
                ids.append(log_event(conn, "test.rolled-back"))
                conn.rollback()
        else:
            with pytest.raises(RuntimeError), app_engine.begin() as conn:
                ids.append(log_event(conn, "test.rolled-back"))
                raise RuntimeError("the work failed")
    assert event(bypass_engine, ids[0]) is None


def test_origin_comes_from_the_context_unless_given(app_engine: Engine, bypass_engine: Engine, world: World) -> None:
    request_id = new_request_id()
    with as_tenant(world.a), app_engine.begin() as conn:
        with event_origin(ip="203.0.113.7", request_id=request_id) as origin:
            assert current_origin() == origin
            from_context = log_event(conn, "test.origin")
            from_arguments = log_event(conn, "test.origin", ip="2001:db8::1", request_id="given-id")
        assert current_origin().ip is None and current_origin().request_id is None
        outside = log_event(conn, "test.origin")
        zoned = log_event(conn, "test.origin", ip="fe80::1%eth0")
    written = events(bypass_engine, AuditEvent.id.in_([from_context, from_arguments, outside, zoned]))
    found = {e.id: (None if e.ip is None else str(e.ip), e.request_id) for e in written}
    assert found == {
        from_context: ("203.0.113.7", request_id),
        from_arguments: ("2001:db8::1", "given-id"),
        outside: (None, None),
        zoned: ("fe80::1", None),
    }


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("ip", "10.0.0.0/8"), ("ip", "localhost"), ("request_id", "has space"), ("request_id", "x" * 129)],
)
def test_bad_origin_is_a_usage_error(
    app_engine: Engine, bypass_engine: Engine, world: World, keyword: str, value: str
) -> None:
    before = last_event_id(bypass_engine)
    with pytest.raises(UsageError), event_origin(**{keyword: value}):
        pass
    with as_tenant(world.a), app_engine.begin() as conn:
        with pytest.raises(UsageError):
            log_event(conn, "test.bad-origin", **{keyword: value})  # type: ignore[arg-type]
    assert last_event_id(bypass_engine) == before


@pytest.mark.parametrize(
    ("action", "message", "data"),
    [
        ("Test.Upper", None, None),
        ("", None, None),
        ("1starts-with-digit", None, None),
        ("x" * 65, None, None),
        ("test.bad", "x" * 4001, None),
        ("test.bad", "nul\x00", None),
        ("test.bad", None, {"nan": float("nan")}),
        ("test.bad", None, {"nul": "a\x00b"}),
        ("test.bad", None, {"big": "x" * 16384}),
    ],
)
def test_bad_events_are_refused_before_the_database(
    app_engine: Engine, bypass_engine: Engine, world: World, action: str, message: str | None, data: object
) -> None:
    before = last_event_id(bypass_engine)
    with as_tenant(world.a), app_engine.begin() as conn:
        with pytest.raises(UsageError):
            log_event(conn, action, message, data=data)  # type: ignore[arg-type]
        conn.execute(text("SELECT 1"))  # the transaction is still usable: nothing reached the database
    assert last_event_id(bypass_engine) == before


# --- log_security_event: a transaction of its own ----------------------------------------------------------------


def test_security_event_survives_the_outer_transaction_rolling_back(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    request_id = new_request_id()
    with as_tenant(world.a, user=people.a1), event_origin("198.51.100.2", request_id), app_engine.connect() as outer:
        ordinary = log_event(outer, "test.ordinary")
        security = log_security_event(app_engine, "test.security", "must outlive the request", data={"n": 1})
        # Committed already, while the outer transaction is still open on its own connection.
        committed = event(bypass_engine, security)
        assert committed is not None and committed.seq is not None
        assert event(bypass_engine, ordinary) is None
        outer.rollback()
    assert event(bypass_engine, ordinary) is None
    found = event(bypass_engine, security)
    assert found is not None
    assert (found.tenant_id, found.user_id, found.action, found.message, found.data) == (
        world.a,
        people.a1,
        "test.security",
        "must outlive the request",
        {"n": 1},
    )
    assert (str(found.ip), found.request_id) == ("198.51.100.2", request_id)


def test_security_event_for_an_explicit_tenant_and_user(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """Explicit ids replace the context's; a tenant given alone means no user (not the context's one)."""
    written = [log_security_event(app_engine, "test.explicit", tenant_id=world.a, user_id=people.a2)]
    with as_tenant(world.a, user=people.a1):
        written.append(log_security_event(app_engine, "test.explicit", tenant_id=world.b))
        written.append(log_security_event(app_engine, "test.explicit", tenant_id=world.a))
        written.append(log_security_event(app_engine, "test.explicit", user_id=people.a2))
        written.append(log_security_event(app_engine, "test.explicit", tenant_id=None))
        written.append(log_security_event(app_engine, "test.explicit", tenant_id=None, user_id=people.a2))
        assert current_user_id() == people.a1  # the context is restored
    found = {e.id: (e.tenant_id, e.user_id) for e in events(bypass_engine, AuditEvent.id.in_(written))}
    assert [found[i] for i in written] == [
        (world.a, people.a2),
        (world.b, None),
        (world.a, None),
        (world.a, people.a2),
        (None, None),
        (None, None),
    ]


def test_security_event_refuses_a_user_of_another_tenant(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    """The database checks that the bound user belongs to the bound tenant; nothing is written otherwise."""
    before = last_event_id(bypass_engine)
    with pytest.raises(DBAPIError, match="is not a user of tenant"):
        log_security_event(app_engine, "test.forged", tenant_id=world.a, user_id=people.b1)
    assert last_event_id(bypass_engine) == before


def test_security_event_for_a_tenant_needs_a_bound_engine(bypass_engine: Engine, world: World, people: People) -> None:
    """The bypass engine binds no tenant: writing "for" one through it would silently lose the tenant."""
    before = last_event_id(bypass_engine)
    with pytest.raises(UsageError, match="needs a bound engine"):
        log_security_event(bypass_engine, "test.unbound", tenant_id=world.a)
    with as_tenant(world.a, user=people.a1), pytest.raises(UsageError, match="needs a bound engine"):
        log_security_event(bypass_engine, "test.unbound")
    assert last_event_id(bypass_engine) == before


@pytest.mark.parametrize("through", ["app", "bypass"])
def test_event_without_tenant_goes_to_the_no_tenant_chain(
    app_engine: Engine, bypass_engine: Engine, db: TenancyDatabase, world: World, through: str
) -> None:
    """No tenant: tenant_id NULL, readable by the bypass role only, never by any tenant."""
    engine = app_engine if through == "app" else bypass_engine
    event_id = log_security_event(engine, "test.anonymous", "nobody's", request_id=new_request_id())
    found = event(bypass_engine, event_id)
    assert found is not None and (found.tenant_id, found.user_id) == (None, None)
    assert found.db_role == (db.roles.app if through == "app" else db.roles.bypass)
    assert found.seq is not None
    assert not visible_to_app(app_engine, event_id)
    with as_tenant(world.a):
        assert not visible_to_app(app_engine, event_id)


# --- read_events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """Events written one transaction each, oldest first, and their server times."""

    ids: list[int]
    times: list[datetime]
    other_tenant: int


@pytest.fixture()
def written(app_engine: Engine, bypass_engine: Engine, world: World) -> Written:
    ids = []
    for action in ("test.alpha", "test.beta", "test.alpha", "test.gamma"):
        with as_tenant(world.a), app_engine.begin() as conn:
            ids.append(log_event(conn, action))
    with as_tenant(world.b), app_engine.begin() as conn:
        other = log_event(conn, "test.alpha")
    times = [e.created_at for e in events(bypass_engine, AuditEvent.id.in_(ids))]
    assert times == sorted(times) and len(set(times)) == len(times)
    return Written(ids=ids, times=times, other_tenant=other)


def test_read_events_shows_the_tenants_own_newest_first(app_engine: Engine, world: World, written: Written) -> None:
    with as_tenant(world.a), Session(app_engine) as session:
        assert [e.id for e in read_events(session)] == written.ids[::-1]
    with as_tenant(world.b), Session(app_engine) as session:
        assert [e.id for e in read_events(session)] == [written.other_tenant]


def test_read_events_filters(app_engine: Engine, world: World, written: Written) -> None:
    ids, times = written.ids, written.times
    with as_tenant(world.a), Session(app_engine) as session:

        def read(**filters: object) -> list[int]:
            return [e.id for e in read_events(session, **filters)]  # type: ignore[arg-type]

        assert read(action="test.alpha") == [ids[2], ids[0]]
        assert read(action="test.nothing") == []
        assert read(since=times[1]) == [ids[3], ids[2], ids[1]]  # inclusive
        assert read(until=times[1]) == [ids[0]]  # exclusive
        assert read(since=times[1], until=times[3]) == [ids[2], ids[1]]
        # The same instant in another time zone is the same bound.
        assert read(since=times[1].astimezone(datetime.now().astimezone().tzinfo)) == read(since=times[1])
        assert read(before_id=ids[2]) == [ids[1], ids[0]]
        assert read(limit=2) == [ids[3], ids[2]]
        assert read(before_id=ids[2], limit=1) == [ids[1]]
        assert read(action="test.alpha", before_id=ids[2]) == [ids[0]]


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": True},
        {"limit": "5"},
        {"before_id": 0},
        {"before_id": 2**63},
        {"before_id": True},
        {"since": datetime(2026, 1, 1)},
        {"until": datetime(2026, 1, 1)},
        {"since": "2026-01-01T00:00:00+00:00"},
        {"action": "Not An Action"},
    ],
)
def test_read_events_refuses_bad_filters(app_engine: Engine, world: World, filters: dict[str, object]) -> None:
    with as_tenant(world.a), Session(app_engine) as session, pytest.raises(UsageError):
        read_events(session, **filters)  # type: ignore[arg-type]


def test_read_events_accepts_the_page_bounds(app_engine: Engine, world: World, written: Written) -> None:
    with as_tenant(world.a), Session(app_engine) as session:
        assert len(read_events(session, limit=1)) == 1
        assert len(read_events(session, limit=200)) == len(written.ids)


def test_read_events_filters_by_tenant_itself_on_a_bypass_session(
    bypass: UnsafeBypass, world: World, written: Written
) -> None:
    """Through the bypass no policy narrows the rows: read_events' own tenant filter must."""
    with as_tenant(world.b), bypass.session("test: support reads tenant b's audit log") as session:
        assert [e.id for e in read_events(session)] == [written.other_tenant]


def test_read_events_needs_a_tenant(app_engine: Engine) -> None:
    with Session(app_engine) as session, pytest.raises(NoTenantError):
        read_events(session)


# --- the bypass records every use ----------------------------------------------------------------------------------


def bypass_uses(bypass_engine: Engine, reason: str) -> list[AuditEvent]:
    return events(bypass_engine, AuditEvent.action == "bypass.used", AuditEvent.message == reason)


@pytest.mark.parametrize("entry", ["session", "connect"])
def test_each_bypass_use_writes_one_event_first(
    bypass: UnsafeBypass, bypass_engine: Engine, db: TenancyDatabase, world: World, people: People, entry: str
) -> None:
    reason = f"test: support ticket {secrets.token_hex(4)}"
    open_bypass = bypass.session if entry == "session" else bypass.connect
    with as_tenant(world.a, user=people.a1), open_bypass(reason):
        # Recorded (committed) before the block runs: no record, no bypass.
        assert len(bypass_uses(bypass_engine, reason)) == 1
    [used] = bypass_uses(bypass_engine, reason)
    assert (used.tenant_id, used.user_id, used.db_role) == (None, None, db.roles.bypass)
    assert used.data == {"tenant_in_context": world.a, "user_in_context": people.a1}
    assert used.seq is not None
    with open_bypass(reason):
        pass
    assert [u.data for u in bypass_uses(bypass_engine, reason)] == [
        {"tenant_in_context": world.a, "user_in_context": people.a1},
        {"tenant_in_context": None, "user_in_context": None},
    ]


@pytest.mark.parametrize("entry", ["session", "connect"])
def test_bypass_event_stays_when_the_block_fails(
    bypass: UnsafeBypass, bypass_engine: Engine, world: World, entry: str
) -> None:
    reason = f"test: failing admin job {secrets.token_hex(4)}"
    open_bypass = bypass.session if entry == "session" else bypass.connect
    with pytest.raises(RuntimeError), as_tenant(world.b), open_bypass(reason):
        raise RuntimeError("the job failed")
    [used] = bypass_uses(bypass_engine, reason)
    assert used.data == {"tenant_in_context": world.b, "user_in_context": None}


@pytest.mark.parametrize("reason", ["", "   ", "tab\x00nul", "x" * 501, "lone \udcfc surrogate"])
@pytest.mark.parametrize("entry", ["session", "connect"])
def test_refused_bypass_reason_writes_nothing(
    bypass: UnsafeBypass, bypass_engine: Engine, reason: str, entry: str
) -> None:
    before = last_event_id(bypass_engine)
    open_bypass = bypass.session if entry == "session" else bypass.connect
    with pytest.raises(UsageError), open_bypass(reason):
        raise AssertionError("the bypass opened")
    assert last_event_id(bypass_engine) == before


def test_longest_bypass_reason_is_recorded_whole(bypass: UnsafeBypass, bypass_engine: Engine) -> None:
    reason = secrets.token_hex(4) + "r" * 492
    with bypass.connect(reason):
        pass
    assert [u.message for u in bypass_uses(bypass_engine, reason)] == [reason]


# --- tokens ------------------------------------------------------------------------------------------------------


def token_events(bypass_engine: Engine, action: str, token_id: int) -> list[AuditEvent]:
    return events(bypass_engine, AuditEvent.action == action, AuditEvent.data["token_id"].as_integer() == token_id)


def test_token_issue_and_revoke_are_logged_in_their_transaction(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    with as_tenant(world.a, user=people.a2), Session(app_engine) as session, session.begin():
        issued = issue_token(session, name="ci", scopes=["projects:write", "projects:read"], user_id=people.a1)
    [logged] = token_events(bypass_engine, "token.issued", issued.id)
    assert (logged.tenant_id, logged.user_id) == (world.a, people.a2)  # who issued it
    assert logged.data == {
        "token_id": issued.id,
        "name": "ci",
        "scopes": ["projects:read", "projects:write"],
        "for_user": people.a1,
    }
    assert issued.token not in str(logged.as_dict())  # the secret is never logged
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        assert revoke_token(session, issued.id) is True
        assert revoke_token(session, issued.id) is False  # nothing left to revoke: no second event
    [revoked] = token_events(bypass_engine, "token.revoked", issued.id)
    assert (revoked.tenant_id, revoked.user_id, revoked.data) == (world.a, None, {"token_id": issued.id})


def test_token_events_roll_back_with_the_token(app_engine: Engine, bypass_engine: Engine, world: World) -> None:
    with as_tenant(world.a), Session(app_engine) as session, session.begin():
        kept = issue_token(session, name="kept", scopes=["projects:read"])
    with as_tenant(world.a), Session(app_engine) as session:
        dropped = issue_token(session, name="dropped", scopes=["projects:read"])
        assert revoke_token(session, kept.id) is True
        session.rollback()
    assert token_events(bypass_engine, "token.issued", dropped.id) == []
    assert token_events(bypass_engine, "token.revoked", kept.id) == []
    with app_engine.connect() as conn:
        assert authenticate_token(conn, kept.token).token_id == kept.id  # the revocation rolled back too
    assert len(token_events(bypass_engine, "token.issued", kept.id)) == 1
