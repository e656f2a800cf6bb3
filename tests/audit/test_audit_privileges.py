"""What the application role can reach in the audit log (``sql/009_audit.sql``): its own tenant's events, read only.

No one, the owner and superusers included, can change an event once written, and no SECURITY DEFINER function is
open to PUBLIC.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from rls_tenancy import as_tenant
from rls_tenancy.testing import TenancyDatabase
from tests.audit.support import Logged, refused_with, rolled_back_connection
from tests.conftest import World

# --- the application role can only read, and only through the policy ---------------------------------------------

APP_REFUSED = {
    "log-insert": "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, created_at) "
    "VALUES (rls_tenancy.current_tenant_id(), 'forged', 'forged.event', now())",
    "log-update": "UPDATE rls_tenancy.audit_log SET message = 'forged'",
    "log-delete": "DELETE FROM rls_tenancy.audit_log",
    "log-truncate": "TRUNCATE rls_tenancy.audit_log",
    "heads-select": "SELECT * FROM rls_tenancy.audit_chain_heads",
    "heads-insert": "INSERT INTO rls_tenancy.audit_chain_heads (chain) VALUES (rls_tenancy.current_tenant_id())",
    "heads-update": "UPDATE rls_tenancy.audit_chain_heads SET seq = 0",
    "heads-delete": "DELETE FROM rls_tenancy.audit_chain_heads",
    "heads-truncate": "TRUNCATE rls_tenancy.audit_chain_heads",
    "purge": "SELECT rls_tenancy.purge_audit_log(interval '400 days')",
    "verify-all": "SELECT * FROM rls_tenancy.verify_audit_chains()",
    "chain-heads": "SELECT * FROM rls_tenancy.audit_chain_heads()",
    "hash-at": "SELECT rls_tenancy.audit_hash_at(rls_tenancy.current_tenant_id(), 1)",
}


@pytest.mark.parametrize("action", sorted(APP_REFUSED))
def test_app_role_cannot_write_the_log_or_reach_the_chain_heads(
    app_engine: Engine, world: World, logged: Logged, action: str
) -> None:
    with as_tenant(world.a), app_engine.connect() as conn, pytest.raises(ProgrammingError) as caught:
        result = conn.execute(text(APP_REFUSED[action]))
        pytest.fail(f"{action} went through ({result.rowcount} rows)")
    # 42501 alone is not enough: RLS and the append-only trigger raise it too.
    refused_with(caught, "42501", "permission denied for")


def test_app_role_privileges_in_the_catalog(superuser_engine: Engine, db: TenancyDatabase) -> None:
    table_privileges = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    functions = {
        "rls_tenancy.log_event(text, text, jsonb, inet, text)": True,
        "rls_tenancy.verify_audit_chain(bigint)": True,
        "rls_tenancy.verify_audit_chains()": False,
        "rls_tenancy.audit_chain_heads()": False,
        "rls_tenancy.audit_hash_at(bigint, bigint)": False,
        "rls_tenancy.purge_audit_log(interval)": False,
        "rls_tenancy.seal_audit_event()": False,
    }
    with superuser_engine.connect() as conn:
        granted = {
            (table, privilege): conn.execute(
                text("SELECT has_table_privilege(:r, CAST(:t AS regclass), :p)"),
                {"r": db.roles.app, "t": table, "p": privilege},
            ).scalar_one()
            for table in ("rls_tenancy.audit_log", "rls_tenancy.audit_chain_heads")
            for privilege in table_privileges
        }
        executable = {
            function: conn.execute(
                text("SELECT has_function_privilege(:r, CAST(:f AS regprocedure), 'EXECUTE')"),
                {"r": db.roles.app, "f": function},
            ).scalar_one()
            for function in functions
        }
    assert {key for key, allowed in granted.items() if allowed} == {("rls_tenancy.audit_log", "SELECT")}
    assert executable == functions


# --- append-only for everyone, the owner and superusers included -------------------------------------------------

OWNER_REFUSED = {
    "update-message": "UPDATE rls_tenancy.audit_log SET message = 'rewritten' WHERE id = :id",
    "update-chain-fields": "UPDATE rls_tenancy.audit_log SET hash = sha256(hash) WHERE id = :id",
    "delete": "DELETE FROM rls_tenancy.audit_log WHERE id = :id",
    "truncate": "TRUNCATE rls_tenancy.audit_log",
}


@pytest.mark.parametrize("who", ["superuser", "owner"])
@pytest.mark.parametrize("action", sorted(OWNER_REFUSED))
def test_triggers_refuse_changes_even_to_superusers(
    superuser_engine: Engine, db: TenancyDatabase, world: World, logged: Logged, who: str, action: str
) -> None:
    event_id = logged.ids[world.a][0]
    with rolled_back_connection(superuser_engine, db.roles.owner if who == "owner" else None) as conn:
        with pytest.raises(DBAPIError) as caught:
            result = conn.execute(text(OWNER_REFUSED[action]), {"id": event_id})
            pytest.fail(f"{action} as {who} went through ({result.rowcount} rows)")
        message = refused_with(caught, "42501", "append-only")
        assert action.partition("-")[0].upper() in message


# --- each tenant reads only its own events -----------------------------------------------------------------------


@pytest.mark.rls_policy
def test_app_role_reads_only_the_bound_tenants_events(app_engine: Engine, world: World, logged: Logged) -> None:
    read = text("SELECT id, tenant_id FROM rls_tenancy.audit_log")
    with as_tenant(world.a), app_engine.connect() as conn:
        seen = conn.execute(read).all()
        asked_for_b = conn.execute(
            text("SELECT count(*) FROM rls_tenancy.audit_log WHERE tenant_id = :b"), {"b": world.b}
        ).scalar_one()
    assert {tenant for _, tenant in seen} == {world.a}
    assert set(logged.ids[world.a]) <= {event_id for event_id, _ in seen}
    assert asked_for_b == 0
    with app_engine.connect() as conn:
        assert conn.execute(read).all() == []


# --- SECURITY DEFINER functions are pinned and closed to PUBLIC --------------------------------------------------


def test_security_definer_functions_pin_search_path_and_grant_no_public_execute(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    with superuser_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.proname, p.proconfig, "
                "ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END "
                "      FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
                "      WHERE a.privilege_type = 'EXECUTE' ORDER BY 1) AS executors "
                "FROM pg_proc p WHERE p.pronamespace = 'rls_tenancy'::regnamespace AND p.prosecdef"
            )
        ).all()
    definers = {row.proname: row for row in rows}
    roles = db.roles
    expected_executors = {
        "log_event": {roles.owner, roles.app, roles.bypass},
        "verify_audit_chain": {roles.owner, roles.app, roles.bypass},
        "verify_audit_chains": {roles.owner, roles.bypass},
        "audit_chain_heads": {roles.owner, roles.bypass},
        "audit_hash_at": {roles.owner, roles.bypass},
        "purge_audit_log": {roles.owner, roles.bypass},
        "seal_audit_event": {roles.owner},
    }
    assert set(expected_executors) <= set(definers)
    for name, row in definers.items():
        assert "search_path=pg_catalog, pg_temp" in (row.proconfig or []), name
        assert "PUBLIC" not in row.executors, name
    for name, executors in expected_executors.items():
        assert set(definers[name].executors) == executors, name
