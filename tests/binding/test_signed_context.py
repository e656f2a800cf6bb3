"""A signed tenant context, checked by PostgreSQL: SQL that sets the tenant itself gets none.

A database of its own, signing required (``require_signed_context(true)``),
a key in slot 1. Everything runs as the application role on plain psycopg
connections, setting the three settings as SQL of its choosing would: the
policies must show a tenant's rows only beside a proof made with the key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import BigInteger, Connection, Engine, Text, create_engine, event, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column
from sqlalchemy.sql.elements import TextClause

from rls_tenancy import ContextKeyError, User, as_tenant, bind_engine
from rls_tenancy.binding import grants
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.cli import main
from rls_tenancy.identity import tokens
from rls_tenancy.identity.tokens import authenticate_in_transaction, authenticate_token, issue_token, parse_token
from rls_tenancy.identity.users import grant_user_delete, grant_user_write
from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.schema.migration_data import each_tenant
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing._sabotage import skip_signature_check
from rls_tenancy.testing.database import require_signing, tenancy_database
from rls_tenancy.testing.pgbouncer import find_pgbouncer, pgbouncer
from saas_demo.app import create_app
from tests.conftest import DEMO_ALEMBIC_INI


@dataclass(frozen=True)
class Signed:
    db: TenancyDatabase
    key: ContextKey
    a: int
    b: int
    user_a: int
    names: dict[int, set[str]]

    def connect(self, url: URL | None = None) -> psycopg.Connection[tuple[object, ...]]:
        target = self.db.app_url if url is None else url
        return psycopg.connect(target.set(drivername="postgresql").render_as_string(hide_password=False))

    def owner(self) -> psycopg.Connection[tuple[object, ...]]:
        return self.connect(self.db.superuser_url)


def _bind(conn: psycopg.Connection[tuple[object, ...]], tenant: object, user: object, proof: str | None) -> None:
    conn.execute(
        "SELECT set_config('app.current_tenant', %s, true), set_config('app.current_user_id', %s, true),"
        " set_config('app.context_proof', %s, true)",
        ("" if tenant is None else str(tenant), "" if user is None else str(user), proof or ""),
    )


def _names(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT name FROM projects")}


@pytest.fixture(scope="module")
def signed(rls_postgres_url: URL, pytestconfig: pytest.Config) -> Iterator[Signed]:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as db:
        key = ContextKey.generate(1)
        signed = Signed(db, key, 0, 0, 0, {})
        with signed.owner() as conn:
            ids = []
            for label in ("a", "b"):
                row = conn.execute(
                    "INSERT INTO rls_tenancy.tenants (slug, name) VALUES (%s, %s) RETURNING id",
                    (f"signed-{label}", label),
                ).fetchone()
                assert row is not None
                ids.append(int(str(row[0])))
                conn.execute(
                    "INSERT INTO projects (tenant_id, name) VALUES (%s, %s), (%s, %s)",
                    (ids[-1], f"{label}-one", ids[-1], f"{label}-two"),
                )
            user = conn.execute(
                "INSERT INTO rls_tenancy.users (tenant_id, email, roles)"
                " VALUES (%s, 'a@signed.example', '{projects:read}') RETURNING id",
                (ids[0],),
            ).fetchone()
            assert user is not None
        require_signing(db.superuser_url, key)
        if pytestconfig.getoption("rls_break") == "signing":
            skip_signature_check(db.superuser_url)
        names = {ids[0]: {"a-one", "a-two"}, ids[1]: {"b-one", "b-two"}}
        yield Signed(db, key, ids[0], ids[1], int(str(user[0])), names)


def test_a_proof_made_with_the_key_shows_the_tenant_its_rows_and_ids(signed: Signed) -> None:
    with signed.connect() as conn:
        pid = conn.info.backend_pid
        for proof in (signed.key.proof(signed.a, signed.user_a), signed.key.proof(signed.a, signed.user_a, pid=pid)):
            _bind(conn, signed.a, signed.user_a, proof)
            assert _names(conn) == signed.names[signed.a]
            ids = conn.execute("SELECT rls_tenancy.current_tenant_id(), rls_tenancy.current_user_id()").fetchone()
            assert ids == (signed.a, signed.user_a)
            conn.rollback()


@pytest.mark.rls_signing
@pytest.mark.parametrize("session_wide", [False, True], ids=["local", "session-wide"])
def test_a_bare_setting_is_no_tenant(signed: Signed, session_wide: bool) -> None:
    with signed.connect() as conn:
        conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (str(signed.b), not session_wide))
        assert _names(conn) == set()
        assert conn.execute("SELECT rls_tenancy.current_tenant_id()").fetchone() == (None,)
        # The default tenant is the verified one (none), and naming B is refused too.
        for statement, values in (
            ("INSERT INTO projects (name) VALUES ('planted')", ()),
            ("INSERT INTO projects (tenant_id, name) VALUES (%s, 'planted')", (signed.b,)),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(statement, values)
            conn.rollback()
            conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (str(signed.b), not session_wide))


@pytest.mark.rls_signing
def test_a_proof_of_one_tenant_or_user_proves_no_other(signed: Signed) -> None:
    proof = signed.key.proof(signed.a, signed.user_a)
    with signed.connect() as conn:
        for tenant, user in ((signed.b, signed.user_a), (signed.a, signed.user_a + 1), (signed.a, None)):
            _bind(conn, tenant, user, proof)
            assert _names(conn) == set()
            assert conn.execute("SELECT rls_tenancy.current_user_id()").fetchone() == (None,)
            conn.rollback()


@pytest.mark.rls_signing
def test_forged_stale_and_misplaced_proofs_prove_nothing(signed: Signed) -> None:
    other_key = ContextKey.generate(1)
    with signed.connect() as conn:
        pid = conn.info.backend_pid
        now = signed.key.proof(signed.a, None)
        issued = int(now.split(":")[1])
        forged = {
            "another key": other_key.proof(signed.a, None),
            "the other slot": "2" + now[1:],
            "a changed digit": now[:-1] + ("0" if now[-1] != "0" else "1"),
            "six minutes old": signed.key.proof(signed.a, None, issued_ms=issued - 360_000),
            "six minutes ahead": signed.key.proof(signed.a, None, issued_ms=issued + 360_000),
            "another backend's": signed.key.proof(signed.a, None, pid=pid + 1),
            "no MAC": now.rsplit(":", 1)[0] + ":",
            "garbage": "1:x:y:z",
        }
        for what, proof in forged.items():
            _bind(conn, signed.a, None, proof)
            assert _names(conn) == set(), what
            conn.rollback()


def test_the_key_is_out_of_the_app_roles_reach(signed: Signed) -> None:
    attempts = [
        "SELECT last_value FROM rls_tenancy.context_key_1a",
        "SELECT pg_sequence_last_value('rls_tenancy.context_key_1a')",
        "SELECT rls_tenancy.context_key(1)",
        "SELECT rls_tenancy.install_context_key(1, '\\x00000000000000000000000000000000')",
        "SELECT rls_tenancy.retire_context_key(1)",
        "SELECT rls_tenancy.require_signed_context(false)",
        "SELECT rls_tenancy.sign_context()",
        "UPDATE rls_tenancy.context_signing SET required = false",
    ]
    with signed.connect() as conn:
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
        shown = conn.execute("SELECT last_value FROM pg_sequences WHERE sequencename = 'context_key_1a'").fetchone()
        assert shown == (None,)
        fingerprint = conn.execute("SELECT rls_tenancy.context_key_fingerprint(1)").fetchone()
        assert fingerprint == (signed.key.fingerprint(),)


def test_the_check_runs_once_per_statement_and_leaves_the_estimates_to_the_setting(signed: Signed) -> None:
    with signed.connect() as conn:
        _bind(conn, signed.a, None, signed.key.proof(signed.a, None))
        explain = "EXPLAIN (ANALYZE, TIMING OFF, VERBOSE) SELECT * FROM projects"
        plan = [str(row[0]).strip() for row in conn.execute(explain)]
    initplan = next(number for number, line in enumerate(plan) if line.startswith("InitPlan"))
    assert plan[initplan + 1].endswith("(actual rows=1 loops=1)"), plan  # run once
    assert plan[initplan + 2] == "Output: rls_tenancy.verified_tenant()", plan
    # The scan's condition is the setting's, which custom plans fold into their estimates; the
    # check's result is a parameter each row's tenant is compared with, never a call per row.
    assert "current_setting('app.current_tenant'" in next(line for line in plan if line.startswith("Index Cond:"))
    assert "Filter: (projects.tenant_id OPERATOR(rls_tenancy.===) $0)" in plan, plan
    assert "actual rows=2 loops=1" in plan[0], plan  # the scan: A's two projects


@pytest.mark.rls_signing
def test_a_key_rotates_through_the_other_slot(signed: Signed) -> None:
    new = ContextKey.generate(2)
    with signed.owner() as owner:
        owner.execute("SELECT rls_tenancy.install_context_key(2, %s)", (new.key,))
    try:
        with signed.connect() as conn:
            for key in (signed.key, new):  # both valid while both are installed
                _bind(conn, signed.a, None, key.proof(signed.a, None))
                assert _names(conn) == signed.names[signed.a]
                conn.rollback()
            with signed.owner() as owner:
                owner.execute("SELECT rls_tenancy.retire_context_key(2)")
            _bind(conn, signed.a, None, new.proof(signed.a, None))
            assert _names(conn) == set()
            assert conn.execute("SELECT rls_tenancy.context_key_fingerprint(2)").fetchone() == (None,)
    finally:
        with signed.owner() as owner:
            owner.execute("SELECT rls_tenancy.retire_context_key(2)")


@pytest.mark.rls_signing
def test_not_requiring_it_trusts_the_setting_again(signed: Signed) -> None:
    with signed.owner() as owner:
        owner.execute("SELECT rls_tenancy.require_signed_context(false)")
    try:
        with signed.connect() as conn:
            _bind(conn, signed.b, None, None)
            assert _names(conn) == signed.names[signed.b]
    finally:
        with signed.owner() as owner:
            owner.execute("SELECT rls_tenancy.require_signed_context(true)")
    with signed.connect() as conn:
        _bind(conn, signed.b, None, None)
        assert _names(conn) == set()


# Through the library: a bound engine with the key signs every binding.


@pytest.fixture(scope="module")
def signed_engine(signed: Signed) -> Iterator[Engine]:
    engine = bind_engine(create_engine(signed.db.app_url, pool_size=1, max_overflow=0), context_key=signed.key)
    yield engine
    engine.dispose()


def test_a_bound_engine_with_the_key_acts_for_the_tenant_and_user(signed: Signed, signed_engine: Engine) -> None:
    for tenant in (signed.a, signed.b, signed.a):  # one connection, tenants taking turns
        with as_tenant(tenant), signed_engine.connect() as conn:
            assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == signed.names[tenant]
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        ids = conn.execute(text("SELECT rls_tenancy.current_tenant_id(), rls_tenancy.current_user_id()")).one()
        assert tuple(ids) == (signed.a, signed.user_a)


@pytest.mark.rls_signing
def test_injected_sql_cannot_switch_the_tenant_or_the_user(signed: Signed, signed_engine: Engine) -> None:
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :b, false)"), {"b": str(signed.b)})
        assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == set()
        conn.rollback()
        conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": str(signed.user_a + 1)})
        assert conn.execute(text("SELECT rls_tenancy.current_user_id()")).scalar() is None
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


@pytest.mark.rls_signing
def test_injected_sql_cannot_mint_a_token_or_log_in_another_tenants_name(signed: Signed, signed_engine: Engine) -> None:
    with as_tenant(signed.a), signed_engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :b, true)"), {"b": str(signed.b)})
        with pytest.raises(DBAPIError):
            conn.execute(text("SELECT rls_tenancy.issue_token('stolen', '\\x00'::bytea, ARRAY[]::text[], NULL, NULL)"))
        conn.rollback()
        conn.execute(text("SELECT set_config('app.current_tenant', :b, true)"), {"b": str(signed.b)})
        conn.execute(text("SELECT rls_tenancy.log_event('forged', 'in B''s name', '{}', NULL, NULL)"))
        conn.commit()
    with signed.owner() as owner:
        logged = owner.execute("SELECT tenant_id FROM rls_tenancy.audit_log WHERE action = 'forged'").fetchall()
    assert logged and all(row[0] != signed.b for row in logged)


@pytest.mark.rls_signing
def test_injected_sql_cannot_read_or_set_another_tenants_overrides_or_users(
    signed: Signed, signed_engine: Engine
) -> None:
    with signed.owner() as owner:
        owner.execute(
            "INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (%s, 'b@signed.example') ON CONFLICT DO NOTHING",
            (signed.b,),
        )
        owner.execute(
            "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled)"
            " VALUES (%s, 'b.secret', '*', true) ON CONFLICT DO NOTHING",
            (signed.b,),
        )
    switch = text("SELECT set_config('app.current_tenant', :b, true)")
    with as_tenant(signed.a), signed_engine.connect() as conn:
        conn.execute(switch, {"b": str(signed.b)})
        assert (
            conn.execute(
                text("SELECT count(*) FROM rls_tenancy.feature_overrides WHERE tenant_id = :b"), {"b": signed.b}
            ).scalar()
            == 0
        )
        assert conn.execute(text("SELECT count(*) FROM rls_tenancy.users")).scalar() == 0
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(
                text(
                    "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled)"
                    " VALUES (:b, 'planted', '*', true)"
                ),
                {"b": signed.b},
            )
        conn.rollback()
    with signed.owner() as owner:
        planted = owner.execute("SELECT count(*) FROM rls_tenancy.feature_overrides WHERE feature = 'planted'")
        assert planted.fetchone() == (0,)


@pytest.mark.rls_signing
def test_a_proof_seen_in_one_transaction_is_worth_nothing_on_another_backend(signed: Signed) -> None:
    with signed.connect() as seen_on:
        pid = seen_on.info.backend_pid
        proof = signed.key.proof(signed.b, None, pid=pid)  # what SQL in B's transaction could read
        _bind(seen_on, signed.b, None, proof)
        assert seen_on.execute("SELECT current_setting('app.context_proof')").fetchone() == (proof,)
    with signed.connect() as elsewhere:
        _bind(elsewhere, signed.b, None, proof)
        assert _names(elsewhere) == set()


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (None, "requires a signed tenant context"),
        (ContextKey.generate(1), "is not the one in slot 1"),
        (ContextKey.generate(2), "slot 2, which holds no key"),
    ],
    ids=["no key", "another key", "an empty slot"],
)
def test_a_key_that_does_not_fit_fails_at_connect(
    signed: Signed, key: ContextKey | None, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLS_TENANCY_CONTEXT_KEY", raising=False)
    engine = bind_engine(create_engine(signed.db.app_url), context_key=key)
    try:
        with pytest.raises(ContextKeyError, match=says), engine.connect():
            pass
    finally:
        engine.dispose()


def test_a_key_in_the_environment_is_the_engines(signed: Signed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLS_TENANCY_CONTEXT_KEY", str(signed.key))
    engine = bind_engine(create_engine(signed.db.app_url))
    try:
        with as_tenant(signed.b), engine.connect() as conn:
            assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == signed.names[signed.b]
    finally:
        engine.dispose()


def test_a_flask_request_with_a_token_is_signed_by_the_database(
    signed: Signed, signed_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with as_tenant(signed.a), Session(signed_engine) as session, session.begin():
        token = issue_token(session, name="signed", scopes=["projects:read"], user_id=signed.user_a).token
    monkeypatch.setenv("RLS_TENANCY_CONTEXT_KEY", str(signed.key))
    app = create_app(signed.db.app_url, signed.db.bypass_url)
    try:
        response = app.test_client().get("/api/projects", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.data[:300]
        body = response.json
        assert isinstance(body, dict)
        assert {project["name"] for project in body["projects"]} == signed.names[signed.a]
    finally:
        state = app.extensions["rls_tenancy"]
        for engine in (state.engine, state.audit_engine, state.bypass.engine if state.bypass else None):
            if engine is not None:
                engine.dispose()


def test_the_cli_makes_installs_rotates_and_requires_keys(
    signed: Signed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLS_TENANCY_CONTEXT_KEY", raising=False)
    url = ["--database-url", signed.db.superuser_url.render_as_string(hide_password=False)]
    assert main(["context-key", "new", "--slot", "2"]) == 0
    fresh = ContextKey.parse(capsys.readouterr().out)
    assert fresh.slot == 2
    try:
        assert main(["context-key", "install", "--key", str(fresh), *url]) == 0
        shown = capsys.readouterr().out
        assert "signed context: required" in shown
        assert f"slot 1: key with fingerprint {signed.key.fingerprint()}" in shown
        assert f"slot 2: key with fingerprint {fresh.fingerprint()}" in shown
        assert fresh.key.hex() not in shown and signed.key.key.hex() not in shown
        with signed.connect() as conn:
            _bind(conn, signed.a, None, fresh.proof(signed.a, None))
            assert _names(conn) == signed.names[signed.a]
        assert main(["context-key", "optional", *url]) == 0
        assert "signed context: not required" in capsys.readouterr().out
    finally:
        assert main(["context-key", "require", *url]) == 0
        assert main(["context-key", "retire", "--slot", "2", *url]) == 0
    assert "slot 2: empty" in capsys.readouterr().out
    assert main(["context-key", "install", *url]) == 2  # no key given, none in the environment
    assert "needs --key" in capsys.readouterr().err


# A policy left trusting the bare setting, as one written by hand would.
UNSIGNED_POLICY = (
    "ALTER POLICY tenant_isolation ON projects"
    " USING (tenant_id = (NULLIF(current_setting('app.current_tenant', true), ''))::bigint)"
    " WITH CHECK (tenant_id = (NULLIF(current_setting('app.current_tenant', true), ''))::bigint)"
)


def _signing_findings(signed: Signed, *checks: str) -> list[tuple[str, str, str, str]]:
    wanted = list(checks or ("context_not_signed", "context_key_missing", "tenant_policy_unsigned"))
    with signed.owner() as owner:
        rows = owner.execute(
            "SELECT severity, check_name, object_name, fix FROM rls_tenancy.findings() WHERE check_name = ANY(%s)",
            (wanted,),
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


@pytest.mark.rls_signing
def test_the_doctor_reports_a_policy_left_unsigned_and_its_fix_closes_it(signed: Signed) -> None:
    assert _signing_findings(signed) == []
    with signed.owner() as owner:
        owner.execute(UNSIGNED_POLICY)
    with signed.connect() as conn:
        _bind(conn, signed.b, None, None)
        assert _names(conn) == signed.names[signed.b]  # the leak the finding describes
    [(severity, check, table, fix)] = _signing_findings(signed)
    assert (severity, check, table.removeprefix("public.")) == ("error", "tenant_policy_unsigned", "projects")
    with signed.owner() as owner:
        owner.execute(fix)
    assert _signing_findings(signed) == []
    with signed.connect() as conn:
        _bind(conn, signed.b, None, None)
        assert _names(conn) == set()


def _run_scripts(signed: Signed, *names: str) -> None:
    """Run ``names`` from ``sql/`` again as the superuser, as a later revision re-runs the specification."""
    with signed.owner() as owner:
        for key, value in signed.db.roles.settings().items():
            owner.execute("SELECT set_config(%s, %s, false)", (key, value))
        for name in names:
            owner.execute(sql_script(name))


def _what_a_bare_setting_reaches(signed: Signed) -> dict[str, object]:
    """As the app role with tenant B and A's user set bare: what the library's own objects answer."""
    with signed.connect() as conn:
        _bind(conn, signed.b, signed.user_a, None)
        found: dict[str, object] = {
            "tenants": conn.execute("SELECT count(*) FROM rls_tenancy.tenants").fetchone(),
            "audit": conn.execute("SELECT count(*) FROM rls_tenancy.audit_log").fetchone(),
            "overrides": conn.execute("SELECT count(*) FROM rls_tenancy.feature_overrides").fetchone(),
            "ids": conn.execute("SELECT rls_tenancy.current_tenant_id(), rls_tenancy.current_user_id()").fetchone(),
        }
        conn.rollback()
    return found


NOTHING = {"tenants": (0,), "audit": (0,), "overrides": (0,), "ids": (None, None)}


@pytest.mark.rls_signing
def test_running_the_specification_again_keeps_a_required_signed_context(signed: Signed) -> None:
    """Every later revision re-runs sql/ whole: its earlier scripts rewrite the unsigned definitions, the last signs."""
    assert _what_a_bare_setting_reaches(signed) == NOTHING
    _run_scripts(signed, *install_scripts())
    assert _what_a_bare_setting_reaches(signed) == NOTHING
    assert [row for row in _signing_findings(signed, "library_context_unsigned")] == []


@pytest.mark.rls_signing
def test_the_doctor_reports_the_librarys_own_context_left_unsigned_and_its_fix_closes_it(signed: Signed) -> None:
    """One script of the specification run alone (the tenants' policy, the context functions) writes them unsigned."""
    _run_scripts(signed, "002_context.sql", "003_tenants.sql")
    reached = _what_a_bare_setting_reaches(signed)
    assert reached["tenants"] == (1,) and reached["ids"] == (signed.b, None)  # the leak the finding describes
    findings = _signing_findings(signed, "library_context_unsigned")
    assert {(severity, name) for severity, _, name, _ in findings} == {
        ("error", "policy tenant_self on rls_tenancy.tenants"),
        ("error", "function rls_tenancy.current_tenant_id()"),
    }
    with signed.owner() as owner:
        owner.execute(findings[0][3])
    assert _signing_findings(signed, "library_context_unsigned") == []
    assert _what_a_bare_setting_reaches(signed) == NOTHING


def test_the_doctor_reports_a_required_context_without_a_key(signed: Signed) -> None:
    with signed.owner() as owner:
        owner.execute("SELECT rls_tenancy.retire_context_key(1)")
    try:
        assert [row[:2] for row in _signing_findings(signed)] == [("error", "context_key_missing")]
    finally:
        with signed.owner() as owner:
            owner.execute("SELECT rls_tenancy.install_context_key(1, %s)", (signed.key.key,))
    assert _signing_findings(signed) == []


def test_an_asyncio_engine_signs_too(signed: Signed) -> None:
    async def scenario() -> tuple[set[str], set[str]]:
        engine = bind_engine(create_async_engine(signed.db.app_url, pool_size=1), context_key=signed.key)
        try:
            with as_tenant(signed.b):
                async with engine.connect() as conn:
                    own = set((await conn.execute(text("SELECT name FROM projects"))).scalars())
                    await conn.execute(text("SELECT set_config('app.current_tenant', :a, true)"), {"a": str(signed.a)})
                    injected = set((await conn.execute(text("SELECT name FROM projects"))).scalars())
            return own, injected
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == (signed.names[signed.b], set())


def test_behind_pgbouncer_proofs_name_no_backend_and_still_prove_the_tenant(signed: Signed) -> None:
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    logins = {str(signed.db.app_url.username): str(signed.db.app_url.password)}
    with pgbouncer(signed.db.superuser_url, logins, server_connections=1) as bouncer:
        engine = bind_engine(create_engine(bouncer.url(signed.db.app_url), pool_size=2), context_key=signed.key)
        try:
            for tenant in (signed.a, signed.b):
                with as_tenant(tenant), engine.connect() as conn:
                    assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == signed.names[tenant]
                    proof = conn.execute(text("SELECT current_setting('app.context_proof')")).scalar()
                    assert str(proof).split(":")[2] == "0"  # PgBouncer hides which backend serves it
        finally:
            engine.dispose()


def test_a_data_migration_per_tenant_signs_each_tenant_it_binds(signed: Signed) -> None:
    engine = create_engine(signed.db.superuser_url)
    try:
        with engine.connect() as conn, conn.begin():
            seen = {
                tenant: set(conn.execute(text("SELECT name FROM projects")).scalars()) for tenant in each_tenant(conn)
            }
            proof = conn.execute(text("SELECT current_setting('app.context_proof', true)")).scalar()
            conn.rollback()
    finally:
        engine.dispose()
    assert {tenant: seen[tenant] for tenant in (signed.a, signed.b)} == signed.names
    assert not proof  # the migration's own (none) put back


@pytest.fixture(scope="module")
def admin_a(signed: Signed) -> int:
    """A second user of tenant A, with more rights than ``user_a``."""
    with signed.owner() as owner:
        row = owner.execute(
            "INSERT INTO rls_tenancy.users (tenant_id, email, roles)"
            " VALUES (%s, 'admin@signed.example', '{admin,projects:read,projects:write}') RETURNING id",
            (signed.a,),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


_MINT = text("SELECT rls_tenancy.issue_token('stolen', :digest, ARRAY['admin']::text[], :user, NULL)")


@pytest.mark.rls_signing
def test_injected_sql_mints_tokens_only_for_the_user_it_is_bound_to(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """A token for another user of the tenant would act as that user in every later request."""
    pretend = text("SELECT set_config('app.current_user_id', :user, true)")
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        for forged, user in ((None, admin_a), (None, None), (str(admin_a), admin_a), ("", None)):
            with pytest.raises(DBAPIError), conn.begin_nested():
                if forged is not None:
                    conn.execute(pretend, {"user": forged})
                conn.execute(_MINT, {"digest": secrets.token_bytes(32), "user": user})
        with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
            # Its own user's token too: with scopes of its choosing, wider than the token it came with.
            conn.execute(_MINT, {"digest": secrets.token_bytes(32), "user": signed.user_a})
        conn.rollback()


def test_the_app_issues_a_token_for_another_user_and_the_event_names_who_issued_it(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        for_user = issue_token(session, name="for a", scopes=["projects:read"], user_id=signed.user_a)
        for_tenant = issue_token(session, name="for the tenant", scopes=["projects:read"])
        ids = session.execute(text("SELECT rls_tenancy.current_tenant_id(), rls_tenancy.current_user_id()")).one()
        assert tuple(ids) == (signed.a, admin_a)  # the transaction acts for the admin again
    with signed.owner() as owner:
        tokens = owner.execute(
            "SELECT id, user_id FROM rls_tenancy.api_tokens WHERE id IN (%s, %s) ORDER BY id",
            (for_user.id, for_tenant.id),
        ).fetchall()
        issuers = owner.execute(
            "SELECT user_id FROM rls_tenancy.audit_log WHERE action = 'token.issued'"
            " AND (data->>'token_id')::bigint IN (%s, %s)",
            (for_user.id, for_tenant.id),
        ).fetchall()
    assert tokens == [(for_user.id, signed.user_a), (for_tenant.id, None)]
    assert issuers == [(admin_a,), (admin_a,)]


_STASH = (
    "DEALLOCATE {name}; PREPARE {name} (text) AS SELECT name FROM projects WHERE name <> $1"
    " AND set_config('planted.proof', current_setting('app.current_user_id') || ':'"
    " || current_setting('app.context_proof'), false) IS NOT NULL"
)


@pytest.mark.rls_binding
def test_state_one_user_plants_never_runs_in_another_users_transaction(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """A statement of psycopg's, swapped by one user's SQL on a pooled connection, never runs for the next user.

    Swapped, it would run in the admin's transaction and keep the admin's
    proof in a session setting for the swapper to replay on that backend.
    """
    query = text("SELECT name FROM projects WHERE name <> :x")
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:  # psycopg prepares it
        for _ in range(8):
            conn.execute(query, {"x": ""}).all()
        conn.commit()
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        prepared = conn.execute(
            text("SELECT name FROM pg_prepared_statements WHERE statement LIKE '%FROM projects WHERE name <>%'")
        ).scalar_one()
        conn.exec_driver_sql(
            sql.SQL(_STASH).format(name=sql.Identifier(prepared)).as_string(None),
            execution_options={"no_parameters": True},
        )
        conn.commit()
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
        assert set(conn.execute(query, {"x": ""}).scalars()) == signed.names[signed.a]
        conn.commit()
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        stash = conn.execute(text("SELECT current_setting('planted.proof', true)")).scalar()
        if stash:  # the attack: replay the admin's proof on this backend
            user, proof = str(stash).split(":", 1)
            conn.execute(text("SELECT set_config('app.current_user_id', :u, true)"), {"u": user})
            conn.execute(text("SELECT set_config('app.context_proof', :p, true)"), {"p": proof})
        assert conn.execute(text("SELECT rls_tenancy.current_user_id()")).scalar() != admin_a
        assert not stash


# A temporary domain named text: an unqualified ``::TEXT`` cast (SQLAlchemy's bind casts) resolves to it before
# pg_catalog's, and its check runs whatever the planter wrote, as whoever the transaction then acts for.
_TRAP = (
    "CREATE FUNCTION pg_temp.caught(v pg_catalog.text) RETURNS boolean LANGUAGE sql AS $$"
    " SELECT rls_tenancy.log_event('trap.caught', pg_catalog.current_setting('app.current_user_id', true))"
    " IS NOT NULL $$",
    "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.caught(VALUE))",
)


#: An app's own statement, its cast written as apps write them: the library's own name pg_catalog's types
#: (rls_tenancy.catalog_types), so this is what the trap would still reach without the reset.
_APP_CAST = text("SELECT CAST('an app value' AS text)")


def _plant_trap(session: Session) -> None:
    session.execute(text("SELECT 1"))
    for statement in _TRAP:
        session.connection().exec_driver_sql(statement, execution_options={"no_parameters": True})


def _trap_caught(signed: Signed, token_id: int) -> list[tuple[object, ...]]:
    """What the trap recorded as it ran (the user bound then); the token issued is revoked."""
    with signed.owner() as owner:
        caught = owner.execute("SELECT message FROM rls_tenancy.audit_log WHERE action = 'trap.caught'").fetchall()
        owner.execute("DELETE FROM rls_tenancy.api_tokens WHERE id = %s", (token_id,))
    return caught


@pytest.mark.rls_binding
@pytest.mark.parametrize("planted", ["in a transaction before", "earlier in the same transaction"])
def test_a_trap_left_without_a_user_never_runs_for_the_user_bound_next(
    signed: Signed, signed_engine: Engine, admin_a: int, planted: str
) -> None:
    """Bound to another user partway through a transaction, the session is reset first, as between transactions.

    SQL run without a user plants a temporary domain ``text``; a later transaction of the same tenant on the
    same connection is not reset (same tenant, same user: none), nor is the rest of its own transaction. Then
    the app acts for the admin (issues them a token, runs a statement of its own with a ``text`` cast): the
    domain's check would run with the admin's proof.
    """
    with as_tenant(signed.a), Session(signed_engine) as session:
        _plant_trap(session)  # the transaction begins without a user
        if planted == "in a transaction before":
            session.commit()
            session.execute(text("SELECT 1"))
        issued = issue_token(session, name="laptop", scopes=["projects:read"], user_id=admin_a)
        with as_tenant(signed.a, user=admin_a):
            session.execute(_APP_CAST)
        session.commit()
    assert _trap_caught(signed, issued.id) == []


@pytest.mark.rls_binding
def test_a_trap_a_rolled_back_savepoint_brings_back_never_runs_for_the_user_bound(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """The reset made for the admin inside a savepoint is undone by its rollback: the next rebinding resets again."""
    with as_tenant(signed.a), Session(signed_engine) as session:
        _plant_trap(session)
        with session.begin_nested() as savepoint:
            session.execute(text("SELECT 1"))
            with as_tenant(signed.a, user=admin_a):
                session.execute(text("SELECT 1"))  # reset for the admin, inside the savepoint
                savepoint.rollback()  # which undoes it: the trap is back
        with as_tenant(signed.a, user=admin_a):
            issued = issue_token(session, name="laptop", scopes=["projects:read"], user_id=admin_a)
            session.execute(_APP_CAST)
        session.commit()
    assert _trap_caught(signed, issued.id) == []


_PLANT = text("SELECT set_config('planted.by', 'user a', false)")
_PLANTED = text("SELECT current_setting('planted.by', true)")


@pytest.mark.rls_binding
@pytest.mark.parametrize("guess", ["none", "right", "wrong"])
def test_a_token_lookup_resets_a_session_another_user_left(
    signed: Signed, signed_engine: Engine, admin_a: int, guess: str
) -> None:
    """The token's user is known only once the lookup has bound it: a wrong guess is caught after it."""
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        admin_token = issue_token(session, name="admin", scopes=["projects:read"], user_id=admin_a).token
    _, digest = parse_token(admin_token)
    tokens._USERS.pop(digest, None)
    if guess != "none":
        tokens._USERS[digest] = admin_a if guess == "right" else signed.user_a
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:  # the pool's one connection
        conn.execute(_PLANT)
        conn.commit()
    if guess == "right":  # the session last served the admin, whose own setting it may keep
        with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
            assert conn.execute(_PLANTED).scalar() in (None, "")  # reset: user a's is gone
            conn.execute(_PLANT)
            conn.commit()
    with Session(signed_engine) as session:
        identity = authenticate_in_transaction(lambda: session.connection(), signed.a, digest)
        assert identity.user_id == admin_a
        with as_tenant(signed.a, user=admin_a):
            kept = session.execute(_PLANTED).scalar()
            assert kept == "user a" if guess == "right" else kept in (None, "")
            ids = session.execute(text("SELECT rls_tenancy.current_tenant_id(), rls_tenancy.current_user_id()")).one()
            assert tuple(ids) == (signed.a, admin_a)
            assert set(session.execute(text("SELECT name FROM projects")).scalars()) == signed.names[signed.a]
        session.commit()
    assert tokens._USERS[digest] == admin_a


def test_signed_the_pool_gives_each_user_of_a_tenant_the_connection_it_last_used(signed: Signed, admin_a: int) -> None:
    """A change of user resets a signed session, so the pool avoids one where it can."""
    engine = bind_engine(create_engine(signed.db.app_url, pool_size=3, max_overflow=0), context_key=signed.key)
    try:
        backends: dict[int, set[int]] = {signed.user_a: set(), admin_a: set()}
        for _ in range(3):
            for user, seen in backends.items():
                with as_tenant(signed.a, user=user), engine.connect() as conn:
                    seen.add(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        assert [len(seen) for seen in backends.values()] == [1, 1]
        assert backends[signed.user_a] != backends[admin_a]
    finally:
        engine.dispose()


_CREDENTIAL_WRITES = {
    "roles of its own user": "UPDATE rls_tenancy.users SET roles = '{admin}' WHERE id = :me",
    "another user's password": "UPDATE rls_tenancy.users SET password_hash = 'known' WHERE id = :admin",
    "another user's email": "UPDATE rls_tenancy.users SET email = 'reset@attacker.example' WHERE id = :admin",
    "a new administrator": "INSERT INTO rls_tenancy.users (tenant_id, email, roles) "
    "VALUES (rls_tenancy.current_tenant_id(), 'new@attacker.example', '{admin}')",
}


@pytest.mark.rls_signing
@pytest.mark.parametrize("write", list(_CREDENTIAL_WRITES))
def test_injected_sql_cannot_write_what_acting_as_a_user_rests_on(
    signed: Signed, signed_engine: Engine, admin_a: int, write: str
) -> None:
    """Its own user made an administrator, or another user's password or email set, acts as them later."""
    values = {"me": signed.user_a, "admin": admin_a}
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        forged = signed.key.grant("anything", user=None, transaction="0:0")[:-64] + secrets.token_hex(32)  # its shape
        conn.execute(text("SELECT set_config('app.grants', :g, true)"), {"g": forged})
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(text(_CREDENTIAL_WRITES[write]), values)
        conn.rollback()
    with signed.owner() as owner:
        rows = owner.execute(
            "SELECT id, email, roles, password_hash FROM rls_tenancy.users WHERE tenant_id = %s ORDER BY id",
            (signed.a,),
        ).fetchall()
    assert [(row[0], row[1]) for row in rows] == [
        (signed.user_a, "a@signed.example"),
        (admin_a, "admin@signed.example"),
    ]
    assert [row[2] for row in rows] == [["projects:read"], ["admin", "projects:read", "projects:write"]]
    assert all(row[3] is None for row in rows)


def test_a_users_id_never_changes_in_a_signed_database(signed: Signed, signed_engine: Engine, admin_a: int) -> None:
    """Tokens and events name users by id: SQL would otherwise swap two users."""
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="id never changes"):
            conn.execute(text("UPDATE rls_tenancy.users SET id = id + 1000000 WHERE id = :id"), {"id": signed.user_a})
        conn.rollback()


@pytest.mark.rls_signing
def test_an_anonymous_request_cannot_issue_itself_a_token_of_no_user(signed: Signed, signed_engine: Engine) -> None:
    """A token of no user carries its scopes alone: issued by SQL, it would hold every scope of the tenant."""
    with as_tenant(signed.a), signed_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(_MINT, {"digest": secrets.token_bytes(32), "user": None})
        conn.rollback()


@pytest.mark.rls_signing
def test_sql_run_with_a_users_narrow_token_cannot_issue_that_user_a_wider_one(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """An integration's `projects:read` token of the administrator: SQL in its request would mint an `admin` one."""
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(_MINT, {"digest": secrets.token_bytes(32), "user": admin_a})
        conn.rollback()
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        issued = issue_token(session, name="the app's own", scopes=["admin"], user_id=admin_a)  # with its grant
    with as_tenant(signed.a), Session(signed_engine) as session:
        assert authenticate_token(session, issued.token).user_id == admin_a


def test_the_app_writes_users_and_tokens_of_no_user_with_its_grants(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """The model's flushes and issue_token() add the grants; a grant covers its own values and no others."""
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        user = User(email="new@signed.example", roles=["projects:read"])
        user.set_password("first")
        session.add(user)
        session.flush()
        user.roles = ["admin", "projects:read"]
        user.email = "renamed@signed.example"
        user.set_password("second")
        session.flush()
        user.language = "de"  # no credential: no grant needed, none sent
        session.flush()
        created = user.id
        issue_token(session, name="for the tenant", scopes=["projects:read"])
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        found = session.get(User, created)
        assert found is not None and found.check_password("second") and not found.check_password("first")
        found.roles = ["projects:read"]  # its hash left as it is, unread: the grant says "unchanged"
        session.flush()
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
        change = text("UPDATE rls_tenancy.users SET roles = :roles WHERE id = :id")
        grant_user_write(conn, user_id=created, roles=["admin"])
        with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
            conn.execute(change, {"roles": ["admin", "billing"], "id": created})  # granted: other roles
        with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
            conn.execute(
                text("UPDATE rls_tenancy.users SET roles = '{admin}', email = 'x@y.z' WHERE id = :id"), {"id": created}
            )
        conn.execute(change, {"roles": ["admin"], "id": created})
        conn.commit()
    with signed.owner() as owner:
        row = owner.execute("SELECT email, roles, language FROM rls_tenancy.users WHERE id = %s", (created,)).fetchone()
    assert row == ("renamed@signed.example", ["admin"], "de")


def test_the_app_role_reads_no_password_hash_in_a_signed_database(signed: Signed, signed_engine: Engine) -> None:
    """Read by SQL run for a user, its tenant's hashes would be tried offline: the column is closed."""
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("SELECT password_hash FROM rls_tenancy.users"))
        conn.rollback()
        assert conn.execute(text("SELECT count(email) FROM rls_tenancy.users")).scalar_one() >= 1  # the rest stays


@pytest.mark.rls_signing
def test_injected_sql_cannot_read_a_password_hash_through_the_library(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        forged = signed.key.grant("anything", user=None, transaction="0:0")[:-64] + secrets.token_hex(32)
        for given in (None, forged):
            with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
                conn.execute(text("SELECT rls_tenancy.password_hash_of(:id, :g)"), {"id": admin_a, "g": given})
        conn.rollback()


def test_sql_run_for_a_user_finds_no_statement_of_the_librarys_to_swap_in_that_users_session(
    signed: Signed, admin_a: int
) -> None:
    """psycopg prepares a statement at its fifth run, and the session keeps it between one user's transactions.

    SQL run for the admin could swap the prepared ``INSERT`` of a user
    (``DEALLOCATE``, then ``PREPARE`` under its name) for one that copies its
    parameters, so that the admin's next new user handed it that user's
    password hash and grant; a swapped ``SAVEPOINT`` would see the grant
    pending. Signed, the library's statements and SQLAlchemy's savepoints
    run unprepared; the app's own still prepare.
    """
    engine = bind_engine(create_engine(signed.db.app_url, pool_size=1, max_overflow=0), context_key=signed.key)
    mark = secrets.token_hex(4)
    try:
        for number in range(7):  # each ends with its commit, as a request does: nothing rolls psycopg's cache back
            with as_tenant(signed.a, user=admin_a), Session(engine) as session:
                session.execute(text("SELECT name FROM projects")).all()
                user = User(email=f"swap-{number}-{mark}@signed.example", roles=["projects:read"])
                user.set_password(f"secret {number}")
                with session.begin_nested():  # its SAVEPOINT runs between the user's grant and its INSERT
                    session.add(user)
                    session.flush()
                session.commit()
        with as_tenant(signed.a, user=admin_a), engine.connect() as conn:
            prepared = conn.execute(
                text("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql ORDER BY name")
            ).scalars()
            statements = list(prepared)
            conn.rollback()
        assert any("FROM projects" in statement for statement in statements)  # preparing is on
        assert [statement for statement in statements if "rls_tenancy." in statement or "SAVEPOINT" in statement] == []
    finally:
        engine.dispose()


def test_the_doctor_reports_password_hashes_readable_and_its_fix_closes_them(signed: Signed) -> None:
    with signed.owner() as owner:
        owner.execute(sql.SQL("GRANT SELECT ON rls_tenancy.users TO {}").format(sql.Identifier(signed.db.roles.app)))
    found = _signing_findings(signed, "password_hash_readable")
    assert [row[:2] for row in found] == [("error", "password_hash_readable")]
    with signed.owner() as owner:
        owner.execute(found[0][3])
    assert _signing_findings(signed, "password_hash_readable") == []


def test_the_doctor_reports_the_users_grant_trigger_disabled_and_its_fix_restores_it(
    signed: Signed, signed_engine: Engine
) -> None:
    with signed.owner() as owner:
        owner.execute("ALTER TABLE rls_tenancy.users DISABLE TRIGGER users_write_granted")
    found = _signing_findings(signed, "users_grant_trigger_disabled")
    assert [row[:2] for row in found] == [("error", "users_grant_trigger_disabled")]
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:  # what it lets through
        raised = text("UPDATE rls_tenancy.users SET roles = '{admin}' WHERE id = :me RETURNING roles")
        assert conn.execute(raised, {"me": signed.user_a}).scalar_one() == ["admin"]
        conn.rollback()
    with signed.owner() as owner:
        owner.execute(found[0][3])
    assert _signing_findings(signed, "users_grant_trigger_disabled") == []
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(text("UPDATE rls_tenancy.users SET roles = '{admin}' WHERE id = :me"), {"me": signed.user_a})
        conn.rollback()


@pytest.mark.rls_signing
def test_a_grant_is_used_up_by_its_write_and_good_for_its_user_only(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """Copied by SQL in the admin's transaction, a grant would undo a demotion from the intern's later."""
    promote = text("UPDATE rls_tenancy.users SET roles = '{admin,projects:read}' WHERE id = :id")
    with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
        grant_user_write(conn, user_id=signed.user_a, roles=["admin", "projects:read"])
        conn.execute(promote, {"id": signed.user_a})
        assert conn.execute(text("SELECT current_setting('app.grants', true)")).scalar() == ""  # used up
        grant_user_write(conn, user_id=signed.user_a, roles=["admin", "projects:read"])  # one left unused
        kept = conn.execute(text("SELECT current_setting('app.grants', true)")).scalar()
        conn.rollback()
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:  # the same backend
        conn.execute(text("SELECT set_config('app.grants', :g, true)"), {"g": kept})
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(promote, {"id": signed.user_a})
        conn.rollback()


@pytest.mark.rls_signing
def test_injected_sql_cannot_delete_a_user_of_its_tenant(signed: Signed, signed_engine: Engine, admin_a: int) -> None:
    """Deleted, the tenant's administrator would be gone with its tokens, by SQL run for an intern."""
    delete = text("DELETE FROM rls_tenancy.users WHERE id = :id")
    refused = pytest.raises(DBAPIError, match="deleted only with the application's grant")
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        for victim in (admin_a, signed.user_a):
            with refused, conn.begin_nested():
                conn.execute(delete, {"id": victim})
        grant_user_delete(conn, signed.user_a)  # the app's grant for another user than the one SQL deletes
        with refused:
            conn.execute(delete, {"id": admin_a})
        conn.rollback()
    with signed.owner() as owner:
        left = owner.execute("SELECT count(*) FROM rls_tenancy.users WHERE id = %s", (admin_a,)).fetchone()
    assert left == (1,)


def test_the_app_deletes_users_with_its_grants(signed: Signed, signed_engine: Engine) -> None:
    """``session.delete(user)`` adds its grant; a Core ``DELETE`` after ``grant_user_delete()`` of that user."""
    with as_tenant(signed.a, user=signed.user_a), Session(signed_engine) as session, session.begin():
        users = [User(email=f"leaving-{n}@signed.example") for n in range(2)]
        session.add_all(users)
        session.flush()
        ids = [user.id for user in users]
    with as_tenant(signed.a, user=signed.user_a), Session(signed_engine) as session, session.begin():
        session.delete(session.get_one(User, ids[0]))
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        grant_user_delete(conn, ids[1])
        assert conn.execute(text("DELETE FROM rls_tenancy.users WHERE id = :id"), {"id": ids[1]}).rowcount == 1
        conn.commit()
    with signed.owner() as owner:
        left = owner.execute("SELECT count(*) FROM rls_tenancy.users WHERE id = ANY(%s)", (ids,)).fetchone()
    assert left == (0,)


@pytest.mark.rls_signing
def test_a_new_users_grant_puts_its_values_under_a_drawn_id_only(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """SQL that deletes its own user could otherwise re-insert a granted administrator under its own id."""
    with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
        grant_user_write(conn, email="invited@signed.example", roles=["admin"])  # the app, about to insert
        grant_user_delete(conn, signed.user_a)  # a deletion the app granted: the attack begins after it
        conn.execute(text("DELETE FROM rls_tenancy.users WHERE id = :me"), {"me": signed.user_a})
        with pytest.raises(DBAPIError, match="drawn by its INSERT"):
            conn.execute(
                text(
                    "INSERT INTO rls_tenancy.users (id, tenant_id, email, roles)"
                    " VALUES (:me, rls_tenancy.current_tenant_id(), 'invited@signed.example', '{admin}')"
                ),
                {"me": signed.user_a},
            )
        conn.rollback()


def test_the_model_rewrites_a_value_unchanged_and_the_bypass_reads_a_hash(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """After a commit expires it, the same email or roles written again is no change: no grant names it so."""
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session:
        user = User(email="same@signed.example", roles=["projects:read"])
        user.set_password("kept")
        session.add(user)
        session.commit()  # expires every attribute
        user.email = "same@signed.example"
        user.roles = ["projects:read"]
        session.commit()
        created = user.id
    bypass = create_engine(signed.db.bypass_url)
    try:
        with Session(bypass) as session:
            found = session.get(User, created)
            assert found is not None and found.check_password("kept")
    finally:
        bypass.dispose()


@contextmanager
def _grant_statements(engine: Engine) -> Iterator[list[str]]:
    """The statements that add grants, as the engine sends them inside the block."""
    sent: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "app.grants" in statement:
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_flush_of_several_users_sends_their_grants_in_one_statement(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    with _grant_statements(signed_engine) as sent:
        with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
            session.add_all(User(email=f"batch-{n}@signed.example", roles=["projects:read"]) for n in range(3))
            session.flush()
            assert len(sent) == 1
            session.rollback()


_MEMBERSHIPS = """
CREATE TABLE public.memberships (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    user_id bigint NOT NULL,
    admin boolean NOT NULL DEFAULT false
);
SELECT rls_tenancy.enable_tenant_isolation('public.memberships');
CREATE FUNCTION public.memberships_granted() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT rls_tenancy.granted('app.memberships|' || NEW.user_id || '|' || NEW.admin) THEN
        RAISE EXCEPTION 'memberships are written with the application''s grant' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER memberships_granted BEFORE INSERT OR UPDATE ON public.memberships
    FOR EACH ROW EXECUTE FUNCTION public.memberships_granted();
"""


@pytest.mark.rls_signing
def test_an_apps_own_table_of_rights_takes_grants_the_same_way(signed: Signed, signed_engine: Engine) -> None:
    """What signed-context.md tells an app whose own tables say who may do what."""
    with signed.owner() as owner:
        owner.execute(_MEMBERSHIPS)
    insert = text(
        "INSERT INTO memberships (tenant_id, user_id, admin) VALUES (rls_tenancy.current_tenant_id(), :u, true)"
    )
    try:
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
            with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
                conn.execute(insert, {"u": signed.user_a})  # SQL run for the user, making itself an admin
            grants.add(conn, f"app.memberships|{signed.user_a}|true")  # the application deciding it
            conn.execute(insert, {"u": signed.user_a})
            conn.rollback()
    finally:
        with signed.owner() as owner:
            owner.execute("DROP TABLE public.memberships; DROP FUNCTION public.memberships_granted()")


def test_the_docs_way_of_writing_users_yourself(signed: Signed, signed_engine: Engine, admin_a: int) -> None:
    """signed-context.md, "Writing users yourself", as it reads."""
    with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
        connection = session.connection()
        grant_user_write(connection, email="new@example.com", roles=["projects:read"])
        session.execute(insert(User).values(email="new@example.com", roles=["projects:read"]))
        grant_user_write(connection, user_id=signed.user_a, roles=["admin"])
        session.execute(update(User).where(User.id == signed.user_a).values(roles=["admin"]))
        written = session.execute(text("SELECT email, roles FROM rls_tenancy.users ORDER BY id")).all()
        assert [tuple(row) for row in written][-1] == ("new@example.com", ["projects:read"])
        assert session.execute(
            text("SELECT roles FROM rls_tenancy.users WHERE id = :id"), {"id": signed.user_a}
        ).scalar() == ["admin"]
        session.rollback()


def test_orm_bulk_statements_on_users_add_their_grants(signed: Signed, signed_engine: Engine, admin_a: int) -> None:
    with _grant_statements(signed_engine) as sent:
        with as_tenant(signed.a, user=admin_a), Session(signed_engine) as session, session.begin():
            rows = [{"email": f"bulk-{n}@signed.example", "roles": ["projects:read"]} for n in range(3)]
            session.execute(insert(User), rows)
            session.execute(
                update(User), [{"id": signed.user_a, "roles": ["admin"]}, {"id": admin_a, "language": "de"}]
            )
            emails = session.execute(text("SELECT count(*) FROM rls_tenancy.users WHERE email LIKE 'bulk-%'")).scalar()
            roles = session.execute(text("SELECT roles FROM rls_tenancy.users WHERE id = :id"), {"id": signed.user_a})
            assert (emails, roles.scalar(), len(sent)) == (3, ["admin"], 2)
            session.rollback()


def test_the_doctor_reports_password_hashes_readable_through_a_role_the_app_role_becomes_or_public(
    signed: Signed,
) -> None:
    """The app role is NOINHERIT: a grant to a role it can SET ROLE to is its own, and PUBLIC's is everyone's."""
    name = f"hash_reader_{secrets.token_hex(4)}"
    member = sql.Identifier(name)
    app = sql.Identifier(signed.db.roles.app)
    with signed.owner() as owner:
        owner.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(member))
    try:
        with signed.owner() as owner:
            owner.execute(sql.SQL("GRANT {} TO {}").format(member, app))
            owner.execute(sql.SQL("GRANT USAGE ON SCHEMA rls_tenancy TO {}").format(member))
            owner.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA rls_tenancy TO {}").format(member))
            owner.execute(sql.SQL("GRANT SELECT (tenant_id, password_hash) ON rls_tenancy.users TO {}").format(member))
            owner.execute("GRANT SELECT (password_hash) ON rls_tenancy.users TO PUBLIC")
        read = "SELECT count(*) FROM (SELECT password_hash FROM rls_tenancy.users) AS hashes"
        as_member = sql.SQL("SET LOCAL ROLE {}").format(member)
        with signed.connect() as conn:  # what it lets through: as the role, and as itself through PUBLIC
            _bind(conn, signed.a, signed.user_a, signed.key.proof(signed.a, signed.user_a, pid=conn.info.backend_pid))
            assert conn.execute(read).fetchone() == conn.execute("SELECT count(*) FROM rls_tenancy.users").fetchone()
            conn.execute(as_member)
            assert conn.execute(read).fetchone() == conn.execute("SELECT count(*) FROM rls_tenancy.users").fetchone()
            conn.rollback()
        found = _signing_findings(signed, "password_hash_readable")
        assert [row[:3] for row in found] == [("error", "password_hash_readable", "rls_tenancy.users password_hash")]
        assert "PUBLIC" in found[0][3] and name in found[0][3]
        with signed.owner() as owner:
            owner.execute(found[0][3])
        assert _signing_findings(signed, "password_hash_readable") == []
        for become in (None, as_member):
            with signed.connect() as conn:
                _bind(
                    conn, signed.a, signed.user_a, signed.key.proof(signed.a, signed.user_a, pid=conn.info.backend_pid)
                )
                if become is not None:
                    conn.execute(become)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(read)
                conn.rollback()
    finally:
        with signed.owner() as owner:
            owner.execute("REVOKE SELECT (password_hash) ON rls_tenancy.users FROM PUBLIC")
            owner.execute(sql.SQL("DROP OWNED BY {}").format(member))
            owner.execute(sql.SQL("DROP ROLE {}").format(member))


def test_the_doctor_reports_a_view_showing_password_hashes_and_its_fix_closes_it(signed: Signed) -> None:
    """A view reads with its owner's rights: the owner's view of the column shows the bound tenant's hashes."""
    view = sql.Identifier("public", "users_with_hashes")
    with signed.owner() as owner:
        owner.execute(sql.SQL("CREATE VIEW {} AS SELECT id, email, password_hash FROM rls_tenancy.users").format(view))
        owner.execute(sql.SQL("ALTER VIEW {} OWNER TO {}").format(view, sql.Identifier(signed.db.roles.owner)))
        owner.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, sql.Identifier(signed.db.roles.app)))
    read = sql.SQL("SELECT count(*) FROM (SELECT password_hash FROM {}) AS hashes").format(view)
    try:
        with signed.connect() as conn:  # what it lets through
            _bind(conn, signed.a, signed.user_a, signed.key.proof(signed.a, signed.user_a, pid=conn.info.backend_pid))
            assert conn.execute(read).fetchone() == conn.execute("SELECT count(*) FROM rls_tenancy.users").fetchone()
            conn.rollback()
        found = _signing_findings(signed, "password_hash_readable")
        assert [(severity, check, name.removeprefix("public.")) for severity, check, name, _ in found] == [
            ("error", "password_hash_readable", "users_with_hashes")
        ]
        with signed.owner() as owner:
            owner.execute(found[0][3])
        assert _signing_findings(signed, "password_hash_readable") == []
        with signed.connect() as conn:
            _bind(conn, signed.a, signed.user_a, signed.key.proof(signed.a, signed.user_a, pid=conn.info.backend_pid))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(read)
            conn.rollback()
    finally:
        with signed.owner() as owner:
            owner.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))


def test_the_doctor_reports_the_users_id_sequence_settable_and_its_fix_closes_it(
    signed: Signed, signed_engine: Engine
) -> None:
    """setval() would make the id SQL chose look drawn: a granted administrator back under SQL's own user's id."""
    with signed.owner() as owner:
        row = owner.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = pg_get_serial_sequence('rls_tenancy.users', 'id')::regclass"
        ).fetchone()
        assert row is not None
        sequence = sql.Identifier(str(row[0]), str(row[1]))
        owner.execute(
            sql.SQL("GRANT UPDATE ON SEQUENCE {} TO {}").format(sequence, sql.Identifier(signed.db.roles.app))
        )
    reinsert = text(
        "INSERT INTO rls_tenancy.users (id, tenant_id, email, roles)"
        " VALUES (:me, rls_tenancy.current_tenant_id(), 'invited@signed.example', '{admin}') RETURNING roles"
    )
    set_drawn = text("SELECT setval(pg_get_serial_sequence('rls_tenancy.users', 'id'), :me)")
    try:
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:  # what it lets through
            grant_user_write(conn, email="invited@signed.example", roles=["admin"])
            grant_user_delete(conn, signed.user_a)  # a deletion the app granted: the attack begins after it
            conn.execute(text("DELETE FROM rls_tenancy.users WHERE id = :me"), {"me": signed.user_a})
            conn.execute(set_drawn, {"me": signed.user_a})
            assert conn.execute(reinsert, {"me": signed.user_a}).scalar_one() == ["admin"]
            conn.rollback()
        signed_engine.dispose()  # that backend keeps setval()'s id as its last drawn until its session is reset
        found = _signing_findings(signed, "users_id_sequence_settable")
        assert [row[:2] for row in found] == [("error", "users_id_sequence_settable")]
        with signed.owner() as owner:
            owner.execute(found[0][3])
        assert _signing_findings(signed, "users_id_sequence_settable") == []
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
            grant_user_write(conn, email="invited@signed.example", roles=["admin"])
            grant_user_delete(conn, signed.user_a)  # a deletion the app granted: the attack begins after it
            conn.execute(text("DELETE FROM rls_tenancy.users WHERE id = :me"), {"me": signed.user_a})
            with pytest.raises(DBAPIError, match="permission denied"), conn.begin_nested():
                conn.execute(set_drawn, {"me": signed.user_a})
            with pytest.raises(DBAPIError, match="drawn by its INSERT"):
                conn.execute(reinsert, {"me": signed.user_a})
            conn.rollback()
    finally:
        with signed.owner() as owner:
            owner.execute(
                sql.SQL("REVOKE UPDATE ON SEQUENCE {} FROM {}").format(sequence, sql.Identifier(signed.db.roles.app))
            )


def test_the_doctor_reports_signing_switched_off_by_hand_with_the_policies_left_signed(
    signed: Signed, signed_engine: Engine
) -> None:
    """required = false by hand: the apps keep working signed, nothing checks the grants, the doctor only warned."""
    with signed.owner() as owner:
        owner.execute("UPDATE rls_tenancy.context_signing SET required = false")
    raise_own = text("UPDATE rls_tenancy.users SET roles = '{admin}' WHERE id = :me RETURNING roles")
    try:
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:  # what it lets through
            assert conn.execute(raise_own, {"me": signed.user_a}).scalar_one() == ["admin"]
            conn.rollback()
        found = _signing_findings(signed, "context_signing_half_off")
        assert [row[:3] for row in found] == [("error", "context_signing_half_off", "rls_tenancy.context_signing")]
        assert "require_signed_context(true)" in found[0][3] and "(false)" in found[0][3]
        with signed.owner() as owner:
            owner.execute(found[0][3])
        assert _signing_findings(signed, "context_signing_half_off", "context_not_signed") == []
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
            with pytest.raises(DBAPIError, match="application's grant"):
                conn.execute(raise_own, {"me": signed.user_a})
            conn.rollback()
    finally:
        with signed.owner() as owner:
            owner.execute("SELECT rls_tenancy.require_signed_context(true)")


def test_signed_query_text_granted_back_is_an_error(signed: Signed) -> None:
    """A SET LOCAL text carries a proof: where signing is required, reading other sessions' texts is an error."""
    grant = "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO PUBLIC"
    with signed.owner() as owner:
        try:
            owner.execute(grant)
            rows = owner.execute(
                "SELECT severity, fix FROM rls_tenancy.findings() WHERE check_name = 'app_role_cross_tenant_function'"
                " AND object_name = 'pg_stat_get_backend_activity(integer)'"
            ).fetchall()
            assert [row[0] for row in rows] == ["error"]
            owner.execute(str(rows[0][1]))
            still = owner.execute(
                "SELECT count(*) FROM rls_tenancy.findings()"
                " WHERE object_name = 'pg_stat_get_backend_activity(integer)'"
            ).fetchone()
            assert still == (0,)
        finally:
            owner.rollback()


@pytest.mark.parametrize("trigger", ["feature_overrides_write_granted", "feature_overrides_set_by"])
def test_the_doctor_reports_an_overrides_guard_disabled_and_its_fix_restores_it(
    signed: Signed, signed_engine: Engine, trigger: str
) -> None:
    """Without them, SQL run for a user writes overrides kept for administrators, under any author's name."""
    write = text(
        "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled, set_by)"
        " VALUES (rls_tenancy.current_tenant_id(), 'doctor-guard', '*', true, :author) RETURNING set_by"
    )

    def written_by(author: int) -> object:
        with as_tenant(signed.a, user=signed.user_a), signed_engine.connect() as conn:
            try:
                return conn.execute(write, {"author": author}).scalar_one()
            except DBAPIError as refused:
                return getattr(refused.orig, "sqlstate", None)
            finally:
                conn.rollback()

    before = written_by(signed.user_a + 1)
    with signed.owner() as owner:
        owner.execute(
            sql.SQL("ALTER TABLE rls_tenancy.feature_overrides DISABLE TRIGGER {}").format(sql.Identifier(trigger))
        )
    found = _signing_findings(signed, "overrides_grant_trigger_disabled")
    assert [row[:3] for row in found] == [
        ("error", "overrides_grant_trigger_disabled", f"rls_tenancy.feature_overrides {trigger}")
    ]
    if trigger == "feature_overrides_write_granted":
        assert written_by(signed.user_a) == signed.user_a  # written without the application's grant
    with signed.owner() as owner:
        owner.execute(found[0][3])
    assert _signing_findings(signed, "overrides_grant_trigger_disabled") == []
    assert written_by(signed.user_a + 1) == before == "42501"  # refused again, as before


class _AppBase(DeclarativeBase):
    pass


#: An app's own model of projects, in a module named as most apps' are ("app.models"). The unit of work
#: writes mappers in the order of their "module.Class" names, read as they are mapped: this one before
#: ``rls_tenancy.identity.users.User``, so its statement runs after a flush's grants are added and before
#: the user's.
_AppProject: Any = type(
    "Project",
    (_AppBase,),
    {
        "__module__": "app.models",
        "__tablename__": "projects",
        "id": mapped_column(BigInteger, primary_key=True),
        "tenant_id": mapped_column(BigInteger),
        "name": mapped_column(Text),
    },
)


def _swap_copying_grants(conn: Connection, starting: str) -> None:
    """Replace psycopg's prepared statement starting with ``starting`` by one that also copies ``app.grants``.

    What SQL run for a user can do to an app's own statement that psycopg
    prepared (at its fifth run): the copies collect in the session setting
    ``x.loot``.
    """
    name, statement, types = conn.execute(
        text(
            "SELECT name, statement, array_to_string(parameter_types::text[], ',') FROM pg_prepared_statements"
            " WHERE NOT from_sql AND starts_with(statement, :starting)"
        ),
        {"starting": starting},
    ).one()
    copying = (
        "WITH loot AS (SELECT pg_catalog.set_config('x.loot', pg_catalog.concat_ws(',',"
        " NULLIF(pg_catalog.current_setting('x.loot', true), ''),"
        " NULLIF(pg_catalog.current_setting('app.grants', true), '')), false) AS copied) "
    )
    swapped = statement.replace("SET name=$1", "SET name=$1 || (SELECT pg_catalog.left(copied, 0) FROM loot)", 1)
    assert swapped != statement, statement
    conn.execute(text(f"DEALLOCATE {name}"))
    conn.execute(text(f"PREPARE {name} ({types}) AS {copying}{swapped}"))


_PROMOTE = text("UPDATE rls_tenancy.users SET roles = '{admin,projects:read}' WHERE id = :id")
_REPLAY = text("SELECT set_config('app.grants', current_setting('x.loot', true), true)")


def _replay_refused(
    engine: Engine, signed: Signed, admin: int, replay: TextClause, values: dict[str, object], write: TextClause
) -> None:
    """In a new transaction of ``admin``'s, ``replay`` puts a copied grant back: ``write`` is still refused."""
    with as_tenant(signed.a, user=admin), engine.connect() as conn:
        conn.execute(replay, values)
        assert conn.execute(text("SELECT current_setting('app.grants', true)")).scalar()  # a copy was there to replay
        with pytest.raises(DBAPIError, match="application's grant"):
            conn.execute(write, {"id": signed.user_a})
        conn.rollback()


@pytest.mark.rls_signing
def test_a_grant_sql_copied_in_the_flush_it_was_made_for_is_worth_nothing_later(signed: Signed, admin_a: int) -> None:
    """The admin promotes the intern and renames a project in one flush, then demotes the intern.

    SQL run for the admin swapped the app's prepared ``UPDATE projects``
    (written before users in that flush) for one that copies the pending
    grants. Replayed in a later transaction of the admin's, on the same
    backend within a minute, the promotion's grant would undo the demotion.
    """
    engine = bind_engine(create_engine(signed.db.app_url, pool_size=1, max_overflow=0), context_key=signed.key)
    order: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: order.append(str(args[2]).split(" ", 2)[1]))

    def flush(name: str, roles: list[str] | None = None) -> None:
        with as_tenant(signed.a, user=admin_a), Session(engine) as session:
            project = session.scalars(select(_AppProject).order_by(_AppProject.id)).first()
            intern = session.get(User, signed.user_a)
            assert project is not None and intern is not None
            project.name = name  # one flush at the commit: the project renamed, and the intern's roles
            if roles is not None:
                intern.roles = roles
            order.clear()
            session.commit()

    try:
        for number in range(6):
            flush(f"a-one {number}")  # prepared by psycopg from its fifth run
        with as_tenant(signed.a, user=admin_a), engine.connect() as conn:
            _swap_copying_grants(conn, "UPDATE projects")
            conn.commit()
        flush("a-one promoted", ["admin", "projects:read"])
        assert order[-2:] == ["projects", "rls_tenancy.users"]  # the swapped statement ran while the grant was pending
        flush("a-one demoted", ["projects:read"])
        _replay_refused(engine, signed, admin_a, _REPLAY, {}, _PROMOTE)  # the copy, in a later transaction
    finally:
        engine.dispose()
        with signed.owner() as owner:
            owner.execute("UPDATE projects SET name = 'a-one' WHERE name LIKE 'a-one %'")
            owner.execute("UPDATE rls_tenancy.users SET roles = '{projects:read}' WHERE id = %s", (signed.user_a,))
    with signed.owner() as owner:
        assert owner.execute("SELECT roles FROM rls_tenancy.users WHERE id = %s", (signed.user_a,)).fetchone() == (
            ["projects:read"],
        )


@pytest.mark.rls_signing
def test_a_grant_whose_write_sql_made_fail_is_worth_nothing_later(
    signed: Signed, signed_engine: Engine, admin_a: int
) -> None:
    """SQL copies the pending grant and spends it, so the app's write fails and the app goes on without it.

    Unused, the copy would make that write later, once the app had decided otherwise.
    """
    try:
        with as_tenant(signed.a, user=admin_a), signed_engine.connect() as conn:
            grant_user_write(conn, user_id=signed.user_a, roles=["admin", "projects:read"])
            conn.execute(  # SQL run for the admin, between the grant and its write
                text(
                    "SELECT set_config('x.loot', current_setting('app.grants'), false),"
                    " set_config('app.grants', '', true)"
                )
            )
            with pytest.raises(DBAPIError, match="application's grant"), conn.begin_nested():
                conn.execute(_PROMOTE, {"id": signed.user_a})
            conn.commit()  # the app carries on without the promotion
        _replay_refused(signed_engine, signed, admin_a, _REPLAY, {}, _PROMOTE)  # the same backend, seconds later
    finally:
        with signed.owner() as owner:
            owner.execute("UPDATE rls_tenancy.users SET roles = '{projects:read}' WHERE id = %s", (signed.user_a,))


@pytest.mark.rls_signing
def test_behind_pgbouncer_a_grant_is_made_for_the_servers_backend_and_transaction(signed: Signed, admin_a: int) -> None:
    """The proof names no backend there; the grant's mark, read back from the binding, names the server's.

    A copy taken out of the transaction (by any channel: each transaction
    there begins with the reset) is worth nothing in the next one, on the
    same server session.
    """
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    logins = {str(signed.db.app_url.username): str(signed.db.app_url.password)}
    with pgbouncer(signed.db.superuser_url, logins, server_connections=1) as bouncer:
        engine = bind_engine(create_engine(bouncer.url(signed.db.app_url), pool_size=2), context_key=signed.key)
        try:
            with as_tenant(signed.a, user=admin_a), engine.connect() as conn:
                grant_user_write(conn, user_id=signed.user_a, roles=["projects:read", "projects:write"])
                kept = conn.execute(text("SELECT current_setting('app.grants')")).scalar()
                conn.execute(_WIDEN, {"id": signed.user_a})
                conn.commit()
            assert kept
            replay = text("SELECT set_config('app.grants', :kept, true)")
            _replay_refused(engine, signed, admin_a, replay, {"kept": kept}, _WIDEN)  # the one server session
        finally:
            engine.dispose()
            with signed.owner() as owner:
                owner.execute("UPDATE rls_tenancy.users SET roles = '{projects:read}' WHERE id = %s", (signed.user_a,))


_WIDEN = text("UPDATE rls_tenancy.users SET roles = '{projects:read,projects:write}' WHERE id = :id")


def test_a_grant_made_with_either_slots_key_holds_while_both_are_installed(signed: Signed, admin_a: int) -> None:
    """Rotation: apps deployed with the new key grant writes beside those still on the old one."""
    new = ContextKey.generate(2)
    with signed.owner() as owner:
        owner.execute("SELECT rls_tenancy.install_context_key(2, %s)", (new.key,))
    engines = [bind_engine(create_engine(signed.db.app_url), context_key=key) for key in (new, signed.key)]
    try:
        for engine in engines:
            with as_tenant(signed.a, user=admin_a), engine.connect() as conn:
                grant_user_write(conn, user_id=signed.user_a, roles=["projects:read", "projects:write"])
                assert conn.execute(_WIDEN, {"id": signed.user_a}).rowcount == 1
                conn.rollback()
    finally:
        for engine in engines:
            engine.dispose()
        with signed.owner() as owner:
            owner.execute("SELECT rls_tenancy.retire_context_key(2)")
