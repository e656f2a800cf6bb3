"""A signed tenant context, checked by PostgreSQL: SQL that sets the tenant itself gets none.

A database of its own, signing required (``require_signed_context(true)``),
a key in slot 1. Everything runs as the application role on plain psycopg
connections, setting the three settings as SQL of its choosing would: the
policies must show a tenant's rows only beside a proof made with the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from alembic.config import Config
from sqlalchemy.engine import URL

from rls_tenancy.context_key import ContextKey
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import tenancy_database
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
def signed(rls_postgres_url: URL) -> Iterator[Signed]:
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
                "INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (%s, 'a@signed.example') RETURNING id",
                (ids[0],),
            ).fetchone()
            assert user is not None
            conn.execute("SELECT rls_tenancy.install_context_key(1, %s)", (key.key,))
            conn.execute("SELECT rls_tenancy.require_signed_context(true)")
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


@pytest.mark.parametrize("session_wide", [False, True], ids=["local", "session-wide"])
def test_a_bare_setting_is_no_tenant(signed: Signed, session_wide: bool) -> None:
    with signed.connect() as conn:
        conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (str(signed.b), not session_wide))
        assert _names(conn) == set()
        assert conn.execute("SELECT rls_tenancy.current_tenant_id()").fetchone() == (None,)
        # The default tenant is the verified one (none), and naming B is refused too.
        for statement in (
            "INSERT INTO projects (name) VALUES ('planted')",
            f"INSERT INTO projects (tenant_id, name) VALUES ({signed.b}, 'planted')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(statement)
            conn.rollback()
            conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (str(signed.b), not session_wide))


def test_a_proof_of_one_tenant_or_user_proves_no_other(signed: Signed) -> None:
    proof = signed.key.proof(signed.a, signed.user_a)
    with signed.connect() as conn:
        for tenant, user in ((signed.b, signed.user_a), (signed.a, signed.user_a + 1), (signed.a, None)):
            _bind(conn, tenant, user, proof)
            assert _names(conn) == set()
            assert conn.execute("SELECT rls_tenancy.current_user_id()").fetchone() == (None,)
            conn.rollback()


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


def test_the_check_runs_once_per_statement(signed: Signed) -> None:
    with signed.connect() as conn:
        _bind(conn, signed.a, None, signed.key.proof(signed.a, None))
        explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, VERBOSE) SELECT * FROM projects"
        plan = [str(row[0]).strip() for row in conn.execute(explain)]
        initplan = next(number for number, line in enumerate(plan) if line.startswith("InitPlan"))
        assert plan[initplan + 1] == "->  Result (actual rows=1 loops=1)", plan
        assert plan[initplan + 2] == "Output: rls_tenancy.verified_tenant()", plan
        assert "rows=2 loops=1" in plan[0], plan  # the scan: A's two projects


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
