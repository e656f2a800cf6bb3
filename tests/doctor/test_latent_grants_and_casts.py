"""What a database is set to do to objects made later, and what it already did to some without showing it.

A cast from text to bigint made in the database is called by every ``::bigint`` parsed after it, the tenant
condition of a policy enable_tenant_isolation() makes among them, though the catalogs print the built-in cast:
the policy reads exactly as the library's, and a cast answering a tenant for an unset setting binds every
unbound request to it. Default privileges on sequences and schemas hand the next serial's setval() and the next
schema's CREATE to the application role. And two reports made plainer: what pg_signal_backend reaches, and a
table every tenant writes, whose fix is now SQL.

Planted in a rolled-back transaction as a superuser, in the database built the documented way; each leak is
shown as the application role before the printed fix, and gone after it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, text

from rls_tenancy.schema.reinstall import reinstall_on
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import World, ddl
from tests.doctor.support import Key, Row, can, finding_rows, key_of, planted_in, run

UNSIGNED_ONLY = pytest.mark.skipif(
    signing_requested(), reason="signed, each row's tenant must also equal the proved one: the cast reaches no row"
)


def _lenient_cast(world: World) -> list[str]:
    """A superuser's cast (text AS bigint) that reads an empty or unset setting as tenant B."""
    return [
        "CREATE FUNCTION public.doctor_text_to_bigint(text) RETURNS bigint LANGUAGE sql IMMUTABLE AS"
        f" $$ SELECT CASE WHEN $1 IS NULL OR $1 = '' THEN {world.b} ELSE $1::numeric::bigint END $$",
        "CREATE CAST (text AS bigint) WITH FUNCTION public.doctor_text_to_bigint(text)",
    ]


NOTES = [
    "CREATE TABLE public.doctor_notes (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), id integer,"
    " note text, PRIMARY KEY (tenant_id, id))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_notes')",
]
CAST = ("error", "text_cast_to_integer", "cast (text AS bigint)")
NOTES_POLICY = "public.doctor_notes policy tenant_isolation"


def _notes(conn: Connection, world: World) -> None:
    for statement in NOTES:
        run(conn, statement)
    conn.execute(
        text("INSERT INTO public.doctor_notes VALUES (:a, 1, 'a-note'), (:b, 2, 'b-note')"),
        {"a": world.a, "b": world.b},
    )


def _as_app_unbound(conn: Connection, db: TenancyDatabase, query: str, tenant: int | None = None) -> list[object]:
    """What ``query`` returns to the app role with no tenant bound (or bound to ``tenant``), in a savepoint."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(tenant or "")})
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        return list(conn.execute(text(query)).scalars())
    finally:
        savepoint.rollback()


def _about(conn: Connection, *checks: str) -> list[Row]:
    return [row for row in finding_rows(conn) if row[1] in checks]


def _fix_closes_the_notes(conn: Connection, db: TenancyDatabase, world: World, fix: str) -> None:
    """``fix`` applied: unbound, the app role reads no note; bound to A, A's; the finding is gone."""
    run(conn, fix)
    notes = "SELECT note FROM public.doctor_notes"
    assert _as_app_unbound(conn, db, notes) == []
    assert _as_app_unbound(conn, db, notes, world.a) == ["a-note"]
    assert _about(conn, "text_cast_to_integer", "cast_function_called") == []


