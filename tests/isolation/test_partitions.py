"""Partitioned tenant tables: the parent and every partition, present and future, isolated alike.

A partitioned table's policy guards access through the parent only; a
query may name a partition directly. ``enable_tenant_isolation`` isolates
each partition at every level, and an event trigger isolates those a DBA
creates or attaches later. Every read and write below runs as the
application role on a bound engine, by list (one partition per tenant) and
by time (every tenant in each partition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.testing import TenancyDatabase, tenancy_database

# By list: one partition per tenant; tenant_id leads every key, so no index spans tenants.
BY_TENANT = """
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    body text NOT NULL,
    PRIMARY KEY (tenant_id, id)
) PARTITION BY LIST (tenant_id)
"""
# By time: every tenant's rows in each month.
BY_TIME = """
CREATE TABLE readings (
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    at timestamptz NOT NULL,
    value integer NOT NULL,
    PRIMARY KEY (tenant_id, at)
) PARTITION BY RANGE (at);
CREATE TABLE readings_2026_11 PARTITION OF readings FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE readings_2026_12 PARTITION OF readings FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')
"""
ISOLATED = """
SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity AS forced,
       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation') AS policy,
       has_table_privilege(:app, c.oid, 'SELECT') AS app_reads,
       pg_get_userbyid(c.relowner) = :owner AS owned
  FROM pg_class c
 WHERE c.oid IN (SELECT relid FROM pg_partition_tree(CAST(:root AS regclass)))
 ORDER BY 1
