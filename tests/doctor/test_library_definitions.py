"""The library's functions and triggers as installed: one changed, or a trigger added to its tables, is an error.

A database of its own that requires a signed context. Each plant is made by a superuser in a transaction,
reported as ``library_definition_changed``, and gone once the printed fix is applied (the install scripts
run again, or the added trigger dropped); the transaction is rolled back afterwards. One plant is committed
to show what it lets the application role do, and undone the way the doctor says.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import psycopg
import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.cli import main
from rls_tenancy.schema.reinstall import reinstall_sql
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, tenancy_database
from tests.conftest import DEMO_ALEMBIC_INI

CHECK = "library_definition_changed"
REWRITE = (
    "CREATE FUNCTION public.rewrite_roles() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN NEW.roles := '{admin}'; RETURN NEW; END $$;"
    " CREATE TRIGGER zzz_rewrite BEFORE UPDATE ON rls_tenancy.users FOR EACH ROW"
    " EXECUTE FUNCTION public.rewrite_roles()"
)
PLANTS = {
    "a guard made to pass": (
        "CREATE OR REPLACE FUNCTION rls_tenancy.granted(what text) RETURNS boolean LANGUAGE sql STABLE RETURN true",
        "function rls_tenancy.granted(text)",
    ),
    "a trigger function made SECURITY DEFINER": (
        "ALTER FUNCTION rls_tenancy.user_write_granted() SECURITY DEFINER",
        "function rls_tenancy.user_write_granted()",
    ),
    "a guard's trigger made again WHEN (false)": (
        "DROP TRIGGER users_write_granted ON rls_tenancy.users;"
        " CREATE TRIGGER users_write_granted BEFORE INSERT OR UPDATE ON rls_tenancy.users FOR EACH ROW"
        " WHEN (false) EXECUTE FUNCTION rls_tenancy.user_write_granted()",
        "trigger users_write_granted on rls_tenancy.users",
    ),
    "a trigger added after the guard": (REWRITE, "trigger zzz_rewrite on rls_tenancy.users"),
}


@pytest.fixture(scope="module")
def signed_db(rls_postgres_url: URL) -> Iterator[TenancyDatabase]:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as db:
        require_signing(db.superuser_url, ContextKey.generate(1))
        yield db


def _connect(url: URL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def _changed(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT severity, object_name, fix FROM rls_tenancy.findings() WHERE check_name = %s ORDER BY 2", (CHECK,)
    ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def _apply(conn: psycopg.Connection[tuple[object, ...]], fix: str, db: TenancyDatabase) -> None:
    """The printed fix: a statement as it is, or the install scripts again through psql's route (the --sql output)."""
    if fix.startswith("DROP "):
        conn.execute(fix)
        return
    assert "rls-tenancy migrate --reinstall, or its --sql output through psql" in fix
    script = io.StringIO()
    reinstall_sql(script, roles=db.roles)
    conn.execute(script.getvalue().encode())


