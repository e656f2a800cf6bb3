"""pg_stat_statements created after the migration: running the specification again closes it to the app role.

What a later revision does first (``install_specification()``, every script of ``sql/``) takes the extension's
view and functions from PUBLIC and gives them to pg_read_all_stats, in whichever schema the extension lives;
running it once more changes nothing, and the downgrade's ``sql/uninstall_query_text.sql`` gives back exactly
what the extension had granted. In a superuser transaction on the shared database, rolled back.

The test server need not preload the library: a role refused by the privilege checks gets ``42501``, one that
passes them reaches the preload check (``55000``), which a server preloading it would not raise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import ddl

SCHEMA = "Stats & Co"  # the extension may live in any schema; this name needs quoting wherever it is written
REFUSED, PASSED = "42501", (None, "55000")  # refused; or past the privilege checks (read, or not preloaded)
UNAVAILABLE = (
    "*** pg_stat_statements is not available to the test server (no pg_stat_statements.control in its "
    "share/extension directory, e.g. /usr/share/postgresql/15/extension/; Debian ships it in postgresql-15): "
    "sql/017_query_text.sql's handling of it is NOT verified. ***"
)
# Every privilege on the extension's members, as (member, grantee, privilege): PUBLIC for grantee 0.
_GRANTS = text(
    """
    SELECT pg_describe_object(d.classid, d.objid, 0) AS member,
           CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee)::text END,
           acl.privilege_type
      FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
      LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
      LEFT JOIN pg_proc f ON d.classid = 'pg_proc'::regclass AND f.oid = d.objid
     CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, f.proacl,
                                            CASE WHEN c.oid IS NOT NULL THEN acldefault('r', c.relowner)
                                                 ELSE acldefault('f', f.proowner) END)) acl
     WHERE e.extname = 'pg_stat_statements'
     ORDER BY 1, 2, 3
    """
)


@pytest.fixture()
def scratch(superuser_engine: Engine) -> Iterator[Connection]:
    """A superuser transaction that is rolled back afterwards."""
    with superuser_engine.connect() as conn:
        conn.begin()
        available = "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        if not conn.execute(text(available)).scalar_one():
            pytest.skip(UNAVAILABLE)
        yield conn
        conn.rollback()


def _grants(conn: Connection) -> list[tuple[str, str, str]]:
    return [(row[0], row[1], row[2]) for row in conn.execute(_GRANTS)]


def _statement(template: str, *arguments: str) -> str:
    """``template`` naming the extension's objects in SCHEMA: ``{}`` is the schema-qualified member named."""
    return sql.SQL(template).format(*(sql.Identifier(SCHEMA, name) for name in arguments)).as_string(None)


SELECTS = [_statement("SELECT count(*) FROM {}", view) for view in ("pg_stat_statements", "pg_stat_statements_info")]
CALLS = [
    _statement("SELECT count(*) FROM {}(true)", "pg_stat_statements"),
    _statement("SELECT count(*) FROM {}()", "pg_stat_statements_info"),
]
RESET = _statement("SELECT {}()", "pg_stat_statements_reset")


def _reached(conn: Connection, role: str, statement: str) -> str | None:
    """The SQLSTATE ``statement`` fails with as ``role`` (the session user), or None; in a savepoint."""
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(ddl("SET LOCAL SESSION AUTHORIZATION {}", role))
        conn.exec_driver_sql(statement)
        return None
    except DBAPIError as error:
        return str(getattr(error.orig, "sqlstate", ""))
    finally:
        savepoint.rollback()


def _specification(conn: Connection, db: TenancyDatabase) -> None:
    for key, value in db.roles.settings().items():
        conn.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})
    for name in install_scripts():
        conn.exec_driver_sql(sql_script(name), execution_options={"no_parameters": True})


def test_running_the_specification_again_closes_pg_stat_statements_created_after_the_migration(
    scratch: Connection, db: TenancyDatabase
) -> None:
    app = db.roles.app
    scratch.exec_driver_sql(ddl("CREATE SCHEMA {}", SCHEMA))
    scratch.exec_driver_sql(ddl("GRANT USAGE ON SCHEMA {} TO PUBLIC", SCHEMA))
    scratch.exec_driver_sql(ddl("CREATE EXTENSION pg_stat_statements SCHEMA {}", SCHEMA))
    created = _grants(scratch)
    view = sql.Identifier(SCHEMA, "pg_stat_statements").as_string(None)
    may_select = text("SELECT has_table_privilege(:role, :view, 'SELECT')")
    may_run = text("SELECT has_function_privilege(:role, :view || '(boolean)', 'EXECUTE')")
    # The leak: granted to PUBLIC by the extension, past every privilege check for the app role.
    assert scratch.execute(may_select, {"role": app, "view": view}).scalar_one()
    assert scratch.execute(may_run, {"role": app, "view": view}).scalar_one()
    assert all(_reached(scratch, app, statement) in PASSED for statement in SELECTS + CALLS)

    _specification(scratch, db)
    closed = _grants(scratch)
    assert not scratch.execute(may_select, {"role": app, "view": view}).scalar_one()
    assert not scratch.execute(may_run, {"role": app, "view": view}).scalar_one()
    assert [_reached(scratch, app, statement) for statement in [*SELECTS, *CALLS, RESET]] == [REFUSED] * 5
    # Monitoring keeps the views and the functions behind them; reset stays the superuser's, as the extension has it.
    assert {(member, privilege) for member, grantee, privilege in closed if grantee == "pg_read_all_stats"} == {
        (f'view "{SCHEMA}".pg_stat_statements', "SELECT"),
        (f'view "{SCHEMA}".pg_stat_statements_info', "SELECT"),
        (f'function "{SCHEMA}".pg_stat_statements(boolean)', "EXECUTE"),
        (f'function "{SCHEMA}".pg_stat_statements_info()', "EXECUTE"),
    }
    assert not [grant for grant in closed if grant[1] == "PUBLIC"]

    _specification(scratch, db)
    assert _grants(scratch) == closed  # idempotent

    scratch.exec_driver_sql(sql_script("uninstall_query_text.sql"), execution_options={"no_parameters": True})
    assert _grants(scratch) == created  # the downgrade gives back what the extension granted, and no more
    assert all(_reached(scratch, app, statement) in PASSED for statement in SELECTS + CALLS)
    assert _reached(scratch, app, RESET) == REFUSED
