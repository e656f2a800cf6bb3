"""The binding spelled as ``SET LOCAL`` statements (``bind_engine(set_local=True)``), the spelling Citus propagates.

It must isolate exactly as the default ``set_config()`` spelling does, and
what goes over the wire must really be ``SET`` statements: the recording
proxy shows the statements the client sent and the command tags the server
answered with (``SET`` for a ``SET LOCAL``, ``SELECT 1`` for a
``set_config()`` call), round trip by round trip.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.binding.engine import _BIND_MARKED_WIRE, _BIND_WIRE, _MARK
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from rls_tenancy.testing.proxy import RoundTripProxy
from saas_demo.models import Project
from tests.conftest import World

SETTINGS = text(
    "SELECT current_setting('app.current_tenant', true), current_setting('app.current_user_id', true), pg_backend_pid()"
)
USER = text("SELECT current_setting('app.current_user_id', true)")
#: The proof's statement: empty without a context key, digits, colons and hexadecimal with one.
PROOF = re.compile(rb"""SET LOCAL "app"\."context_proof" = '[0-9a-f:]*'""")
#: Signed, a transaction bound anew also reads back its mark (which its grants are made for): one SELECT more.
MARKED = [b"SELECT 1"] if signing_requested() else []


@pytest.fixture(params=[False, True], ids=["set_config", "set_local"])
def engine(request: pytest.FixtureRequest, db: TenancyDatabase) -> Iterator[Engine]:
    """One pooled connection, bound in either spelling: every checkout is the same backend."""
    bound = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0), set_local=request.param)
    yield bound
    bound.dispose()


def _raw_tenant(engine: Engine) -> tuple[object, ...]:
    """(setting, backend pid) read through the raw DBAPI connection, past every hook."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT current_setting('app.current_tenant', true), pg_backend_pid()")
        row = cursor.fetchone()
        raw.rollback()
    finally:
        raw.close()
    assert row is not None
    return tuple(row)


