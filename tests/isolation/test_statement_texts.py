"""pg_stat_statements on a server that preloads it, as managed services do: no tenant replays another's proof.

An engine bound with ``set_local=True`` in a signed database sends each request's binding as SET LOCAL
statements, whose literals (tenant, user, the proof naming its backend) pg_stat_statements keeps verbatim.
Where the view is readable by the application role, SQL run for tenant A on the backend B's request used reads
B's proof there and replays it within its lifetime. Created after the migration, the extension is open (the
doctor's ``query_text_readable``, tests/doctor/test_query_text.py) until the specification runs again, which
closes it; monitoring (``pg_monitor``) still reads every statement.

The server is one of its own, from local binaries, restarted with ``shared_preload_libraries``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, tenancy_database
from rls_tenancy.testing.server import find_bindir, local_cluster
from tests.conftest import DEMO_ALEMBIC_INI, ddl

SKIPPED = "*** the pg_stat_statements replay test is SKIPPED, so not verified: {} ***"
# The proof's literal in the binding's SET LOCAL statement, as pg_stat_statements keeps it.
PROOF = re.compile(r"context_proof\"? = '([^']+)'")
STATEMENTS = text("SELECT query FROM pg_stat_statements")


@pytest.fixture(scope="module")
def preloading_server() -> Iterator[URL]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(SKIPPED.format("no local PostgreSQL binaries to start a server that preloads pg_stat_statements"))
    with local_cluster(bindir) as cluster:
        admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                available = "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
                if not conn.execute(text(available)).scalar_one():
                    pytest.skip(SKIPPED.format(f"no pg_stat_statements.control in the share directory of {bindir}"))
                conn.exec_driver_sql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            admin.dispose()
        cluster.restart()
        yield cluster.url


def _request(engine: Engine, tenant: int) -> None:
    with as_tenant(tenant), engine.connect() as conn:
        conn.execute(text("SELECT name FROM projects")).all()
        conn.commit()


def _replay(conn: Connection, tenant: int, proofs: set[str]) -> list[str]:
    """What SQL run on ``conn`` reads of ``tenant``'s projects with each proof in ``proofs``."""
    stolen: list[str] = []
    for proof in proofs:
        savepoint = conn.begin_nested()  # SQLAlchemy's: a ROLLBACK TO sent as SQL is refused as ending the transaction
        conn.execute(
            text(
                "SELECT set_config('app.current_tenant', :t, true), set_config('app.current_user_id', '', true),"
                " set_config('app.context_proof', :p, true)"
            ),
            {"t": str(tenant), "p": proof},
        )
        stolen += conn.execute(text("SELECT name FROM projects")).scalars().all()
        savepoint.rollback()
    return stolen


def _specification(owner: Engine, db: TenancyDatabase) -> None:
    with owner.begin() as conn:
        for key, value in db.roles.settings().items():
            conn.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})
        for name in install_scripts():
            conn.exec_driver_sql(sql_script(name), execution_options={"no_parameters": True})


def test_no_tenant_replays_another_tenants_proof_read_from_pg_stat_statements(preloading_server: URL) -> None:
    key = ContextKey.generate(1)
    monitor = f"statements_monitor_{secrets.token_hex(4)}"
    with tenancy_database(preloading_server, alembic_config=Config(DEMO_ALEMBIC_INI), signed=False) as db:
        owner = create_engine(db.superuser_url)
        with owner.begin() as conn:
            conn.execute(text("CREATE EXTENSION pg_stat_statements"))  # after the migration
            conn.exec_driver_sql(ddl("CREATE ROLE {} NOLOGIN IN ROLE pg_monitor", monitor))
            insert = text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, :s) RETURNING id")
            a, b = (conn.execute(insert, {"s": f"{label}-{secrets.token_hex(3)}"}).scalar_one() for label in "ab")
            conn.execute(text("INSERT INTO projects (tenant_id, name) VALUES (:b, 'b-secret')"), {"b": b})
        require_signing(db.superuser_url, key)
        engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0), context_key=key, set_local=True)
        try:
            # The control: open as the extension made it, A reads B's proof and B's rows with it.
            _request(engine, b)
            with as_tenant(a), engine.connect() as conn:
                proofs = set(PROOF.findall(" ".join(conn.execute(STATEMENTS).scalars())))
                assert proofs, "B's binding is in pg_stat_statements"
                assert "b-secret" in _replay(conn, b, proofs)
                conn.rollback()

            _specification(owner, db)  # what every later revision does first

            _request(engine, b)
            with as_tenant(a), engine.connect() as conn, pytest.raises(DBAPIError) as refused:
                conn.execute(STATEMENTS).all()
            assert getattr(refused.value.orig, "sqlstate", None) == "42501"
            with owner.connect() as conn:  # monitoring still reads every statement, B's binding included
                conn.exec_driver_sql(ddl("SET ROLE {}", monitor))
                assert PROOF.findall(" ".join(conn.execute(STATEMENTS).scalars()))
                conn.rollback()
        finally:
            engine.dispose()
            owner.dispose()
