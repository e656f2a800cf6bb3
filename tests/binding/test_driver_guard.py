"""The psycopg connection under a bound Connection is held to its binding, like SQLAlchemy's statements."""

from __future__ import annotations

import asyncio
import functools
import io

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rls_tenancy import ConfigurationError, TenancyError, TenantChangedError, UnsafeBypass, as_tenant, bind_engine
from rls_tenancy.binding import _driver_guard
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World

NAMES = "SELECT name FROM projects ORDER BY name"


def _copied(driver: object) -> set[str]:
    out = io.StringIO()
    with driver.cursor().copy("COPY (SELECT name FROM projects) TO STDOUT") as copy:  # type: ignore[attr-defined]
        for chunk in copy:
            out.write(bytes(chunk).decode())
    return set(out.getvalue().split())


@pytest.mark.rls_binding
def test_the_driver_refuses_to_run_for_the_old_tenant_after_a_switch(pinned_engine: Engine, world: World) -> None:
    with as_tenant(world.a), pinned_engine.connect() as conn:
        conn.execute(text(NAMES)).all()  # bound to A
        driver = conn.connection.driver_connection
        assert _copied(driver) == world.projects[world.a]  # the driver in A's context: A's rows, as before
        with as_tenant(world.b):
            with pytest.raises(TenantChangedError, match=f"bound to tenant {world.a}"):
                _copied(driver)
            with pytest.raises(TenantChangedError):
                driver.execute(NAMES)  # type: ignore[union-attr]
            with pytest.raises(TenantChangedError):
                driver.cursor().executemany("SELECT %s", [(1,)])  # type: ignore[union-attr]
            with pytest.raises(TenantChangedError):
                list(driver.cursor().stream(NAMES))  # type: ignore[union-attr]
            with driver.cursor("named") as named, pytest.raises(TenantChangedError):  # type: ignore[union-attr]
                named.execute(NAMES)
        conn.rollback()
        with as_tenant(world.b):  # the transaction ended: the driver's next one is bound to nobody
            assert driver.execute(NAMES).fetchall() == []  # type: ignore[union-attr]


def test_a_transaction_the_driver_refused_a_statement_in_does_not_commit(
    pinned_engine: Engine, app_engine: Engine, world: World
) -> None:
    with as_tenant(world.a), pinned_engine.connect() as conn:
        conn.execute(text("UPDATE projects SET name = name || ' half'"))
        driver = conn.connection.driver_connection
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            driver.execute("UPDATE projects SET name = name || ' other half'")  # type: ignore[union-attr]
        with pytest.raises(TenantChangedError, match="rolled back, not committed"):
            conn.commit()
    with as_tenant(world.a), app_engine.connect() as check:
        assert set(check.execute(text(NAMES)).scalars()) == world.projects[world.a]


def test_the_asyncio_driver_refuses_too(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0))
        try:
            async with engine.connect() as conn:
                with as_tenant(world.a):
                    await conn.execute(text(NAMES))
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    with as_tenant(world.b), pytest.raises(TenantChangedError):
                        await driver.execute(NAMES)  # type: ignore[union-attr]
                    assert {r[0] for r in await (await driver.execute(NAMES)).fetchall()} == world.projects[world.a]  # type: ignore[union-attr]
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(scenario())


# A's injected SQL: its own binding (and, signed, its proof) left session-wide, past its transaction.
LEAVE_MY_BINDING = text(
    "SELECT set_config('app.current_tenant', current_setting('app.current_tenant'), false),"
    " set_config('app.current_user_id', current_setting('app.current_user_id', true), false),"
    " set_config('app.context_proof', current_setting('app.context_proof', true), false)"
)


def _plant(engine: Engine, world: World) -> None:
    with as_tenant(world.a), engine.connect() as conn:
        conn.execute(LEAVE_MY_BINDING)
        conn.commit()


