"""Raw cursors (``COPY``) run for the tenant in context, even as a transaction's first statement.

Taken from ``_driver_of(session.connection())``, such a statement ran before any binding:
bound to nobody, its ``COPY`` exported nothing and its ``UPDATE`` changed nothing, without an error. The
transaction SQLAlchemy began is now bound before it, as by ``driver_connection()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import (
    ConfigurationError,
    NoTenantError,
    TenancyError,
    TenantChangedError,
    UnsafeBypass,
    as_tenant,
    bind_engine,
    driver_connection,
)
from rls_tenancy.testing import TenancyDatabase
from tests.binding.test_driver_guard import NAMES, _copied
from tests.conftest import World


def _driver_of(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection as an app takes it from SQLAlchemy, without driver_connection()."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def test_a_copy_as_the_first_statement_exports_the_tenants_rows(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        assert _copied(driver_connection(session)) == world.projects[world.a]
        assert set(session.scalars(text("SELECT name FROM projects"))) == world.projects[world.a]  # same binding


@pytest.mark.rls_binding
def test_the_sessions_own_driver_connection_is_bound_before_its_first_raw_statement(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        raw = _driver_of(session.connection())
        assert _copied(raw) == world.projects[world.a]  # before: set(), bound to nobody
        assert set(session.scalars(text("SELECT name FROM projects"))) == world.projects[world.a]
        with as_tenant(world.b):  # the raw statement's binding is the transaction's: held to A
            with pytest.raises(TenantChangedError):
                session.scalars(text("SELECT name FROM projects")).all()
            with pytest.raises(TenantChangedError):
                _copied(raw)
        session.rollback()


@pytest.mark.rls_binding
def test_a_raw_first_write_lands_in_the_tenant_and_commits_with_the_session(
    scoped_factory: sessionmaker[Session], world: World, bypass: UnsafeBypass
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        raw = _driver_of(session.connection())
        raw.execute("INSERT INTO projects (name) VALUES ('raw-first')")
        session.commit()
    with bypass.session(reason="test: where the raw row went") as session:
        rows = session.execute(text("SELECT tenant_id FROM projects WHERE name = 'raw-first'")).scalars().all()
        session.execute(text("DELETE FROM projects WHERE name = 'raw-first'"))
        session.commit()
    assert rows == [world.a]


def test_a_raw_binding_ends_with_sqlalchemys_transaction(app_engine: Engine, world: World) -> None:
    """A rollback through SQLAlchemy ends it, so the connection's next transaction binds B, not A's leftover."""
    pinned = bind_engine(create_engine(app_engine.url, pool_size=1, max_overflow=0))
    try:
        with as_tenant(world.a), pinned.connect() as conn:
            conn.begin()
            assert _copied(_driver_of(conn)) == world.projects[world.a]
            conn.rollback()
            conn.begin()
            conn.commit()  # begun and ended with no statement: nothing left to bind a later raw one
            driver = _driver_of(conn)
            assert {row[0] for row in driver.execute(NAMES)} == set()  # the driver's own transaction: no one's
            driver.rollback()
        with as_tenant(world.b), pinned.connect() as conn:
            assert set(conn.execute(text(NAMES)).scalars()) == world.projects[world.b]
            conn.rollback()
    finally:
        pinned.dispose()


def test_a_raw_first_statement_ended_by_the_driver_runs_nothing_more(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        raw = _driver_of(session.connection())
        raw.execute(NAMES).fetchall()
        raw.commit()  # the driver's own: SQLAlchemy's transaction is still open
        with pytest.raises(TenancyError, match="ended on the server"):
            raw.execute(NAMES)
        session.rollback()


def test_an_asyncio_raw_first_statement_is_refused_not_run_for_nobody(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url))
        try:
            with as_tenant(world.a):
                async with engine.connect() as conn:
                    await conn.begin()
                    driver = (await conn.get_raw_connection()).driver_connection
                    with pytest.raises(ConfigurationError, match="first in a transaction SQLAlchemy began"):
                        await driver.execute(NAMES)  # type: ignore[union-attr]
                    assert set((await conn.execute(text(NAMES))).scalars()) == world.projects[world.a]
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_raw_write_reaches_the_tenants_rows_only_and_commits_with_the_session(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    mine, theirs = world.project_ids[world.a][0], world.project_ids[world.b][0]
    with as_tenant(world.a), scoped_factory() as session:
        with driver_connection(session).cursor() as cursor:
            changed = [
                cursor.execute("UPDATE projects SET name = name WHERE id = %s", (pid,)).rowcount
                for pid in (mine, theirs)
            ]
        session.commit()
    assert changed == [1, 0]


def test_a_connection_of_a_bound_engine_serves_it_too_and_stays_held_to_its_tenant(
    app_engine: Engine, world: World
) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        driver = driver_connection(conn)
        assert _copied(driver) == world.projects[world.a]
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            _copied(driver)
        conn.rollback()


def test_without_a_tenant_or_a_bound_engine_it_says_so(
    scoped_factory: sessionmaker[Session], db: TenancyDatabase, world: World
) -> None:
    with scoped_factory() as session, pytest.raises(NoTenantError):
        driver_connection(session)
    unbound = create_engine(db.app_url)
    try:
        with as_tenant(world.a), unbound.connect() as conn, pytest.raises(ConfigurationError, match="bound engine"):
            driver_connection(conn)
    finally:
        unbound.dispose()
    with pytest.raises(ConfigurationError, match="Session or a Connection"):
        driver_connection("postgresql://")  # type: ignore[arg-type]
