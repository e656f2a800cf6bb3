"""``driver_connection()``: raw cursors (``COPY``) run for the tenant in context, even as a first statement.

Taken from ``session.connection().connection.driver_connection`` instead, such a statement runs before any
binding: bound to nobody, its ``COPY`` exports nothing and its ``UPDATE`` changes nothing, without an error.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import ConfigurationError, NoTenantError, TenantChangedError, as_tenant, driver_connection
from rls_tenancy.testing import TenancyDatabase
from tests.binding.test_driver_guard import _copied
from tests.conftest import World


def test_a_copy_as_the_first_statement_exports_the_tenants_rows(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        raw = session.connection().connection.driver_connection
        assert _copied(raw) == set()  # what the driver alone does: bound to nobody, silently empty
        session.rollback()
        assert _copied(driver_connection(session)) == world.projects[world.a]
        assert set(session.scalars(text("SELECT name FROM projects"))) == world.projects[world.a]  # same binding


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
