"""Side channels around row level security, measured as the application role (docs/threat-model.md).

Each test here either proves a channel closed (it fails if the privilege
comes back) or measures one that PostgreSQL leaves open, so that what the
threat model says about it stays true.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, TextClause, create_engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant
from rls_tenancy.schema._resources import sql_script
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World, ddl

# A table of its own, shaped as the demo's projects were before saas_0004 (a primary key on id beside
# UNIQUE (tenant_id, id)), with one large tenant B and a small tenant A whose rows lie among B's: 198 of A's
# among 19,602 of B's.
NOTES = """
CREATE TABLE public.side_channel_notes (
    id serial PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    name text NOT NULL,
    UNIQUE (tenant_id, id)
);
SELECT rls_tenancy.enable_tenant_isolation('public.side_channel_notes');
"""
INTERLEAVED = text(
    "INSERT INTO side_channel_notes (tenant_id, name) "
    "SELECT CASE WHEN g % 100 = 0 THEN :a ELSE :b END, 'note ' || g FROM generate_series(1, 19800) g"
)
IN_RANGE = "SELECT name FROM side_channel_notes WHERE id BETWEEN {lo} AND {hi}"
LO, HI = 5001, 6000  # 10 of A's, 990 of B's
# Planner settings any role may SET: random pages made dear, so the index whose order follows the
# table's (ids grow as rows are added) looks cheapest; then no sequential scan, no bitmap.
STEER_TO_ID = {"random_page_cost": "1000", "enable_seqscan": "off", "enable_bitmapscan": "off"}
LEADING_WITH_TENANT = "side_channel_notes_tenant_id_id_key"


@contextmanager
def _analyzed(superuser_engine: Engine, table: str, create: str, fill: TextClause, world: World) -> Iterator[None]:
    """``table`` made by ``create``, filled for tenants A and B and analyzed; dropped afterwards."""
    name = sql.Identifier(table)
    with superuser_engine.connect() as conn:
        conn.exec_driver_sql(create, execution_options={"no_parameters": True})
        conn.execute(fill, {"a": world.a, "b": world.b})
        conn.commit()
        conn.exec_driver_sql(sql.SQL("ANALYZE {}").format(name).as_string(None))
        conn.commit()
    try:
        yield
    finally:
        with superuser_engine.begin() as conn:
            conn.exec_driver_sql(sql.SQL("DROP TABLE {}").format(name).as_string(None))


@pytest.fixture()
def notes(world: World, superuser_engine: Engine) -> Iterator[None]:
    with _analyzed(superuser_engine, "side_channel_notes", NOTES, INTERLEAVED, world):
        yield


@pytest.fixture()
def raw_app(db: TenancyDatabase) -> Iterator[Engine]:
    """The application role without the library's binding: what injected SQL has."""
    engine = create_engine(db.app_url)
    yield engine
    engine.dispose()


def _libpq(db: TenancyDatabase) -> str:
    return db.app_url.set(drivername="postgresql").render_as_string(hide_password=False)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(app_engine: Engine, tenant: int, query: str, settings: dict[str, str]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE's plan nodes for ``query``, run as the app role bound to ``tenant`` under ``settings``."""
    with as_tenant(tenant), app_engine.connect() as conn, conn.begin():
        for name, value in settings.items():
            conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + query).scalar_one()
    return list(_nodes(plan[0]["Plan"]))


def _refused(conn: Connection, statement: str) -> str | None:
    """The SQLSTATE ``statement`` fails with, in a transaction rolled back afterwards; None if it succeeds."""
    try:
        with conn.begin_nested() if conn.in_transaction() else conn.begin() as transaction:
            conn.exec_driver_sql(statement)
            transaction.rollback()
    except DBAPIError as error:
        return getattr(error.orig, "sqlstate", None)
    return None


# --- class 8: EXPLAIN ANALYZE ---------------------------------------------------------------------------


