"""Misconfigurations that let the app role reach another tenant's data around the policies of the tenant tables.

Each is planted in a rolled-back transaction, shown to reach tenant B's data as the app role bound to tenant A,
reported as an error, and closed by the fix the doctor prints, after which the app role still reads its own rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World, bind_then_become, ddl
from tests.doctor.support import finding_rows, key_of, planted_in, run

# A tenant table of the plants' own: one row for each of the two tenants, a secret B's row holds.
SECRETS = [
    "CREATE TABLE public.doctor_secrets (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),"
    " secret text NOT NULL, PRIMARY KEY (tenant_id, secret))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_secrets')",
    "INSERT INTO public.doctor_secrets VALUES (:a, 'a-secret'), (:b, 'b-secret')",
]
REACHED = "reached"  # what a peek returns, or raises, once it has reached tenant B's data
OTHER_TENANT = "SELECT 'reached' FROM rls_tenancy.tenants WHERE id = :b"
# Read (NULL in a slot that holds no key): refused unless the sequence is readable.
KEY = "SELECT 'reached' FROM (SELECT pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_1a')) AS k"
# Through the oid: a role without USAGE on the schema rls_tenancy reads the sequence all the same.
KEY_BY_OID = (
    "SELECT 'reached' FROM pg_catalog.pg_class c, LATERAL pg_catalog.pg_sequence_last_value(c.oid::regclass) AS k"
    " WHERE c.relname = 'context_key_1a'"
)
STATISTICS = (
    "SELECT 'reached' FROM pg_catalog.pg_statistic WHERE starelid = 'public.doctor_secrets'::regclass"
    " AND array_to_string(stavalues1, ',') LIKE '%b-secret%'"
)
# Raises with what it sees; LEAKPROOF lets the planner run it before the policy has removed B's row.
PEEK = (
    "CREATE FUNCTION public.doctor_peek(s text) RETURNS boolean LANGUAGE plpgsql LEAKPROOF COST 0.0000001 AS "
    "$$ BEGIN IF s = 'b-secret' THEN RAISE EXCEPTION 'reached %', s; END IF; RETURN true; END $$"
)
LARGE_OBJECT = 1_000_000 + secrets.randbelow(1_000_000_000)
ROLE = f"doctor_group_{secrets.token_hex(4)}"


def _group(grant: str) -> Callable[[RoleNames], list[str]]:
    """A role the app role can SET ROLE to, holding ``grant`` (``{}`` is that role's name)."""
    return lambda r: [
        ddl("CREATE ROLE {} NOLOGIN", ROLE),
        sql.SQL(grant).format(sql.Identifier(ROLE)).as_string(None),
        ddl("GRANT {} TO {}", ROLE, r.app),
    ]


def _on_this_database(template: str, **parts: sql.Composable) -> str:
    """``template`` with this database's name (filled in inside PostgreSQL) as {database} or {database_literal}."""
    named = {"database": sql.SQL("%1$I"), "database_literal": sql.SQL("%1$L")}
    statement = sql.SQL(template).format(**named, **parts).as_string(None)
    return "DO $$ BEGIN EXECUTE format('" + statement.replace("'", "''") + "', current_database()); END $$"


@dataclass(frozen=True)
class Reach:
    setup: Callable[[TenancyDatabase], list[str]]
    check: str
    object: str  # "{app}" is the app role's name
    peek: list[str]  # run as the app role bound to tenant A: returns or raises "reached" while B's data is in reach
    as_role: str | None = None  # SET ROLE to it first (a role the app role can become)


REACHES = {
    "a policy on rls_tenancy.tenants for the app role USING (true)": Reach(
        lambda d: [ddl("CREATE POLICY doctor_all ON rls_tenancy.tenants FOR SELECT TO {} USING (true)", d.roles.app)],
        "policy_not_tenant_keyed",
        "rls_tenancy.tenants policy doctor_all",
        [OTHER_TENANT],
    ),
    "the library's tenant_self policy widened": Reach(
        lambda d: ["ALTER POLICY tenant_self ON rls_tenancy.tenants USING (true)"],
        "policy_not_tenant_keyed",
        "rls_tenancy.tenants policy tenant_self",
        [OTHER_TENANT],
    ),
    "row level security off on rls_tenancy.tenants": Reach(
        lambda d: ["ALTER TABLE rls_tenancy.tenants DISABLE ROW LEVEL SECURITY"],
        "tenants_not_isolated",
        "rls_tenancy.tenants",
        [OTHER_TENANT],
    ),
    "rls_tenancy.tenants owned by the app role": Reach(
        lambda d: [ddl("ALTER TABLE rls_tenancy.tenants OWNER TO {}", d.roles.app)],
        "library_object_owner",
        "rls_tenancy.tenants",
        ["ALTER TABLE rls_tenancy.tenants DISABLE ROW LEVEL SECURITY", OTHER_TENANT],
    ),
    "the schema rls_tenancy owned by the app role": Reach(
        lambda d: [ddl("ALTER SCHEMA rls_tenancy OWNER TO {}", d.roles.app)],
        "library_object_owner",
        "rls_tenancy",
        [
            "CREATE FUNCTION rls_tenancy.doctor_planted() RETURNS text LANGUAGE sql AS $$ SELECT 'reached' $$",
            "SELECT rls_tenancy.doctor_planted()",
        ],
    ),
    "SELECT on every sequence of rls_tenancy, the context key's included": Reach(
        lambda d: [ddl("GRANT SELECT ON ALL SEQUENCES IN SCHEMA rls_tenancy TO {}", d.roles.app)],
        "context_key_readable",
        "rls_tenancy.context_key_1a",
        [KEY],
    ),
    "USAGE on a context key sequence to PUBLIC": Reach(
        lambda d: ["GRANT USAGE ON SEQUENCE rls_tenancy.context_key_1a TO PUBLIC"],
        "context_key_readable",
        "rls_tenancy.context_key_1a",
        [KEY],
    ),
    "SELECT on a context key sequence to a role the app role can become": Reach(
        lambda d: _group("GRANT SELECT ON SEQUENCE rls_tenancy.context_key_1a TO {}")(d.roles),
        "context_key_readable",
        "rls_tenancy.context_key_1a",
        [KEY_BY_OID],
        as_role=ROLE,
    ),
    "a context key sequence owned by the app role": Reach(
        lambda d: [ddl("ALTER SEQUENCE rls_tenancy.context_key_1a OWNER TO {}", d.roles.app)],
        "library_object_owner",
        "rls_tenancy.context_key_1a",
        [KEY],
    ),
    "SELECT on pg_statistic to the app role": Reach(
        lambda d: ["ANALYZE public.doctor_secrets", ddl("GRANT SELECT ON pg_catalog.pg_statistic TO {}", d.roles.app)],
        "app_role_reads_catalog",
        "pg_statistic",
        [STATISTICS],
    ),
    "SELECT on a column of pg_statistic to a role the app role can become": Reach(
        lambda d: [
            "ANALYZE public.doctor_secrets",
            *_group("GRANT SELECT (starelid, stavalues1) ON pg_catalog.pg_statistic TO {}")(d.roles),
        ],
        "app_role_reads_catalog",
        "pg_statistic",
        [STATISTICS],
        as_role=ROLE,
    ),
    "a LEAKPROOF function the app role may call": Reach(
        lambda d: [PEEK],
        "leakproof_function",
        "public.doctor_peek(text)",
        # a sequential scan (any role may SET these): the tenant's index would skip B's row
        [
            "SET LOCAL enable_indexscan = off",
            "SET LOCAL enable_indexonlyscan = off",
            "SET LOCAL enable_bitmapscan = off",
            "SELECT count(*) FROM public.doctor_secrets WHERE public.doctor_peek(secret)",
        ],
    ),
    "a dblink server back to this database with a user mapping for the app role": Reach(
        lambda d: [
            "CREATE EXTENSION IF NOT EXISTS dblink",
            _on_this_database(
                "CREATE SERVER doctor_loop FOREIGN DATA WRAPPER dblink_fdw"
                " OPTIONS (host {host}, dbname {database_literal}, port {port})",
                host=sql.Literal(d.superuser_url.host or "localhost"),
                port=sql.Literal(str(d.superuser_url.port or 5432)),
            ),
            sql.SQL("CREATE USER MAPPING FOR {} SERVER doctor_loop OPTIONS (user {}, password {})")
            .format(sql.Identifier(d.roles.app), sql.Literal(d.roles.bypass), sql.Literal(d.bypass_url.password))
            .as_string(None),
            ddl("GRANT USAGE ON FOREIGN SERVER doctor_loop TO {}", d.roles.app),
        ],
        "foreign_server_usable",
        "doctor_loop",
        # as the bypass role, in a session of its own: every tenant's row
        [
            "SELECT 'reached' FROM public.dblink('doctor_loop', 'SELECT id FROM rls_tenancy.tenants') AS t(id bigint)"
            " WHERE t.id = :b"
        ],
    ),
    "the schema public owned by the app role": Reach(
        lambda d: [ddl("ALTER SCHEMA public OWNER TO {}", d.roles.app)],
        "app_role_owns_schema",
        "public",
        ["DROP TABLE public.doctor_secrets", "CREATE TABLE public.doctor_secrets (secret text)", "SELECT 'reached'"],
    ),
    "the database owned by the app role (pg_database_owner owns public)": Reach(
        lambda d: [_on_this_database("ALTER DATABASE {database} OWNER TO {role}", role=sql.Identifier(d.roles.app))],
        "app_role_owns_schema",
        "public",
        ["SET LOCAL ROLE pg_database_owner", "DROP TABLE public.doctor_secrets", "SELECT 'reached'"],
    ),
    "CREATE on the schema public to PUBLIC": Reach(
        lambda d: ["GRANT CREATE ON SCHEMA public TO PUBLIC"],
        "app_role_schema_create",
        "public",
        # A trojan: every privileged session's lower() of a varchar now runs it, with that session's rights.
        [
            "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'reached' $$",
            "SELECT public.lower('x'::varchar)",
        ],
    ),
    "a large object granted to PUBLIC": Reach(
        lambda d: [
            f"SELECT lo_from_bytea({LARGE_OBJECT}, convert_to('b-secret', 'UTF8'))",
            f"GRANT SELECT ON LARGE OBJECT {LARGE_OBJECT} TO PUBLIC",
        ],
        "large_object_readable",
        f"large object {LARGE_OBJECT}",
        [f"SELECT 'reached' WHERE convert_from(lo_get({LARGE_OBJECT}), 'UTF8') = 'b-secret'"],
    ),
}


def _peek(conn: Connection, db: TenancyDatabase, world: World, reach: Reach) -> str:
    """What ``reach.peek`` returns (or raises) as the app role bound to tenant A, in a savepoint."""
    savepoint = conn.begin_nested()
    try:
        bind_then_become(conn, world.a, db.roles.app)  # signed as the superuser where the database requires it
        # As the session user: SET ROLE asks what the session user, not the current role, is a member of.
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        if reach.as_role is not None:
            run(conn, ddl("SET LOCAL ROLE {}", reach.as_role))
        out = ""
        for statement in reach.peek:
            result = conn.execute(text(statement), {"a": world.a, "b": world.b})
            out = repr(result.all()) if result.returns_rows else out
        return out
    except DBAPIError as error:
        return str(error.orig)
    finally:
        savepoint.rollback()


def _own_rows(conn: Connection, db: TenancyDatabase, world: World) -> list[str]:
    savepoint = conn.begin_nested()
    try:
        bind_then_become(conn, world.a, db.roles.app)
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        return list(conn.execute(text("SELECT secret FROM public.doctor_secrets")).scalars())
    finally:
        savepoint.rollback()


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("reach", [pytest.param(reach, id=name) for name, reach in REACHES.items()])
def test_what_reaches_another_tenant_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, reach: Reach
) -> None:
    expected = ("error", reach.check, reach.object.format(app=db.roles.app))
    with planted_in(superuser_engine, []) as conn:
        for statement in SECRETS:
            conn.execute(text(statement), {"a": world.a, "b": world.b})
        for statement in reach.setup(db):
            run(conn, statement)
        assert REACHED in _peek(conn, db, world, reach), "the plant reaches nothing: the test proves nothing"
        found = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert found, f"{expected} not in {[key_of(row) for row in finding_rows(conn)]}"
        run(conn, found[0][4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}, f"the fix {found[0][4]!r} left it"
        assert REACHED not in _peek(conn, db, world, reach)
        assert _own_rows(conn, db, world) == ["a-secret"]  # the app still works
