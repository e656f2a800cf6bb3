"""Reaches that a first fix used to hide, that every printed fix must survive, or that live outside the catalogs'
per-object records: an aggregate over a definer, a definer procedure, the server's own settings, a function that
binds a tenant for its own run.

As in test_reach.py: planted, shown to reach tenant B's data as the app role bound to tenant A (where a signed
context does not already refuse it), reported as an error, and closed by the fix the doctor prints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text

from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import World, ddl
from tests.doctor.support import Key, finding_rows, key_of, planted_in, run
from tests.doctor.test_reach import (
    AGGREGATE,
    REACHED,
    READ_OBJECT,
    SECRET_OBJECT,
    SECRETS,
    _as_app,
    _own_rows,
)

GATHER = ["SELECT concat('reach', 'ed') FROM (SELECT public.doctor_gather(1) AS g) AS s WHERE g LIKE '%b-secret%'"]


def _keys(conn: Connection) -> set[Key]:
    return {key_of(row) for row in finding_rows(conn)}


def _fix_of(conn: Connection, key: Key) -> str:
    (fix,) = [row[4] for row in finding_rows(conn) if key_of(row) == key]
    return fix


def _secrets(conn: Connection, world: World) -> None:
    for statement in SECRETS:
        conn.execute(text(statement), {"a": world.a, "b": world.b})


@pytest.mark.usefixtures("stays_clean")
def test_an_aggregate_over_a_public_definer_is_reported_until_the_leak_is_closed(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """REVOKE on the definer alone leaves the aggregate running it: definer_escapes_rls stays until its fix."""
    public = "GRANT EXECUTE ON FUNCTION public.doctor_step(text, integer) TO PUBLIC"
    escapes = ("error", "definer_escapes_rls", "public.doctor_step(text,integer)")
    open_to_all = ("error", "definer_executable_by_public", "public.doctor_step(text,integer)")
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [*AGGREGATE, public]:
            run(conn, statement)
        assert REACHED in _as_app(conn, db, world.a, GATHER)
        assert {escapes, open_to_all} <= _keys(conn)
        run(conn, _fix_of(conn, open_to_all))
        assert open_to_all not in _keys(conn)
        assert REACHED in _as_app(conn, db, world.a, GATHER)  # still open: the aggregate runs it
        assert escapes in _keys(conn)
        fix = _fix_of(conn, escapes)
        assert "public.doctor_gather(integer)" in next(r[3] for r in finding_rows(conn) if key_of(r) == escapes)
        run(conn, fix)
        assert escapes not in _keys(conn), f"the fix {fix!r} left it"
        closed = _as_app(conn, db, world.a, GATHER)
        assert REACHED not in closed, closed
        assert _as_app(conn, db, world.a, ["SELECT public.doctor_gather(1)"]) == "[('a-secret',)]"
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
def test_every_fix_naming_a_definer_procedure_runs(superuser_engine: Engine, db: TenancyDatabase, world: World) -> None:
    """A PUBLIC procedure without search_path: each of its three findings' fixes runs, and they close it."""
    procedure = (
        "CREATE PROCEDURE public.doctor_steal(INOUT found text DEFAULT NULL) LANGUAGE plpgsql SECURITY DEFINER"
        " AS $$ BEGIN SELECT 'reached' INTO found FROM public.doctor_secrets WHERE secret = 'b-secret'; END $$"
    )
    name = "public.doctor_steal(text)"
    checks = ["definer_without_search_path", "definer_executable_by_public", "definer_escapes_rls"]
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        run(conn, procedure)
        assert REACHED in _as_app(conn, db, world.a, ["CALL public.doctor_steal()"])
        for check in checks:  # each alone, in a savepoint: every one of them runs
            fix = _fix_of(conn, ("error", check, name))
            assert "FUNCTION" not in fix, fix
            savepoint = conn.begin_nested()
            run(conn, fix)
            assert ("error", check, name) not in _keys(conn), f"the fix {fix!r} left it"
            savepoint.rollback()
        for check in checks:  # then one after the other, as printed
            if ("error", check, name) in _keys(conn):
                run(conn, _fix_of(conn, ("error", check, name)))
        assert not {key for key in _keys(conn) if key[2] == name}
        assert REACHED not in _as_app(conn, db, world.a, ["CALL public.doctor_steal()"])
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
def test_a_function_setting_the_tenant_for_its_own_run_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """CREATE FUNCTION ... SET app.current_tenant = B: the app role calling it reads B's rows (unsigned)."""
    create = (
        "DO $$ BEGIN EXECUTE format('CREATE FUNCTION public.doctor_names() RETURNS SETOF text LANGUAGE sql STABLE"
        " SET app.current_tenant = %L SET search_path = pg_catalog, pg_temp AS %L',"
        " (SELECT tenant_id FROM public.doctor_secrets WHERE secret = 'b-secret')::text,"
        " 'SELECT secret FROM public.doctor_secrets'); END $$"
    )
    peek = ["SELECT 'reached' FROM public.doctor_names() AS s (secret) WHERE secret = 'b-secret'"]
    expected = ("error", "function_sets_tenant", "public.doctor_names()")
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        run(conn, create)
        run(conn, ddl("ALTER FUNCTION public.doctor_names() OWNER TO {}", db.roles.owner))
        if not signing_requested():  # signed, a bare setting binds nothing
            assert REACHED in _as_app(conn, db, world.a, peek)
        fix = _fix_of(conn, expected)
        run(conn, fix)
        assert expected not in _keys(conn), f"the fix {fix!r} left it"
        assert REACHED not in _as_app(conn, db, world.a, peek)
        assert _as_app(conn, db, world.a, ["SELECT * FROM public.doctor_names()"]) == "[('a-secret',)]"