def test_planner_switches_put_the_primary_key_under_a_range_and_explain_counts_the_other_tenants_rows_in_it(
    app_engine: Engine, world: World, notes: None
) -> None:
    default = _explain(app_engine, world.a, IN_RANGE.format(lo=LO, hi=HI), {})
    assert [n["Index Name"] for n in default if n.get("Index Name")] == [LEADING_WITH_TENANT]
    (scan,) = [n for n in _explain(app_engine, world.a, IN_RANGE.format(lo=LO, hi=HI), STEER_TO_ID) if "Filter" in n]
    assert (scan["Node Type"], scan["Index Name"]) == ("Index Scan", "side_channel_notes_pkey")
    assert scan["Actual Rows"] == 10  # A's own
    assert scan["Rows Removed by Filter"] == 990  # B's, in the range A chose


def test_an_index_leading_with_tenant_id_counts_no_other_tenants_rows(
    app_engine: Engine, world: World, notes: None
) -> None:
    for settings in ({}, {"enable_indexscan": "off"}):
        nodes = _explain(app_engine, world.a, IN_RANGE.format(lo=LO, hi=HI), settings)
        (scan,) = [n for n in nodes if n.get("Index Name")]
        assert scan["Index Name"] == LEADING_WITH_TENANT
        assert "tenant_id =" in scan["Index Cond"]
        assert scan.get("Rows Removed by Filter", 0) == 0
        assert nodes[0]["Actual Rows"] == 10


def test_a_sequential_scan_counts_every_row_of_the_table(app_engine: Engine, world: World, notes: None) -> None:
    settings = {"enable_indexscan": "off", "enable_bitmapscan": "off", "enable_indexonlyscan": "off"}
    (scan,) = [n for n in _explain(app_engine, world.a, IN_RANGE.format(lo=LO, hi=HI), settings) if "Filter" in n]
    assert scan["Node Type"] == "Seq Scan"
    assert (scan["Actual Rows"], scan["Rows Removed by Filter"]) == (10, 19790)


# The demo's own projects, keyed (tenant_id, id) since saas_0004: 20 of A's among 1,980 of B's, ids interleaved.
DEMO_ROWS = text(
    "INSERT INTO projects (tenant_id, name) "
    "SELECT CASE WHEN g % 100 = 0 THEN :a ELSE :b END, 'explain probe ' || g FROM generate_series(1, 2000) g "
    "RETURNING id, tenant_id"
)
DEMO_IN_RANGE = "SELECT name FROM projects WHERE id BETWEEN {lo} AND {hi}"
# With keys on id (before saas_0004) the last one is the leak: ordered by id with sorting switched off, the
# planner took the primary key on id and reported 990 of B's rows removed by the filter.
DEMO_PLANS = [
    (DEMO_IN_RANGE, {}),
    (DEMO_IN_RANGE, STEER_TO_ID),
    (DEMO_IN_RANGE, {"enable_indexscan": "off"}),
    (DEMO_IN_RANGE + " ORDER BY id", {**STEER_TO_ID, "enable_sort": "off"}),
]


@pytest.fixture()
def demo_rows(world: World, bypass_engine: Engine, superuser_engine: Engine) -> Iterator[list[tuple[int, int]]]:
    """(id, tenant_id) of the rows planted in the demo's projects, with fresh statistics."""
    with bypass_engine.begin() as conn:
        rows = [(int(i), int(t)) for i, t in conn.execute(DEMO_ROWS, {"a": world.a, "b": world.b})]
    with superuser_engine.connect() as conn:
        conn.execute(text("ANALYZE projects"))
        conn.commit()
    yield rows
    with bypass_engine.begin() as conn:
        conn.execute(text("DELETE FROM projects WHERE name LIKE 'explain probe %'"))


@pytest.mark.rls_policy
def test_explain_over_an_id_range_of_the_demos_projects_never_counts_another_tenants_rows(
    app_engine: Engine, world: World, demo_rows: list[tuple[int, int]]
) -> None:
    """Every index of the demo's tables leads with tenant_id: whatever the planner switches, B's rows never
    reach a scan of A's, so neither Actual Rows nor Rows Removed by Filter counts them."""
    ids = sorted(i for i, _ in demo_rows)
    lo, hi = ids[500], ids[1499]  # 1,000 rows: 10 of A's, 990 of B's
    own = sum(1 for i, t in demo_rows if t == world.a and lo <= i <= hi)
    own_anywhere = sum(1 for _, t in demo_rows if t == world.a) + len(world.projects[world.a])
    for query, settings in DEMO_PLANS:
        nodes = _explain(app_engine, world.a, query.format(lo=lo, hi=hi), settings)
        scans = [n for n in nodes if n["Node Type"].endswith("Scan")]
        assert scans and all("tenant_id =" in n.get("Index Cond", n.get("Recheck Cond", "")) for n in scans)
        assert nodes[0]["Actual Rows"] == own == 10
        for scan in scans:  # only A's rows were read: its own in the range, and at most its own outside it
            assert scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) <= own_anywhere, (query, settings)