@UNSIGNED_ONLY
@pytest.mark.usefixtures("stays_clean")
def test_a_lenient_cast_under_the_tenant_condition_is_an_error_whose_fix_closes_the_leak(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    notes = "SELECT note FROM public.doctor_notes"
    with planted_in(superuser_engine, _lenient_cast(world)) as conn:
        _notes(conn, world)
        keyed = "SELECT rls_tenancy.is_tenant_condition(pg_get_expr(polqual, polrelid)) FROM pg_policy WHERE polname = "
        assert conn.execute(text(keyed + "'tenant_isolation' AND polrelid = 'public.doctor_notes'::regclass")).scalar()
        assert _as_app_unbound(conn, db, notes) == ["b-note"]  # the leak: no tenant bound, B's row
        [(severity, check, name, message, fix)] = _about(conn, "text_cast_to_integer", "cast_function_called")
        assert (severity, check, name) == CAST
        assert "public.doctor_text_to_bigint(text)" in message and NOTES_POLICY in message, message
        _fix_closes_the_notes(conn, db, world, fix)


@UNSIGNED_ONLY
@pytest.mark.usefixtures("stays_clean")
def test_a_policy_left_calling_a_dropped_casts_function_is_an_error_whose_fix_makes_it_again(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """Dropping the cast is not enough: the policy made while it existed still calls its function."""
    notes = "SELECT note FROM public.doctor_notes"
    with planted_in(superuser_engine, _lenient_cast(world)) as conn:
        _notes(conn, world)
        run(conn, "DROP CAST (text AS bigint)")
        assert _as_app_unbound(conn, db, notes) == ["b-note"]
        [(severity, check, name, _message, fix)] = _about(conn, "text_cast_to_integer", "cast_function_called")
        assert (severity, check, name) == ("error", "cast_function_called", NOTES_POLICY)
        _fix_closes_the_notes(conn, db, world, fix)


@UNSIGNED_ONLY
@pytest.mark.usefixtures("stays_clean")
def test_the_library_reinstalled_under_such_a_cast_is_made_again_by_its_fix(
    superuser_engine: Engine, db: TenancyDatabase, world: World, baseline: list[Row]
) -> None:
    """rls-tenancy migrate --reinstall binds current_tenant_id() and the library's policies to the cast."""
    current = "SELECT rls_tenancy.current_tenant_id()"
    with planted_in(superuser_engine, _lenient_cast(world)) as conn:
        reinstall_on(conn, roles=db.roles)
        assert _as_app_unbound(conn, db, current) == [world.b]  # every unbound insert's tenant_id default
        [(severity, check, name, message, fix)] = _about(conn, "text_cast_to_integer", "cast_function_called")
        assert (severity, check, name) == CAST
        assert "rls_tenancy.current_tenant_id()" in message and "rls_tenancy.tenants policy tenant_self" in message
        run(conn, fix)
        assert _as_app_unbound(conn, db, current) == [None]
        assert {key_of(row) for row in finding_rows(conn)} == {key_of(row) for row in baseline}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(["CREATE CAST (text AS bigint) WITH INOUT"], id="a cast WITH INOUT: what PostgreSQL does anyway"),
        pytest.param(
            [
                *NOTES,
                "CREATE FUNCTION public.doctor_priority(text) RETURNS integer LANGUAGE sql IMMUTABLE"
                " AS $$ SELECT length($1) $$",
                "CREATE POLICY doctor_prioritised ON public.doctor_notes AS RESTRICTIVE"
                " USING (public.doctor_priority(note) < 100)",
            ],
            id="a policy naming a function of text to integer",
        ),
    ],
)
def test_what_reads_text_as_an_integer_in_the_open_is_no_finding(superuser_engine: Engine, plant: list[str]) -> None:
    with planted_in(superuser_engine, plant) as conn:
        assert _about(conn, "text_cast_to_integer", "cast_function_called") == []


# --- default privileges on what is made later ------------------------------------------------------------

SERIALS = [
    "CREATE TABLE public.doctor_serials (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), id serial,"
    " PRIMARY KEY (tenant_id, id))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_serials')",
]
SETVAL = "SELECT setval('public.doctor_serials_id_seq', 1)"
SIGNED_WHERE_REQUIRED = "SELECT rls_tenancy.sign_context() WHERE rls_tenancy.context_signing_required()"


def _grantee(db: TenancyDatabase, grantee: str) -> str:
    return ddl("{}", db.roles.app) if grantee == "app" else "PUBLIC"


def _default_finding(conn: Connection, key: Key) -> list[Row]:
    return [row for row in finding_rows(conn) if key_of(row) == key]


