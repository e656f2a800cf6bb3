"""Binding the tenant costs no round trip: it travels with the transaction's BEGIN."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from types import FrameType

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.binding._begin import begin_command, begin_with, begin_with_async, can_begin_with
from rls_tenancy.binding.engine import begin_bound_with
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.proxy import RoundTripProxy
from saas_demo.models import Project, Task
from tests.conftest import World

SETTING = text("SELECT current_setting('app.current_tenant', true)")
#: A statement that rides with the BEGIN: what it was sent, and the tenant bound when it ran.
LOOKUP = b"SELECT $1::text AS said, current_setting('app.current_tenant', true) AS bound"


@pytest.fixture()
def proxy(db: TenancyDatabase) -> Iterator[RoundTripProxy]:
    assert db.app_url.host and db.app_url.port
    with RoundTripProxy(db.app_url.host, db.app_url.port) as running:
        yield running


def _through(proxy: RoundTripProxy, url: URL) -> URL:
    return url.set(host="127.0.0.1", port=proxy.port)


def _warm(engine: Engine) -> None:
    """Connected, the dialect set up: what a test then counts or breaks is the next transaction alone."""
    with engine.connect() as warm:
        warm.execute(text("SELECT 1"))
        warm.commit()


def _round_trips(proxy: RoundTripProxy, engine: Engine, work: Callable[[Connection], object], tenant: int) -> int:
    _warm(engine)
    proxy.reset()
    with as_tenant(tenant), engine.connect() as conn:
        work(conn)
        conn.commit()
    return proxy.round_trips


def _one_query(conn: Connection) -> None:
    conn.execute(select(Project.name)).all()


def _five_queries(conn: Connection) -> None:
    for statement in (select(Project.name), select(Task.title), select(Project.id), SETTING, select(Task.id)):
        conn.execute(statement).all()


@pytest.mark.parametrize("work", [_one_query, _five_queries], ids=["one query", "five queries"])
def test_a_bound_transaction_costs_the_round_trips_of_an_unbound_one(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World, work: Callable[[Connection], object]
) -> None:
    url = _through(proxy, db.app_url)
    plain = create_engine(url, pool_size=1)
    bound = bind_engine(create_engine(url, pool_size=1))
    try:
        baseline = _round_trips(proxy, plain, work, world.a)
        with_tenancy = _round_trips(proxy, bound, work, world.a)
    finally:
        plain.dispose()
        bound.dispose()
    assert baseline >= 3  # BEGIN, the queries, COMMIT: the proxy does see them
    assert with_tenancy == baseline


def _orm_query(conn: Connection) -> None:
    Session(conn).scalars(select(Project)).all()


def test_an_orm_session_costs_no_extra_round_trip(proxy: RoundTripProxy, db: TenancyDatabase, world: World) -> None:
    counts = []
    for bind in (False, True):
        engine = create_engine(_through(proxy, db.app_url), pool_size=1)
        if bind:
            bind_engine(engine)
        try:
            counts.append(_round_trips(proxy, engine, _orm_query, world.a))
        finally:
            engine.dispose()
    assert counts[0] == counts[1]


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("deferrable", [False, True])
def test_the_folded_begin_keeps_the_transaction_settings(
    app_engine: Engine, world: World, isolation: str, read_only: bool, deferrable: bool
) -> None:
    options = {"isolation_level": isolation, "postgresql_readonly": read_only, "postgresql_deferrable": deferrable}
    with as_tenant(world.a), app_engine.connect().execution_options(**options) as conn:
        seen = conn.execute(
            text(
                "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'),"
                " current_setting('transaction_deferrable'), current_setting('app.current_tenant', true)"
            )
        ).one()
    assert tuple(seen) == (isolation.lower(), "on" if read_only else "off", "on" if deferrable else "off", str(world.a))


def _raw(db: TenancyDatabase) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(db.app_url.set(drivername="postgresql").render_as_string(hide_password=False))


def test_begin_command_matches_psycopg(db: TenancyDatabase) -> None:
    with _raw(db) as raw:
        for level in (None, *psycopg.IsolationLevel):
            for read_only in (None, False, True):
                for deferrable in (None, False, True):
                    raw.isolation_level, raw.read_only, raw.deferrable = level, read_only, deferrable
                    assert begin_command(raw) == raw._get_tx_start_command()


def test_a_failing_folded_statement_raises_psycopgs_typed_error(db: TenancyDatabase) -> None:
    with _raw(db) as raw:
        foldable = can_begin_with(raw)
        assert foldable
        with pytest.raises(psycopg.errors.DivisionByZero):
            begin_with(raw, b"SELECT 1 / $1::int", [b"0"])
        assert raw.pgconn.transaction_status == pq.TransactionStatus.INERROR
        raw.rollback()
        begin_with(raw, b"SELECT pg_catalog.set_config('app.current_tenant', $1, true)", [b"7"])
        assert raw.execute(SETTING.text).fetchone() == ("7",)
        assert raw.pgconn.pipeline_status == pq.PipelineStatus.OFF


def test_only_an_idle_connection_is_folded(db: TenancyDatabase) -> None:
    with _raw(db) as raw:
        raw.execute("SELECT 1")
        assert not can_begin_with(raw)  # a transaction is already open
        raw.rollback()
        raw.autocommit = True
        assert not can_begin_with(raw)


class _Interrupted(Exception):
    pass


def test_an_interrupt_mid_exchange_closes_the_connection(db: TenancyDatabase) -> None:
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with _raw(db) as raw:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(_Interrupted):
                begin_with(raw, b"SELECT pg_sleep($1::float8)", [b"5"])
            assert raw.closed  # its protocol state is unknown: never reused
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _an_orm_query(conn: Connection) -> object:
    return conn.execute(select(Project.name))


def _a_statement_with_the_begin(conn: Connection) -> object:
    return begin_bound_with(conn, LOOKUP, [b"x"])


@pytest.mark.parametrize("start", [_an_orm_query, _a_statement_with_the_begin], ids=["query", "with the begin"])
def test_a_lost_server_mid_exchange_invalidates_and_the_pool_recovers(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World, start: Callable[[Connection], object]
) -> None:
    engine = bind_engine(create_engine(_through(proxy, db.app_url), pool_size=1, max_overflow=0))
    try:
        _warm(engine)
        proxy.sever()
        with as_tenant(world.a), engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                start(conn)
            assert caught.value.connection_invalidated
        with as_tenant(world.a), engine.connect() as conn:
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
    finally:
        engine.dispose()


async def _async_round_trips(proxy: RoundTripProxy, url: URL, tenant: int, bind: bool) -> int:
    engine = create_async_engine(url, pool_size=1)
    if bind:
        bind_engine(engine)
    try:
        async with engine.connect() as warm:
            await warm.execute(text("SELECT 1"))
            await warm.commit()
        proxy.reset()
        with as_tenant(tenant):
            async with engine.connect() as conn:
                seen = (await conn.execute(SETTING)).scalar()
                assert seen == (str(tenant) if bind else None)
                await conn.commit()
        return proxy.round_trips
    finally:
        await engine.dispose()


def test_an_asyncio_transaction_costs_no_extra_round_trip(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World
) -> None:
    url = _through(proxy, db.app_url)
    baseline = asyncio.run(_async_round_trips(proxy, url, world.a, bind=False))
    with_tenancy = asyncio.run(_async_round_trips(proxy, url, world.a, bind=True))
    assert baseline >= 3
    assert with_tenancy == baseline


def test_async_a_failing_folded_statement_raises_and_a_cancelled_one_closes(db: TenancyDatabase) -> None:
    async def scenario() -> None:
        conninfo = db.app_url.set(drivername="postgresql").render_as_string(hide_password=False)
        async with await psycopg.AsyncConnection.connect(conninfo) as raw:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await begin_with_async(raw, b"SELECT 1 / $1::int", [b"0"])
            await raw.rollback()
            await begin_with_async(raw, b"SELECT pg_catalog.set_config('app.current_tenant', $1, true)", [b"9"])
            assert await (await raw.execute(SETTING.text)).fetchone() == ("9",)
            await raw.rollback()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(begin_with_async(raw, b"SELECT pg_sleep($1::float8)", [b"5"]), 0.3)
            assert raw.closed  # its protocol state is unknown: never reused

    asyncio.run(scenario())


def test_a_statement_of_the_librarys_own_rides_with_the_begin(
    proxy: RoundTripProxy, db: TenancyDatabase, world: World
) -> None:
    engine = bind_engine(create_engine(_through(proxy, db.app_url), pool_size=1))
    try:
        _warm(engine)
        proxy.reset()
        with as_tenant(world.a), engine.connect() as conn:
            result = begin_bound_with(conn, LOOKUP, [b"hello"])
            assert result is not None
            assert [result.get_value(0, column) for column in range(2)] == [b"hello", str(world.a).encode()]
            assert conn.execute(SETTING).scalar_one() == str(world.a)  # bound once, not again
            assert begin_bound_with(conn, LOOKUP, [b"again"]) is None  # the transaction has begun
            conn.commit()
        # BEGIN + binding + the statement, the setting, COMMIT.
        assert proxy.round_trips == 3
    finally:
        engine.dispose()


def test_a_statement_that_cannot_ride_with_a_begin_is_left_to_the_caller(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url))
    try:
        with as_tenant(world.a), engine.connect() as conn:
            conn.execute(SETTING)
            assert begin_bound_with(conn, LOOKUP, [b"x"]) is None  # already begun
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert begin_bound_with(conn, LOOKUP, [b"x"]) is None  # no transaction to begin
    finally:
        engine.dispose()


def test_a_failing_statement_with_the_begin_raises_wrapped_and_the_connection_recovers(
    db: TenancyDatabase, world: World
) -> None:
    engine = bind_engine(create_engine(db.app_url, pool_size=1))
    try:
        with as_tenant(world.a), engine.connect() as conn:
            with pytest.raises(DBAPIError) as raised:
                begin_bound_with(conn, b"SELECT 1 / $1::int", [b"0"])
            assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
            assert not raised.value.connection_invalidated
            conn.rollback()
            assert conn.execute(SETTING).scalar_one() == str(world.a)
    finally:
        engine.dispose()


@pytest.mark.rls_binding
def test_the_binding_sent_with_a_statement_ends_with_its_transaction(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0))
    try:
        with as_tenant(world.a), engine.connect() as conn:
            assert begin_bound_with(conn, LOOKUP, [b"x"]) is not None
            conn.commit()  # a rollback would undo even a session-wide setting
        # The same pooled connection, outside any transaction: nothing of tenant a is left.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert conn.execute(SETTING).scalar_one() in (None, "")
    finally:
        engine.dispose()


def test_an_asyncio_statement_rides_with_the_begin_too(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url))
        try:
            with as_tenant(world.a):
                async with engine.connect() as conn:
                    result = await conn.run_sync(lambda sync: begin_bound_with(sync, LOOKUP, [b"hi"]))
                    assert result is not None
                    assert result.get_value(0, 1) == str(world.a).encode()
                    assert (await conn.execute(SETTING)).scalar_one() == str(world.a)
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