@pytest.mark.rls_binding
def test_the_driver_used_before_sqlalchemys_first_statement_sees_nothing_another_tenant_left(
    pinned_engine: Engine, world: World
) -> None:
    """Before the guard reset the session for unbound work, B's driver read A's rows with A's planted binding."""
    _plant(pinned_engine, world)
    with as_tenant(world.b), pinned_engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        seen = {row[0] for row in driver.execute(NAMES).fetchall()}
        planted = driver.execute("SELECT current_setting('app.current_tenant', true)").fetchone()
        driver.rollback()
        assert seen == set()  # bound to nobody: no tenant's rows
        assert planted in ((None,), ("",))
        assert set(conn.execute(text(NAMES)).scalars()) == world.projects[world.b]  # then bound to B as usual
        conn.rollback()


@pytest.mark.rls_binding
def test_raw_connection_work_writes_nothing_into_the_tenant_that_left_its_binding(
    pinned_engine: Engine, world: World, bypass: UnsafeBypass
) -> None:
    _plant(pinned_engine, world)
    with as_tenant(world.b):
        raw = pinned_engine.raw_connection()
        try:
            cursor = raw.cursor()
            with pytest.raises(psycopg.errors.Error):  # no tenant bound: the tenant_id default is NULL
                cursor.execute("INSERT INTO projects (name) VALUES ('written-raw')")
            raw.rollback()
        finally:
            raw.close()
    with bypass.session(reason="test: where the raw row went") as session:
        assert session.execute(text("SELECT count(*) FROM projects WHERE name = 'written-raw'")).scalar_one() == 0


@pytest.mark.rls_binding
@pytest.mark.parametrize(
    "begun_by", ["transaction", "transaction-autocommit", "tpc_begin"], ids=lambda begun_by: begun_by
)
def test_a_transaction_the_driver_begins_itself_sees_nothing_another_tenant_left(
    pinned_engine: Engine, world: World, begun_by: str
) -> None:
    """``driver.transaction()`` and ``tpc_begin()`` send their BEGIN past every cursor: checked as a statement would be.

    Before, they ran under the binding A's SQL left session-wide: B's raw
    reads saw A's rows, and its inserts went to A.
    """
    _plant(pinned_engine, world)
    with as_tenant(world.b):
        raw = pinned_engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.Connection)
            driver.autocommit = begun_by == "transaction-autocommit"
            if begun_by == "tpc_begin":
                driver.tpc_begin(driver.xid(1, "rls-tenancy-test", "b"))
                seen = {row[0] for row in driver.execute(NAMES).fetchall()}
                planted = driver.execute("SELECT current_setting('app.current_tenant', true)").fetchone()
                driver.tpc_rollback()
            else:
                with driver.transaction():
                    seen = {row[0] for row in driver.execute(NAMES).fetchall()}
                    planted = driver.execute("SELECT current_setting('app.current_tenant', true)").fetchone()
            assert seen == set()
            assert planted in ((None,), ("",))
        finally:
            raw.close()


def test_notifications_of_the_last_clients_channels_never_reach_the_next_client(
    pinned_engine: Engine, world: World, superuser_engine: Engine
) -> None:
    """``UNLISTEN *`` stops new ones; those psycopg had read before the reset are dropped with it."""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        conn.exec_driver_sql("LISTEN tenant_a_events")
        conn.commit()
    with superuser_engine.connect() as conn:  # published while the pooled connection idles
        conn.exec_driver_sql("NOTIFY tenant_a_events, 'invoice 42 paid by alice'")
        conn.commit()
    with as_tenant(world.b):
        raw = pinned_engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.Connection)
            driver.execute("LISTEN tenant_b_events")
            driver.commit()
            assert [n.channel for n in driver.notifies(timeout=0.5)] == []
        finally:
            raw.close()


def test_a_server_side_cursor_opened_for_one_tenant_fetches_nothing_for_another(
    pinned_engine: Engine, world: World
) -> None:
    """Statements were refused after a switch, but a stream's rows kept coming: its fetches are checked too."""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=1).execute(text(NAMES))
        first = result.fetchone()
        assert first is not None and first[0] in world.projects[world.a]
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            result.fetchall()
        conn.rollback()
        named = conn.connection.driver_connection.cursor("rows")  # type: ignore[union-attr]
        conn.execute(text("SELECT 1")).scalar()  # bound to A again
        named.execute(NAMES)
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            next(iter(named))
        assert named.closed  # refused: its rows are not for this context any more
        conn.rollback()