def _wait_for(engine: Engine, name: str, value: str) -> None:
    """Until a new session sees ``name`` = ``value`` (pg_reload_conf() signals, the server reloads a moment later)."""
    for _ in range(100):
        with engine.connect() as conn:
            if conn.execute(text("SELECT coalesce(current_setting(:n, true), '')"), {"n": name}).scalar_one() == value:
                return
        time.sleep(0.05)
    raise AssertionError(f"{name} never became {value!r}")


def _alter_system(engine: Engine, statements: list[str]) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            run(conn, statement)


@pytest.fixture()
def server_settings(superuser_engine: Engine) -> Iterator[list[str]]:
    """The names ALTER SYSTEM set in a test, reset (and reloaded) after it whatever happened."""
    names: list[str] = []
    yield names
    resets = [ddl("ALTER SYSTEM RESET {}", name) for name in names]
    _alter_system(superuser_engine, [*resets, "SELECT pg_reload_conf()"])
    for name in names:
        default = "origin" if name == "session_replication_role" else "off" if name == "lo_compat_privileges" else ""
        _wait_for(superuser_engine, name, default)
    superuser_engine.dispose()  # no pooled session keeps what it saw


def _server_sets(engine: Engine, names: list[str], name: str, value: str) -> None:
    names.append(name)
    setting = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)).as_string(None)
    _alter_system(engine, [setting, "SELECT pg_reload_conf()"])
    _wait_for(engine, name, value)
    engine.dispose()


def _apply_server_fix(engine: Engine, fix: str, name: str, default: str) -> None:
    """ALTER SYSTEM refuses a transaction: the printed statements one by one, the comment left out."""
    statements = [part.strip() for part in fix.split("--")[0].split(";") if part.strip()]
    assert statements[0].startswith("ALTER SYSTEM RESET"), fix
    _alter_system(engine, statements)
    _wait_for(engine, name, default)
    engine.dispose()


@pytest.mark.usefixtures("stays_clean")
def test_the_server_binding_a_tenant_for_every_session_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, server_settings: list[str]
) -> None:
    """ALTER SYSTEM SET app.current_tenant = B: a request that binds nothing reads B's rows."""
    peek = ["SELECT 'reached' FROM public.projects WHERE tenant_id = :b"]
    expected = ("error", "server_setting", "setting app.current_tenant")
    _server_sets(superuser_engine, server_settings, "app.current_tenant", str(world.b))
    with planted_in(superuser_engine, []) as conn:
        if not signing_requested():  # signed, a bare setting binds nothing
            assert REACHED in _unbound(conn, db, world, peek)
        fix = _fix_of(conn, expected)
    _apply_server_fix(superuser_engine, fix, "app.current_tenant", "")
    with planted_in(superuser_engine, []) as conn:
        assert expected not in _keys(conn)
        assert REACHED not in _unbound(conn, db, world, peek)


def _unbound(conn: Connection, db: TenancyDatabase, world: World, statements: list[str]) -> str:
    """As the app role with no tenant bound by the request (whatever the server binds)."""
    savepoint = conn.begin_nested()
    try:
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        out = ""
        for statement in statements:
            result = conn.execute(text(statement), {"a": world.a, "b": world.b})
            out = repr(result.all()) if result.returns_rows else out
        return out
    except Exception as error:  # noqa: BLE001 - what it raises is what it saw
        return str(error)
    finally:
        savepoint.rollback()


@pytest.mark.usefixtures("stays_clean")
def test_large_objects_opened_by_the_server_are_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, server_settings: list[str]
) -> None:
    """ALTER SYSTEM SET lo_compat_privileges = on: the app role reads a large object granted to no one."""
    expected = ("error", "server_setting", "setting lo_compat_privileges")
    _server_sets(superuser_engine, server_settings, "lo_compat_privileges", "on")
    with planted_in(superuser_engine, [SECRET_OBJECT]) as conn:
        assert REACHED in _as_app(conn, db, world.a, [READ_OBJECT])
        fix = _fix_of(conn, expected)
    _apply_server_fix(superuser_engine, fix, "lo_compat_privileges", "off")
    with planted_in(superuser_engine, [SECRET_OBJECT]) as conn:
        assert expected not in _keys(conn)
        assert REACHED not in _as_app(conn, db, world.a, [READ_OBJECT])


@pytest.mark.usefixtures("stays_clean")
def test_replica_mode_for_the_whole_server_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, server_settings: list[str]
) -> None:
    """ALTER SYSTEM SET session_replication_role = replica: no foreign key is checked: A's rows point anywhere."""
    expected = ("error", "server_setting", "setting session_replication_role")
    dangling = [
        "INSERT INTO public.tasks (tenant_id, project_id, title) SELECT :a, max(id) + 1000000, 'x' "
        "FROM public.projects RETURNING 'reached'"
    ]
    _server_sets(superuser_engine, server_settings, "session_replication_role", "replica")
    with planted_in(superuser_engine, []) as conn:
        assert REACHED in _as_app(conn, db, world.a, dangling, values={"a": world.a})
        fix = _fix_of(conn, expected)
    _apply_server_fix(superuser_engine, fix, "session_replication_role", "origin")
    with planted_in(superuser_engine, []) as conn:
        assert expected not in _keys(conn)
        assert REACHED not in _as_app(conn, db, world.a, dangling, values={"a": world.a})