# --- class 9: what is closed ----------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["pg_cancel_backend({pid})", "pg_terminate_backend({pid})"])
def test_the_app_role_may_not_signal_another_session_of_its_own_role(raw_app: Engine, function: str) -> None:
    with raw_app.connect() as victim, raw_app.connect() as attacker:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert _refused(attacker, "SELECT " + function.format(pid=int(pid))) == "42501"
        assert victim.execute(text("SELECT 1")).scalar_one() == 1


_OTHERS_QUERY = [
    "SELECT query FROM pg_stat_activity WHERE pid = {pid}",
    "SELECT a.query FROM pg_stat_get_activity({pid}) AS a",
    "SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() AS b"
    " WHERE pg_stat_get_backend_pid(b) = {pid}",
]


@pytest.mark.parametrize("statement", _OTHERS_QUERY, ids=["view", "function", "backend-function"])
def test_the_app_role_may_not_read_another_sessions_query_text(
    raw_app: Engine, app_engine: Engine, superuser_engine: Engine, world: World, statement: str
) -> None:
    """Every session of the one app role is "its own" to PostgreSQL: B's literals in flight, read by A."""
    secret = "tenant B secret " + secrets.token_hex(4)
    with as_tenant(world.b), app_engine.connect() as victim:
        victim.exec_driver_sql(sql.SQL("SELECT {}").format(sql.Literal(secret)).as_string(None))  # stays its last query
        pid = int(victim.execute(text("SELECT pg_backend_pid()")).scalar_one())
        victim.exec_driver_sql(sql.SQL("SELECT {}").format(sql.Literal(secret)).as_string(None))
        with superuser_engine.connect() as monitor:  # the control: the statement does find it
            assert secret in str(monitor.exec_driver_sql(statement.format(pid=pid)).all())
        with raw_app.connect() as attacker:
            try:
                seen = str(attacker.exec_driver_sql(statement.format(pid=pid)).all())
            except DBAPIError as error:
                assert getattr(error.orig, "sqlstate", None) == "42501"
            else:
                assert secret not in seen


# What B's open request is doing, as (what it shows, statement naming B's backend by {pid}): each found by a
# superuser, refused to the app role in A's transaction.
_OTHERS_ACTIVITY = {
    "timings": "SELECT pg_stat_get_backend_xact_start(b), pg_stat_get_backend_activity_start(b),"
    " pg_stat_get_backend_start(b) FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_pid(b) = {pid}",
    "wait-event": "SELECT pg_stat_get_backend_wait_event_type(b), pg_stat_get_backend_wait_event(b)"
    " FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_pid(b) = {pid}",
    "client-address": "SELECT pg_stat_get_backend_client_addr(b), pg_stat_get_backend_client_port(b)"
    " FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_pid(b) = {pid}",
    "session": "SELECT pg_stat_get_backend_userid(b), pg_stat_get_backend_dbid(b)"
    " FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_pid(b) = {pid}",
    "locks": "SELECT relation::regclass::text, mode, objid FROM pg_locks WHERE pid = {pid} ORDER BY 1, 2, 3",
    "lock-waits": "SELECT pg_blocking_pids({pid}), pg_safe_snapshot_blocking_pids({pid})",
    "progress": "SELECT relid FROM pg_stat_progress_copy WHERE pid = {pid}",
}
_ADVISORY_KEY = 7_770_001


@contextmanager
def _open_request(app_engine: Engine, tenant: int) -> Iterator[int]:
    """``tenant``'s request in flight: a transaction that wrote ``projects`` and holds an advisory lock, left
    open (rolled back afterwards); yields its backend's pid."""
    with as_tenant(tenant), app_engine.connect() as victim:
        victim.execute(text("INSERT INTO projects (name) VALUES ('in flight')"))
        victim.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
        pid = int(victim.execute(text("SELECT pg_backend_pid()")).scalar_one())
        try:
            yield pid
        finally:
            victim.rollback()


