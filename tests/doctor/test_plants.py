"""Each misconfiguration the doctor knows, planted and rolled back: it is found, and its SQL fix clears it.

Also the subtler gaps it once missed, the well-made objects that must add no finding, and exemptions.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from psycopg import sql
from sqlalchemy import Engine, text

from rls_tenancy.schema.reinstall import reinstall_on
from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import ddl
from tests.doctor.support import (
    CLOSED,
    VIEW,
    WARNINGS,
    Key,
    Row,
    chain,
    child_without_tenant,
    finding_rows,
    key_of,
    planted_in,
    run,
)

# A new tenant table isolated as the library does it; its primary key
# leads with tenant_id, so enable_tenant_isolation adds no index of its own.
NOTES = """
CREATE TABLE public.doctor_notes (
    id integer NOT NULL,
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT rls_tenancy.enable_tenant_isolation('public.doctor_notes');
"""
INVOKER_VIEW = "CREATE VIEW public.doctor_view WITH (security_invoker = true) AS SELECT id, name FROM public.projects"
MATVIEW = "CREATE MATERIALIZED VIEW public.doctor_matview AS SELECT id, name FROM public.projects"
DEFINER = (
    "CREATE FUNCTION public.doctor_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER {} "
    "AS $$ SELECT count(*) FROM public.projects $$"
)
PINNED = "SET search_path = pg_catalog, pg_temp"
BOOKINGS = (
    "CREATE TABLE public.doctor_bookings (id integer, tenant_id bigint NOT NULL, during int4range, "
    "PRIMARY KEY (tenant_id, id), CONSTRAINT doctor_bookings_during_excl {}); "
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_bookings')"
)
# Statements naming the database the test runs in; %I is filled by format() inside PostgreSQL.
ON_THIS_DATABASE = "DO $$ BEGIN EXECUTE format('{}', current_database()); END $$"
# An upsert-ish INSTEAD rule on a view over projects: its action runs with the view owner's rights.
RULE_ON_VIEW = (
    "CREATE RULE doctor_add AS ON INSERT TO public.doctor_names DO INSTEAD UPDATE public.projects"
    " SET name = coalesce(NEW.name, projects.name) WHERE id = NEW.id RETURNING id, name"
)
LARGE_OBJECT = 1_000_000 + secrets.randbelow(1_000_000_000)


def _temporary_to(role: str) -> str:
    grant = sql.SQL("GRANT TEMPORARY ON DATABASE %I TO {}").format(sql.Identifier(role)).as_string(None)
    return ON_THIS_DATABASE.format(grant.replace("'", "''"))


def _role_setting_here(role: str, name: str, value: str) -> str:
    alter = sql.SQL("ALTER ROLE {} IN DATABASE %I SET {} = {}").format(
        sql.Identifier(role), sql.SQL(name), sql.Literal(value)
    )
    return ON_THIS_DATABASE.format(alter.as_string(None).replace("'", "''"))


def _on_this_database_to(template: str, role: str) -> str:
    """``template`` (``%I`` the database, ``{}`` the role, or PUBLIC) run on the database the test runs in."""
    grantee = sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role)
    statement = sql.SQL(template).format(grantee).as_string(None)
    return ON_THIS_DATABASE.format(statement.replace("'", "''"))


def _chain_holding(grant: str) -> Callable[[RoleNames], list[str]]:
    """app -> doctor_analysts_<hex> -> doctor_reporting_<hex>, the last holding ``grant`` (``{}`` is its name)."""

    def setup(r: RoleNames) -> list[str]:
        suffix = secrets.token_hex(4)
        granted = sql.SQL(grant).format(sql.Identifier(f"doctor_reporting_{suffix}")).as_string(None)
        return [*chain(r, "", suffix), granted]

    return setup


def _member_of_new_role(roles: RoleNames, attributes: str, *, owning: str | None = None) -> list[str]:
    """A new role (rolled back with the rest), the app role made its member, and a table handed to it."""
    role = f"doctor_role_{secrets.token_hex(4)}"
    create = sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(role), sql.SQL(attributes))
    statements = [create.as_string(None), ddl("GRANT {} TO {}", role, roles.app)]
    if owning is not None:
        owned = sql.Identifier(*owning.split("."))
        statements.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(owned, sql.Identifier(role)).as_string(None))
    return statements


def _granted_to_app(role: str) -> Callable[[RoleNames], list[str]]:
    return lambda r: [ddl("GRANT {} TO {}", role, r.app)]


def _grant(privilege: str) -> Callable[[RoleNames], list[str]]:
    grant = sql.SQL("GRANT {} ON public.projects TO {}")
    return lambda r: [grant.format(sql.SQL(privilege), sql.Identifier(r.app)).as_string(None)]


# tenant_isolation on projects made restrictive (the tenant condition as this database writes it), and a
# permissive policy that alone would open the table.
RESTRICTIVE_TENANT = [
    "DROP POLICY tenant_isolation ON public.projects",
    "DO $$ BEGIN EXECUTE format('CREATE POLICY tenant_isolation ON public.projects AS RESTRICTIVE USING (%s)"
    " WITH CHECK (%s)', rls_tenancy.tenant_condition(), rls_tenancy.tenant_condition()); END $$",
]
OPEN_DOOR = "CREATE POLICY doctor_open ON public.projects USING (true) WITH CHECK (true)"


@dataclass(frozen=True)
class Plant:
    setup: Callable[[RoleNames], list[str]]
    severity: str
    check: str
    object: str  # "{app}" and "{owner}" are those roles' names, "{database}" the database's
    says: str = ""  # a fragment the message must contain
    fix_is_sql: bool = True  # the fix can be run as it is, and clears the finding
    fix_reinstalls: bool = False  # the fix is "rls-tenancy migrate --reinstall", run here in the same transaction


# The signed condition as it was first written: "proved, so not NULL", while each row was compared with
# the setting alone, which SQL may change partway through its own statement.
_PROVED_NOT_NULL = (
    "tenant_id = (NULLIF(pg_catalog.current_setting('app.current_tenant', true), ''))::bigint"
    " AND (SELECT rls_tenancy.verified_tenant()) IS NOT NULL"
)
_BARE_SETTING = "tenant_id = (NULLIF(pg_catalog.current_setting('app.current_tenant', true), ''))::bigint"


def _loopback_table(r: RoleNames, host: str) -> list[str]:
    """A foreign table over this database's projects, through a server named by ``host``, readable by the app."""
    return [
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
        sql.SQL("CREATE SERVER doctor_loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host {})")
        .format(sql.Literal(host))
        .as_string(None),
        ddl("CREATE USER MAPPING FOR {} SERVER doctor_loop OPTIONS (user 'postgres')", r.app),
        "CREATE FOREIGN TABLE public.doctor_remote (id integer, name text) SERVER doctor_loop"
        " OPTIONS (table_name 'projects')",
        ddl("GRANT SELECT ON public.doctor_remote TO {}", r.app),
    ]


def _server_table(r: RoleNames, options: str) -> list[str]:
    """As _loopback_table, the server's options spelled by ``options`` (SQL, none when empty)."""
    server = sql.SQL("CREATE SERVER doctor_loop FOREIGN DATA WRAPPER postgres_fdw")
    return [
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
        (sql.SQL("{} OPTIONS ({})").format(server, sql.SQL(options)) if options else server).as_string(None),
        ddl("CREATE USER MAPPING FOR {} SERVER doctor_loop OPTIONS (user 'postgres')", r.app),
        "CREATE FOREIGN TABLE public.doctor_remote (id integer, name text) SERVER doctor_loop"
        " OPTIONS (table_name 'projects')",
        ddl("GRANT SELECT ON public.doctor_remote TO {}", r.app),
    ]


def _owned_by_app(schema: str, function: str, signature: str) -> Callable[[RoleNames], list[str]]:
    """``function`` (a CREATE FUNCTION's tail) created in ``schema`` and given to the app role: nothing calls it."""
    return lambda r: [
        ddl("CREATE SCHEMA IF NOT EXISTS {}", schema),
        sql.SQL("CREATE FUNCTION {}.").format(sql.Identifier(schema)).as_string(None) + function,
        sql.SQL("ALTER FUNCTION {}.{} OWNER TO {}")
        .format(sql.Identifier(schema), sql.SQL(signature), sql.Identifier(r.app))
        .as_string(None),
    ]


def _statements(*statements: str) -> Callable[[RoleNames], list[str]]:
    """A plant of fixed ``statements``, whatever the roles are called."""
    return lambda r: list(statements)


# The library's own policies, as its install scripts create them (table, policy).
LIBRARY_POLICIES = [
    ("tenants", "tenant_self"),
    ("tenants", "owner_lookup"),
    ("audit_log", "audit_tenant_read"),
    ("audit_log", "audit_owner"),
    ("feature_overrides", "tenant_overrides"),
    ("feature_overrides", "global_overrides_read"),
    ("users", "tenant_isolation"),
    ("api_tokens", "tenant_isolation"),
]


PLANTS = {
    "signed: a policy that checks the proof but compares rows with the setting alone": Plant(
        lambda r: [
            "SELECT rls_tenancy.require_signed_context(true)",
            sql.SQL("ALTER POLICY tenant_isolation ON public.projects USING ({c}) WITH CHECK ({c})")
            .format(c=sql.SQL(_PROVED_NOT_NULL))
            .as_string(None),
        ],
        "error",
        "policy_not_tenant_keyed",
        "public.projects policy tenant_isolation",
    ),
    "signed: a second policy on the bare setting": Plant(
        lambda r: [
            "SELECT rls_tenancy.require_signed_context(true)",
            sql.SQL("CREATE POLICY doctor_bare ON public.projects USING ({c}) WITH CHECK ({c})")
            .format(c=sql.SQL(_BARE_SETTING))
            .as_string(None),
        ],
        "error",
        "policy_not_tenant_keyed",
        "public.projects policy doctor_bare",
    ),
    "a generated-always id the app role may insert": Plant(
        lambda r: [
            "CREATE TABLE public.doctor_ids (id integer GENERATED ALWAYS AS IDENTITY, "
            "tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), PRIMARY KEY (tenant_id, id))",
            "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_ids')",
            ddl("GRANT INSERT ON public.doctor_ids TO {}", r.app),
        ],
        "warning",
        "generated_id_insertable",
        "public.doctor_ids.id",
        "OVERRIDING SYSTEM VALUE",
    ),
    # (granted to the app role: one it may not use at all is a warning, test_reach_round5.py)
    "a partitioned tenant table": Plant(
        lambda r: [
            "CREATE TABLE public.doctor_events (id int, tenant_id bigint NOT NULL) PARTITION BY LIST (tenant_id)",
            "CREATE TABLE public.doctor_events_1 PARTITION OF public.doctor_events FOR VALUES IN (1)",
            ddl("GRANT SELECT ON public.doctor_events TO {}", r.app),
        ],
        "error",
        "rls_disabled",
        "public.doctor_events",
        "row level security is off",
    ),
    "the audit log's delete guard disabled (a manual purge's leftover)": Plant(
        lambda r: ["ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_no_delete"],
        "error",
        "audit_trigger_disabled",
        "rls_tenancy.audit_log audit_log_no_delete",
        "is disabled: events can be deleted outside purge_audit_log",
    ),
    "the audit log's seal firing only in replica mode": Plant(
        lambda r: ["ALTER TABLE rls_tenancy.audit_log ENABLE REPLICA TRIGGER audit_log_seal"],
        "error",
        "audit_trigger_disabled",
        "rls_tenancy.audit_log audit_log_seal",
        "only in replica mode: events are committed unsealed",
    ),
    "the audit log's truncate guard dropped": Plant(
        lambda r: ["DROP TRIGGER audit_log_no_truncate ON rls_tenancy.audit_log"],
        "error",
        "audit_trigger_disabled",
        "rls_tenancy.audit_log audit_log_no_truncate",
        "is missing: the whole log can be truncated",
        fix_is_sql=False,
        fix_reinstalls=True,
    ),
    "app role SUPERUSER": Plant(
        lambda r: [ddl("ALTER ROLE {} SUPERUSER", r.app)], "error", "app_role_superuser", "{app}", "superuser"
    ),
    "app role BYPASSRLS": Plant(
        lambda r: [ddl("ALTER ROLE {} BYPASSRLS", r.app)], "error", "app_role_bypassrls", "{app}", "BYPASSRLS"
    ),
    "app role CREATEROLE": Plant(
        lambda r: [ddl("ALTER ROLE {} CREATEROLE", r.app)], "error", "app_role_createrole", "{app}", "CREATEROLE"
    ),
    "app role member of the bypass role": Plant(
        lambda r: [ddl("GRANT {} TO {}", r.bypass, r.app)],
        "error",
        "app_role_member_of_privileged",
        "{app}",
        "has BYPASSRLS",
    ),
    "app role member of the owner role": Plant(
        lambda r: [ddl("GRANT {} TO {}", r.owner, r.app)],
        "error",
        "app_role_member_of_privileged",
        "{app}",
        "owns the tenant tables",
    ),
    "app role REPLICATION": Plant(
        lambda r: [ddl("ALTER ROLE {} REPLICATION", r.app)], "error", "app_role_replication", "{app}", "REPLICATION"
    ),
    **{
        f"app role member of {predefined}": Plant(
            _granted_to_app(predefined),
            "error",
            "app_role_member_of_privileged",
            "{app}",
            f"is a member of {predefined} ",
        )
        for predefined in (
            "pg_read_all_data",
            "pg_write_all_data",
            "pg_read_server_files",
            "pg_write_server_files",
            "pg_execute_server_program",
        )
    },
    "app role member of a BYPASSRLS role through another role": Plant(
        lambda r: chain(r, "BYPASSRLS"),
        "error",
        "app_role_member_of_privileged",
        "{app}",
        "-> doctor_analysts_",
    ),
    "app role member of a REPLICATION role through another role": Plant(
        lambda r: chain(r, "REPLICATION"),
        "error",
        "app_role_member_of_privileged",
        "{app}",
        "has REPLICATION",
    ),
    "CREATE on the library's schema to PUBLIC": Plant(
        lambda r: ["GRANT CREATE ON SCHEMA rls_tenancy TO PUBLIC"],
        "error",
        "library_schema_create",
        "rls_tenancy",
        "PUBLIC may create objects",
    ),
    "ALL on the library's schema to the app role": Plant(
        lambda r: [ddl("GRANT ALL ON SCHEMA rls_tenancy TO {}", r.app)],
        "error",
        "library_schema_create",
        "rls_tenancy",
        "may create objects in the schema rls_tenancy",
    ),
    "the doctor's exemptions writable by the app role": Plant(
        lambda r: [ddl("GRANT INSERT ON rls_tenancy.doctor_exemptions TO {}", r.app)],
        "error",
        "doctor_input_writable",
        "rls_tenancy.doctor_exemptions",
        "an exemption turns any error into info",
    ),
    "the signing switch writable by the app role": Plant(
        lambda r: [ddl("GRANT UPDATE ON rls_tenancy.context_signing TO {}", r.app)],
        "error",
        "doctor_input_writable",
        "rls_tenancy.context_signing",
        "signed context",
    ),
    "the doctor's roles table writable by PUBLIC": Plant(
        lambda r: ["GRANT UPDATE ON rls_tenancy.roles TO PUBLIC"],
        "error",
        "doctor_input_writable",
        "rls_tenancy.roles",
        "naming another role as the application role",
    ),
    "owner role BYPASSRLS": Plant(
        lambda r: [ddl("ALTER ROLE {} BYPASSRLS", r.owner)],
        "error",
        "owner_role_escapes_rls",
        "{owner}",
        "FORCE ROW LEVEL SECURITY no longer binds it",
    ),
    "owner role SUPERUSER": Plant(
        lambda r: [ddl("ALTER ROLE {} SUPERUSER", r.owner)], "error", "owner_role_escapes_rls", "{owner}", "superuser"
    ),
    "a policy for the owner role that opens a tenant table": Plant(
        lambda r: [ddl("CREATE POLICY doctor_owner_all ON public.projects TO {} USING (true)", r.owner)],
        "error",
        "owner_policy_opens_table",
        "public.projects policy doctor_owner_all",
        "applies to the owner role",
    ),
    "a rule on a tenant table": Plant(
        lambda r: [
            "CREATE TABLE public.doctor_copies (source bigint, name text)",
            "CREATE RULE doctor_copy AS ON INSERT TO public.projects"
            " DO ALSO INSERT INTO public.doctor_copies VALUES (NEW.tenant_id, NEW.name)",
        ],
        "error",
        "rule_reaches_tenant_table",
        "public.projects rule doctor_copy",
        "is on a tenant table",
    ),
    "a rule on another table whose action reaches a tenant table": Plant(
        lambda r: [
            "CREATE TABLE public.doctor_pokes (x int)",
            "CREATE RULE doctor_poke AS ON INSERT TO public.doctor_pokes"
            " DO ALSO UPDATE public.projects SET name = name WHERE false",
        ],
        "error",
        "rule_reaches_tenant_table",
        "public.doctor_pokes rule doctor_poke",
        "reaches tenant table public.projects",
    ),
    "default privileges granting future tables to the app role": Plant(
        lambda r: [ddl("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {}", r.app)],
        "warning",
        "default_privileges_grant_app",
        "default privileges of {superuser} in schema public",
        "are granted INSERT, SELECT to",
    ),
    # The library's functions are created under the owner role's default privileges: an installation made
    # while this is set gives the app role EXECUTE on every SECURITY DEFINER one, as if the library had.
    "default privileges granting the owner role's future functions to the app role": Plant(
        lambda r: [ddl("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT EXECUTE ON FUNCTIONS TO {}", r.owner, r.app)],
        "error",
        "default_privileges_grant_app",
        "default privileges of {owner} on functions",
        "the library's own functions among them",
    ),
    "a foreign table onto this database, readable by the app role": Plant(
        lambda r: _loopback_table(r, "localhost"),
        "error",
        "foreign_table_readable",
        "public.doctor_remote",
        "reads this very database",
        fix_is_sql=False,  # REVOKE ... FROM PUBLIC, app; or DROP: two statements, either clears it
    ),
    "a table keyed to tenants by a column not named tenant_id": Plant(
        lambda r: [
            "CREATE TABLE public.doctor_bills (id int, org bigint REFERENCES rls_tenancy.tenants (id))",
            ddl("GRANT SELECT ON public.doctor_bills TO {}", r.app),
        ],
        "error",
        "tenant_table_by_another_name",
        "public.doctor_bills",
        "column org (a key to rls_tenancy.tenants)",
        fix_is_sql=False,
    ),
    "a child of a tenant table without tenant_id": Plant(
        child_without_tenant,
        "error",
        "tenant_table_by_another_name",
        "public.doctor_lines",
        "foreign key doctor_lines_order_id_fkey into tenant table public.doctor_orders",
        fix_is_sql=False,
    ),
    "a SECURITY DEFINER trigger function of a superuser, on a table the app role writes": Plant(
        lambda r: [
            # (it reads a tenant table: one that reads none is a warning, test_reach_round6.py)
            "CREATE FUNCTION public.doctor_stamp() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp"
            " AS $$ BEGIN PERFORM count(*) FROM public.projects; RETURN NEW; END $$",
            "REVOKE EXECUTE ON FUNCTION public.doctor_stamp() FROM PUBLIC",
            "CREATE TRIGGER doctor_stamp BEFORE INSERT ON public.projects FOR EACH ROW"
            " EXECUTE FUNCTION public.doctor_stamp()",
        ],
        "error",
        "definer_escapes_rls",
        "public.doctor_stamp()",
        "runs as",
    ),
    "tenant table owned by the app role": Plant(
        lambda r: [ddl("ALTER TABLE public.projects OWNER TO {}", r.app)],
        "error",
        "app_role_owns_table",
        "public.projects",
        "owned by the application role",
    ),
    "RLS disabled": Plant(
        lambda r: ["ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY"],
        "error",
        "rls_disabled",
        "public.projects",
        "row level security is off",
    ),
    "RLS not forced": Plant(
        lambda r: ["ALTER TABLE public.projects NO FORCE ROW LEVEL SECURITY"],
        "error",
        "rls_not_forced",
        "public.projects",
        "does not FORCE",
    ),
    "policy dropped": Plant(
        lambda r: ["DROP POLICY tenant_isolation ON public.projects"], "error", "no_policy", "public.projects"
    ),
    "extra permissive policy USING (true)": Plant(
        lambda r: ["CREATE POLICY doctor_open ON public.projects USING (true)"],
        "error",
        "policy_not_tenant_keyed",
        "public.projects policy doctor_open",
        "doctor_open",
    ),
    "FOR UPDATE policy without WITH CHECK": Plant(
        lambda r: [
            "CREATE POLICY doctor_update ON public.projects FOR UPDATE "
            "USING (tenant_id = rls_tenancy.current_tenant_id())"
        ],
        "warning",
        "policy_without_with_check",
        "public.projects policy doctor_update",
        "doctor_update",
    ),
    "tenant table without an index leading with tenant_id": Plant(
        lambda r: [NOTES, "ALTER TABLE public.doctor_notes DROP CONSTRAINT doctor_notes_pkey"],
        "warning",
        "no_tenant_index",
        "public.doctor_notes",
    ),
    "tenant_id nullable": Plant(
        lambda r: [
            NOTES,
            "ALTER TABLE public.doctor_notes DROP CONSTRAINT doctor_notes_pkey",
            "ALTER TABLE public.doctor_notes ALTER COLUMN tenant_id DROP NOT NULL",
        ],
        "warning",
        "tenant_id_nullable",
        "public.doctor_notes",
    ),
    **{
        f"{privilege} granted to the app role": Plant(
            _grant(privilege),
            "error",
            "app_role_dangerous_privilege",
            "public.projects",
            f"holds {privilege} on public.projects",
        )
        for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER")
    },
    "view without security_invoker, granted to the app role": Plant(
        lambda r: [VIEW, ddl("GRANT SELECT ON public.doctor_view TO {}", r.app)],
        "error",
        "view_not_security_invoker",
        "public.doctor_view",
        "public.projects",
    ),
    "view without security_invoker, not granted": Plant(
        lambda r: [VIEW], "warning", "view_not_security_invoker", "public.doctor_view"
    ),
    "materialized view": Plant(
        lambda r: [MATVIEW], "warning", "materialized_view_over_tenant_table", "public.doctor_matview"
    ),
    "materialized view the app role may select": Plant(
        lambda r: [MATVIEW, ddl("GRANT SELECT ON public.doctor_matview TO {}", r.app)],
        "error",
        "materialized_view_over_tenant_table",
        "public.doctor_matview",
    ),
    "SECURITY DEFINER without search_path": Plant(
        lambda r: [DEFINER.format(""), CLOSED],
        "error",
        "definer_without_search_path",
        "public.doctor_definer()",
    ),
    "SECURITY DEFINER executable by PUBLIC": Plant(
        lambda r: [DEFINER.format(PINNED)],
        "error",
        "definer_executable_by_public",
        "public.doctor_definer()",
        "PUBLIC",
    ),
    "SECURITY DEFINER granted to PUBLIC explicitly": Plant(
        lambda r: [DEFINER.format(PINNED), CLOSED, "GRANT EXECUTE ON FUNCTION public.doctor_definer() TO PUBLIC"],
        "error",
        "definer_executable_by_public",
        "public.doctor_definer()",
    ),
    "plain foreign key from tasks to projects": Plant(
        lambda r: [
            "ALTER TABLE public.tasks DROP CONSTRAINT tasks_project_fkey",
            "ALTER TABLE public.projects ADD CONSTRAINT doctor_projects_id_key UNIQUE (id)",  # what it needs
            "ALTER TABLE public.tasks ADD CONSTRAINT tasks_project_plain_fkey "
            "FOREIGN KEY (project_id) REFERENCES public.projects (id)",
        ],
        "error",
        "foreign_key_without_tenant",
        "public.tasks",
        "tasks_project_plain_fkey",
        fix_is_sql=False,  # it names the columns as "..."
    ),
    "composite foreign key pairing tenant_id with another column": Plant(
        lambda r: [
            "ALTER TABLE public.tasks DROP CONSTRAINT tasks_project_fkey",
            # NOT VALID: the shared database's tasks would not satisfy it, and need not.
            "ALTER TABLE public.tasks ADD CONSTRAINT tasks_project_crossed_fkey "
            "FOREIGN KEY (project_id, tenant_id) REFERENCES public.projects (tenant_id, id) NOT VALID",
        ],
        "error",
        "foreign_key_without_tenant",
        "public.tasks",
        "tasks_project_crossed_fkey",
        fix_is_sql=False,
    ),
    "unique index without tenant_id": Plant(
        lambda r: [NOTES, "CREATE UNIQUE INDEX doctor_notes_name ON public.doctor_notes (name)"],
        "warning",
        "unique_without_tenant",
        "public.doctor_notes_name",
        "(name)",
        fix_is_sql=False,  # advice, not a statement
    ),
    "unique index on a new column of projects": Plant(
        # A new column, empty: the shared database's project names repeat across tenants.
        lambda r: [
            "ALTER TABLE public.projects ADD COLUMN doctor_code text",
            "CREATE UNIQUE INDEX doctor_projects_code ON public.projects (doctor_code)",
        ],
        "warning",
        "unique_without_tenant",
        "public.doctor_projects_code",
        "(doctor_code)",
        fix_is_sql=False,
    ),
    "an index that does not lead with tenant_id": Plant(
        lambda r: [NOTES, "CREATE INDEX doctor_notes_name ON public.doctor_notes (name)"],
        "warning",
        "index_not_leading_with_tenant",
        "public.doctor_notes_name",
        "Rows Removed by Filter",
        fix_is_sql=False,  # advice: which columns to lead with is the table's designer's choice
    ),
    "a primary key on id beside UNIQUE (tenant_id, id)": Plant(
        # The planner can be steered onto it all the same (tests/isolation/test_side_channels.py).
        lambda r: [
            NOTES,
            "ALTER TABLE public.doctor_notes DROP CONSTRAINT doctor_notes_pkey",
            "ALTER TABLE public.doctor_notes ADD PRIMARY KEY (id), ADD UNIQUE (tenant_id, id)",
        ],
        "warning",
        "index_not_leading_with_tenant",
        "public.doctor_notes_pkey",
        "(id)",
        fix_is_sql=False,
    ),
    "an exclusion constraint across tenants": Plant(
        lambda r: [BOOKINGS.format("EXCLUDE USING gist (during WITH &&)")],
        "warning",
        "exclusion_without_tenant",
        "public.doctor_bookings_during_excl",
        "spans tenants",
        fix_is_sql=False,
    ),
    "TEMPORARY through PUBLIC (PostgreSQL's default)": Plant(
        lambda r: [], "warning", "app_role_temporary", "{database}", "(granted to PUBLIC)"
    ),
    "TEMPORARY granted to the app role itself": Plant(
        lambda r: [ON_THIS_DATABASE.format("REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC"), _temporary_to(r.app)],
        "warning",
        "app_role_temporary",
        "{database}",
        "may create temporary objects",
    ),
    "a role default for app.current_tenant": Plant(
        lambda r: [ddl("ALTER ROLE {} SET app.current_tenant = '1'", r.app)],
        "error",
        "app_role_setting",
        "role {app} setting app.current_tenant",
        "work that binds no tenant or user of its own runs as that one",
    ),
    "a role default for app.current_user_id in this database": Plant(
        lambda r: [_role_setting_here(r.app, "app.current_user_id", "7")],
        "error",
        "app_role_setting",
        "role {app} in database {database} setting app.current_user_id",
        "app.current_user_id=7",
    ),
    "a role default statement_timeout": Plant(
        lambda r: [ddl("ALTER ROLE {} SET statement_timeout = '1ms'", r.app)],
        "warning",
        "app_role_setting",
        "role {app} setting statement_timeout",
        "statement_timeout=1ms",
    ),
    "a role default putting the app role's sessions in replica mode": Plant(
        lambda r: [ddl("ALTER ROLE {} SET session_replication_role = replica", r.app)],
        "error",
        "app_role_setting",
        "role {app} setting session_replication_role",
        "session_replication_role=replica",
    ),
    "a database default opening every large object (lo_compat_privileges)": Plant(
        lambda r: [ON_THIS_DATABASE.format("ALTER DATABASE %I SET lo_compat_privileges = on")],
        "error",
        "app_role_setting",
        "every role in database {database} setting lo_compat_privileges",
        "lo_compat_privileges=on",
    ),
    "TRUNCATE held through a role the app role can SET ROLE to (the fix revokes it there)": Plant(
        lambda r: [
            "CREATE ROLE doctor_writers NOLOGIN",
            "GRANT ALL ON public.projects TO doctor_writers",
            ddl("GRANT doctor_writers TO {}", r.app),
        ],
        "error",
        "app_role_dangerous_privilege",
        "public.projects",
        "TRUNCATE",
    ),
    "a database default for a planner switch": Plant(
        lambda r: [ON_THIS_DATABASE.format("ALTER DATABASE %I SET enable_seqscan = off")],
        "warning",
        "app_role_setting",
        "every role in database {database} setting enable_seqscan",
        "a database default",
    ),
    "pg_cancel_backend granted back to PUBLIC": Plant(
        lambda r: ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) TO PUBLIC"],
        "warning",
        "app_role_cross_tenant_function",
        "pg_cancel_backend(integer)",
        "another tenant's request",
    ),
    "lo_from_bytea granted to the app role": Plant(
        lambda r: [ddl("GRANT EXECUTE ON FUNCTION pg_catalog.lo_from_bytea(oid, bytea) TO {}", r.app)],
        "warning",
        "app_role_cross_tenant_function",
        "lo_from_bytea(oid,bytea)",
        "every tenant can read it",
    ),
    "pg_stat_get_activity granted back to PUBLIC": Plant(
        lambda r: ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO PUBLIC"],
        "error" if signing_requested() else "warning",  # signed, query texts carry proofs
        "app_role_cross_tenant_function",
        "pg_stat_get_activity(integer)",
        "other tenants' requests in flight",
    ),
    "pg_lock_status granted back to PUBLIC": Plant(
        lambda r: ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_lock_status() TO PUBLIC"],
        "warning",
        "app_role_cross_tenant_function",
        "pg_lock_status()",
        "which tables other tenants' requests in flight write",
    ),
    "pg_stat_get_backend_xact_start granted to the app role": Plant(
        lambda r: [ddl("GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_xact_start(integer) TO {}", r.app)],
        "warning",
        "app_role_cross_tenant_function",
        "pg_stat_get_backend_xact_start(integer)",
        "what other tenants' requests in flight are doing",
    ),
    "pg_stat_get_progress_info granted back to PUBLIC": Plant(
        lambda r: ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_progress_info(text) TO PUBLIC"],
        "warning",
        "app_role_cross_tenant_function",
        "pg_stat_get_progress_info(text)",
        "its progress",
    ),
    "app role member of pg_signal_backend": Plant(
        lambda r: [ddl("GRANT pg_signal_backend TO {}", r.app)],
        "warning",
        "app_role_cross_tenant_function",
        "pg_terminate_backend(integer,bigint)",
        "through pg_signal_backend",  # the fix revokes the membership, which REVOKE ... FROM PUBLIC did not touch
    ),
    "SET on session_replication_role to the app role": Plant(
        lambda r: [ddl("GRANT SET ON PARAMETER session_replication_role TO {}", r.app)],
        "error",
        "app_role_sets_parameter",
        "parameter session_replication_role",
        "no trigger fires",
    ),
    "SET on lo_compat_privileges to PUBLIC": Plant(
        lambda r: ["GRANT SET ON PARAMETER lo_compat_privileges TO PUBLIC"],
        "error",
        "app_role_sets_parameter",
        "parameter lo_compat_privileges",
        "every large object",
    ),
    "ALTER SYSTEM on archive_command to a role the app role can become": Plant(
        _chain_holding("GRANT ALTER SYSTEM ON PARAMETER archive_command TO {}"),
        "error",
        "app_role_sets_parameter",
        "parameter archive_command",
        "ALTER SYSTEM",
    ),
    "SET on another superuser-only parameter to the app role": Plant(
        lambda r: [ddl("GRANT SET ON PARAMETER log_statement TO {}", r.app)],
        "warning",
        "app_role_sets_parameter",
        "parameter log_statement",
    ),
    "CREATE on the database to the app role": Plant(
        lambda r: [_on_this_database_to("GRANT CREATE ON DATABASE %I TO {}", r.app)],
        "error",
        "app_role_database_create",
        "{database}",
        "may create schemas",
    ),
    "CREATE on the database to PUBLIC": Plant(
        lambda r: [_on_this_database_to("GRANT CREATE ON DATABASE %I TO {}", "PUBLIC")],
        "error",
        "app_role_database_create",
        "{database}",
        "PUBLIC may create schemas",
    ),
    # Not through CREATE on the database, app_role_database_create's (tests/doctor/test_one_fix.py): owning it.
    'a SECURITY DEFINER searching "$user" while the app role may create schemas': Plant(
        lambda r: [
            _on_this_database_to("ALTER DATABASE %I OWNER TO {}", r.app),
            DEFINER.format('SET search_path = "$user", pg_catalog, pg_temp'),
            CLOSED,
        ],
        "error",
        "definer_search_path_writable",
        "public.doctor_definer()",
        "schema $user",
    ),
    "a SECURITY DEFINER searching a schema not yet created while the app role may create schemas": Plant(
        lambda r: [
            _on_this_database_to("ALTER DATABASE %I OWNER TO {}", r.app),
            DEFINER.format("SET search_path = doctor_util, pg_catalog, pg_temp"),
            CLOSED,
        ],
        "error",
        "definer_search_path_writable",
        "public.doctor_definer()",
        "which does not exist yet",
    ),
    "CREATE on a schema without tenant tables to the app role": Plant(
        lambda r: ["CREATE SCHEMA doctor_rules", ddl("GRANT USAGE, CREATE ON SCHEMA doctor_rules TO {}", r.app)],
        "error",
        "app_role_schema_create",
        "doctor_rules",
        "may create objects in schema doctor_rules",
    ),
    "CREATE on a schema on the bypass role's search_path": Plant(
        lambda r: [
            "CREATE SCHEMA doctor_rules",
            ddl("GRANT USAGE, CREATE ON SCHEMA doctor_rules TO {}", r.app),
            _role_setting_here(r.bypass, "search_path", "doctor_rules, pg_catalog, public"),
        ],
        "error",
        "app_role_schema_create",
        "doctor_rules",
    ),
    "CREATE on pg_catalog to the app role": Plant(
        lambda r: [ddl("GRANT CREATE ON SCHEMA pg_catalog TO {}", r.app)],
        "error",
        "app_role_schema_create",
        "pg_catalog",
        "which every session searches first",
    ),
    "a rule on a security_invoker view that reaches a tenant table": Plant(
        lambda r: [
            "CREATE VIEW public.doctor_names WITH (security_invoker = true) AS SELECT id, name FROM public.projects",
            RULE_ON_VIEW,
            ddl("GRANT SELECT, INSERT ON public.doctor_names TO {}", r.app),
        ],
        "error",
        "rule_reaches_tenant_table",
        "public.doctor_names rule doctor_add",
        "reaches tenant table public.projects",
    ),
    "a rule on a view without security_invoker that reaches a tenant table": Plant(
        lambda r: [
            "CREATE VIEW public.doctor_names AS SELECT id, name FROM public.projects",
            RULE_ON_VIEW,
            ddl("GRANT SELECT, INSERT ON public.doctor_names TO {}", r.app),
        ],
        "error",
        "rule_reaches_tenant_table",
        "public.doctor_names rule doctor_add",
    ),
    "a large object owned by the app role": Plant(
        lambda r: [
            sql.SQL("SELECT lo_from_bytea({}, convert_to('doctor', 'UTF8'))")
            .format(sql.Literal(LARGE_OBJECT))
            .as_string(None),
            sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}")
            .format(sql.Literal(LARGE_OBJECT), sql.Identifier(r.app))
            .as_string(None),
        ],
        "error",
        "large_object_owned",
        f"large object {LARGE_OBJECT}",
        "owned by",
    ),
    "a trigger function owned by the app role, fired on a tenant table": Plant(
        lambda r: [
            "CREATE FUNCTION public.doctor_stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            ddl("ALTER FUNCTION public.doctor_stamp() OWNER TO {}", r.app),
            "CREATE TRIGGER doctor_stamp BEFORE INSERT ON public.projects"
            " FOR EACH ROW EXECUTE FUNCTION public.doctor_stamp()",
        ],
        "error",
        "app_role_owns_function",
        "public.doctor_stamp()",
        "trigger doctor_stamp on public.projects runs it",
    ),
    "a SECURITY DEFINER function owned by a role the app role can become": Plant(
        lambda r: [
            *chain(r, "", "owns"),
            DEFINER.format(PINNED),
            CLOSED,
            ddl("ALTER FUNCTION public.doctor_definer() OWNER TO {}", "doctor_reporting_owns"),
        ],
        "error",
        "app_role_owns_function",
        "public.doctor_definer()",
        "is SECURITY DEFINER",
    ),
    # Called only by name in a definer's PL/pgSQL body: run as the owner role, whatever its owner puts in it.
    "a function owned by the app role that a SECURITY DEFINER function calls by name": Plant(
        lambda r: [
            "CREATE FUNCTION public.doctor_pick() RETURNS bigint LANGUAGE sql AS 'SELECT 1'",
            ddl("ALTER FUNCTION public.doctor_pick() OWNER TO {}", r.app),
            "CREATE FUNCTION public.doctor_count() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = public, pg_temp AS $$ DECLARE n bigint; BEGIN"
            " EXECUTE 'SELECT Doctor_Pick()' INTO n; RETURN n; END $$",
            ddl("ALTER FUNCTION public.doctor_count() OWNER TO {}", r.owner),
        ],
        "error",
        "app_role_owns_function",
        "public.doctor_pick()",
        "SECURITY DEFINER function public.doctor_count() (naming it in its body) runs it",
    ),
    # Closed to PUBLIC and run by nothing the catalogs show: a warning, whose fix grants EXECUTE back.
    "a function owned by the app role that nothing in the catalogs calls": Plant(
        lambda r: [
            "CREATE FUNCTION public.doctor_helper(s text) RETURNS text LANGUAGE sql AS 'SELECT s'",
            "REVOKE ALL ON FUNCTION public.doctor_helper(text) FROM PUBLIC",
            ddl("ALTER FUNCTION public.doctor_helper(text) OWNER TO {}", r.app),
        ],
        "warning",
        "app_role_owns_function",
        "public.doctor_helper(text)",
        "owned by the application role",
    ),
    # Restrictive policies are AND-ed with the permissive ones: under a restrictive tenant policy for PUBLIC, a
    # permissive USING (true) reaches nothing of another tenant (tests/doctor/test_fixes.py shows it).
    "a permissive USING (true) beside a restrictive tenant policy": Plant(
        lambda r: [*RESTRICTIVE_TENANT, OPEN_DOOR],
        "warning",
        "policy_not_tenant_keyed",
        "public.projects policy doctor_open",
        "the restrictive policy tenant_isolation keeps it to the bound tenant",
    ),
    "a permissive USING (true) beside a restrictive tenant policy for the app role alone": Plant(
        lambda r: [
            *RESTRICTIVE_TENANT,
            ddl("ALTER POLICY tenant_isolation ON public.projects TO {}", r.app),
            OPEN_DOOR,
        ],
        "error",  # a role the app role can become, or any other, is not narrowed by it
        "policy_not_tenant_keyed",
        "public.projects policy doctor_open",
        fix_is_sql=False,  # enable_tenant_isolation would meet the restrictive tenant_isolation
    ),
    # Names the doctor cannot resolve, and no host at all: each may be this server.
    "a foreign table through a server named by this machine's hostname": Plant(
        lambda r: _server_table(r, sql.SQL("host {}").format(sql.Literal(socket.gethostname())).as_string(None)),
        "error",
        "foreign_table_readable",
        "public.doctor_remote",
        "is a name",
        fix_is_sql=False,
    ),
    "a foreign table through a server given by a service, without a host": Plant(
        lambda r: _server_table(r, "service 'doctor_service'"),
        "error",
        "foreign_table_readable",
        "public.doctor_remote",
        "service doctor_service",
        fix_is_sql=False,
    ),
    "a foreign table through a server without any option (libpq's default socket, this database's name)": Plant(
        lambda r: _server_table(r, ""),
        "error",
        "foreign_table_readable",
        "public.doctor_remote",
        "no host",
        fix_is_sql=False,
    ),
    # Another cluster on this machine (a replica on another port): another database.
    "a foreign table onto localhost on another port": Plant(
        lambda r: _server_table(r, "host 'localhost', port '1'"),
        "warning",
        "foreign_table_readable",
        "public.doctor_remote",
        "reads another database",
        fix_is_sql=False,
    ),
    # A word every body writes (format(, now() names pg_catalog's function, not one of the same name elsewhere:
    # pg_catalog comes first on every path that does not name it later, and doctor_scratch is on none.
    "a function the app role owns named format(text), in a schema on no search_path": Plant(
        _owned_by_app("doctor_scratch", "format(s text) RETURNS text LANGUAGE sql AS 'SELECT s'", "format(text)"),
        "warning",
        "app_role_owns_function",
        "doctor_scratch.format(text)",
    ),
    "a function the app role owns named now() in public, which pg_catalog.now() comes before": Plant(
        _owned_by_app("public", "now() RETURNS timestamptz LANGUAGE sql AS 'SELECT pg_catalog.now()'", "now()"),
        "warning",
        "app_role_owns_function",
        "public.now()",
    ),
    "a function the app role owns that a pinned SECURITY DEFINER function calls by its schema": Plant(
        lambda r: [
            "CREATE SCHEMA doctor_scratch",
            "CREATE FUNCTION doctor_scratch.pick() RETURNS bigint LANGUAGE sql AS 'SELECT 1'",
            ddl("ALTER FUNCTION doctor_scratch.pick() OWNER TO {}", r.app),
            "CREATE FUNCTION public.doctor_count() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS $$ DECLARE n bigint; BEGIN"
            " EXECUTE 'SELECT \"doctor_scratch\" . Pick()' INTO n; RETURN n; END $$",
            ddl("ALTER FUNCTION public.doctor_count() OWNER TO {}", r.owner),
        ],
        "error",
        "app_role_owns_function",
        "doctor_scratch.pick()",
        "SECURITY DEFINER function public.doctor_count() (naming it in its body) runs it",
    ),
    "a column of the doctor's exemptions insertable by the app role": Plant(
        lambda r: [ddl("GRANT INSERT (object_name, check_name, reason) ON rls_tenancy.doctor_exemptions TO {}", r.app)],
        "error",
        "doctor_input_writable",
        "rls_tenancy.doctor_exemptions",
        "an exemption turns any error into info",
    ),
    "a column of the doctor's roles table updatable by the app role": Plant(
        lambda r: [ddl("GRANT UPDATE (role_name) ON rls_tenancy.roles TO {}", r.app)],
        "error",
        "doctor_input_writable",
        "rls_tenancy.roles",
        "naming another role as the application role",
    ),
    "INSERT on the library's api_tokens to the app role (tokens minted around issue_token)": Plant(
        lambda r: [ddl("GRANT INSERT ON rls_tenancy.api_tokens TO {}", r.app)],
        "error",
        "library_table_granted",
        "rls_tenancy.api_tokens",
        "written only through issue_token() and revoke_token()",
    ),
    "the tokens' hashes readable by a role the app role can become": Plant(
        _chain_holding("GRANT SELECT (token_hash) ON rls_tenancy.api_tokens TO {}"),
        "error",
        "library_table_granted",
        "rls_tenancy.api_tokens",
        "SELECT (token_hash)",
    ),
    "SELECT on the library's roles table to PUBLIC": Plant(
        lambda r: ["GRANT SELECT ON rls_tenancy.roles TO PUBLIC"],
        "warning",
        "library_table_granted",
        "rls_tenancy.roles",
        "PUBLIC may SELECT",
    ),
    **{
        f"row level security off on the library's {table}": Plant(
            _statements(ddl("ALTER TABLE rls_tenancy.{} DISABLE ROW LEVEL SECURITY", table)),
            "error",
            "rls_disabled",
            f"rls_tenancy.{table}",
            "row level security is off",
        )
        # (users and api_tokens: enable_tenant_isolation() ran, but on api_tokens granted the app role writes;
        # test_fixes.py checks the grants each fix leaves)
        for table in ("audit_log", "feature_overrides")
    },
    **{
        f"the library's policy {policy} on {table} dropped": Plant(
            _statements(ddl("DROP POLICY {} ON rls_tenancy.{}", policy, table)),
            "error",
            "library_policy_missing",
            f"rls_tenancy.{table} policy {policy}",
            "is gone",
        )
        for table, policy in LIBRARY_POLICIES
    },
    "an extension created in the library's schema": Plant(
        lambda r: ["CREATE EXTENSION pgcrypto SCHEMA rls_tenancy"],
        "warning",
        "extension_in_library_schema",
        "extension pgcrypto",
        "installed in the library's schema",
    ),
    "a foreign table onto this database spelled LOCALHOST., readable by the app role": Plant(
        lambda r: _loopback_table(r, "LOCALHOST."),
        "error",
        "foreign_table_readable",
        "public.doctor_remote",
        "reads this very database",
        fix_is_sql=False,
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "plant",
    [pytest.param(plant, id=name) for name, plant in PLANTS.items()],
)
def test_planted_misconfiguration_is_found(superuser_engine: Engine, db: TenancyDatabase, plant: Plant) -> None:
    name = plant.object.format(
        app=db.roles.app, owner=db.roles.owner, database=db.name, superuser=db.superuser_url.username
    )
    expected = (plant.severity, plant.check, name)
    with planted_in(superuser_engine, plant.setup(db.roles)) as conn:
        found = finding_rows(conn)
        matching = [row for row in found if key_of(row) == expected]
        assert matching, f"{expected} not in {[key_of(row) for row in found]}"
        assert plant.says in matching[0][3]
        assert all(row[4].strip() for row in found), "every finding says how to fix it"
        if plant.fix_reinstalls:
            assert "rls-tenancy migrate --reinstall" in matching[0][4]
            reinstall_on(conn, roles=db.roles)
        elif plant.fix_is_sql:
            run(conn, matching[0][4])
        if plant.fix_is_sql or plant.fix_reinstalls:
            after = {key_of(row) for row in finding_rows(conn)}
            assert expected not in after, f"the fix {matching[0][4]!r} left the finding"


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda r: [NOTES], id="a new table isolated by enable_tenant_isolation"),
        pytest.param(
            lambda r: [
                "CREATE TABLE public.doctor_ids (id integer GENERATED ALWAYS AS IDENTITY, "
                "tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), PRIMARY KEY (tenant_id, id))",
                "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_ids')",
            ],
            id="a generated-always id isolated by enable_tenant_isolation",
        ),
        pytest.param(
            lambda r: [INVOKER_VIEW, ddl("GRANT SELECT ON public.doctor_view TO {}", r.app)],
            id="a security_invoker view granted to the app role",
        ),
        pytest.param(lambda r: [DEFINER.format(PINNED), CLOSED], id="a pinned SECURITY DEFINER closed to PUBLIC"),
        pytest.param(
            lambda r: ["CREATE POLICY doctor_narrow ON public.projects AS RESTRICTIVE USING (true) WITH CHECK (true)"],
            id="a restrictive policy (it can only narrow)",
        ),
        pytest.param(
            lambda r: [
                "CREATE TABLE public.doctor_children (id integer, tenant_id bigint NOT NULL, "
                "project_id integer NOT NULL, PRIMARY KEY (tenant_id, id))",
                "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_children')",
                "SELECT rls_tenancy.add_tenant_foreign_key('public.doctor_children', 'project_id', 'public.projects')",
            ],
            id="a tenant foreign key made by add_tenant_foreign_key",
        ),
        pytest.param(
            lambda r: [
                "CREATE POLICY doctor_reversed ON public.projects USING (rls_tenancy.current_tenant_id() = tenant_id)"
                " WITH CHECK (rls_tenancy.current_tenant_id() = tenant_id)"
            ],
            id="a policy with the tenant condition reversed",
        ),
        pytest.param(
            lambda r: [
                "CREATE POLICY doctor_once ON public.projects"
                " USING (tenant_id = (SELECT rls_tenancy.current_tenant_id()) AND name <> '')"
                " WITH CHECK ((SELECT rls_tenancy.current_tenant_id()) = tenant_id)"
            ],
            id="a policy with the tenant condition as an InitPlan (evaluated once per statement)",
        ),
        pytest.param(
            lambda r: [
                "CREATE FUNCTION public.doctor_same(a text, b text) RETURNS boolean LANGUAGE sql IMMUTABLE LEAKPROOF"
                " AS 'SELECT a = b'",
                "REVOKE ALL ON FUNCTION public.doctor_same(text, text) FROM PUBLIC",
            ],
            id="a LEAKPROOF function the app role may not call",
        ),
        pytest.param(
            lambda r: [
                "CREATE ROLE doctor_monitor NOLOGIN",
                "GRANT SELECT ON pg_catalog.pg_statistic TO doctor_monitor",
            ],
            id="pg_statistic readable by a role the app role cannot become",
        ),
        pytest.param(
            lambda r: [
                "CREATE ROLE doctor_reporting NOLOGIN BYPASSRLS",
                ddl("GRANT {} TO doctor_reporting", r.app),
            ],
            id="the app role granted to a BYPASSRLS role (not the other way round)",
        ),
        pytest.param(
            lambda r: [
                "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
                "CREATE SERVER doctor_elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'localhost')",
                "CREATE USER MAPPING FOR PUBLIC SERVER doctor_elsewhere OPTIONS (user 'nobody')",
            ],
            id="a foreign server with a user mapping the app role may not use (no USAGE)",
        ),
        pytest.param(
            lambda r: [
                "CREATE EXTENSION IF NOT EXISTS btree_gist",
                BOOKINGS.format("EXCLUDE USING gist (tenant_id WITH =, during WITH &&)"),
            ],
            id="an exclusion constraint keyed on tenant_id",
        ),
        pytest.param(
            lambda r: [
                INVOKER_VIEW,
                "CREATE VIEW public.doctor_outer AS SELECT * FROM public.doctor_view",
                ddl("GRANT SELECT ON public.doctor_view, public.doctor_outer TO {}", r.app),
            ],
            # A security_invoker view checks what it reads as the current user even under a view with its
            # owner's rights (test_reach.py shows the app role its own rows only through both).
            id="a view without security_invoker over a security_invoker view over projects",
        ),
        pytest.param(
            lambda r: [
                "CREATE SCHEMA doctor_rules",
                ddl("GRANT USAGE ON SCHEMA doctor_rules TO {}", r.app),
                _on_this_database_to("GRANT CONNECT ON DATABASE %I TO {}", r.app),
                "CREATE FUNCTION public.doctor_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER"
                ' SET search_path = "$user", doctor_missing, public, pg_temp AS $$ SELECT 1::bigint $$',
                CLOSED,
            ],
            id='a SECURITY DEFINER searching "$user" and a missing schema while no one may create schemas',
        ),
        pytest.param(
            lambda r: [
                "CREATE SCHEMA doctor_rules",
                ddl("GRANT USAGE ON SCHEMA doctor_rules TO {}", r.app),
                "CREATE FUNCTION doctor_rules.visible(s text) RETURNS boolean LANGUAGE sql STABLE"
                " AS $$ SELECT s <> '' $$",
                ddl("ALTER FUNCTION doctor_rules.visible(text) OWNER TO {}", r.owner),
                "CREATE POLICY doctor_visible ON public.projects AS RESTRICTIVE FOR SELECT"
                " USING (doctor_rules.visible(name))",
            ],
            id="a restrictive policy calling a function the owner role owns",
        ),
    ],
)
def test_well_made_objects_add_no_finding(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row], setup: Callable[[RoleNames], list[str]]
) -> None:
    with planted_in(superuser_engine, setup(db.roles)) as conn:
        found = [row for row in finding_rows(conn) if row[0] != "info"]
    before = [row for row in baseline if row[0] != "info"]
    assert found == before
    assert sorted(row[:2] for row in before) == sorted(WARNINGS)


