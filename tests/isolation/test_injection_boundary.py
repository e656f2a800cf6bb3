"""The SQL-injection boundary, stated as tests: what arbitrary SQL run as the app role can and cannot do.

An attacker who can make the application role run SQL of their choosing can
call ``set_config('app.current_tenant', ...)`` and read and write another
tenant's rows for the rest of that transaction, in a database that does not
require a signed context (the default, and this suite's database): the
policies trust the setting. The first test documents it; with a signed
context required, tests/binding/test_signed_context.py turns it and the other
limits into refusals. Everything else here is what
such an attacker still cannot do: turn the policies off, become the bypass
role, write the audit log directly, or make a switched tenant outlive the
transaction it was injected into.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from rls_tenancy import as_tenant
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from saas_demo.models import Project
from tests.conftest import World

SWITCH = text("SELECT set_config('app.current_tenant', :tenant, :session_wide)")


def test_injected_sql_switches_the_tenant_only_where_the_context_is_unsigned(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        conn.execute(SWITCH, {"tenant": str(world.b), "session_wide": False})
        stolen = set(conn.execute(text("SELECT name FROM projects")).scalars())
    if signing_requested():  # RLS_TENANCY_TEST_SIGNED: the setting alone is no tenant
        assert stolen == set()
    else:  # the boundary: see the README's "does not protect against"
        assert stolen == world.projects[world.b]


@pytest.mark.parametrize("session_wide", [False, True], ids=["set_config local", "set_config session-wide"])
def test_a_switched_tenant_never_outlives_its_transaction(app_engine: Engine, world: World, session_wide: bool) -> None:
    engine = app_engine.execution_options()  # same pool: the next checkout may be the same backend
    with as_tenant(world.a), engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.execute(SWITCH, {"tenant": str(world.b), "session_wide": session_wide})
        conn.commit()
        # Same connection, next transactions: the binding overrides whatever was injected.
        assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        conn.commit()
    with engine.connect() as conn:
        if conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid:
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
        conn.rollback()


ESCAPES = {
    "disable RLS": "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
    "stop forcing RLS": "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
    "drop the policy": "DROP POLICY tenant_isolation ON projects",
    "add a permissive policy": "CREATE POLICY open ON projects USING (true)",
    "truncate": "TRUNCATE projects",
    "write the audit log directly": "INSERT INTO rls_tenancy.audit_log (action) VALUES ('forged')",
    "rewrite the audit log": "UPDATE rls_tenancy.audit_log SET message = 'rewritten'",
    "create a function to hide behind": "CREATE FUNCTION public.peek() RETURNS bigint LANGUAGE sql "
    "SECURITY DEFINER RETURN 1",
    "turn row security off and read": "SET LOCAL row_security = off; SELECT count(*) FROM projects",
}


@pytest.mark.parametrize("statement", ESCAPES.values(), ids=ESCAPES.keys())
def test_injected_sql_cannot_escape_the_policies(app_engine: Engine, world: World, statement: str) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises((ProgrammingError, DBAPIError)) as caught:
            conn.exec_driver_sql(statement)
    assert (
        "permission denied" in str(caught.value)
        or "must be owner" in str(caught.value)
        or ("row-level security" in str(caught.value))
    )


def test_injected_sql_cannot_become_the_bypass_role(app_engine: Engine, db: TenancyDatabase, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        for role in (db.roles.bypass, db.roles.owner):
            with pytest.raises(DBAPIError, match="permission denied"):
                conn.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
            conn.rollback()