def _about(statement: str, pid: int) -> str:
    return sql.SQL(statement).format(pid=sql.Literal(pid)).as_string(None)


def _settled(monitor: Connection, statement: str, *, waiting: bool) -> list[tuple[object, ...]]:
    """The statement's rows once B's backend is seen waiting for its client: B sets its wait event only after
    its last reply has left, so a monitor that reads at once may see it between the two (retried, bounded)."""
    for _ in range(100):
        seen = [tuple(row) for row in monitor.exec_driver_sql(statement)]
        if not waiting or (seen and None not in seen[0]):
            break
        monitor.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        time.sleep(0.05)
    return seen


@pytest.mark.parametrize("shows", _OTHERS_ACTIVITY)
def test_the_app_role_may_not_read_what_another_tenants_request_in_flight_is_doing(
    app_engine: Engine, superuser_engine: Engine, world: World, shows: str
) -> None:
    """B's transaction and statement start, wait event, client address, locks: tenant A, as the app role in its
    own transaction, is refused every one of them while B's transaction is open."""
    with _open_request(app_engine, world.b) as pid:
        statement = _about(_OTHERS_ACTIVITY[shows], pid)
        with superuser_engine.connect() as monitor:  # the control: the statement does read B's backend
            seen = _settled(monitor, statement, waiting=shows == "wait-event")
            if shows == "locks":  # the table B writes, and its advisory lock's key
                assert {("projects", "RowExclusiveLock", None), (None, "ExclusiveLock", _ADVISORY_KEY)} <= set(seen)
            elif shows not in ("lock-waits", "progress"):  # B waits on no lock and copies nothing
                assert len(seen) == 1, seen  # over a Unix socket a client has no address
                assert shows == "client-address" or None not in seen[0], seen
        with as_tenant(world.a), app_engine.connect() as attacker:
            assert _refused(attacker, statement) == "42501"


def test_monitoring_roles_keep_pg_locks_and_the_backend_statistics(
    app_engine: Engine, superuser_engine: Engine, world: World
) -> None:
    """What PostgreSQL's monitoring role is for: a role granted pg_monitor still reads both."""
    with _open_request(app_engine, world.b) as pid, superuser_engine.connect() as conn, conn.begin() as transaction:
        monitor = "side_channel_monitor_" + secrets.token_hex(4)
        conn.exec_driver_sql(ddl("CREATE ROLE {} NOLOGIN IN ROLE pg_monitor", monitor))
        conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", monitor))
        locks = conn.exec_driver_sql(_about(_OTHERS_ACTIVITY["locks"], pid)).all()
        assert ("projects", "RowExclusiveLock", None) in locks
        (started,) = conn.exec_driver_sql(_about(_OTHERS_ACTIVITY["timings"], pid)).all()
        assert None not in started
        transaction.rollback()


# The functions sql/014_side_channels.sql closes beside cancel, terminate and large objects, with the
# privileges on each as (grantee, privilege); PUBLIC for grantee 0.
_CLOSED_BY_NAME = text(
    """
    SELECT p.oid::regprocedure::text,
           array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                     ORDER BY a.grantee) FILTER (WHERE a.grantee <> p.proowner)
      FROM pg_proc p
     CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'pg_catalog'::regnamespace
       AND (p.proname LIKE 'pg\\_stat\\_get\\_backend\\_%' AND p.proname <> 'pg_stat_get_backend_activity'
            OR p.proname IN ('pg_stat_get_progress_info', 'pg_lock_status', 'pg_blocking_pids',
                             'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked'))
     GROUP BY 1 ORDER BY 1
    """
)


def _grantees(conn: Connection) -> dict[str, tuple[str, ...]]:
    return {name: tuple(who or ()) for name, who in conn.execute(_CLOSED_BY_NAME)}


