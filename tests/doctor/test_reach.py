"""Misconfigurations that let the app role reach another tenant's data around the policies of the tenant tables.

Each is planted in a rolled-back transaction, shown to reach tenant B's data as the app role bound to tenant A,
reported as an error, and closed by the fix the doctor prints, after which the app role still reads its own rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
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
# B's secret in a large object of the superuser's, granted to no one.
SECRET_OBJECT = (
    sql.SQL("SELECT lo_from_bytea({}, convert_to('b-secret', 'UTF8'))")
    .format(sql.Literal(LARGE_OBJECT))
    .as_string(None)
)
READ_OBJECT = (
    sql.SQL("SELECT 'reached' WHERE convert_from(lo_get({}), 'UTF8') = 'b-secret'")
    .format(sql.Literal(LARGE_OBJECT))
    .as_string(None)
)
# A definer of the owner role's whose search_path names a schema nobody has created yet.
COUNTING = [
    "CREATE FUNCTION public.doctor_count(p text) RETURNS integer LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = doctor_util, public, pg_catalog, pg_temp AS $$ BEGIN RETURN length(lower(p)); END $$",
    "REVOKE ALL ON FUNCTION public.doctor_count(text) FROM PUBLIC",
]
# As the app role: the schema created, and a lower() in it that the definer finds first and runs as its
# owner, which binds (and, where required, signs) tenant B for the rest of the caller's transaction.
HIJACK = [
    "SELECT pg_catalog.set_config('doctor.b', CAST(:b AS text), false)",
    "CREATE SCHEMA doctor_util",
    "GRANT USAGE ON SCHEMA doctor_util TO PUBLIC",
    "CREATE FUNCTION doctor_util.lower(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN"
    " PERFORM pg_catalog.set_config('app.current_tenant', pg_catalog.current_setting('doctor.b'), true);"
    " IF rls_tenancy.context_signing_required() THEN PERFORM rls_tenancy.sign_context(); END IF;"
    " RETURN t; END $$",
    "SELECT public.doctor_count('x')",
    "SELECT 'reached' FROM public.doctor_secrets WHERE secret = 'b-secret'",
]


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


def _counting(d: TenancyDatabase) -> list[str]:
    """COUNTING, owned by the owner role and granted to the app role, which may create schemas."""
    return [
        *COUNTING,
        ddl("ALTER FUNCTION public.doctor_count(text) OWNER TO {}", d.roles.owner),
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_count(text) TO {}", d.roles.app),
        _on_this_database("GRANT CREATE ON DATABASE {database} TO {role}", role=sql.Identifier(d.roles.app)),
    ]


def _counting_in_own_database(d: TenancyDatabase) -> list[str]:
    """COUNTING, owned by the owner role and granted to the app role, which owns the database."""
    return [
        *COUNTING,
        ddl("ALTER FUNCTION public.doctor_count(text) OWNER TO {}", d.roles.owner),
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_count(text) TO {}", d.roles.app),
        _on_this_database("ALTER DATABASE {database} OWNER TO {role}", role=sql.Identifier(d.roles.app)),
    ]


def _policy_calling_the_apps_function(d: TenancyDatabase) -> list[str]:
    """A restrictive policy calling a function the app role made in a schema it may create in."""
    return [
        "CREATE SCHEMA doctor_rules",
        ddl("GRANT USAGE, CREATE ON SCHEMA doctor_rules TO {}", d.roles.app),
        ddl("SET LOCAL ROLE {}", d.roles.app),
        "CREATE FUNCTION doctor_rules.visible(s text) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT s <> '' $$",
        "RESET ROLE",
        "CREATE POLICY doctor_visible ON public.doctor_secrets AS RESTRICTIVE FOR SELECT"
        " USING (doctor_rules.visible(secret))",
    ]


# As the app role: the policy's function replaced by one that raises with what it sees, run first (cheap), on a
# sequential scan (any role may SET these: the tenant's index would skip B's row).
REPLACE_VISIBLE = [
    "CREATE OR REPLACE FUNCTION doctor_rules.visible(s text) RETURNS boolean LANGUAGE plpgsql"
    " COST 0.0000001 AS $$ BEGIN IF s = 'b-secret' THEN RAISE EXCEPTION 'reached %', s; END IF;"
    " RETURN true; END $$",
    "SET LOCAL enable_indexscan = off",
    "SET LOCAL enable_indexonlyscan = off",
    "SET LOCAL enable_bitmapscan = off",
    "SELECT count(*) FROM public.doctor_secrets",
]


def _loop_server(options: str) -> Callable[[TenancyDatabase], list[str]]:
    """A dblink server back to this database, its options spelled by ``options`` (a format() template run in
    PostgreSQL: ``%1$L`` this database, ``%2$L`` its port, ``%3$L`` its first unix socket directory), with a
    user mapping for the app role as the bypass role (in a session of its own: every tenant's rows)."""

    def setup(d: TenancyDatabase) -> list[str]:
        create = sql.SQL("CREATE SERVER doctor_loop FOREIGN DATA WRAPPER dblink_fdw OPTIONS ({})").format(
            sql.SQL(options)
        )
        here = (
            "DO $$ BEGIN EXECUTE format('"
            + create.as_string(None).replace("'", "''")
            + "', current_database(), current_setting('port'),"
            " split_part(current_setting('unix_socket_directories'), ',', 1)); END $$"
        )
        return [
            "CREATE EXTENSION IF NOT EXISTS dblink",
            here,
            sql.SQL("CREATE USER MAPPING FOR {} SERVER doctor_loop OPTIONS (user {}, password {})")
            .format(sql.Identifier(d.roles.app), sql.Literal(d.roles.bypass), sql.Literal(d.bypass_url.password))
            .as_string(None),
            ddl("GRANT USAGE ON FOREIGN SERVER doctor_loop TO {}", d.roles.app),
        ]

    return setup


THROUGH_LOOP = [
    "SELECT 'reached' FROM public.dblink('doctor_loop', 'SELECT id FROM rls_tenancy.tenants') AS t(id bigint)"
    " WHERE t.id = :b"
]
# A parent table without tenant_id that doctor_secrets inherits: a query on the parent scans the child under the
# parent's policies (none), past the child's.
BASE = ["CREATE TABLE public.doctor_base (secret text)", "ALTER TABLE public.doctor_secrets INHERIT public.doctor_base"]
# A superuser's SECURITY DEFINER reading every tenant's secrets, closed to all but the owner role.
LEAK = [
    "CREATE FUNCTION public.doctor_leak() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS 'SELECT secret FROM public.doctor_secrets'",
    "REVOKE ALL ON FUNCTION public.doctor_leak() FROM PUBLIC",
]

# An aggregate (EXECUTE for PUBLIC, as CREATE AGGREGATE leaves it) over a superuser's definer closed to PUBLIC.
AGGREGATE = [
    "CREATE FUNCTION public.doctor_step(state text, x integer) RETURNS text LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $$ SELECT string_agg(secret, ',') FROM public.doctor_secrets $$",
    "REVOKE ALL ON FUNCTION public.doctor_step(text, integer) FROM PUBLIC",
    "CREATE AGGREGATE public.doctor_gather(integer) (SFUNC = public.doctor_step, STYPE = text)",
]


def _reported_by(body: str) -> Callable[[TenancyDatabase], list[str]]:
    """LEAK, executable by the owner role, called by public.doctor_report() (``body``): the owner role's
    pinned definer, granted to the app role."""
    create = sql.SQL(
        "CREATE FUNCTION public.doctor_report() RETURNS SETOF text LANGUAGE {} SECURITY DEFINER"
        " SET search_path = pg_catalog, pg_temp {}"
    ).format(sql.SQL("plpgsql" if body.startswith("AS") else "sql"), sql.SQL(body))
    return lambda d: [
        *LEAK,
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_leak() TO {}", d.roles.owner),
        create.as_string(None),
        ddl("ALTER FUNCTION public.doctor_report() OWNER TO {}", d.roles.owner),
        "REVOKE ALL ON FUNCTION public.doctor_report() FROM PUBLIC",
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_report() TO {}", d.roles.app),
    ]


def _stored_through(language: str, body: str) -> Callable[[TenancyDatabase], list[str]]:
    """A superuser's materialized view over an invoker function (``body``) reading doctor_secrets, granted."""
    create = sql.SQL("CREATE FUNCTION public.doctor_all_secrets() RETURNS SETOF text LANGUAGE {} STABLE AS {}").format(
        sql.SQL(language), sql.Literal(body)
    )
    return lambda d: [
        create.as_string(None),
        "CREATE MATERIALIZED VIEW public.doctor_stored"
        " AS SELECT s.secret FROM public.doctor_all_secrets() AS s (secret)",
        ddl("GRANT SELECT ON public.doctor_stored TO {}", d.roles.app),
    ]


@dataclass(frozen=True)
class Reach:
    setup: Callable[[TenancyDatabase], list[str]]
    check: str
    object: str  # "{app}" is the app role's name
    peek: list[str]  # run as the app role bound to tenant A: returns or raises "reached" while B's data is in reach
    as_role: str | None = None  # SET ROLE to it first (a role the app role can become)
    # after the fix, as the app role bound to A: each returns 'works' (the library's own work still works)
    works: tuple[str, ...] = ()


# Tenant B's id, read from its secret (the plants' statements take no parameters).
B_ID = "(SELECT tenant_id FROM public.doctor_secrets WHERE secret = 'b-secret')"
# An audit event of tenant B's, written by the library's log_event() with B bound (signed where required), sealed.
B_EVENT = [
    f"SELECT set_config('app.current_tenant', {B_ID}::text, true), set_config('app.current_user_id', '', true)",
    "SELECT rls_tenancy.sign_context() WHERE rls_tenancy.context_signing_required()",
    "SELECT rls_tenancy.log_event('doctor', 'b-secret')",
    "SELECT set_config('app.current_tenant', '', true)",
    "SET CONSTRAINTS ALL IMMEDIATE",  # sealed now: ALTER TABLE refuses a table with pending trigger events
]
OTHER_EVENT = "SELECT 'reached' FROM rls_tenancy.audit_log WHERE message = 'b-secret'"
# The library's work that its owner-only policies serve: an audit event written, a tenant found by its slug.
LOGS_EVENT = "SELECT 'works' FROM (SELECT rls_tenancy.log_event('doctor', 'after the fix')) AS logged"
# (B's slug, which the app role bound to A may not read, in a setting: a login resolves a tenant not yet bound)
B_SLUG = f"SELECT set_config('doctor.b_slug', (SELECT slug FROM rls_tenancy.tenants WHERE id = {B_ID}), false)"
FINDS_SLUG = "SELECT 'works' WHERE rls_tenancy.tenant_id_for_slug(current_setting('doctor.b_slug')) = :b"
# As the domain's owner: a constraint whose check reads every row of the column, and fails on B's with its value.
DOMAIN_PROBE = (
    "ALTER DOMAIN public.doctor_secret_text ADD CONSTRAINT doctor_probe"
    " CHECK (VALUE <> 'b-secret' OR ('reached ' || VALUE)::integer > 0)"
)
SEQUENTIAL = [
    "SET LOCAL enable_indexscan = off",
    "SET LOCAL enable_indexonlyscan = off",
    "SET LOCAL enable_bitmapscan = off",
]
# A feature override of B's, and a global one (no tenant), which every tenant reads.
OVERRIDES = [
    "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled)"
    f" VALUES ({B_ID}, 'b-secret', '*', true), (NULL, 'doctor-global', '*', true)",
]
OTHER_OVERRIDE = "SELECT 'reached' FROM rls_tenancy.feature_overrides WHERE feature = 'b-secret'"
READS_GLOBAL = "SELECT 'works' FROM rls_tenancy.feature_overrides WHERE feature = 'doctor-global'"
OTHER_CHAIN = "SELECT 'reached' FROM rls_tenancy.audit_chain_heads WHERE chain = :b"
NO_TOKEN_WRITES = "SELECT 'works' WHERE NOT has_table_privilege('rls_tenancy.api_tokens', 'INSERT')"
DELEGATE = f"doctor_delegate_{secrets.token_hex(4)}"


def _delegated(grant: str) -> Callable[[TenancyDatabase], list[str]]:
    """``grant`` ({} the grantee) to DELEGATE WITH GRANT OPTION, then by DELEGATE to the app role."""
    return lambda d: [
        ddl("CREATE ROLE {} NOLOGIN", DELEGATE),
        ddl("GRANT USAGE ON SCHEMA rls_tenancy TO {}", DELEGATE),
        sql.SQL(grant + " WITH GRANT OPTION").format(sql.Identifier(DELEGATE)).as_string(None),
        ddl("SET ROLE {}", DELEGATE),
        sql.SQL(grant).format(sql.Identifier(d.roles.app)).as_string(None),
        "RESET ROLE",
    ]


def _column_gone(table: str, column: str) -> str:
    """'reached' once ``column`` of ``table`` is gone from every tenant's rows."""
    return (
        sql.SQL(
            "SELECT 'reached' WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = {}::regclass"
            " AND attname = {} AND NOT attisdropped)"
        )
        .format(sql.Literal(table), sql.Literal(column))
        .as_string(None)
    )


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
    "SET on lo_compat_privileges to the app role": Reach(
        lambda d: [SECRET_OBJECT, ddl("GRANT SET ON PARAMETER lo_compat_privileges TO {}", d.roles.app)],
        "app_role_sets_parameter",
        "parameter lo_compat_privileges",
        ["SET LOCAL lo_compat_privileges = on", READ_OBJECT],
    ),
    "a large object owned by a role the app role can become": Reach(
        lambda d: [
            SECRET_OBJECT,
            ddl("CREATE ROLE {} NOLOGIN", ROLE),
            sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}")
            .format(sql.Literal(LARGE_OBJECT), sql.Identifier(ROLE))
            .as_string(None),
            ddl("GRANT {} TO {}", ROLE, d.roles.app),
        ],
        "large_object_owned",
        f"large object {LARGE_OBJECT}",
        [READ_OBJECT],
        as_role=ROLE,
    ),
    "CREATE on the database: a schema a definer searches, created by the app role": Reach(
        _counting, "app_role_database_create", "{database}", HIJACK
    ),
    # CREATE on the database is app_role_database_create's alone (its REVOKE covers every definer); owning the
    # database is app_role_owns_schema's, and a definer searching a schema not created yet is reported too.
    "the database owned by the app role: the definer's search_path fixed": Reach(
        _counting_in_own_database, "definer_search_path_writable", "public.doctor_count(text)", HIJACK
    ),
    "a function of the app role's, called by a policy, in a schema it may create in": Reach(
        _policy_calling_the_apps_function,
        "app_role_schema_create",
        "doctor_rules",
        REPLACE_VISIBLE,
    ),
    # Owning it is enough to replace it (given CREATE on the schema, app_role_schema_create's): after the fix the
    # app role may still create in the schema, but no longer replace the function the policy calls.
    "a function the app role owns, called by a policy": Reach(
        _policy_calling_the_apps_function,
        "app_role_owns_function",
        "doctor_rules.visible(text)",
        REPLACE_VISIBLE,
    ),
    "an INSTEAD rule on a security_invoker view, reaching the tenant table": Reach(
        lambda d: [
            "CREATE VIEW public.doctor_secret_view WITH (security_invoker = true)"
            " AS SELECT tenant_id, secret FROM public.doctor_secrets",
            "CREATE RULE doctor_add AS ON INSERT TO public.doctor_secret_view DO INSTEAD"
            " UPDATE public.doctor_secrets SET secret = NEW.secret WHERE tenant_id = NEW.tenant_id"
            " RETURNING tenant_id, secret",
            ddl("GRANT SELECT, INSERT ON public.doctor_secret_view TO {}", d.roles.app),
        ],
        "rule_reaches_tenant_table",
        "public.doctor_secret_view rule doctor_add",
        # the rule runs as the view's owner (a superuser here): it overwrites B's row
        # (B's id through a setting: a parameter would hide the rule's RETURNING from the statement's description)
        [
            "SELECT pg_catalog.set_config('doctor.b', CAST(:b AS text), false)",
            "INSERT INTO public.doctor_secret_view"
            " SELECT CAST(pg_catalog.current_setting('doctor.b') AS bigint), 'reached' RETURNING secret",
        ],
    ),
    # Found by an outside probe: each was missed, or only a warning.
    "a parent table without tenant_id over a tenant table, readable by the app role": Reach(
        lambda d: [*BASE, ddl("GRANT SELECT ON public.doctor_base TO {}", d.roles.app)],
        "tenant_table_inherited",
        "public.doctor_base",
        ["SELECT 'reached' FROM public.doctor_base WHERE secret = 'b-secret'"],
    ),
    "a parent table without tenant_id over a tenant table, DELETE granted to a role the app role can become": Reach(
        lambda d: [*BASE, *_group("GRANT DELETE ON public.doctor_base TO {}")(d.roles)],
        "tenant_table_inherited",
        "public.doctor_base",
        ["WITH gone AS (DELETE FROM public.doctor_base RETURNING 1) SELECT 'reached' FROM gone HAVING count(*) > 1"],
        as_role=ROLE,
    ),
    "a dblink server back to this database spelled LOCALHOST": Reach(
        _loop_server("host 'LOCALHOST', dbname %1$L, port %2$L"),
        "foreign_server_usable",
        "doctor_loop",
        THROUGH_LOOP,
    ),
    # Spellings of this machine that are no loopback name or 127.0.0.0/8: once warnings ("another database").
    "a dblink server back to this database by host 0.0.0.0": Reach(
        _loop_server("host '0.0.0.0', dbname %1$L, port %2$L"),
        "foreign_server_usable",
        "doctor_loop",
        THROUGH_LOOP,
    ),
    "a dblink server back to this database by 127.0.0.1 written as a number": Reach(
        _loop_server("host '2130706433', dbname %1$L, port %2$L"),
        "foreign_server_usable",
        "doctor_loop",
        THROUGH_LOOP,
    ),
    "a dblink server back to this database through its unix socket directory": Reach(
        _loop_server("host %3$L, dbname %1$L, port %2$L"),
        "foreign_server_usable",
        "doctor_loop",
        THROUGH_LOOP,
    ),
    "a dblink server back to this database by hostaddr under another host name": Reach(
        _loop_server("host 'db.doctor.invalid', hostaddr '127.0.0.1', dbname %1$L, port %2$L"),
        "foreign_server_usable",
        "doctor_loop",
        THROUGH_LOOP,
    ),
    "a superuser's materialized view over a SQL function reading a tenant table": Reach(
        _stored_through("sql", "SELECT secret FROM public.doctor_secrets"),
        "materialized_view_calls_function",
        "public.doctor_stored",
        ["SELECT 'reached' FROM public.doctor_stored WHERE secret = 'b-secret'"],
    ),
    "a superuser's materialized view over a PL/pgSQL function reading a tenant table by EXECUTE": Reach(
        _stored_through("plpgsql", "BEGIN RETURN QUERY EXECUTE 'SELECT secret FROM public.doctor_secrets'; END"),
        "materialized_view_calls_function",
        "public.doctor_stored",
        ["SELECT 'reached' FROM public.doctor_stored WHERE secret = 'b-secret'"],
    ),
    # A system function running SQL text as the refresher: pg_catalog's functions were all left out.
    "a superuser's materialized view over query_to_xml() reading a tenant table": Reach(
        lambda d: [
            "CREATE MATERIALIZED VIEW public.doctor_stored AS SELECT query_to_xml("
            "'SELECT secret FROM public.doctor_secrets', false, false, '')::text AS secret",
            ddl("GRANT SELECT ON public.doctor_stored TO {}", d.roles.app),
        ],
        "materialized_view_calls_function",
        "public.doctor_stored",
        ["SELECT 'reached' FROM public.doctor_stored WHERE secret LIKE '%b-secret%'"],
    ),
    "a superuser's definer reached through the owner role's definer (BEGIN ATOMIC)": Reach(
        _reported_by("BEGIN ATOMIC SELECT * FROM public.doctor_leak(); END"),
        "definer_escapes_rls",
        "public.doctor_leak()",
        ["SELECT 'reached' FROM public.doctor_report() AS s (secret) WHERE secret = 'b-secret'"],
    ),
    "a superuser's definer reached through the owner role's definer (by name, EXECUTE text)": Reach(
        _reported_by("AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT * FROM public.doctor_leak()'; END $$"),
        "definer_escapes_rls",
        "public.doctor_leak()",
        ["SELECT 'reached' FROM public.doctor_report() AS s (secret) WHERE secret = 'b-secret'"],
    ),
    # The owner role's event-trigger function, fired by the app role's own CREATE TEMP TABLE, calling LEAK and
    # logging what it returns where the app role reads it.
    "a superuser's definer reached through the owner role's event-trigger function": Reach(
        lambda d: [
            *LEAK,
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_leak() TO {}", d.roles.owner),
            "CREATE TABLE public.doctor_ddl_log (secret text)",
            ddl("ALTER TABLE public.doctor_ddl_log OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_ddl_log TO {}", d.roles.app),
            "CREATE FUNCTION public.doctor_on_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp"
            " AS $$ BEGIN INSERT INTO public.doctor_ddl_log SELECT * FROM public.doctor_leak(); END $$",
            ddl("ALTER FUNCTION public.doctor_on_ddl() OWNER TO {}", d.roles.owner),
            "REVOKE ALL ON FUNCTION public.doctor_on_ddl() FROM PUBLIC",
            "CREATE EVENT TRIGGER doctor_on_ddl ON ddl_command_end EXECUTE FUNCTION public.doctor_on_ddl()",
        ],
        "definer_escapes_rls",
        "public.doctor_leak()",
        [
            "CREATE TEMPORARY TABLE doctor_scratch (x integer)",
            "SELECT 'reached' FROM public.doctor_ddl_log WHERE secret = 'b-secret'",
        ],
    ),
    # The library's owner-only policies are USING (true) for its own functions: FORCE binds the owner role to no
    # tenant there, so a view of its own reads every tenant's rows.
    "a view of the owner role's over rls_tenancy.tenants, granted to the app role": Reach(
        lambda d: [
            B_SLUG,
            "CREATE VIEW public.doctor_directory AS SELECT id, slug, name FROM rls_tenancy.tenants",
            ddl("ALTER VIEW public.doctor_directory OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_directory TO {}", d.roles.app),
        ],
        "view_not_security_invoker",
        "public.doctor_directory",
        ["SELECT 'reached' FROM public.doctor_directory WHERE id = :b"],
        works=(FINDS_SLUG, "SELECT 'works' FROM public.doctor_directory WHERE id = :a"),
    ),
    "a view of the owner role's over rls_tenancy.audit_log, granted to the app role": Reach(
        lambda d: [
            *B_EVENT,
            "CREATE VIEW public.doctor_activity AS SELECT tenant_id, action, message FROM rls_tenancy.audit_log",
            ddl("ALTER VIEW public.doctor_activity OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_activity TO {}", d.roles.app),
        ],
        "view_not_security_invoker",
        "public.doctor_activity",
        ["SELECT 'reached' FROM public.doctor_activity WHERE message = 'b-secret'"],
        works=(LOGS_EVENT,),
    ),
    "SELECT on every table of rls_tenancy to the app role: every tenant's audit chain heads": Reach(
        lambda d: [
            f"INSERT INTO rls_tenancy.audit_chain_heads (chain, seq) VALUES ({B_ID}, 7) ON CONFLICT DO NOTHING",
            ddl("GRANT SELECT ON ALL TABLES IN SCHEMA rls_tenancy TO {}", d.roles.app),
        ],
        "library_table_granted",
        "rls_tenancy.audit_chain_heads",
        ["SELECT 'reached' FROM rls_tenancy.audit_chain_heads WHERE chain = :b"],
        works=(LOGS_EVENT, "SELECT 'works' FROM rls_tenancy.tenants WHERE id = :a"),
    ),
    "a LEAKPROOF function created in pg_catalog": Reach(
        lambda d: [PEEK.replace("public.doctor_peek", "pg_catalog.doctor_peek")],
        "leakproof_function",
        "doctor_peek(text)",  # (pg_catalog is on every search_path: regprocedure leaves it out)
        [*SEQUENTIAL, "SELECT count(*) FROM public.doctor_secrets WHERE pg_catalog.doctor_peek(secret)"],
    ),
    "a LEAKPROOF function made a member of an extension": Reach(
        lambda d: [PEEK, "ALTER EXTENSION plpgsql ADD FUNCTION public.doctor_peek(text)"],
        "leakproof_function",
        "public.doctor_peek(text)",
        [*SEQUENTIAL, "SELECT count(*) FROM public.doctor_secrets WHERE public.doctor_peek(secret)"],
    ),
    "a domain of a tenant table's column owned by the app role": Reach(
        lambda d: [
            "CREATE DOMAIN public.doctor_secret_text AS text",
            "ALTER TABLE public.doctor_secrets ALTER COLUMN secret TYPE public.doctor_secret_text",
            ddl("ALTER DOMAIN public.doctor_secret_text OWNER TO {}", d.roles.app),
        ],
        "app_role_owns_type",
        "public.doctor_secret_text",
        [DOMAIN_PROBE],
        works=("INSERT INTO public.doctor_secrets (secret) VALUES ('a-second') RETURNING 'works'",),
    ),
    "row level security off on rls_tenancy.audit_log": Reach(
        lambda d: [*B_EVENT, "ALTER TABLE rls_tenancy.audit_log DISABLE ROW LEVEL SECURITY"],
        "rls_disabled",
        "rls_tenancy.audit_log",
        [OTHER_EVENT],
        works=(LOGS_EVENT,),
    ),
    "the library's audit_owner policy widened to PUBLIC": Reach(
        lambda d: [*B_EVENT, "ALTER POLICY audit_owner ON rls_tenancy.audit_log TO PUBLIC"],
        "policy_not_tenant_keyed",
        "rls_tenancy.audit_log policy audit_owner",
        [OTHER_EVENT],
        works=(LOGS_EVENT,),
    ),
    "the library's owner_lookup policy widened to the app role": Reach(
        lambda d: [
            B_SLUG,
            ddl("ALTER POLICY owner_lookup ON rls_tenancy.tenants TO {}, {}", d.roles.owner, d.roles.app),
        ],
        "policy_not_tenant_keyed",
        "rls_tenancy.tenants policy owner_lookup",
        [OTHER_TENANT],
        works=(FINDS_SLUG,),
    ),
    # A library policy is the library's by what it says: widened under its own name, its exemption no longer holds.
    "the library's global_overrides_read widened": Reach(
        lambda d: [
            *OVERRIDES,
            "ALTER POLICY global_overrides_read ON rls_tenancy.feature_overrides"
            " USING (tenant_id IS NULL OR tenant_id > 0)",
        ],
        "policy_not_tenant_keyed",
        "rls_tenancy.feature_overrides policy global_overrides_read",
        [OTHER_OVERRIDE],
        works=(READS_GLOBAL,),
    ),
    "the library's global_overrides_read made again FOR ALL USING (true)": Reach(
        lambda d: [
            *OVERRIDES,
            "DROP POLICY global_overrides_read ON rls_tenancy.feature_overrides",
            "CREATE POLICY global_overrides_read ON rls_tenancy.feature_overrides USING (true) WITH CHECK (true)",
        ],
        "policy_not_tenant_keyed",
        "rls_tenancy.feature_overrides policy global_overrides_read",
        [OTHER_OVERRIDE],
        works=(READS_GLOBAL,),
    ),
    # A policy on a library table that is not the library's: dropped, and nothing else (enable_tenant_isolation()
    # refused the table, set tenant_id NOT NULL, or granted the app role writes to api_tokens).
    "a policy of its own on rls_tenancy.feature_overrides USING (true)": Reach(
        lambda d: [*OVERRIDES, "CREATE POLICY doctor_support ON rls_tenancy.feature_overrides FOR SELECT USING (true)"],
        "policy_not_tenant_keyed",
        "rls_tenancy.feature_overrides policy doctor_support",
        [OTHER_OVERRIDE],
        works=(READS_GLOBAL,),
    ),
    "a policy of its own on rls_tenancy.audit_log USING (true)": Reach(
        lambda d: [*B_EVENT, "CREATE POLICY doctor_support ON rls_tenancy.audit_log FOR SELECT USING (true)"],
        "policy_not_tenant_keyed",
        "rls_tenancy.audit_log policy doctor_support",
        [OTHER_EVENT],
        works=(LOGS_EVENT,),
    ),
    "a policy of its own on rls_tenancy.api_tokens USING (true)": Reach(
        lambda d: [
            f"INSERT INTO rls_tenancy.api_tokens (tenant_id, name, token_hash)"
            f" VALUES ({B_ID}, 'b-secret', decode(repeat('ab', 32), 'hex'))",
            "CREATE POLICY doctor_support ON rls_tenancy.api_tokens FOR SELECT USING (true)",
        ],
        "policy_not_tenant_keyed",
        "rls_tenancy.api_tokens policy doctor_support",
        ["SELECT 'reached' FROM rls_tenancy.api_tokens WHERE name = 'b-secret'"],
        works=(NO_TOKEN_WRITES,),
    ),
    # Renamed, then widened: the library's policy is made again by the same fix.
    "the library's audit_owner renamed, then widened to PUBLIC": Reach(
        lambda d: [
            *B_EVENT,
            "ALTER POLICY audit_owner ON rls_tenancy.audit_log RENAME TO doctor_writer",
            "ALTER POLICY doctor_writer ON rls_tenancy.audit_log TO PUBLIC",
        ],
        "policy_not_tenant_keyed",
        "rls_tenancy.audit_log policy doctor_writer",
        [OTHER_EVENT],
        works=(LOGS_EVENT,),
    ),
    "a view of the owner role's over rls_tenancy.audit_chain_heads, granted to the app role": Reach(
        lambda d: [
            *B_EVENT,
            "CREATE VIEW public.doctor_chains AS SELECT chain, seq FROM rls_tenancy.audit_chain_heads",
            ddl("ALTER VIEW public.doctor_chains OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_chains TO {}", d.roles.app),
        ],
        "view_not_security_invoker",
        "public.doctor_chains",
        ["SELECT 'reached' FROM public.doctor_chains WHERE chain = :b"],
        works=(LOGS_EVENT,),
    ),
    "a superuser's view over rls_tenancy.audit_chain_heads, granted to the app role": Reach(
        lambda d: [
            *B_EVENT,
            "CREATE VIEW public.doctor_chains AS SELECT chain, seq FROM rls_tenancy.audit_chain_heads",
            ddl("GRANT SELECT ON public.doctor_chains TO {}", d.roles.app),
        ],
        "view_not_security_invoker",
        "public.doctor_chains",
        ["SELECT 'reached' FROM public.doctor_chains WHERE chain = :b"],
        works=(LOGS_EVENT,),
    ),
    # The fix runs as one transaction: the app role's own REVOKE comes before its grantor's CASCADE takes its right.
    "SELECT on audit_chain_heads to the app role WITH GRANT OPTION, passed on to PUBLIC": Reach(
        lambda d: [
            *B_EVENT,
            ddl("GRANT SELECT ON rls_tenancy.audit_chain_heads TO {} WITH GRANT OPTION", d.roles.app),
            ddl("SET ROLE {}", d.roles.app),
            "GRANT SELECT ON rls_tenancy.audit_chain_heads TO PUBLIC",
            "RESET ROLE",
        ],
        "library_table_granted",
        "rls_tenancy.audit_chain_heads",
        [OTHER_CHAIN],
        works=(LOGS_EVENT,),
    ),
    "SELECT on columns of audit_chain_heads granted to the app role by another grantor": Reach(
        lambda d: [*B_EVENT, *_delegated("GRANT SELECT (chain, seq) ON rls_tenancy.audit_chain_heads TO {}")(d)],
        "library_table_granted",
        "rls_tenancy.audit_chain_heads",
        [OTHER_CHAIN],
        works=(LOGS_EVENT,),
    ),
    # setval() on a library sequence: every tenant's next token collides with an existing id.
    "UPDATE on the library's api_tokens_id_seq to the app role": Reach(
        lambda d: [ddl("GRANT UPDATE ON SEQUENCE rls_tenancy.api_tokens_id_seq TO {}", d.roles.app)],
        "library_sequence_granted",
        "rls_tenancy.api_tokens_id_seq",
        # (moved forward only, by one: a sequence keeps what setval() did when the transaction rolls back)
        [
            "SELECT 'reached' FROM (SELECT pg_catalog.setval('rls_tenancy.api_tokens_id_seq',"
            " pg_catalog.nextval('rls_tenancy.api_tokens_id_seq'))) AS moved"
        ],
    ),
    # Built-in, and LEAKPROOF only since the install: its error quotes B's row, read before the policy filters it.
    # (Cheaper than the policy's cheapest check, it runs first, on every row: A's and B's first rows are written
    # again, after B's 'reached', so that the scan meets 'reached' first.)
    "a built-in function made LEAKPROOF: to_date(text, text)": Reach(
        lambda d: [
            f"INSERT INTO public.doctor_secrets VALUES ({B_ID}, 'reached')",
            "UPDATE public.doctor_secrets SET secret = secret WHERE secret <> 'reached'",
            "ALTER FUNCTION pg_catalog.to_date(text, text) LEAKPROOF COST 0.0000001",
        ],
        "leakproof_function",
        "to_date(text,text)",
        [*SEQUENTIAL, "SELECT count(*) FROM public.doctor_secrets WHERE to_date(secret, 'Month') IS NOT NULL"],
    ),
    # A domain the app role owns within the type of a tenant column: DROP ... CASCADE changes every tenant's rows.
    "a domain the app role owns, an attribute of a composite type of a tenant column": Reach(
        lambda d: [
            "CREATE DOMAIN public.doctor_street AS text",
            "CREATE TYPE public.doctor_address AS (street public.doctor_street, city text)",
            "ALTER TABLE public.doctor_secrets ADD COLUMN address public.doctor_address",
            ddl("ALTER DOMAIN public.doctor_street OWNER TO {}", d.roles.app),
        ],
        "app_role_owns_type",
        "public.doctor_street",
        ["DROP DOMAIN public.doctor_street CASCADE", _column_gone("public.doctor_address", "street")],
    ),
    "a domain the app role owns, the subtype of a range type of a tenant column": Reach(
        lambda d: [
            "CREATE DOMAIN public.doctor_int AS integer",
            "CREATE TYPE public.doctor_span AS RANGE (subtype = public.doctor_int)",
            "ALTER TABLE public.doctor_secrets ADD COLUMN span public.doctor_span",
            ddl("ALTER DOMAIN public.doctor_int OWNER TO {}", d.roles.app),
        ],
        "app_role_owns_type",
        "public.doctor_int",
        ["DROP DOMAIN public.doctor_int CASCADE", _column_gone("public.doctor_secrets", "span")],
    ),
    # Every tenant's chain heads (its tenants' ids, how many events each logged): the bypass role's alone.
    "the library's audit_chain_heads() granted to the app role": Reach(
        lambda d: [ddl("GRANT EXECUTE ON FUNCTION rls_tenancy.audit_chain_heads() TO {}", d.roles.app)],
        "library_function_granted",
        "rls_tenancy.audit_chain_heads()",
        # (the word spelled in pieces: the error refusing the call quotes the statement)
        ["SELECT concat('reach', 'ed') FROM (SELECT count(*) FROM rls_tenancy.audit_chain_heads()) AS heads"],
    ),
    # An aggregate runs its support functions whoever calls it: EXECUTE on them is checked against its owner.
    "an aggregate over a superuser's definer, closed to PUBLIC": Reach(
        lambda d: AGGREGATE,
        "definer_escapes_rls",
        "public.doctor_step(text,integer)",
        ["SELECT concat('reach', 'ed') FROM (SELECT public.doctor_gather(1) AS g) AS s WHERE g LIKE '%b-secret%'"],
    ),
    "an aggregate over a superuser's definer as its final function": Reach(
        lambda d: [
            "CREATE FUNCTION public.doctor_final(state text) RETURNS text LANGUAGE sql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS $$ SELECT string_agg(secret, ',') FROM public.doctor_secrets $$",
            "REVOKE ALL ON FUNCTION public.doctor_final(text) FROM PUBLIC",
            "CREATE AGGREGATE public.doctor_gather(text)"
            " (SFUNC = pg_catalog.textcat, STYPE = text, FINALFUNC = public.doctor_final)",
        ],
        "definer_escapes_rls",
        "public.doctor_final(text)",
        ["SELECT concat('reach', 'ed') FROM (SELECT public.doctor_gather('x') AS g) AS s WHERE g LIKE '%b-secret%'"],
    ),
    # ALTER FUNCTION fails on a procedure ("is not a function"): its fix names it a procedure.
    "a superuser's SECURITY DEFINER procedure granted to the app role": Reach(
        lambda d: [
            "CREATE PROCEDURE public.doctor_steal(INOUT found text DEFAULT NULL) LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp"
            " AS $$ BEGIN SELECT 'reached' INTO found FROM public.doctor_secrets WHERE secret = 'b-secret'; END $$",
            "REVOKE ALL ON PROCEDURE public.doctor_steal(text) FROM PUBLIC",
            ddl("GRANT EXECUTE ON PROCEDURE public.doctor_steal(text) TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "public.doctor_steal(text)",
        ["CALL public.doctor_steal()"],
    ),
    # information_schema: only what initdb made there is left out, not what is created there later.
    "a copy of a tenant table in information_schema granted to the app role": Reach(
        lambda d: [
            "CREATE TABLE information_schema.doctor_copy AS SELECT * FROM public.doctor_secrets",
            ddl("GRANT SELECT ON information_schema.doctor_copy TO {}", d.roles.app),
        ],
        "rls_disabled",
        "information_schema.doctor_copy",
        ["SELECT 'reached' FROM information_schema.doctor_copy WHERE secret = 'b-secret'"],
    ),
    "a tenant table in information_schema with a policy USING (true)": Reach(
        lambda d: [
            "CREATE TABLE information_schema.doctor_notes (tenant_id bigint NOT NULL"
            " REFERENCES rls_tenancy.tenants (id), note text NOT NULL, PRIMARY KEY (tenant_id, note))",
            "SELECT rls_tenancy.enable_tenant_isolation('information_schema.doctor_notes')",
            f"INSERT INTO information_schema.doctor_notes VALUES ({B_ID}, 'b-secret')",
            "CREATE POLICY doctor_open ON information_schema.doctor_notes FOR SELECT USING (true)",
        ],
        "policy_not_tenant_keyed",
        "information_schema.doctor_notes policy doctor_open",
        ["SELECT 'reached' FROM information_schema.doctor_notes WHERE note = 'b-secret'"],
    ),
    "a superuser's definer in information_schema granted to the app role": Reach(
        lambda d: [
            "CREATE FUNCTION information_schema.doctor_leak() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'SELECT secret FROM public.doctor_secrets'",
            "REVOKE ALL ON FUNCTION information_schema.doctor_leak() FROM PUBLIC",
            ddl("GRANT EXECUTE ON FUNCTION information_schema.doctor_leak() TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "information_schema.doctor_leak()",
        ["SELECT 'reached' FROM information_schema.doctor_leak() AS s (secret) WHERE secret = 'b-secret'"],
    ),
    "a superuser's definer in information_schema fired by a trigger on a tenant table": Reach(
        lambda d: [
            "CREATE TABLE public.doctor_log (secret text)",
            ddl("ALTER TABLE public.doctor_log OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_log TO {}", d.roles.app),
            "CREATE FUNCTION information_schema.doctor_copy_all() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS $$ BEGIN"
            " INSERT INTO public.doctor_log SELECT secret FROM public.doctor_secrets; RETURN NEW; END $$",
            "REVOKE ALL ON FUNCTION information_schema.doctor_copy_all() FROM PUBLIC",
            "CREATE TRIGGER doctor_copy_all AFTER INSERT ON public.doctor_secrets"
            " FOR EACH ROW EXECUTE FUNCTION information_schema.doctor_copy_all()",
            ddl("GRANT INSERT ON public.doctor_secrets TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "information_schema.doctor_copy_all()",
        [
            "INSERT INTO public.doctor_secrets VALUES (:a, 'a-new')",
            "SELECT 'reached' FROM public.doctor_log WHERE secret = 'b-secret'",
        ],
    ),
    # ALTER EXTENSION ... ADD FUNCTION: membership in an extension hides no definer.
    "a superuser's definer made a member of an extension": Reach(
        lambda d: [
            "CREATE EXTENSION IF NOT EXISTS tcn",
            *LEAK,
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_leak() TO {}", d.roles.app),
            "ALTER EXTENSION tcn ADD FUNCTION public.doctor_leak()",
        ],
        "definer_escapes_rls",
        "public.doctor_leak()",
        ["SELECT 'reached' FROM public.doctor_leak() AS s (secret) WHERE secret = 'b-secret'"],
    ),
    # Keyed by account_id, a key to rls_tenancy.tenants: a tenant table by another name, read through a view.
    "a view of the owner role's over a table keyed to tenants by another column, granted to the app role": Reach(
        lambda d: [
            "CREATE TABLE public.doctor_invoices (id integer PRIMARY KEY,"
            " account_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), item text NOT NULL)",
            f"INSERT INTO public.doctor_invoices VALUES (1, {B_ID}, 'b-secret')",
            "CREATE VIEW public.doctor_invoice_items AS SELECT account_id, item FROM public.doctor_invoices",
            ddl("ALTER TABLE public.doctor_invoices OWNER TO {}", d.roles.owner),
            ddl("ALTER VIEW public.doctor_invoice_items OWNER TO {}", d.roles.owner),
            ddl("GRANT SELECT ON public.doctor_invoice_items TO {}", d.roles.app),
        ],
        "view_not_security_invoker",
        "public.doctor_invoice_items",
        ["SELECT 'reached' FROM public.doctor_invoice_items WHERE item = 'b-secret'"],
    ),
    "the library's purge_audit_log() granted to a role the app role can become": Reach(
        lambda d: [
            *_group("GRANT EXECUTE ON FUNCTION rls_tenancy.purge_audit_log(interval) TO {}")(d.roles),
            ddl("GRANT USAGE ON SCHEMA rls_tenancy TO {}", ROLE),
        ],
        "library_function_granted",
        "rls_tenancy.purge_audit_log(interval)",
        ["SELECT concat('reach', 'ed') FROM (SELECT rls_tenancy.purge_audit_log(interval '100 years')) AS purged"],
        as_role=ROLE,
    ),
}


def _peek(conn: Connection, db: TenancyDatabase, world: World, reach: Reach) -> str:
    """What ``reach.peek`` returns (or raises) as the app role bound to tenant A, in a savepoint."""
    return _as_app(conn, db, world.a, reach.peek, as_role=reach.as_role, values={"a": world.a, "b": world.b})


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
    expected = ("error", reach.check, reach.object.format(app=db.roles.app, database=db.name))
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
        for work in reach.works:
            done = _as_app(conn, db, world.a, [work], values={"a": world.a, "b": world.b})
            assert "'works'" in done, f"after the fix {found[0][4]!r}: {work!r} gave {done}"


def _as_app(
    conn: Connection,
    db: TenancyDatabase,
    tenant: int,
    statements: Sequence[str],
    user: int | None = None,
    *,
    as_role: str | None = None,
    values: dict[str, int] | None = None,
) -> str:
    """What the last of ``statements`` returns (or the error it raises) as the app role, in a savepoint.

    Bound to ``tenant`` (signed as the superuser where the database requires it), then, where ``as_role``
    is given, as a role the app role can become.
    """
    savepoint = conn.begin_nested()
    try:
        bind_then_become(conn, tenant, db.roles.app, user)
        # As the session user: SET ROLE asks what the session user, not the current role, is a member of.
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        if as_role is not None:
            run(conn, ddl("SET LOCAL ROLE {}", as_role))
        out = ""
        for statement in statements:
            result = conn.execute(text(statement), values or {})
            out = repr(result.all()) if result.returns_rows else out
        return out
    except DBAPIError as error:
        return str(error.orig)
    finally:
        savepoint.rollback()


@pytest.mark.skipif(not signing_requested(), reason="the users' grants guard is a signed context's")
@pytest.mark.usefixtures("stays_clean")
def test_set_on_session_replication_role_turns_off_the_users_guard_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    grant = ddl("GRANT SET ON PARAMETER session_replication_role TO {}", db.roles.app)
    with planted_in(superuser_engine, [grant]) as conn:
        user = conn.execute(
            text("INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (:a, 'intern@a.example') RETURNING id"),
            {"a": world.a},
        ).scalar_one()
        promote = "UPDATE rls_tenancy.users SET roles = '{admin}' RETURNING 'reached'"
        assert REACHED not in _as_app(conn, db, world.a, [promote], user)  # the guard refuses it
        replica = ["SET LOCAL session_replication_role = replica", promote]
        assert REACHED in _as_app(conn, db, world.a, replica, user)  # the user makes itself an administrator
        expected = ("error", "app_role_sets_parameter", "parameter session_replication_role")
        (found,) = [row for row in finding_rows(conn) if key_of(row) == expected]
        run(conn, found[4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}
        assert "permission denied" in _as_app(conn, db, world.a, replica, user)


@pytest.mark.usefixtures("stays_clean")
def test_a_view_with_its_owners_rights_over_a_security_invoker_view_shows_the_bound_tenant_only(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """A security_invoker view checks what it reads as the current user, under any view: no finding."""
    views = [
        "CREATE VIEW public.doctor_inner WITH (security_invoker = true) AS SELECT secret FROM public.doctor_secrets",
        "CREATE VIEW public.doctor_outer AS SELECT secret FROM public.doctor_inner",  # a superuser's, no invoker
        ddl("GRANT SELECT ON public.doctor_inner, public.doctor_outer TO {}", db.roles.app),
        # stored with its owner's rights at refresh: still reported
        "CREATE MATERIALIZED VIEW public.doctor_stored AS SELECT secret FROM public.doctor_inner",
    ]
    with planted_in(superuser_engine, []) as conn:
        for statement in [*SECRETS, *views]:
            conn.execute(text(statement), {"a": world.a, "b": world.b})
        assert _as_app(conn, db, world.a, ["SELECT secret FROM public.doctor_outer"]) == "[('a-secret',)]"
        found = {key_of(row) for row in finding_rows(conn)}
    assert not {key for key in found if key[2] in ("public.doctor_inner", "public.doctor_outer")}
    assert ("warning", "materialized_view_over_tenant_table", "public.doctor_stored") in found


def _b_rows_left_after_the_app_truncates(conn: Connection, db: TenancyDatabase, world: World) -> int:
    """B's rows of doctor_secrets once the app role, bound to A, has run TRUNCATE on the parent (in a savepoint)."""
    savepoint = conn.begin_nested()
    try:
        inner = conn.begin_nested()
        try:
            bind_then_become(conn, world.a, db.roles.app)
            run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
            run(conn, "TRUNCATE public.doctor_base")
        except DBAPIError:
            inner.rollback()
        else:
            run(conn, "RESET SESSION AUTHORIZATION")
            run(conn, "RESET ROLE")
            inner.commit()
        query = text("SELECT count(*) FROM public.doctor_secrets WHERE tenant_id = :b")
        return int(conn.execute(query, {"b": world.b}).scalar_one())
    finally:
        savepoint.rollback()


@pytest.mark.usefixtures("stays_clean")
def test_truncate_on_a_parent_without_tenant_id_empties_every_tenants_child_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """TRUNCATE checks the parent's grant alone, and empties the children with it, whoever's rows they hold."""
    expected = ("error", "tenant_table_inherited", "public.doctor_base")
    with planted_in(superuser_engine, []) as conn:
        for statement in SECRETS:
            conn.execute(text(statement), {"a": world.a, "b": world.b})
        for statement in [*BASE, ddl("GRANT TRUNCATE ON public.doctor_base TO {}", db.roles.app)]:
            run(conn, statement)
        assert _b_rows_left_after_the_app_truncates(conn, db, world) == 0
        (found,) = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert "TRUNCATE" in found[3]
        run(conn, found[4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}, f"the fix {found[4]!r} left it"
        assert _b_rows_left_after_the_app_truncates(conn, db, world) == 1
        assert _own_rows(conn, db, world) == ["a-secret"]