@pytest.mark.rls_policy
def test_each_tenant_sees_and_writes_only_its_own_rows(engine: Engine, world: World) -> None:
    for tenant in (world.a, world.b):
        with as_tenant(tenant), engine.connect() as conn:
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[tenant]
            with pytest.raises(DBAPIError, match="row-level security"):
                conn.execute(insert(Project).values(tenant_id=world.other(tenant), name="stolen"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


@pytest.mark.rls_binding
def test_a_pooled_connection_switching_tenants_keeps_nothing_of_the_last(engine: Engine, world: World) -> None:
    pids = set()
    for tenant in (world.a, world.b, world.a):
        with as_tenant(tenant), engine.connect() as conn:
            tenant_setting, _, pid = conn.execute(SETTINGS).one()
            assert tenant_setting == str(tenant)
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[tenant]
            conn.commit()  # only a commit could carry a setting onward
        pids.add(pid)
        # The next user of the very same backend, hooks or no hooks, sees no tenant.
        setting, pid = _raw_tenant(engine)
        assert setting in ("", None)
        pids.add(pid)
    assert len(pids) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


@pytest.mark.rls_policy
def test_savepoints_and_a_user_rebind_keep_the_tenant(engine: Engine, world: World) -> None:
    with as_tenant(world.a, user=7), engine.connect() as conn:
        savepoint = conn.begin_nested()
        with as_tenant(world.a, user=8):  # the user changes, the tenant stays: rebound before the next statement
            assert conn.execute(USER).scalar() == "8"
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        savepoint.rollback()  # undoes the rebind: the next statement binds user 7 again
        assert conn.execute(USER).scalar() == "7"
        assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        with conn.begin_nested():
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        conn.commit()


def test_asyncio_engines_isolate_with_set_local(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0), set_local=True)

    async def names(tenant: int) -> set[str]:
        with as_tenant(tenant):
            async with engine.connect() as conn:
                return set((await conn.execute(select(Project.name))).scalars())

    async def both() -> list[set[str]]:
        try:
            return [await names(world.a), await names(world.b)]
        finally:
            await engine.dispose()

    assert asyncio.run(both()) == [world.projects[world.a], world.projects[world.b]]


# What the wire shows.


@pytest.fixture()
def proxy(db: TenancyDatabase) -> Iterator[RoundTripProxy]:
    assert db.app_url.host and db.app_url.port
    with RoundTripProxy(db.app_url.host, db.app_url.port, record=True) as running:
        yield running


def _through(proxy: RoundTripProxy, url: URL) -> URL:
    """``url`` by way of the proxy, in clear text: the bytes must be readable."""
    return url.set(host="127.0.0.1", port=proxy.port).update_query_dict({"sslmode": "disable"})


def _messages(stream: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each protocol message in ``stream`` (which starts on a message)."""
    while stream:
        length = int.from_bytes(stream[1:5], "big")
        yield stream[:1], stream[5 : 1 + length]
        stream = stream[1 + length :]


def _exchanges(proxy: RoundTripProxy) -> list[tuple[list[bytes], list[bytes]]]:
    """For each round trip since the proxy's reset: (the statements sent, the command tags answered).

    A round trip that only closes a connection (a Terminate) is left out.
    """
    sent: dict[int, bytes] = {}
    answered: dict[int, bytes] = {}
    for round_trip, from_client, data in proxy.recorded:
        side = sent if from_client else answered
        side[round_trip] = side.get(round_trip, b"") + data
    exchanges = []
    for round_trip in sorted(sent):
        if all(kind == b"X" for kind, _ in _messages(sent[round_trip])):
            continue
        statements = [
            body.split(b"\0")[1] if kind == b"P" else body.split(b"\0")[0]  # Parse names the statement first
            for kind, body in _messages(sent[round_trip])
            if kind in (b"P", b"Q")
        ]
        tags = [body.rstrip(b"\0") for kind, body in _messages(answered.get(round_trip, b"")) if kind == b"C"]
        exchanges.append((statements, tags))
    return exchanges


def _set_local(name: str, value: object) -> bytes:
    quoted = '"' + name.replace(".", '"."') + '"'
    return f"SET LOCAL {quoted} = '{value}'".encode()


def _one_query(engine: Engine, tenant: int, user: int | None = None) -> set[str]:
    with as_tenant(tenant, user=user), engine.connect() as conn:
        names = set(conn.execute(select(Project.name)).scalars())
        conn.commit()
    return names


def _check_set_local_binding(statements: list[bytes], tenant: int, user: int | None = None) -> None:
    assert statements[:2] == [_set_local("app.current_tenant", tenant), _set_local("app.current_user_id", user or "")]
    assert PROOF.fullmatch(statements[2])
    assert (statements[2] == _set_local("app.context_proof", "")) is not signing_requested()
    assert statements[3:] == ([_MARK] if signing_requested() else [])


def test_the_binding_is_three_set_local_statements_in_begins_round_trip(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World
) -> None:
    url = _through(proxy, db.app_url)
    plain = create_engine(url, pool_size=1)
    engine = bind_engine(create_engine(url, pool_size=1), set_local=True)
    bind_engine(engine)  # bound again without set_local: it keeps it
    try:
        _one_query(plain, world.a)
        proxy.reset()
        _one_query(plain, world.a)
        unbound = len(_exchanges(proxy))
        # Served tenant a's user 7 last: the next transaction needs no reset (signed, one for no user would).
        _one_query(engine, world.a, 7)
        proxy.reset()
        assert _one_query(engine, world.a, 7) == world.projects[world.a]
        same_tenant = _exchanges(proxy)
        proxy.reset()
        assert _one_query(engine, world.b, 7) == world.projects[world.b]
        switched = _exchanges(proxy)
    finally:
        plain.dispose()
        engine.dispose()
    assert unbound == 3  # BEGIN, the query, COMMIT
    assert len(same_tenant) == len(switched) == unbound  # 0 extra round trips
    statements, tags = same_tenant[0]
    assert statements[0] == b"BEGIN"
    _check_set_local_binding(statements[1:], world.a, 7)
    assert tags == [b"BEGIN", b"SET", b"SET", b"SET", *MARKED]  # three SET statements, no set_config()
    # Another tenant's: the timeouts disarmed, the session's reset and its COMMIT go first, in the same round trip.
    statements, tags = switched[0]
    assert statements[:2] == [b"SET statement_timeout = 0", b"SET lock_timeout = 0"]
    assert statements[3:5] == [b"COMMIT", b"BEGIN"]
    assert statements[2].startswith(b"SELECT rls_tenancy.reset_session(")
    _check_set_local_binding(statements[5:], world.b, 7)
    assert tags == [b"SET", b"SET", b"SELECT 1", b"COMMIT", b"BEGIN", b"SET", b"SET", b"SET", *MARKED]


def test_the_default_spelling_is_unchanged(proxy: RoundTripProxy, db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(_through(proxy, db.app_url), pool_size=1))
    try:
        _one_query(engine, world.a, 7)  # a user's: signed, a transaction for no user begins with a reset
        proxy.reset()
        _one_query(engine, world.a, 7)
    finally:
        engine.dispose()
    exchanges = _exchanges(proxy)
    assert len(exchanges) == 3
    assert exchanges[0] == (
        [b"BEGIN", _BIND_MARKED_WIRE if signing_requested() else _BIND_WIRE],
        [b"BEGIN", b"SELECT 1"],
    )
    assert _BIND_WIRE == (
        b"SELECT pg_catalog.set_config('app.current_tenant', $1, true),"
        b" pg_catalog.set_config('app.current_user_id', $2, true),"
        b" pg_catalog.set_config('app.context_proof', $3, true)"
    )


def test_a_binding_outside_begins_round_trip_is_one_set_local_script(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World
) -> None:
    engine = bind_engine(create_engine(_through(proxy, db.app_url), pool_size=1), set_local=True)
    try:
        _one_query(engine, world.a, 7)  # served them last: no reset ahead of the binding
        with as_tenant(world.a, user=7), engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("SELECT 1")  # the driver begins the transaction itself: no BEGIN to ride with
            proxy.reset()
            assert conn.execute(USER).scalar() == "7"
            whole = _exchanges(proxy)
            proxy.reset()
            with as_tenant(world.a, user=8):
                assert conn.execute(USER).scalar() == "8"
            rebind = _exchanges(proxy)
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
            conn.rollback()
    finally:
        engine.dispose()
    # Each is one simple query, whose round trip it costs, as the default spelling's execute does.
    assert len(whole) == 2
    (script,), tags = whole[0]
    _check_set_local_binding(script.split(b"; "), world.a, 7)
    assert tags == [b"SET", b"SET", b"SET", *MARKED]
    if signing_requested():
        # Signed, another user is a boundary inside a transaction too: the session is reset first (one
        # script), then bound whole again, as between transactions.
        assert len(rebind) == 3
        (reset,), _ = rebind[0]
        assert reset.startswith(b"SET statement_timeout = 0; ") and b"DISCARD TEMP" in reset
        (script,), tags = rebind[1]
        _check_set_local_binding(script.split(b"; "), world.a, 8)
        assert tags == [b"SET", b"SET", b"SET", *MARKED]
        return
    assert len(rebind) == 2
    (script,), tags = rebind[0]
    statements = script.split(b"; ")
    assert statements[0] == _set_local("app.current_user_id", 8)
    assert PROOF.fullmatch(statements[1])
    assert tags == [b"SET", b"SET"]


def test_asyncio_engines_send_the_same_statements(proxy: RoundTripProxy, db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_async_engine(_through(proxy, db.app_url), pool_size=1), set_local=True)

    async def one(tenant: int) -> set[str]:
        with as_tenant(tenant, user=7):  # a user's: signed, a transaction for no user begins with a reset
            async with engine.connect() as conn:
                names = set((await conn.execute(select(Project.name))).scalars())
                await conn.commit()
                return names

    async def counted() -> set[str]:
        try:
            await one(world.a)
            proxy.reset()
            return await one(world.a)
        finally:
            await engine.dispose()

    assert asyncio.run(counted()) == world.projects[world.a]
    exchanges = _exchanges(proxy)
    assert len(exchanges) == 3
    statements, tags = exchanges[0]
    assert statements[0] == b"BEGIN"
    _check_set_local_binding(statements[1:], world.a, 7)
    assert tags == [b"BEGIN", b"SET", b"SET", b"SET", *MARKED]