def test_the_downgrade_gives_pg_locks_and_the_backend_statistics_back_to_public(superuser_engine: Engine) -> None:
    """sql/uninstall_side_channels.sql restores PostgreSQL's defaults; the specification closes them again.
    In a superuser transaction, rolled back."""
    with superuser_engine.connect() as conn, conn.begin() as transaction:
        closed = _grantees(conn)
        assert {"pg_lock_status()", "pg_stat_get_backend_xact_start(integer)"} <= closed.keys()
        assert set(closed.values()) == {("pg_read_all_stats",)}, closed
        conn.exec_driver_sql(sql_script("uninstall_side_channels.sql"), execution_options={"no_parameters": True})
        assert set(_grantees(conn).values()) == {("PUBLIC",)}  # PostgreSQL's own: EXECUTE to PUBLIC, nothing else
        conn.exec_driver_sql(sql_script("014_side_channels.sql"), execution_options={"no_parameters": True})
        assert _grantees(conn) == closed
        transaction.rollback()


@pytest.mark.parametrize(
    "statement",
    ["SELECT lo_from_bytea(0, 'a tenant''s file')", "SELECT lo_create(0)", "SELECT lo_creat(-1)"],
)
def test_the_app_role_may_not_create_large_objects(raw_app: Engine, statement: str) -> None:
    with raw_app.connect() as conn:
        assert _refused(conn, statement) == "42501"


@pytest.mark.parametrize("setting", ["app.current_tenant", "app.current_user_id"])
def test_the_app_role_may_not_give_itself_a_default_tenant_or_user(raw_app: Engine, setting: str) -> None:
    """PostgreSQL's own rule: only a superuser sets defaults for parameters it does not know (app.*)."""
    with raw_app.connect() as conn:
        conn.execute(text("SELECT set_config(:s, '1', false)"), {"s": setting})  # known to this session now
        statement = sql.SQL("ALTER ROLE CURRENT_USER SET {} = '1'").format(sql.Identifier(*setting.split(".")))
        assert _refused(conn, statement.as_string(None)) == "42501"


# --- class 9: what stays open, measured ------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER ROLE CURRENT_USER SET statement_timeout = '1ms'",
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on",
        "ALTER ROLE CURRENT_USER PASSWORD 'changed'",
    ],
)
def test_the_app_role_may_change_its_own_defaults_and_password(raw_app: Engine, statement: str) -> None:
    """No privilege stops it; rolled back here. A committed one is the doctor's app_role_setting."""
    with raw_app.connect() as conn:
        assert _refused(conn, statement) is None


# Per table: A's probe (rolled back), B's insert, and the sequence behind id: a serial's, then an identity's.
DRAWS = {
    "serial": (
        "INSERT INTO side_channel_notes (name) VALUES ('probe') RETURNING id",
        "INSERT INTO side_channel_notes (tenant_id, name) VALUES (:b, 'b')",
        "side_channel_notes_id_seq",
    ),
    "identity": (
        "INSERT INTO projects (name) VALUES ('probe') RETURNING id",
        "INSERT INTO projects (tenant_id, name) VALUES (:b, 'b')",
        "projects_id_seq",
    ),
}


@pytest.mark.parametrize("kind", DRAWS)
def test_a_serial_sequence_shows_every_tenants_inserts_and_so_does_an_identity(
    app_engine: Engine, bypass_engine: Engine, world: World, notes: None, kind: str
) -> None:
    probe, by_b, sequence = DRAWS[kind]

    def drawn_by_a() -> int:
        with as_tenant(world.a), app_engine.connect() as conn, conn.begin() as transaction:
            drawn = conn.execute(text(probe)).scalar_one()
            shown = conn.execute(text("SELECT last_value FROM pg_sequences WHERE sequencename = :s"), {"s": sequence})
            # USAGE (a serial's default needs it) shows last_value; an identity needs no privilege, shows nothing
            assert shown.scalar_one() == (drawn if kind == "serial" else None)
            transaction.rollback()
        return int(drawn)

    first = drawn_by_a()
    with bypass_engine.begin() as conn:
        for _ in range(5):
            conn.execute(text(by_b), {"b": world.b})
    assert drawn_by_a() - first - 1 == 5  # B's five inserts, seen by A through a rolled-back insert of its own