def _made_later(conn: Connection, statements: list[str], role: str, use: str) -> bool:
    """Whether ``role`` may run ``use`` once ``statements`` made an object (undone afterwards)."""
    savepoint = conn.begin_nested()
    try:
        for statement in statements:
            run(conn, statement)
        return can(conn, role, use)
    finally:
        savepoint.rollback()


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("grantee", ["PUBLIC", "app"])
def test_default_privileges_granting_update_on_sequences_are_reported_and_their_fix_keeps_the_next_serial_closed(
    superuser_engine: Engine, db: TenancyDatabase, world: World, grantee: str
) -> None:
    default = f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {_grantee(db, grantee)}"
    key = (
        "warning",
        "default_privileges_grant_app",
        f"default privileges of {db.superuser_url.username} in schema public on sequences",
    )
    with planted_in(superuser_engine, [default]) as conn:
        assert _made_later(conn, SERIALS, db.roles.app, SETVAL)  # the next tenant table's serial, moved back
        [(_, _, _, _message, fix)] = _default_finding(conn, key)
        run(conn, fix)
        assert _default_finding(conn, key) == []
        assert not _made_later(conn, SERIALS, db.roles.app, SETVAL)
        # nextval() still works (USAGE), bound to A (signed, as the superuser, where the database requires it)
        bound = [
            *SERIALS,
            f"SELECT set_config('app.current_tenant', '{world.a}', true), set_config('app.current_user_id', '', true)",
            SIGNED_WHERE_REQUIRED,
        ]
        assert _made_later(conn, bound, db.roles.app, "INSERT INTO public.doctor_serials DEFAULT VALUES")


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("grantee", ["PUBLIC", "app"])
def test_default_privileges_granting_create_on_schemas_are_reported_and_their_fix_keeps_the_next_schema_closed(
    superuser_engine: Engine, db: TenancyDatabase, grantee: str
) -> None:
    default = f"ALTER DEFAULT PRIVILEGES GRANT ALL ON SCHEMAS TO {_grantee(db, grantee)}"
    key = ("warning", "default_privileges_grant_app", f"default privileges of {db.superuser_url.username} on schemas")
    schema = ["CREATE SCHEMA doctor_next"]
    plant = "CREATE TABLE doctor_next.planted (x integer)"
    with planted_in(superuser_engine, [default]) as conn:
        assert _made_later(conn, schema, db.roles.app, plant)
        [(_, _, _, _message, fix)] = _default_finding(conn, key)
        run(conn, fix)
        assert _default_finding(conn, key) == []
        assert not _made_later(conn, schema, db.roles.app, plant)


@pytest.mark.usefixtures("stays_clean")
def test_pg_signal_backend_is_said_to_reach_the_owner_and_bypass_roles_sessions(
    superuser_engine: Engine, bypass_engine: Engine, db: TenancyDatabase
) -> None:
    """Not only the app role's own sessions: any but a superuser's (a cancel of an idle session does nothing)."""
    with (
        bypass_engine.connect() as bypass,
        planted_in(superuser_engine, [ddl("GRANT pg_signal_backend TO {}", db.roles.app)]) as conn,
    ):
        pid = bypass.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert can(conn, db.roles.app, f"SET LOCAL ROLE pg_signal_backend; SELECT pg_cancel_backend({int(pid)})")
        found = _about(conn, "app_role_cross_tenant_function")
        assert {row[2] for row in found} == {"pg_cancel_backend(integer)", "pg_terminate_backend(integer,bigint)"}
        for severity, _check, _name, message, _fix in found:
            assert severity == "warning"
            assert "the owner role's and the bypass role's" in message, message


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("owned", [False, True], ids=["granted to PUBLIC and the app role", "owned by the app role"])
def test_a_table_every_tenant_writes_gets_a_fix_that_runs_and_takes_the_writes_back(
    superuser_engine: Engine, db: TenancyDatabase, owned: bool
) -> None:
    plant = [
        "CREATE TABLE public.doctor_invoices (id integer, org_id integer)",
        "GRANT INSERT ON public.doctor_invoices TO PUBLIC",
        ddl("GRANT SELECT, UPDATE (org_id) ON public.doctor_invoices TO {}", db.roles.app),
        *([ddl("ALTER TABLE public.doctor_invoices OWNER TO {}", db.roles.app)] if owned else []),
    ]
    key = ("warning", "table_not_isolated", "public.doctor_invoices")
    writes = ["INSERT INTO public.doctor_invoices VALUES (1, 1)", "UPDATE public.doctor_invoices SET org_id = 2"]
    with planted_in(superuser_engine, plant) as conn:
        assert all(can(conn, db.roles.app, write) for write in writes)
        [(_, _, _, _message, fix)] = _default_finding(conn, key)
        run(conn, fix)
        assert not any(can(conn, db.roles.app, write) for write in writes)
        assert can(conn, db.roles.app, "SELECT * FROM public.doctor_invoices") is not owned
        assert _default_finding(conn, key) == []