def test_a_pre_ping_at_checkout_leaves_the_reset_to_the_binding(
    db: TenancyDatabase, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pool_pre_ping's SELECT 1 is unbound work: it must not reset the session a second time."""
    resets: list[object] = []
    original = _driver_guard._reset

    def counted(driver: psycopg.Connection[object]) -> None:
        resets.append(driver)
        original(driver)

    monkeypatch.setattr(_driver_guard, "_reset", counted)
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0, pool_pre_ping=True))
    try:
        for tenant in (world.a, world.b, world.a):
            with as_tenant(tenant), engine.connect() as conn:
                assert set(conn.execute(text(NAMES)).scalars()) == world.projects[tenant]
                conn.commit()
    finally:
        engine.dispose()
    assert resets == []


async def _plant_async(engine: AsyncEngine, world: World) -> None:
    with as_tenant(world.a):
        async with engine.connect() as conn:
            await conn.execute(LEAVE_MY_BINDING)
            await conn.commit()


@pytest.mark.rls_binding
def test_the_asyncio_driver_used_before_sqlalchemys_first_statement_sees_nothing_another_tenant_left(
    db: TenancyDatabase, world: World
) -> None:
    async def scenario() -> set[str]:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0))
        try:
            await _plant_async(engine, world)
            with as_tenant(world.b):
                async with engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    rows = await (await driver.execute(NAMES)).fetchall()  # type: ignore[union-attr]
                    await driver.rollback()  # type: ignore[union-attr]
                    return {row[0] for row in rows}
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == set()  # A's rows before the guard reset the session


def test_an_asyncio_copy_before_the_reset_is_a_configuration_error(db: TenancyDatabase, world: World) -> None:
    """``copy()`` returns before it awaits anything, so it cannot reset first: refused, never run for A's session."""

    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0))
        try:
            await _plant_async(engine, world)
            with as_tenant(world.b):
                async with engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    cursor = driver.cursor()  # type: ignore[union-attr]
                    with pytest.raises(ConfigurationError, match="must be reset"):
                        async with cursor.copy("COPY (SELECT name FROM projects) TO STDOUT"):
                            pass
        finally:
            await engine.dispose()

    asyncio.run(scenario())


@pytest.mark.rls_binding
@pytest.mark.parametrize(
    "ended_by", ["COMMIT", "ROLLBACK", "COMMIT AND CHAIN", "ROLLBACK AND CHAIN", "COMMIT; BEGIN", "ROLLBACK; BEGIN"]
)
def test_a_transaction_ended_by_sql_runs_nothing_more_under_what_that_sql_set(
    pinned_engine: Engine, world: World, bypass: UnsafeBypass, ended_by: str
) -> None:
    """Injected ``...; COMMIT`` would leave the rest of the request running in a transaction the binding never made.

    Unsigned, SQL that first sets another tenant session-wide would then have the app's own later statements
    read and write that tenant's rows, beyond its own transaction. ``AND CHAIN`` (or a ``BEGIN`` after) begins
    that transaction at once, so the connection never looks idle: before, the request's later statements read
    B's rows and its insert landed in B, and a ``ROLLBACK AND CHAIN`` undid its audit events silently.
    """
    inject = sql.SQL("SELECT set_config('app.current_tenant', {}, false); " + ended_by).format(
        sql.Literal(str(world.b))
    )
    with as_tenant(world.a), pinned_engine.connect() as conn:
        with pytest.raises(TenancyError, match="ended the transaction"):
            conn.exec_driver_sql(inject.as_string(None), execution_options={"no_parameters": True})
        with pytest.raises(TenancyError, match="ended on the server"):
            conn.execute(text(NAMES)).all()
        with pytest.raises(TenancyError, match="ended on the server"):
            conn.execute(text("INSERT INTO projects (name) VALUES ('meant for a')"))
        with pytest.raises(TenancyError):
            conn.commit()  # rolled back instead
    with as_tenant(world.a), pinned_engine.connect() as conn:  # the next transaction is bound as usual
        assert set(conn.execute(text(NAMES)).scalars()) == world.projects[world.a]
        conn.rollback()
    with bypass.connect(reason="test: nothing written") as admin:
        assert admin.execute(text("SELECT count(*) FROM projects WHERE name = 'meant for a'")).scalar_one() == 0