STRICT_POLICY = (
    "CREATE POLICY doctor_strict ON public.projects"
    " USING (tenant_id = current_setting('app.current_tenant')::bigint)"
    " WITH CHECK (current_setting('app.current_tenant')::bigint = tenant_id)"
)


def test_a_policy_reading_the_setting_without_missing_ok(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    """Unsigned, well made: without missing_ok it raises where no tenant is bound, and shows no row either way.
    Signed, an error: it trusts the bare setting, which SQL may set, beside the library's signed policy."""
    with planted_in(superuser_engine, [STRICT_POLICY]) as conn:
        added = [row[:3] for row in finding_rows(conn) if row[0] != "info" and row not in baseline]
    expected = [("error", "policy_not_tenant_keyed", "public.projects policy doctor_strict")]
    assert added == (expected if signing_requested() else [])


# Subtler ways around the policies, each once missed by the doctor.
SUBTLE = {
    "a permissive policy USING (tenant_id = current_tenant_id() OR true)": (
        lambda r: [
            "CREATE POLICY doctor_or ON public.projects "
            "USING (tenant_id = rls_tenancy.current_tenant_id() OR true) "
            "WITH CHECK (tenant_id = rls_tenancy.current_tenant_id())"
        ],
        ("error", "policy_not_tenant_keyed", "public.projects policy doctor_or"),
        "once missed: sql/012_doctor.sql (policy_not_tenant_keyed, and coverage.tenant_policies) tests the policy "
        "text with a substring regex, so any expression containing 'tenant_id = rls_tenancy.current_tenant_id()' "
        "passes, here one OR-ed with true, which shows every tenant's rows",
    ),
    "a unique index on (name) INCLUDE (tenant_id)": (
        lambda r: [NOTES, "CREATE UNIQUE INDEX doctor_notes_name ON public.doctor_notes (name) INCLUDE (tenant_id)"],
        ("warning", "unique_without_tenant", "public.doctor_notes_name"),
        "once missed: sql/012_doctor.sql (unique_without_tenant) looks for tenant_id in pg_index.indkey, which "
        "also lists INCLUDE columns; uniqueness is on the key columns only (indnkeyatts)",
    ),
    "column-level REFERENCES granted to the app role": (
        lambda r: [ddl("GRANT REFERENCES (id) ON public.projects TO {}", r.app)],
        ("error", "app_role_dangerous_privilege", "public.projects"),
        "once missed: sql/012_doctor.sql (coverage.app_references) uses has_table_privilege, which ignores "
        "column grants; has_any_column_privilege(app, table, 'REFERENCES') would see them",
    ),
    "a privilege held through a role the app role can SET ROLE to": (
        lambda r: [
            "CREATE ROLE doctor_maint NOLOGIN",
            "GRANT TRUNCATE ON public.tasks TO doctor_maint",
            ddl("GRANT doctor_maint TO {}", r.app),
        ],
        ("error", "app_role_dangerous_privilege", "public.tasks"),
        "the app role is NOINHERIT, so has_table_privilege(app, ...) alone missed what SET ROLE reaches",
    ),
    "a SECURITY DEFINER whose search_path does not end in pg_temp": (
        lambda r: [
            "CREATE FUNCTION public.doctor_is_admin(u int) RETURNS boolean LANGUAGE sql SECURITY DEFINER "
            "SET search_path = pg_catalog AS 'SELECT u = 0'",
            "REVOKE ALL ON FUNCTION public.doctor_is_admin(int) FROM PUBLIC",
        ],
        ("error", "definer_without_search_path", "public.doctor_is_admin(integer)"),
        "pg_temp is searched first for tables unless named last: a caller's temp table would be used",
    ),
    "a SECURITY DEFINER searching a schema the app role can create in": (
        lambda r: [
            ddl("GRANT CREATE ON SCHEMA public TO {}", r.app),
            "CREATE FUNCTION public.doctor_lookup(u int) RETURNS boolean LANGUAGE sql SECURITY DEFINER "
            "SET search_path = public, pg_temp AS 'SELECT u = 0'",
            "REVOKE ALL ON FUNCTION public.doctor_lookup(int) FROM PUBLIC",
        ],
        # the grant, whose REVOKE closes it for every definer (test_one_fix.py: not one finding per definer)
        ("error", "app_role_schema_create", "public"),
        "the app role could plant a table or function the definer then uses with its rights",
    ),
    "a SECURITY DEFINER owned by a superuser, callable by the app role": (
        lambda r: [
            "CREATE FUNCTION public.doctor_names() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS 'SELECT name FROM public.projects'",
            "REVOKE ALL ON FUNCTION public.doctor_names() FROM PUBLIC",
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_names() TO {}", r.app),
        ],
        ("error", "definer_escapes_rls", "public.doctor_names()"),
        "run as a superuser, it returns every tenant's projects to whoever calls it",
    ),
    "a table without tenant_id that the app role can write": (
        lambda r: [
            "CREATE TABLE public.doctor_invoices (id int, org_id int)",
            ddl("GRANT SELECT, INSERT ON public.doctor_invoices TO {}", r.app),
        ],
        ("warning", "table_not_isolated", "public.doctor_invoices"),
        "keyed by something else, it is shared by every tenant, unreported while only tenant_id tables were read",
    ),
    "app role member of a CREATEROLE role": (
        lambda r: _member_of_new_role(r, "CREATEROLE"),
        ("error", "app_role_member_of_privileged", "{app}"),
        "once missed: sql/012_doctor.sql (app_role_member_of_privileged) considers superuser, BYPASSRLS, owner "
        "and bypass roles, not CREATEROLE ones (which can grant the app role the bypass role); the engine's own "
        "check (rls_tenancy/binding/role_checks.py) does refuse it",
    ),
    "app role member of another role that owns a tenant table": (
        lambda r: _member_of_new_role(r, "NOLOGIN", owning="public.projects"),
        ("error", "app_role_owns_table", "public.projects"),
        "once missed: sql/012_doctor.sql (app_role_owns_table) compares the owner with the app role's name only; "
        "membership in the owning role (which can ALTER TABLE ... NO FORCE) goes unreported, while "
        "rls_tenancy/binding/role_checks.py refuses it with pg_has_role(who, relowner, 'MEMBER')",
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("setup", "expected"),
    [pytest.param(setup, expected, id=name) for name, (setup, expected, _why) in SUBTLE.items()],
)
def test_subtle_gaps_are_reported(
    superuser_engine: Engine,
    db: TenancyDatabase,
    setup: Callable[[RoleNames], list[str]],
    expected: Key,
) -> None:
    key = (expected[0], expected[1], expected[2].format(app=db.roles.app))
    with planted_in(superuser_engine, setup(db.roles)) as conn:
        assert key in {key_of(row) for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_an_exemption_turns_a_finding_into_info_with_its_reason(superuser_engine: Engine) -> None:
    planted = ["ALTER TABLE public.projects NO FORCE ROW LEVEL SECURITY"]
    with planted_in(superuser_engine, planted) as conn:
        assert ("error", "rls_not_forced", "public.projects") in {key_of(row) for row in finding_rows(conn)}
        conn.execute(
            text(
                "INSERT INTO rls_tenancy.doctor_exemptions (object_name, check_name, reason) "
                "VALUES ('public.projects', 'rls_not_forced', 'doctor test: a reason of our own')"
            )
        )
        found = finding_rows(conn)
    keys = [key_of(row) for row in found]
    assert ("error", "rls_not_forced", "public.projects") not in keys
    (exempt,) = [row for row in found if row[1] == "rls_not_forced"]
    assert exempt[0] == "info"
    assert exempt[3].endswith("(exempt: doctor test: a reason of our own)")
    assert exempt[4] == "ALTER TABLE public.projects FORCE ROW LEVEL SECURITY;"
