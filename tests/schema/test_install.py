"""Installing the library schema safely: as a superuser, among objects other people made."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from rls_tenancy import RoleNames
from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.schema.migrate import upgrade
from rls_tenancy.testing import empty_database
from tests.conftest import ddl

# A function an unprivileged user plants in public, shadowing pg_catalog.format
# for (text, text) calls: it makes its owner a superuser when a superuser calls it.
TRAP = """
CREATE FUNCTION public.format(fmt text, arg text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{mallory}');
    END IF;
    RETURN pg_catalog.format(fmt, arg);
END $$
"""


@pytest.fixture()
def fresh(rls_postgres_url: URL) -> Iterator[tuple[Engine, URL]]:
    """An empty database and a superuser engine on it; roles made here are dropped after."""
    admin = create_engine(rls_postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        before = set(conn.execute(text("SELECT rolname FROM pg_roles")).scalars())
    with empty_database(rls_postgres_url, prefix="rls_inst") as url:
        engine = create_engine(url)
        yield engine, url
        engine.dispose()
    with admin.connect() as conn:
        for role in set(conn.execute(text("SELECT rolname FROM pg_roles")).scalars()) - before:
            conn.exec_driver_sql(ddl("DROP ROLE {}", role))
    admin.dispose()


def _plant_trap(engine: Engine) -> str:
    mallory = f"mallory_{secrets.token_hex(3)}"
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} LOGIN", mallory))
        conn.exec_driver_sql(ddl("GRANT CREATE ON SCHEMA public TO {}", mallory))
        conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", mallory))
        conn.exec_driver_sql(TRAP.replace("{mallory}", mallory), execution_options={"no_parameters": True})
    return mallory


def _is_superuser(engine: Engine, role: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar())


def _roles(suffix: str) -> RoleNames:
    return RoleNames(owner=f"o_{suffix}", app=f"a_{suffix}", bypass=f"b_{suffix}")


def test_scripts_run_by_a_dba_cannot_be_hijacked_through_search_path(fresh: tuple[Engine, URL]) -> None:
    engine, _ = fresh
    mallory = _plant_trap(engine)
    with engine.begin() as conn:  # as a DBA would in psql: default search_path, verbatim
        for key, value in _roles(secrets.token_hex(3)).settings().items():
            conn.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})
        for name in install_scripts():
            conn.exec_driver_sql(sql_script(name), execution_options={"no_parameters": True})
    assert not _is_superuser(engine, mallory)


def test_migrations_cannot_be_hijacked_through_search_path(fresh: tuple[Engine, URL]) -> None:
    engine, url = fresh
    mallory = _plant_trap(engine)
    upgrade(url, roles=_roles(secrets.token_hex(3)))
    assert not _is_superuser(engine, mallory)


@pytest.mark.parametrize(
    ("purpose", "attributes", "message"),
    [
        ("app", "SUPERUSER", "cannot be the application role"),
        ("app", "NOLOGIN", "cannot be the application role"),
        ("app", "LOGIN CREATEROLE", "cannot be the application role"),
        ("owner", "LOGIN", "cannot be the owner role"),
        ("bypass", "LOGIN", "cannot be the bypass role"),
    ],
)
def test_existing_roles_are_refused_not_altered(
    fresh: tuple[Engine, URL], purpose: str, attributes: str, message: str
) -> None:
    engine, url = fresh
    roles = _roles(secrets.token_hex(3))
    existing = getattr(roles, purpose)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} " + attributes, existing))  # attributes: keywords of this test
        before = conn.execute(
            text("SELECT row(r.*)::text FROM pg_roles r WHERE rolname = :r"), {"r": existing}
        ).scalar()
    with pytest.raises(DBAPIError, match=message):
        upgrade(url, roles=roles)
    with engine.connect() as conn:
        after = conn.execute(text("SELECT row(r.*)::text FROM pg_roles r WHERE rolname = :r"), {"r": existing}).scalar()
    assert after == before


def test_existing_roles_fit_for_purpose_are_used(fresh: tuple[Engine, URL]) -> None:
    engine, url = fresh
    roles = _roles(secrets.token_hex(3))
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} LOGIN PASSWORD 'kept'", roles.app))
    upgrade(url, roles=roles)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role_name FROM rls_tenancy.roles WHERE purpose = 'app'")).scalar() == roles.app