def test_sqlalchemys_savepoint_rollbacks_pass_and_a_raw_one_is_refused(pinned_engine: Engine, world: World) -> None:
    """``ROLLBACK TO SAVEPOINT`` has ``ROLLBACK``'s command tag: SQLAlchemy's own passes, one sent as SQL does not."""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        savepoint = conn.begin_nested()
        conn.execute(text("INSERT INTO projects (name) VALUES ('undone')"))
        savepoint.rollback()
        assert set(conn.execute(text(NAMES)).scalars()) == world.projects[world.a]
        conn.exec_driver_sql("SAVEPOINT mine")
        with pytest.raises(TenancyError, match="ended the transaction"):
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT mine")
        conn.rollback()


@pytest.mark.rls_binding
def test_a_driver_transaction_is_checked_as_its_block_is_entered_not_as_it_is_made(
    pinned_engine: Engine, world: World
) -> None:
    """psycopg sends the BEGIN as its block is entered: a block made before A's SQL used the session is checked then."""
    with as_tenant(world.b):
        raw = pinned_engine.raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        block = driver.transaction()  # made while the session is clean
        raw.close()  # back to the pool of one
        _plant(pinned_engine, world)  # the same session, A's SQL on it
        raw = pinned_engine.raw_connection()
        try:
            assert raw.driver_connection is driver
            assert isinstance(driver, psycopg.Connection)
            with block:
                seen = {row[0] for row in driver.execute(NAMES).fetchall()}
            assert seen == set()
        finally:
            raw.close()


def test_notifications_never_reach_the_next_client_before_its_first_statement_nor_its_handlers(
    pinned_engine: Engine, world: World, superuser_engine: Engine
) -> None:
    """``notifies()`` first, or a handler added before the first statement: the reset goes first, and mutes them."""
    for way in ("notifies first", "a handler"):
        with as_tenant(world.a), pinned_engine.connect() as conn:
            conn.exec_driver_sql("LISTEN tenant_a_events")
            conn.commit()
        with superuser_engine.connect() as conn:
            conn.exec_driver_sql("NOTIFY tenant_a_events, 'invoice 42 paid by alice'")
            conn.commit()
        heard: list[str] = []
        with as_tenant(world.b):
            raw = pinned_engine.raw_connection()
            try:
                driver = raw.driver_connection
                assert isinstance(driver, psycopg.Connection)
                if way == "a handler":
                    driver.add_notify_handler(functools.partial(_heard, heard))
                    driver.execute("SELECT 1")
                    driver.commit()
                else:
                    heard.extend(n.payload for n in driver.notifies(timeout=0.3))
            finally:
                raw.close()
        assert heard == [], way


def _heard(into: list[str], notification: psycopg.Notify) -> None:
    into.append(notification.payload)


@pytest.mark.rls_binding
def test_a_holdable_cursor_is_not_read_in_a_transaction_sqlalchemy_began_for_another_tenant(
    pinned_engine: Engine, world: World
) -> None:
    """Its first fetch would be that transaction's first statement, bound to nothing: A's rows read as B's."""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        conn.execute(text("SELECT 1"))
        held = driver.cursor("held_for_a", withhold=True)
        held.execute(NAMES)
        conn.commit()
        with as_tenant(world.b), pytest.raises(TenancyError, match="outside the transaction that declared it"):
            conn.begin()
            held.fetchall()
        conn.rollback()