ESTIMATED = """
CREATE TABLE public.side_channel_deals (
    tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),
    id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT rls_tenancy.enable_tenant_isolation('public.side_channel_deals');
"""
# B's deals, a fifth of them one secret name; A's own, a third of the table, names of its own.
DEALS = text(
    "INSERT INTO side_channel_deals (tenant_id, name)"
    " SELECT :b, CASE WHEN g % 5 = 0 THEN 'merger with initech' ELSE 'deal ' || g END FROM generate_series(1, 2000) g"
    " UNION ALL SELECT :a, 'own deal ' || g FROM generate_series(1, 1000) g"
)


# A target of 0 keeps ANALYZE from collecting a column's statistics, not from keeping those it has.
FORGET_STATISTICS = (
    "DELETE FROM pg_statistic WHERE starelid = CAST(:table AS regclass) AND staattnum = "
    "(SELECT attnum FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) AND attname = :column)"
)


def _estimate(app_engine: Engine, tenant: int, name: str) -> float:
    with as_tenant(tenant), app_engine.connect() as conn:
        query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM side_channel_deals WHERE name = {}").format(
            sql.Literal(name)
        )
        plan = conn.exec_driver_sql(query.as_string(None)).scalar_one()
    return float(plan[0]["Plan"]["Plan Rows"])


def test_plan_estimates_tell_whether_a_value_is_common_among_every_tenants_rows(
    raw_app: Engine, app_engine: Engine, superuser_engine: Engine, world: World
) -> None:
    """The planner estimates from all tenants' statistics; equality is leakproof, so it may use them under RLS."""
    with _analyzed(superuser_engine, "side_channel_deals", ESTIMATED, DEALS, world):
        with as_tenant(world.a), app_engine.connect() as conn:
            seen = conn.execute(text("SELECT count(*) FROM side_channel_deals WHERE name = 'merger with initech'"))
            assert seen.scalar_one() == 0  # A reads none of B's rows
        with raw_app.connect() as conn:  # and pg_stats hides the table's statistics from it
            hidden = conn.execute(text("SELECT count(*) FROM pg_stats WHERE tablename = 'side_channel_deals'"))
            assert hidden.scalar_one() == 0
        secret, absent = (_estimate(app_engine, world.a, name) for name in ("merger with initech", "no such deal"))
        assert secret > 20 * absent  # but the estimate tells that B's common value exists
        with superuser_engine.connect() as conn:  # the mitigation: no statistics kept for that column
            conn.execute(text("ALTER TABLE side_channel_deals ALTER COLUMN name SET STATISTICS 0"))
            conn.execute(text(FORGET_STATISTICS), {"table": "side_channel_deals", "column": "name"})
            conn.execute(text("ANALYZE side_channel_deals"))
            conn.commit()
        assert _estimate(app_engine, world.a, "merger with initech") == _estimate(app_engine, world.a, "no such deal")


def test_table_statistics_count_every_tenants_rows(
    raw_app: Engine, bypass_engine: Engine, superuser_engine: Engine, world: World
) -> None:
    def inserted() -> int:
        with raw_app.connect() as conn:
            shown = conn.execute(text("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'tasks'"))
            return int(shown.scalar_one())

    before = inserted()
    with bypass_engine.connect() as conn:
        project = world.project_ids[world.b][0]
        insert = text("INSERT INTO tasks (tenant_id, project_id, title) VALUES (:b, :p, 'counted')")
        for _ in range(7):
            conn.execute(insert, {"b": world.b, "p": project})
        conn.commit()
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        conn.commit()
    deadline = time.monotonic() + 5
    while inserted() < before + 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inserted() >= before + 7
    with superuser_engine.connect() as conn:
        conn.execute(text("ANALYZE tasks"))
        conn.commit()
        total = conn.execute(text("SELECT count(*) FROM tasks")).scalar_one()
    with raw_app.connect() as conn:
        assert conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'tasks'")).scalar_one() == total


def test_notify_reaches_a_session_of_another_tenant(db: TenancyDatabase, world: World) -> None:
    with psycopg.connect(_libpq(db), autocommit=True) as a, psycopg.connect(_libpq(db), autocommit=True) as b:
        a.execute("LISTEN side_channel")
        with b.transaction():
            b.execute("SELECT set_config('app.current_tenant', %s, true)", (str(world.b),))
            b.execute("SELECT pg_notify('side_channel', 'from tenant b')")
        received = [n.payload for n in a.notifies(timeout=5, stop_after=1)]
    assert received == ["from tenant b"]