"""


@dataclass(frozen=True)
class Partitioned:
    db: TenancyDatabase
    owner: Engine
    app: Engine
    a: int
    b: int
    c: int


@pytest.fixture(scope="module")
def partitioned(rls_postgres_url: URL, rls_break_database: Callable[[URL], None]) -> Iterator[Partitioned]:
    with tenancy_database(rls_postgres_url) as db:
        owner = create_engine(db.superuser_url)
        app = bind_engine(create_engine(db.app_url))
        try:
            with owner.begin() as conn:
                a, b, c = (
                    conn.execute(
                        text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, :s) RETURNING id"), {"s": slug}
                    ).scalar_one()
                    for slug in ("part-a", "part-b", "part-c")
                )
                conn.exec_driver_sql(BY_TENANT)
                for tenant, name in ((a, "events_a"), (b, "events_b")):
                    conn.exec_driver_sql(_partition_of("events", name, tenant))
                conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation('events')"))
                conn.exec_driver_sql(BY_TIME)
                conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation('readings')"))
                for tenant in (a, b):
                    conn.execute(
                        text("INSERT INTO events (tenant_id, body) VALUES (:t, 'secret of ' || :t)"), {"t": tenant}
                    )
                    conn.execute(
                        text("INSERT INTO readings VALUES (:t, '2026-11-15', 1), (:t, '2026-12-15', 2)"), {"t": tenant}
                    )
            rls_break_database(db.superuser_url)  # a database of its own: broken as the run says too
            yield Partitioned(db, owner, app, int(a), int(b), int(c))
        finally:
            app.dispose()
            owner.dispose()


def _partition_of(parent: str, name: str, tenant: int) -> str:
    """``CREATE TABLE name PARTITION OF parent FOR VALUES IN (tenant)``, composed (DDL takes no parameters)."""
    statement = sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})")
    return statement.format(sql.Identifier(name), sql.Identifier(parent), sql.Literal(tenant)).as_string(None)


def _select(template: str, table: str) -> str:
    return sql.SQL(template).format(sql.Identifier(table)).as_string(None)


def _isolation(conn: Connection, db: TenancyDatabase, root: str) -> dict[str, tuple[bool, bool, bool, bool]]:
    rows = conn.execute(text(ISOLATED), {"app": db.roles.app, "owner": db.roles.owner, "root": root})
    return {row.relname: (row.forced, row.policy, row.app_reads, row.owned) for row in rows}


ALL_FOUR = (True, True, True, True)


def test_isolating_a_partitioned_table_isolates_it_and_every_partition(partitioned: Partitioned) -> None:
    with partitioned.owner.connect() as conn:
        assert _isolation(conn, partitioned.db, "events") == {
            name: ALL_FOUR for name in ("events", "events_a", "events_b")
        }
        assert _isolation(conn, partitioned.db, "readings") == {
            name: ALL_FOUR for name in ("readings", "readings_2026_11", "readings_2026_12")
        }


@pytest.mark.rls_policy
@pytest.mark.parametrize(
    ("table", "through"),
    [
        ("events", "the parent"),
        ("events_b", "the other tenant's partition"),
        ("readings", "the parent"),
        ("readings_2026_11", "a month's partition"),
    ],
)
def test_the_app_role_sees_only_its_tenant_through_the_parent_and_each_partition(
    partitioned: Partitioned, table: str, through: str
) -> None:
    with as_tenant(partitioned.a), partitioned.app.connect() as conn:
        tenants = set(conn.execute(text(_select("SELECT DISTINCT tenant_id FROM {}", table))).scalars())
        assert tenants == (set() if table == "events_b" else {partitioned.a}), through
        update = _select("UPDATE {} SET tenant_id = tenant_id WHERE tenant_id = :b", table)
        changed = conn.execute(text(update), {"b": partitioned.b})
        assert changed.rowcount == 0


@pytest.mark.rls_policy
@pytest.mark.parametrize("table", ["events", "events_b"])
def test_the_app_role_cannot_write_into_another_tenant_through_the_parent_or_its_partition(
    partitioned: Partitioned, table: str
) -> None:
    with as_tenant(partitioned.a), partitioned.app.connect() as conn:
        with pytest.raises(DBAPIError, match="row-level security"):
            insert = _select("INSERT INTO {} (tenant_id, body) VALUES (:b, 'planted')", table)
            conn.execute(text(insert), {"b": partitioned.b})


def test_a_partition_a_dba_creates_or_attaches_later_is_isolated_in_the_same_statement(
    partitioned: Partitioned,
) -> None:
    with partitioned.owner.begin() as conn:
        conn.exec_driver_sql(_partition_of("events", "events_c", partitioned.c))
        conn.exec_driver_sql("CREATE TABLE events_rest (LIKE events)")
        conn.exec_driver_sql("ALTER TABLE events ATTACH PARTITION events_rest DEFAULT")
        conn.exec_driver_sql(
            "CREATE TABLE readings_2027_01 PARTITION OF readings FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')"
        )
    with partitioned.owner.connect() as conn:
        found = _isolation(conn, partitioned.db, "events")
        assert found["events_c"] == ALL_FOUR and found["events_rest"] == ALL_FOUR
        assert _isolation(conn, partitioned.db, "readings")["readings_2027_01"] == ALL_FOUR
    with as_tenant(partitioned.a), partitioned.app.begin() as conn:
        conn.execute(text("INSERT INTO readings VALUES (:a, '2027-01-15', 3)"), {"a": partitioned.a})
        assert list(conn.execute(text("SELECT tenant_id, value FROM readings_2027_01"))) == [(partitioned.a, 3)]
    with as_tenant(partitioned.b), partitioned.app.connect() as conn:
        assert list(conn.execute(text("SELECT value FROM readings_2027_01"))) == []


def test_the_doctor_finds_nothing_open_among_them(partitioned: Partitioned) -> None:
    with partitioned.owner.connect() as conn:
        found = conn.execute(
            text(
                "SELECT check_name, object_name FROM rls_tenancy.findings() "
                "WHERE severity <> 'info'"
                " AND (object_name LIKE 'public.events%' OR object_name LIKE 'public.readings%')"
            )
        ).all()
    assert found == []


def test_disabling_the_parent_closes_every_partition_to_the_app_role(partitioned: Partitioned) -> None:
    with partitioned.owner.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE scratch_log (tenant_id bigint NOT NULL, n integer) PARTITION BY LIST (tenant_id)"
        )
        conn.exec_driver_sql(_partition_of("scratch_log", "scratch_log_a", partitioned.a))
        conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation('scratch_log')"))
        conn.execute(text("SELECT rls_tenancy.disable_tenant_isolation('scratch_log')"))
        assert _isolation(conn, partitioned.db, "scratch_log") == {
            name: (False, False, False, True) for name in ("scratch_log", "scratch_log_a")
        }


def test_without_the_event_trigger_enable_still_isolates_the_partitions_and_the_doctor_reports_a_new_one(
    partitioned: Partitioned,
) -> None:
    """Where event triggers are not allowed (or one was disabled), the parent's isolation still reaches its
    partitions, and a partition created afterwards is reported with the fix that closes it."""
    with partitioned.owner.connect() as conn, conn.begin() as transaction:
        conn.exec_driver_sql("ALTER EVENT TRIGGER rls_tenancy_isolate_new_partitions DISABLE")
        conn.exec_driver_sql("CREATE TABLE notes (tenant_id bigint NOT NULL, body text) PARTITION BY LIST (tenant_id)")
        conn.exec_driver_sql(_partition_of("notes", "notes_a", partitioned.a))
        conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation('notes')"))
        assert _isolation(conn, partitioned.db, "notes") == {name: ALL_FOUR for name in ("notes", "notes_a")}
        conn.exec_driver_sql(_partition_of("notes", "notes_b", partitioned.b))
        findings = "SELECT check_name, fix FROM rls_tenancy.findings() WHERE object_name = 'public.notes_b'"
        [(check, fix)] = conn.execute(text(findings)).all()
        assert check == "rls_disabled"
        conn.exec_driver_sql(fix)
        assert conn.execute(text(findings)).all() == []
        assert _isolation(conn, partitioned.db, "notes")["notes_b"] == ALL_FOUR
        transaction.rollback()
