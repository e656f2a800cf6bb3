"""pg_stat_statements, created after the migration: the doctor reports it, and its fix closes it to the app role.

Where the extension is installed, its view and the function under it are granted to PUBLIC, and show the
application role the text of every statement its role ran: every tenant's, with the literals of the SET LOCAL
statements of an engine bound with ``set_local=True`` (a signed context's proof among them).
``sql/017_query_text.sql`` closes it when it runs; an extension created later is ``query_text_readable``.

The test server need not preload the library: the privilege checks come first (``42501``, permission denied),
and only a role that passes them meets the preload check (``55000``), so the state an app role's SELECT stops
at tells which side of the grants it is on.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema._resources import sql_script
from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import ddl
from tests.doctor.support import Row, finding_rows, key_of, planted_in, run

CHECK = "query_text_readable"
# Permission denied: the app role is refused. Past the privilege checks: it read the statements (a server
# that preloads the library), or met the preload check ("must be loaded via shared_preload_libraries").
REFUSED, PASSED = "42501", (None, "55000")
UNAVAILABLE = (
    "*** pg_stat_statements is not available to the test server (no pg_stat_statements.control in its "
    "share/extension directory, e.g. /usr/share/postgresql/15/extension/; Debian ships it in postgresql-15): "
    "the query_text_readable checks and sql/017_query_text.sql's handling of it are NOT verified. ***"
)


@pytest.fixture(scope="module", autouse=True)
def _statements_available(superuser_engine: Engine) -> None:
    with superuser_engine.connect() as conn:
        available = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
        ).scalar_one()
        installed = conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"))
        assert installed.scalar_one() == 0, "the shared test database must not have pg_stat_statements already"
    if not available:
        pytest.skip(UNAVAILABLE)


def _reached(conn: Connection, statement: str, *roles: str) -> str | None:
    """The SQLSTATE ``statement`` fails with as the session user ``roles[0]`` (then SET ROLE to the rest), or None.

    In a savepoint, so that the planted transaction lives on.
    """
    savepoint = conn.begin_nested()
    try:
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", roles[0]))
        for role in roles[1:]:
            run(conn, ddl("SET LOCAL ROLE {}", role))
        run(conn, statement)
        return None
    except DBAPIError as error:
        return str(getattr(error.orig, "sqlstate", ""))
    finally:
        savepoint.rollback()


def _may(conn: Connection, role: str, privilege: str, target: str) -> bool:
    """has_table_privilege, or has_function_privilege for a ``target`` with its arguments, of ``role``."""
    check = "has_function_privilege" if "(" in target else "has_table_privilege"
    query = sql.SQL("SELECT {}(%(role)s, %(target)s, %(privilege)s)").format(sql.Identifier(check))
    parameters = {"role": role, "target": target, "privilege": privilege}
    return bool(conn.exec_driver_sql(query.as_string(None), parameters).scalar_one())


def _create(schema: str | None) -> list[str]:
    if schema is None:
        return ["CREATE EXTENSION pg_stat_statements"]
    return [
        ddl("CREATE SCHEMA {}", schema),
        ddl("GRANT USAGE ON SCHEMA {} TO PUBLIC", schema),  # as a schema of extensions is, for every role to call
        ddl("CREATE EXTENSION pg_stat_statements SCHEMA {}", schema),
    ]


def _signed(required: bool) -> str:
    return sql.SQL("SELECT rls_tenancy.require_signed_context({})").format(sql.Literal(required)).as_string(None)


def _about(found: list[Row]) -> list[Row]:
    return [row for row in found if row[1] == CHECK]


def _select(schema: str = "public") -> str:
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "pg_stat_statements")).as_string(None)


def _call(schema: str = "public") -> str:
    return sql.SQL("SELECT count(*) FROM {}(true)").format(sql.Identifier(schema, "pg_stat_statements")).as_string(None)


SCHEMAS = {
    # the view as findings() names it: its regclass, qualified since findings() searches pg_catalog alone
    "in public": (None, "public.pg_stat_statements"),
    "in a schema of its own, whose name needs quotes": ("doctor Stats", '"doctor Stats".pg_stat_statements'),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned: a warning", "signed: an error"])
@pytest.mark.parametrize(("schema", "view"), list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_pg_stat_statements_created_after_the_migration_is_reported_and_its_fix_closes_it(
    superuser_engine: Engine, db: TenancyDatabase, signed: bool, schema: str | None, view: str
) -> None:
    function = view + "(boolean)"
    monitor = f"doctor_monitor_{secrets.token_hex(4)}"  # monitoring, which must keep pg_stat_statements
    select, call = _select(schema or "public"), _call(schema or "public")
    planted = [_signed(signed), *_create(schema), ddl("CREATE ROLE {} NOLOGIN IN ROLE pg_monitor", monitor)]
    with planted_in(superuser_engine, planted) as conn:
        app = db.roles.app
        # The leak: the extension grants both to PUBLIC, and the app role's SELECT passes every privilege check.
        assert _may(conn, app, "SELECT", view) and _may(conn, app, "EXECUTE", function)
        assert _reached(conn, select, app) in PASSED
        found = _about(finding_rows(conn))
        assert [key_of(row) for row in found] == [("error" if signed else "warning", CHECK, view)]
        message, fix = found[0][3], found[0][4]
        assert message.startswith(f"PUBLIC may read {view}: it shows the application role {app} the text")
        assert ("signed context proof" in message) == signed
        run(conn, fix)
        assert _about(finding_rows(conn)) == [], f"the fix {fix!r} left the finding"
        assert not _may(conn, app, "SELECT", view) and not _may(conn, app, "EXECUTE", function)
        assert _reached(conn, select, app) == REFUSED
        assert _reached(conn, call, app) == REFUSED
        # Monitoring keeps it: pg_read_all_stats, and pg_monitor through it.
        assert _may(conn, "pg_read_all_stats", "SELECT", view) and _may(conn, "pg_read_all_stats", "EXECUTE", function)
        assert _reached(conn, select, monitor) in PASSED
        assert _reached(conn, call, monitor) in PASSED


def _closed(schema_statements: list[str]) -> list[str]:
    """The extension created, then closed as the specification closes it (sql/017_query_text.sql run again)."""
    return [*schema_statements, sql_script("017_query_text.sql")]


VIEW, FUNCTION = "public.pg_stat_statements", "public.pg_stat_statements(boolean)"
GROUP = f"doctor_readers_{secrets.token_hex(4)}"


def _to_group(*grants: str) -> Callable[[RoleNames], list[str]]:
    """A role the app role can SET ROLE to, holding ``grants`` (``{}`` is that role's name)."""
    return lambda r: [
        ddl("CREATE ROLE {} NOLOGIN", GROUP),
        ddl("GRANT {} TO {}", GROUP, r.app),
        *(sql.SQL(grant).format(sql.Identifier(GROUP)).as_string(None) for grant in grants),
    ]


# A grant that brings it back after the specification closed it: (setup, the object reported, who holds it,
# the statement the app role then runs, and the role it SETs to first, if any).
REOPENED = {
    "the function granted to the app role (the view closed)": (
        lambda r: [ddl("GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) TO {}", r.app)],
        FUNCTION,
        "{app}",
        _call(),
        False,
    ),
    "the function granted back to PUBLIC (the view closed)": (
        lambda r: ["GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) TO PUBLIC"],
        FUNCTION,
        "PUBLIC",
        _call(),
        False,
    ),
    "the view's query column and the function granted to a role the app role can become": (
        _to_group(
            "GRANT SELECT (query) ON public.pg_stat_statements TO {}",
            "GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) TO {}",
        ),
        VIEW,
        GROUP,
        "SELECT query FROM public.pg_stat_statements",
        True,
    ),
    "the view and the function granted back to PUBLIC": (
        lambda r: [
            "GRANT SELECT ON public.pg_stat_statements TO PUBLIC",
            "GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) TO PUBLIC",
        ],
        VIEW,
        "PUBLIC",
        _select(),
        False,
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("setup", "reported", "holder", "peek", "through_group"),
    [pytest.param(*case, id=name) for name, case in REOPENED.items()],
)
def test_a_grant_that_reopens_pg_stat_statements_is_reported_and_its_fix_closes_it(
    superuser_engine: Engine,
    db: TenancyDatabase,
    baseline: list[Row],
    setup: Callable[[RoleNames], list[str]],
    reported: str,
    holder: str,
    peek: str,
    through_group: bool,
) -> None:
    app = db.roles.app
    as_app = (app, GROUP) if through_group else (app,)
    with planted_in(superuser_engine, _closed(_create(None))) as conn:
        # Closed by the specification: nothing to report, and the app role is refused.
        assert finding_rows(conn) == baseline
        assert _reached(conn, _select(), app) == REFUSED
        for statement in setup(db.roles):
            run(conn, statement)
        assert _reached(conn, peek, *as_app) in PASSED  # reopened
        found = _about(finding_rows(conn))
        assert [row[2] for row in found] == [reported]
        verb = "read" if reported == VIEW else "run"
        assert found[0][3].startswith(f"{holder.format(app=app)} may {verb} {reported}: ")
        run(conn, found[0][4])
        assert _about(finding_rows(conn)) == []
        assert _reached(conn, peek, *as_app) == REFUSED
        assert _reached(conn, _call(), *as_app) == REFUSED
        assert _may(conn, "pg_read_all_stats", "SELECT", VIEW) and _may(conn, "pg_read_all_stats", "EXECUTE", FUNCTION)


@pytest.mark.usefixtures("stays_clean")
def test_the_view_granted_alone_is_reported_and_its_fix_leaves_the_function_closed(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """The view runs its function with the caller's rights: SELECT alone reads nothing, and is reported all the same."""
    with planted_in(superuser_engine, _closed(_create(None))) as conn:
        run(conn, "GRANT SELECT ON public.pg_stat_statements TO PUBLIC")
        assert _reached(conn, _select(), db.roles.app) == REFUSED  # permission denied for function
        (found,) = _about(finding_rows(conn))
        assert key_of(found)[1:] == (CHECK, VIEW)
        run(conn, found[4])
        assert _about(finding_rows(conn)) == []
        assert not _may(conn, db.roles.app, "SELECT", VIEW) and not _may(conn, db.roles.app, "EXECUTE", FUNCTION)


@pytest.mark.usefixtures("stays_clean")
def test_through_pg_monitor_it_is_the_memberships_finding(superuser_engine: Engine, db: TenancyDatabase) -> None:
    """One cause, one finding: pg_read_all_stats' grant is that membership's, not query_text_readable."""
    planted = [*_closed(_create(None)), ddl("GRANT pg_monitor TO {}", db.roles.app)]
    with planted_in(superuser_engine, planted) as conn:
        assert _reached(conn, _select(), db.roles.app, "pg_monitor") in PASSED
        found = finding_rows(conn)
        assert _about(found) == []
        (membership,) = [row for row in found if row[1] == "app_role_member_of_privileged"]
        run(conn, membership[4])
        assert _reached(conn, _select(), db.roles.app, "pg_monitor") is not None
        assert _reached(conn, _select(), db.roles.app) == REFUSED


TEMPORARY_EXEMPTION = re.compile(r"INSERT INTO rls_tenancy\.doctor_exemptions .*?'<why>'\);")


@pytest.mark.usefixtures("stays_clean")
def test_the_temporary_warning_names_the_session_reset_and_the_exemption_an_app_using_temp_tables_records(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    with planted_in(superuser_engine, []) as conn:
        (found,) = [row for row in finding_rows(conn) if row[1] == "app_role_temporary"]
        assert found[0] == "warning"
        assert "session reset (rls_tenancy.reset_session(), DISCARD TEMP) already drops them" in found[3]
        exemption = TEMPORARY_EXEMPTION.search(found[3])
        assert exemption is not None, found[3]
        reason = sql.Literal("doctor test: the app's reports use temp tables").as_string(None)
        run(conn, exemption.group(0).replace("'<why>'", reason))
        (exempt,) = [row for row in finding_rows(conn) if row[1] == "app_role_temporary"]
    assert (exempt[0], exempt[2]) == ("info", db.name)
    assert exempt[3].endswith("(exempt: doctor test: the app's reports use temp tables)")