def test_advisory_locks_are_shared_by_every_tenant(db: TenancyDatabase, world: World) -> None:
    with psycopg.connect(_libpq(db), autocommit=True) as a, psycopg.connect(_libpq(db), autocommit=True) as b:
        a.execute("SELECT set_config('app.current_tenant', %s, false)", (str(world.a),))
        b.execute("SELECT set_config('app.current_tenant', %s, false)", (str(world.b),))
        a.execute("SELECT pg_advisory_lock(2121)")
        taken = b.execute("SELECT pg_try_advisory_lock(2121)").fetchone()
        a.execute("SELECT pg_advisory_unlock(2121)")
    assert taken == (False,)


def test_gaps_in_a_tenants_audit_ids_count_the_other_tenants_events(app_engine: Engine, world: World) -> None:
    def logged(tenant: int) -> int:
        with as_tenant(tenant), app_engine.begin() as conn:
            return int(conn.execute(text("SELECT rls_tenancy.log_event('test.side_channel')")).scalar_one())

    first = logged(world.a)
    for _ in range(4):
        logged(world.b)
    assert logged(world.a) - first - 1 == 4


def test_a_tenant_can_tell_whether_another_tenants_open_transaction_writes_a_table(
    app_engine: Engine, world: World
) -> None:
    """What stays open with pg_locks closed: a lock that conflicts with writers, taken with NOWAIT, fails while
    any other transaction writes the table. One bit per table per probe; who writes, and what, it does not tell."""

    def someone_writes_projects() -> bool:
        with as_tenant(world.a), app_engine.connect() as probe:
            refused = _refused(probe, "LOCK TABLE projects IN SHARE MODE NOWAIT")
            assert refused in (None, "55P03")
            return refused == "55P03"

    with _open_request(app_engine, world.b):
        assert someone_writes_projects()
    assert not someone_writes_projects()


def test_an_event_sealed_early_holds_its_chain_until_the_transaction_ends(app_engine: Engine, world: World) -> None:
    """Availability, not a read: the tenantless chain's head, locked by SQL that seals its event early.

    Every event without a tenant then waits for the holder (the unsafe bypass's ``bypass.used`` among them),
    as any lock does, until its timeouts end the transaction.
    """
    with app_engine.connect() as holder:
        with as_tenant(world.a):
            holder.execute(text("SELECT set_config('app.current_tenant', '', true)"))  # its event goes to no tenant
            holder.execute(text("SELECT rls_tenancy.log_event('early', NULL)"))
            holder.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the seal runs now, and locks the chain's head
        with app_engine.connect() as other:  # no tenant: an event of the same chain
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            other.execute(text("SELECT rls_tenancy.log_event('waits', NULL)"))
            with pytest.raises(DBAPIError) as waited:
                other.commit()
            assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable)
        holder.rollback()
    with app_engine.connect() as other:  # released with the holder's transaction
        other.execute(text("SELECT rls_tenancy.log_event('sealed', NULL)"))
        other.rollback()


def test_a_tenant_may_lock_a_shared_table_and_stall_every_other_tenant(app_engine: Engine, world: World) -> None:
    """Availability, not a read: the lock holds until the holder's transaction ends, and SQL may lift the
    timeouts that would end it: the app role's defaults do not bound it."""
    with as_tenant(world.a), app_engine.connect() as holder:
        holder.execute(text("SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0"))
        assert holder.execute(text("SHOW statement_timeout")).scalar() == "0"
        holder.execute(text("LOCK TABLE projects IN ACCESS EXCLUSIVE MODE"))
        with as_tenant(world.b), app_engine.connect() as other:
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(DBAPIError) as waited:
                other.execute(text("SELECT count(*) FROM projects")).scalar()
            assert isinstance(waited.value.orig, psycopg.errors.LockNotAvailable)
            other.rollback()
        holder.rollback()
    with as_tenant(world.b), app_engine.connect() as other:  # released with the holder's transaction
        assert other.execute(text("SELECT count(*) FROM projects")).scalar_one() > 0
        other.rollback()
