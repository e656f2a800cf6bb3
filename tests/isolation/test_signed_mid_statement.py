"""Signed: a setting changed partway through a statement reaches no other tenant's rows.

The proof is checked once per statement (an InitPlan), while the condition
on ``app.current_tenant`` is read again for every row of a scan and at every
rescan. SQL that lets the check pass under its own binding and then calls
``set_config('app.current_tenant', <B>, true)`` inside the same statement
read and wrote B's rows while the signed policies only asked whether the
proof held (``(SELECT verified_tenant()) IS NOT NULL``). They now compare
each row's tenant with the tenant the proof proved.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy import ContextKey, as_tenant, bind_engine
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, tenancy_database
from tests.conftest import DEMO_ALEMBIC_INI

# Row 2 of the outer side switches the setting to B, after row 1 ran the proof's check as A.
SWITCH_ON_SECOND = sql.SQL(
    "(SELECT i, CASE WHEN i = 2 THEN pg_catalog.set_config('app.current_tenant', %(b)s, true) END AS x"
    " FROM pg_catalog.generate_series(1, 2) AS i OFFSET 0) AS o"
)
Signed = tuple[TenancyDatabase, ContextKey, int, int]


@pytest.fixture(scope="module")
def signed(rls_postgres_url: URL) -> Iterator[Signed]:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI), signed=False) as db:
        key = ContextKey.generate(1)
        owner = create_engine(db.superuser_url)
        with owner.begin() as conn:
            ids = []
            for label in ("a", "b"):
                made = conn.execute(
                    text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, :s) RETURNING id"),
                    {"s": f"mid-{label}"},
                )
                tenant = made.scalar_one()
                ids.append(tenant)
                conn.execute(
                    text("INSERT INTO projects (tenant_id, name) VALUES (:t, :one), (:t, :two)"),
                    {"t": tenant, "one": f"{label}-one", "two": f"{label}-two"},
                )
                conn.execute(
                    text("INSERT INTO rls_tenancy.users (tenant_id, email, password_hash) VALUES (:t, :e, :h)"),
                    {"t": tenant, "e": f"boss@{label}.example", "h": f"hash-of-{label}"},
                )
        owner.dispose()
        require_signing(db.superuser_url, key)
        yield db, key, ids[0], ids[1]


@pytest.fixture()
def engine(signed: Signed) -> Iterator[Engine]:
    db, key, _, _ = signed
    made = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0), context_key=key)
    yield made
    made.dispose()


@pytest.mark.parametrize(
    ("schema", "table", "column"),
    [("public", "projects", "tenant_id"), ("rls_tenancy", "users", "tenant_id"), ("rls_tenancy", "tenants", "id")],
)
def test_a_setting_changed_mid_statement_reads_no_other_tenants_rows(
    signed: Signed, engine: Engine, schema: str, table: str, column: str
) -> None:
    _, _, a, b = signed
    # The LATERAL side is scanned again for each outer row, reading the setting again.
    query = sql.SQL(
        "SELECT t.tid FROM {switch}, LATERAL (SELECT {column} AS tid FROM {table}"
        " WHERE o.x IS NULL OR o.x IS NOT NULL OFFSET 0) AS t"
    ).format(switch=SWITCH_ON_SECOND, column=sql.Identifier(column), table=sql.Identifier(schema, table))
    with as_tenant(a), engine.connect() as conn:
        seen = set(conn.exec_driver_sql(query.as_string(None), {"b": str(b)}).scalars())
        assert conn.execute(text("SELECT current_setting('app.current_tenant')")).scalar_one() == str(b)  # switched
        conn.rollback()
    assert seen == {a}  # it was {a, b}


def test_a_setting_changed_by_a_sequential_scans_own_target_list_reads_nothing_of_b(
    signed: Signed, engine: Engine
) -> None:
    _, _, a, b = signed
    with as_tenant(a), engine.connect() as conn:
        conn.execute(text("SET LOCAL enable_indexscan = off"))
        conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        names = set(
            conn.execute(
                text("SELECT name, set_config('app.current_tenant', :b, true) FROM projects"), {"b": str(b)}
            ).scalars()
        )
        conn.rollback()
    assert names and names <= {"a-one", "a-two"}  # it held B's names too (A's after the switch fail the setting)


def test_a_setting_changed_mid_statement_writes_no_other_tenants_rows(signed: Signed, engine: Engine) -> None:
    db, _, a, b = signed
    insert = sql.SQL(
        "INSERT INTO projects (tenant_id, name)"
        " SELECT CASE WHEN o.i = 1 THEN %(a)s ELSE %(bb)s END, 'planted-' || o.i FROM {switch}"
    ).format(switch=SWITCH_ON_SECOND)
    with as_tenant(a), engine.connect() as conn:
        with pytest.raises(Exception, match="row-level security"):
            conn.exec_driver_sql(insert.as_string(None), {"a": a, "b": str(b), "bb": b})
        conn.rollback()
    owner = create_engine(db.superuser_url)
    try:
        with owner.connect() as conn:
            planted = conn.execute(text("SELECT count(*) FROM projects WHERE name LIKE 'planted-%'")).scalar_one()
    finally:
        owner.dispose()
    assert planted == 0  # B's row went in before


def test_the_large_tenants_estimate_is_kept(signed: Signed, engine: Engine) -> None:
    """The comparison with the proved tenant counts as nearly every row: the setting's estimate stands."""
    db, _, a, _ = signed
    owner = create_engine(db.superuser_url)
    try:
        with owner.begin() as conn:
            conn.execute(
                text("INSERT INTO projects (tenant_id, name) SELECT :a, 'bulk-' || i FROM generate_series(1, 5000) i"),
                {"a": a},
            )
            conn.execute(text("ANALYZE projects"))
        with as_tenant(a), engine.connect() as conn:
            plan = conn.execute(text("EXPLAIN (FORMAT JSON) SELECT * FROM projects")).scalar_one()
            conn.rollback()
        estimated = plan[0]["Plan"]["Plan Rows"]
        assert 4_500 <= estimated <= 5_100  # 5,002 rows are a's; with "=" it was a few dozen
    finally:
        with owner.begin() as conn:
            conn.execute(text("DELETE FROM projects WHERE name LIKE 'bulk-%'"))
        owner.dispose()