def _an_intern(db: TenancyDatabase, slug: str, plant: str) -> tuple[ContextKey, int, int]:
    """A key in slot 2, a tenant with one user of no roles, and ``plant`` committed: the key and both ids."""
    key = ContextKey.generate(2)
    with _connect(db.superuser_url) as conn:
        conn.execute("SELECT rls_tenancy.install_context_key(2, %s)", (key.key,))
        tenant = conn.execute("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug))
        tenant_id = int(str(tenant.fetchone()[0]))  # type: ignore[index]
        user = conn.execute(
            "INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (%s, %s) RETURNING id",
            (tenant_id, f"intern@{slug}.example"),
        )
        user_id = int(str(user.fetchone()[0]))  # type: ignore[index]
        conn.execute(plant)
    return key, tenant_id, user_id


def _recorded_names_url(db: TenancyDatabase, monkeypatch: pytest.MonkeyPatch) -> str:
    """The superuser URL, with no role names in the environment: the command reads those the database recorded."""
    for variable in ("RLS_TENANCY_OWNER_ROLE", "RLS_TENANCY_APP_ROLE", "RLS_TENANCY_BYPASS_ROLE"):
        monkeypatch.delenv(variable, raising=False)
    return db.superuser_url.render_as_string(hide_password=False)


def test_a_database_as_installed_has_no_changed_definition(signed_db: TenancyDatabase) -> None:
    with _connect(signed_db.superuser_url) as conn:
        assert _changed(conn) == []


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_changed_library_definition_is_an_error_and_its_fix_restores_it(
    signed_db: TenancyDatabase, plant: str
) -> None:
    statement, object_name = PLANTS[plant]
    with _connect(signed_db.superuser_url) as conn:
        try:
            conn.execute(statement)
            found = _changed(conn)
            assert [row[:2] for row in found] == [("error", object_name)]
            _apply(conn, found[0][2], signed_db)
            assert _changed(conn) == []
        finally:
            conn.rollback()


def test_a_trigger_added_to_a_library_table_lets_a_user_rewrite_its_roles_until_dropped(
    signed_db: TenancyDatabase,
) -> None:
    """What the doctor reports, shown: SQL run for a user changes its language and comes out an administrator."""
    key, tenant_id, user_id = _an_intern(signed_db, "defs", REWRITE)
    engine: Engine = bind_engine(create_engine(signed_db.app_url), context_key=key)
    language = text("UPDATE rls_tenancy.users SET language = 'de' WHERE id = :id RETURNING roles")
    try:
        with as_tenant(tenant_id, user=user_id), engine.begin() as app:
            assert app.execute(language, {"id": user_id}).scalar_one() == ["admin"]  # no grant asked for
            app.rollback()
        with _connect(signed_db.superuser_url) as conn:
            (found,) = _changed(conn)
            conn.execute(found[2])
        with as_tenant(tenant_id, user=user_id), engine.begin() as app:
            assert app.execute(language, {"id": user_id}).scalar_one() == []
    finally:
        engine.dispose()
        with _connect(signed_db.superuser_url) as conn:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS zzz_rewrite ON rls_tenancy.users"))
            conn.execute("DROP FUNCTION IF EXISTS public.rewrite_roles()")


def test_a_guard_replaced_and_committed_is_restored_by_the_reinstall_command(
    signed_db: TenancyDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``migrate --reinstall`` (the printed fix) restores a replaced guard for good.

    With the guard made to pass, SQL run for a user gives itself ``admin`` without a grant; after the command
    the same write is refused again and the doctor has nothing to report.
    """
    url = _recorded_names_url(signed_db, monkeypatch)
    key, tenant_id, user_id = _an_intern(signed_db, "again", PLANTS["a guard made to pass"][0])
    engine: Engine = bind_engine(create_engine(signed_db.app_url), context_key=key)
    promote = text("UPDATE rls_tenancy.users SET roles = '{admin}' WHERE id = :id")
    try:
        with as_tenant(tenant_id, user=user_id), engine.begin() as app:
            app.execute(promote, {"id": user_id})  # the replaced guard lets it through
            app.rollback()
        with _connect(signed_db.superuser_url) as conn:
            (found,) = _changed(conn)
        assert "rls-tenancy migrate --reinstall" in found[2]
        assert main(["migrate", "--reinstall", "--database-url", url]) == 0
        with _connect(signed_db.superuser_url) as conn:
            assert _changed(conn) == []
        with pytest.raises(DBAPIError, match="grant"), as_tenant(tenant_id, user=user_id), engine.begin() as app:
            app.execute(promote, {"id": user_id})
    finally:
        engine.dispose()
        main(["migrate", "--reinstall", "--database-url", url])


def test_the_reinstall_command_refuses_a_database_without_the_library(
    rls_postgres_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = rls_postgres_url.render_as_string(hide_password=False)
    assert main(["migrate", "--reinstall", "--database-url", url]) == 2
    assert "not installed in this database" in capsys.readouterr().err


def test_the_reinstall_script_names_the_roles_the_database_recorded(
    signed_db: TenancyDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Printed for psql from a database installed with its own role names, it runs there as printed."""
    url = _recorded_names_url(signed_db, monkeypatch)
    assert main(["migrate", "--reinstall", "--sql", "--database-url", url]) == 0
    script = capsys.readouterr().out
    assert f"set_config('rls_tenancy.app_role', '{signed_db.roles.app}', true)" in script
    with _connect(signed_db.superuser_url) as conn:
        conn.execute(script.encode())
        assert _changed(conn) == []
        conn.rollback()


def test_a_roles_table_naming_no_role_is_refused_by_the_reinstall(
    signed_db: TenancyDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tampered, the record would have the scripts make and grant roles nobody chose: refused, with the way out."""
    url = _recorded_names_url(signed_db, monkeypatch)
    with _connect(signed_db.superuser_url) as conn:
        conn.execute("UPDATE rls_tenancy.roles SET role_name = 'nobody_chose_this' WHERE purpose = 'app'")
    try:
        assert main(["migrate", "--reinstall", "--database-url", url]) == 2
        assert "DELETE FROM rls_tenancy.roles" in capsys.readouterr().err
        with _connect(signed_db.superuser_url) as conn:
            assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'nobody_chose_this'").fetchall()
    finally:
        with _connect(signed_db.superuser_url) as conn:
            conn.execute("UPDATE rls_tenancy.roles SET role_name = %s WHERE purpose = 'app'", (signed_db.roles.app,))
