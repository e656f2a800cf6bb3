"""What the doctor's tests share: the clean database's report, and planting a misconfiguration to read the report.

Every misconfiguration is planted inside a transaction on the superuser
engine that is rolled back afterwards (catalog changes are transactional, so
the shared database stays clean; each test checks that it did, with the
``stays_clean`` fixture of tests/doctor/conftest.py), and ``findings()`` is
called inside that same transaction. Where a finding's ``fix`` is plain SQL it
is applied there too, and the finding must go away.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing.database import signing_requested
from tests.conftest import ddl

Row = tuple[str, str, str, str, str]  # severity, check_name, object_name, message, fix
Key = tuple[str, str, str]  # severity, check_name, object_name

FINDINGS = "SELECT severity, check_name, object_name, message, fix FROM rls_tenancy.findings()"
DISTRIBUTED = "SELECT severity, check_name, object_name, message, fix FROM rls_tenancy.findings(true)"

# What the migrated demo database reports: the exemptions recorded by the
# library (sql/012_doctor.sql), as info, and one warning: the app role's
# TEMPORARY, which PostgreSQL grants to PUBLIC and the migrations leave to the
# DBA (TEMPORARY below). The demo's own keys lead with tenant_id (saas_0004):
# nothing of public.* is reported, not even as info, nor by the distribution
# checks (DISTRIBUTION_EXEMPT: the library's tables stay on the coordinator).
DISTRIBUTION_EXEMPT = {
    ("info", "distribution_key_without_tenant", "rls_tenancy.api_tokens_pkey"),
    ("info", "distribution_key_without_tenant", "rls_tenancy.audit_log_pkey"),
    ("info", "distribution_key_without_tenant", "rls_tenancy.feature_overrides_pkey"),
    ("info", "distribution_key_without_tenant", "rls_tenancy.users_pkey"),
    ("info", "distribution_tenant_id_nullable", "rls_tenancy.audit_log"),
    ("info", "distribution_tenant_id_nullable", "rls_tenancy.feature_overrides"),
}
EXPECTED_CLEAN = DISTRIBUTION_EXEMPT | {
    ("info", "index_not_leading_with_tenant", "rls_tenancy.api_tokens_pkey"),
    ("info", "index_not_leading_with_tenant", "rls_tenancy.audit_log_pkey"),
    ("info", "index_not_leading_with_tenant", "rls_tenancy.feature_overrides_pkey"),
    ("info", "index_not_leading_with_tenant", "rls_tenancy.users_pkey"),
    ("info", "tenant_id_nullable", "rls_tenancy.audit_log"),
    ("info", "tenant_id_nullable", "rls_tenancy.feature_overrides"),
    ("info", "policy_not_tenant_keyed", "rls_tenancy.feature_overrides policy global_overrides_read"),
    ("info", "unique_without_tenant", "rls_tenancy.feature_overrides_pkey"),
    ("info", "unique_without_tenant", "rls_tenancy.users_pkey"),
    ("info", "owner_policy_opens_table", "rls_tenancy.audit_log policy audit_owner"),
}
TEMPORARY = ("warning", "app_role_temporary")
UNSIGNED = ("warning", "context_not_signed")  # unless RLS_TENANCY_TEST_SIGNED: then the database requires it
WARNINGS = [TEMPORARY] if signing_requested() else [TEMPORARY, UNSIGNED]
INFOS = len(EXPECTED_CLEAN)


def clean(database: str) -> set[Key]:
    """EXPECTED_CLEAN and the warnings that name the database (the test databases' names need no quotes)."""
    return EXPECTED_CLEAN | {(*warning, database) for warning in WARNINGS}


# A view with its owner's rights over projects (test_plants.py plants the security_invoker one as well).
VIEW = "CREATE VIEW public.doctor_view AS SELECT id, name FROM public.projects"
# Closes public.doctor_definer() (test_plants.py's DEFINER) to PUBLIC.
CLOSED = "REVOKE EXECUTE ON FUNCTION public.doctor_definer() FROM PUBLIC"


def chain(roles: RoleNames, attributes: str, suffix: str | None = None) -> list[str]:
    """app -> doctor_analysts_<hex> -> doctor_reporting_<hex> (with ``attributes``), rolled back with the rest."""
    suffix = suffix or secrets.token_hex(4)
    analysts, reporting = f"doctor_analysts_{suffix}", f"doctor_reporting_{suffix}"
    create = sql.SQL("CREATE ROLE {} NOLOGIN {}").format(sql.Identifier(reporting), sql.SQL(attributes))
    return [
        ddl("CREATE ROLE {} NOLOGIN", analysts),
        create.as_string(None),
        ddl("GRANT {} TO {}", reporting, analysts),
        ddl("GRANT {} TO {}", analysts, roles.app),
    ]


def child_without_tenant(r: RoleNames) -> list[str]:
    """A tenant table, public.doctor_orders, and a child of it keyed by order_id alone, which the app role writes."""
    return [
        "CREATE TABLE public.doctor_orders (id integer UNIQUE, tenant_id bigint NOT NULL"
        " REFERENCES rls_tenancy.tenants (id), PRIMARY KEY (tenant_id, id))",
        "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_orders')",
        "CREATE TABLE public.doctor_lines (id integer, order_id integer REFERENCES public.doctor_orders (id))",
        ddl("GRANT SELECT, INSERT ON public.doctor_lines TO {}", r.app),
    ]


def key_of(row: Row) -> Key:
    return row[0], row[1], row[2]


def finding_rows(conn: Connection, *, distributed: bool = False) -> list[Row]:
    return [(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(text(DISTRIBUTED if distributed else FINDINGS))]


def run(conn: Connection, script: str) -> None:
    conn.exec_driver_sql(script, execution_options={"no_parameters": True})


@contextmanager
def planted_in(engine: Engine, statements: Sequence[str]) -> Iterator[Connection]:
    """A superuser connection inside a transaction holding ``statements``, rolled back afterwards."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            for statement in statements:
                run(conn, statement)
            yield conn
        finally:
            transaction.rollback()


def can(conn: Connection, role: str, statement: str) -> bool:
    """Whether ``statement`` runs as ``role`` (a savepoint keeps the planted transaction alive)."""
    savepoint = conn.begin_nested()
    try:
        # As the session user: SET ROLE asks what the session user, not the current role, is a member of.
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", role))
        run(conn, statement)
        return True
    except DBAPIError:
        return False
    finally:
        savepoint.rollback()
