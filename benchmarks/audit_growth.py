"""The audit log under growth: one plain table, monthly range partitions, or an index to purge by.

Copies of ``rls_tenancy.audit_log`` are built side by side in one throwaway
database, a schema each: ``audit_growth_plain``, the table as shipped (same
columns, constraints, indexes, fillfactor and triggers);
``audit_growth_parted``, the same partitioned by range of ``created_at``, a
partition a month, its primary key ``(id, created_at)``, ``created_at``
defaulting to ``clock_timestamp()`` so that a row is routed before its
trigger stamps it; and ``audit_growth_indexed``, the plain table with one
more index, on ``(coalesce(tenant_id, 0), seq)``, and the purge's chain
conditions spelled to use it. Each has its chain heads and copies of
``log_event``, the seal, ``purge_audit_log`` and ``verify_audit_chain``
taken from the installed definitions with only the schema changed. All
three are filled with the same history, twelve months of events spread
over many tenants' chains (one chain hashed for real, so that it can be
verified), with triggers off. Measured, the plain copy as the baseline: the
server time of an event written with ``log_event`` and sealed at commit
(``DO`` loops of 200 one-event transactions as the superuser, rounds
interleaved), into an empty log and into the filled one, the partitioned
copy with the seal as shipped (which finds its event by ``id`` alone, so in
every partition), with the seal also naming ``created_at``, and the same
with its plan kept; purging the oldest month, by ``purge_audit_log`` on the
unpartitioned copies and on the partitioned one by recording each chain's
anchor as the purge does and dropping the partition, once alone (wall time,
WAL from ``pg_current_wal_lsn()``) and once for the next month while two
writers log events from connections of their own (their longest wait
against their longest in the seconds before); the tables' size afterwards,
before and after a plain ``VACUUM``; one more day purged on the
unpartitioned copies after that ``VACUUM``, writers running; and verifying
the hashed chain from its anchor.
Each purge runs once per copy: those numbers are single samples.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.context import Context
from benchmarks.dataset import connect
from benchmarks.harness import Row, Section, percentile, side_by_side
from rls_tenancy.testing.database import tenancy_database

Conn = psycopg.Connection[Any]

#: Writers logging events during a purge, a tenant each.
WRITERS = 2
#: Events per DO block when timing writes.
EVENTS = 200
#: The shipped functions copied per table, by name.
COPIED = ("log_event", "seal_audit_event", "purge_audit_log", "verify_audit_chain")
#: How the shipped seal finds its event, and how it would on a partitioned table to touch one partition.
SEAL_BY_ID = "FROM link WHERE l.id = NEW.id"
SEAL_KEYED = "FROM link WHERE l.id = NEW.id AND l.created_at = NEW.created_at"
GENERIC = b" SET plan_cache_mode TO 'force_generic_plan'\n"
#: The partitioned copy's seals measured: as shipped; naming created_at too (pruned when planned, so
#: PostgreSQL keeps planning it anew); the same with its plan kept (pruned when the executor starts).
BY_ID, KEYED, KEYED_GENERIC = "seal by id", "seal by id and created_at", "the same, generic plan"
SEALS = (BY_ID, KEYED, KEYED_GENERIC)
INDEXED_LABEL = "plain, an index on (chain, seq)"

SETUP = """
CREATE SCHEMA audit_growth_plain;
CREATE SCHEMA audit_growth_parted;
CREATE SCHEMA audit_growth_indexed;
CREATE TABLE audit_growth_plain.audit_log (LIKE rls_tenancy.audit_log INCLUDING ALL)
    WITH (fillfactor = 90, autovacuum_enabled = false);
CREATE TABLE audit_growth_indexed.audit_log (LIKE rls_tenancy.audit_log INCLUDING ALL)
    WITH (fillfactor = 90, autovacuum_enabled = false);
-- The purge's chain conditions spelled on it (CHAIN_CONDITIONS): it walks each chain from its start.
CREATE INDEX audit_log_chain_seq_idx ON audit_growth_indexed.audit_log ((coalesce(tenant_id, 0)), seq);
CREATE TABLE audit_growth_parted.audit_log (
    LIKE rls_tenancy.audit_log INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
-- Routed before the INSERT trigger stamps it: the trigger may not move a row to another partition.
ALTER TABLE audit_growth_parted.audit_log ALTER COLUMN created_at SET DEFAULT pg_catalog.clock_timestamp();
CREATE INDEX audit_log_tenant_id_id_idx ON audit_growth_parted.audit_log (tenant_id, id);
CREATE TABLE audit_growth_plain.audit_chain_heads (LIKE rls_tenancy.audit_chain_heads INCLUDING ALL);
CREATE TABLE audit_growth_parted.audit_chain_heads (LIKE rls_tenancy.audit_chain_heads INCLUDING ALL);
CREATE TABLE audit_growth_indexed.audit_chain_heads (LIKE rls_tenancy.audit_chain_heads INCLUDING ALL);
"""

#: The history: ``rows`` events, round robin over ``tenants`` chains from ``first``, evenly from ``start`` to ``until``.
HISTORY = """
CREATE TEMP TABLE history AS
SELECT g AS id, %(first)s::bigint + (g - 1) %% %(tenants)s AS tenant_id, NULL::bigint AS user_id,
       'rls_app'::text AS db_role, 'bench.history'::text AS action,
       'an event written before the benchmark'::text AS message, '192.0.2.1'::inet AS ip,
       'req-' || g AS request_id, pg_catalog.jsonb_build_object('n', g) AS data,
       %(start)s::timestamptz + (g - 1) * ((%(until)s::timestamptz - %(start)s::timestamptz) / %(rows)s) AS created_at,
       (g - 1) / %(tenants)s + 1 AS seq
  FROM generate_series(1, %(rows)s::bigint) AS g
"""

#: The real links of one chain of the history, hashed as the seal does.
CHAIN_LINKS = """
CREATE FUNCTION pg_temp.chain_links(chain bigint)
RETURNS TABLE (link_id bigint, link_prev bytea, link_hash bytea)
LANGUAGE plpgsql AS $fn$
DECLARE
    event record;
    prev  bytea;
BEGIN
    FOR event IN SELECT h.* FROM history h WHERE h.tenant_id = chain ORDER BY h.seq LOOP
        link_id := event.id;
        link_prev := prev;
        link_hash := rls_tenancy.audit_event_hash(
            event.id, event.tenant_id, event.seq, event.user_id, event.db_role, event.action, event.message,
            event.ip, event.request_id, event.data, event.created_at, prev);
        prev := link_hash;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""

#: Every other chain gets hashes of the right size that nobody verifies.
FILL = """
INSERT INTO audit_growth_plain.audit_log OVERRIDING SYSTEM VALUE
SELECT h.id, h.tenant_id, h.user_id, h.db_role, h.action, h.message, h.ip, h.request_id, h.data, h.created_at,
       h.seq, CASE WHEN h.seq > 1 THEN coalesce(l.link_prev, pg_catalog.sha256(pg_catalog.int8send(h.id - 1))) END,
       coalesce(l.link_hash, pg_catalog.sha256(pg_catalog.int8send(h.id)))
  FROM history h LEFT JOIN pg_temp.chain_links(%s) l ON l.link_id = h.id
 ORDER BY h.id
"""

#: Purging by partition, as ``purge_audit_log`` does otherwise: each chain's anchor is the last event
#: the partition holds, and no event of a later partition may sit below it in its chain.
DROP_PARTITION = """
CREATE FUNCTION audit_growth_parted.drop_partition(part regclass, bound timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cuts    jsonb;
    below   bigint;
    total   bigint;
BEGIN
    EXECUTE pg_catalog.format(
        'SELECT coalesce(jsonb_agg(jsonb_build_object(''chain'', chain, ''through_seq'', seq,'
        '                                             ''hash'', encode(hash, ''hex''), ''removed'', removed)), ''[]'')'
        '  FROM (SELECT DISTINCT ON (chain) chain, seq, hash, count(*) OVER (PARTITION BY chain) AS removed'
        '          FROM (SELECT coalesce(tenant_id, 0) AS chain, seq, hash FROM %s WHERE seq IS NOT NULL) e'
        '         ORDER BY chain, seq DESC) c', part) INTO cuts;
    -- An event inserted before the bound and committed after one inserted after it: its chain
    -- would lose an event from its middle. Such a transaction spans the bound; look a day past it.
    SELECT count(*) INTO below
      FROM audit_growth_parted.audit_log l
      JOIN pg_catalog.jsonb_to_recordset(cuts) AS c(chain bigint, through_seq bigint)
        ON coalesce(l.tenant_id, 0) = c.chain
     WHERE l.created_at >= bound AND l.created_at < bound + interval '1 day' AND l.seq <= c.through_seq;
    IF below > 0 THEN
        RAISE EXCEPTION 'audit_growth: % events after % sit below the cut of their chain', below, bound;
    END IF;
    -- The table's lock before the heads': a writer holds the table from its INSERT to the seal of its head.
    EXECUTE pg_catalog.format('ALTER TABLE audit_growth_parted.audit_log DETACH PARTITION %s', part);
    UPDATE audit_growth_parted.audit_chain_heads h
       SET anchor_seq = c.through_seq, anchor_hash = pg_catalog.decode(c.hash, 'hex')
      FROM pg_catalog.jsonb_to_recordset(cuts) AS c(chain bigint, through_seq bigint, hash text)
     WHERE h.chain = c.chain AND c.through_seq > h.anchor_seq;
    EXECUTE pg_catalog.format('DROP TABLE %s', part);
    INSERT INTO audit_growth_parted.audit_log (tenant_id, user_id, db_role, action, message, data)
    SELECT nullif((c ->> 'chain')::bigint, 0), NULL, session_user, 'audit.purged',
           pg_catalog.format('%s events older than %s removed', c ->> 'removed', bound),
           pg_catalog.jsonb_build_object('removed', (c ->> 'removed')::bigint,
                                         'through_seq', (c ->> 'through_seq')::bigint, 'older_than', bound)
      FROM pg_catalog.jsonb_array_elements(cuts) AS c;
    SELECT coalesce(sum((c ->> 'removed')::bigint), 0) INTO total FROM pg_catalog.jsonb_array_elements(cuts) AS c;
    RETURN total;
END
$fn$
"""

#: A table's size with its indexes, its partitions' included.
SIZE = """
SELECT pg_catalog.pg_total_relation_size(r.oid)
       + coalesce((SELECT sum(pg_catalog.pg_total_relation_size(t.relid))
                     FROM pg_catalog.pg_partition_tree(r.oid) AS t WHERE t.relid <> r.oid), 0)
  FROM (SELECT %s::regclass AS oid) AS r
"""


@dataclass(frozen=True)
class Shape:
    """One copy of the audit log: its table, chain heads and functions."""

    name: str  # "plain", "parted" or "indexed"

    @property
    def schema(self) -> str:
        return f"audit_growth_{self.name}"

    def ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    @property
    def table(self) -> str:
        return f"{self.schema}.audit_log"


PLAIN, PARTED, INDEXED = Shape("plain"), Shape("parted"), Shape("indexed")
SHAPES = (PLAIN, PARTED, INDEXED)
#: The purge's chain conditions, and what they become on the indexed copy.
CHAIN_CONDITIONS = {
    b"(l.tenant_id = h.chain OR (h.chain = 0 AND l.tenant_id IS NULL))": b"coalesce(l.tenant_id, 0) = h.chain",
    b"(l.tenant_id = (c ->> 'chain')::bigint OR ((c ->> 'chain')::bigint = 0 AND l.tenant_id IS NULL))": (
        b"coalesce(l.tenant_id, 0) = (c ->> 'chain')::bigint"
    ),
}


@dataclass(frozen=True)
class Stall:
    """What the writers saw: their longest wait before the purge and while it ran."""

    before_max: float  # seconds
    before_p99: float
    during_max: float
    purge: float  # the purge's wall time
    events_during: int


def _copy_definitions(conn: Conn) -> dict[str, bytes]:
    """The shipped definitions of the copied functions and the audit log's triggers, as text to rename."""
    found: dict[str, bytes] = {}
    for name in COPIED:
        row = conn.execute(
            "SELECT pg_catalog.pg_get_functiondef(p.oid) FROM pg_catalog.pg_proc p"
            " WHERE p.pronamespace = 'rls_tenancy'::regnamespace AND p.proname = %s",
            (name,),
        ).fetchone()
        assert row is not None, name
        found[name] = str(row[0]).encode()
    for name, definition in conn.execute(
        "SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid) FROM pg_catalog.pg_trigger t"
        " WHERE t.tgrelid = 'rls_tenancy.audit_log'::regclass AND NOT t.tgisinternal ORDER BY t.tgname"
    ):
        found[f"trigger {name}"] = str(definition).encode()
    return found


def _renamed(definition: bytes, shape: Shape) -> bytes:
    """A definition made to work on ``shape``'s copy: its tables and the copied functions in its schema."""
    names = b"|".join(name.encode() for name in ("audit_log", "audit_chain_heads", *COPIED))
    return re.sub(rb"rls_tenancy\.(" + names + rb")\b", shape.schema.encode() + rb".\1", definition)


def _build(conn: Conn, months: list[tuple[datetime, datetime]]) -> None:
    definitions = _copy_definitions(conn)
    conn.execute(SETUP.encode())
    for low, high in months:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} PARTITION OF audit_growth_parted.audit_log FOR VALUES FROM ({}) TO ({})"
                " WITH (fillfactor = 90, autovacuum_enabled = false)"
            ).format(PARTED.ident(_partition(low)), sql.Literal(low), sql.Literal(high))
        )
    # The copies' functions are the superuser's: the delete trigger lets their purge through, not the owner's.
    owner, me = conn.execute("SELECT rls_tenancy.role_name('owner'), current_user").fetchone() or ("", "")
    purger = (b"<> " + sql.Literal(owner).as_bytes(conn), b"<> " + sql.Literal(me).as_bytes(conn))
    for shape in SHAPES:
        for name, definition in definitions.items():
            if name == "trigger audit_log_no_delete":
                assert purger[0] in definition, "the delete trigger no longer names the owner role"
                definition = definition.replace(*purger)
            conn.execute(_renamed(definition, shape))
    purge = _renamed(definitions["purge_audit_log"], INDEXED)
    for old, new in CHAIN_CONDITIONS.items():
        assert old in purge, "the purge's chain condition changed"
        purge = purge.replace(old, new)
    conn.execute(purge)
    assert SEAL_BY_ID.encode() in definitions["seal_audit_event"], "the seal no longer finds its event by id"
    conn.execute(DROP_PARTITION.encode())


def _timestamp(value: object) -> datetime:
    assert isinstance(value, datetime), value
    return value


def _partition(low: datetime) -> str:
    return f"audit_log_{low:%Y%m}"


def _install_seal(conn: Conn, seal: str) -> None:
    """The partitioned copy's seal, one of SEALS: as shipped, or also naming ``created_at``."""
    row = conn.execute(
        "SELECT pg_catalog.pg_get_functiondef('audit_growth_parted.seal_audit_event()'::regprocedure)"
    ).fetchone()
    assert row is not None
    definition = str(row[0]).encode().replace(SEAL_KEYED.encode(), SEAL_BY_ID.encode()).replace(GENERIC, b"")
    if seal != BY_ID:
        definition = definition.replace(SEAL_BY_ID.encode(), SEAL_KEYED.encode())
    if seal == KEYED_GENERIC:
        definition = definition.replace(b" SET search_path", GENERIC + b" SET search_path", 1)
    conn.execute(definition)


def _tenants(conn: Conn, count: int) -> list[int]:
    stamp = time.monotonic_ns()
    return [
        int(row[0])
        for row in conn.execute(
            "INSERT INTO rls_tenancy.tenants (slug, name)"
            " SELECT 'growth-' || %s || '-' || n, 'growth ' || n FROM generate_series(1, %s) AS n RETURNING id",
            (stamp, count),
        )
    ]


def _fill(ctx: Context, conn: Conn, tenants: list[int], rows: int, start: datetime, until: datetime) -> None:
    """Every copy holds the same ``rows`` events, the first tenant's chain hashed for real."""
    ctx.log(f"audit growth: filling the copies with {rows:,} events")
    # Triggers off: the history keeps its times and chain fields (superuser only).
    conn.execute("SET session_replication_role = replica")
    for shape in SHAPES:  # what the writes into an empty log left
        conn.execute(
            sql.SQL("TRUNCATE {}, {} RESTART IDENTITY").format(
                shape.ident("audit_log"), shape.ident("audit_chain_heads")
            )
        )
    conn.execute(
        HISTORY,
        {"first": tenants[0], "tenants": len(tenants), "start": start, "until": until, "rows": rows},
    )
    conn.execute(CHAIN_LINKS)
    conn.execute(FILL, (tenants[0],))
    for shape in (PARTED, INDEXED):
        conn.execute(
            sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {} ORDER BY id").format(
                shape.ident("audit_log"), PLAIN.ident("audit_log")
            )
        )
    for shape in SHAPES:
        conn.execute(
            sql.SQL(
                "INSERT INTO {heads} (chain, seq, hash, last_id)"
                " SELECT DISTINCT ON (tenant_id) tenant_id, seq, hash, id FROM {log} ORDER BY tenant_id, seq DESC"
            ).format(heads=shape.ident("audit_chain_heads"), log=shape.ident("audit_log"))
        )
        conn.execute("SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(%s, 'id'), %s)", (shape.table, rows))
    conn.execute("RESET session_replication_role")
    conn.execute("DROP TABLE history")
    ctx.log("audit growth: vacuum and analyze")
    for shape in SHAPES:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(shape.ident("audit_log")))


def _write_block(shape: Shape, first: int, count: int, events: int) -> sql.Composed:
    """``events`` transactions of one ``log_event`` each, on the server, round robin over ``count`` tenants."""
    return sql.SQL(
        "DO $$ BEGIN FOR n IN 1..{events} LOOP"
        " PERFORM pg_catalog.set_config('app.current_tenant', ({first} + n % {count})::text, true);"
        " PERFORM {log_event}('bench.write', 'an audited event', '{{\"n\": 1}}');"
        " COMMIT;"
        " END LOOP; END $$"
    ).format(
        events=sql.Literal(events),
        first=sql.Literal(first),
        count=sql.Literal(count),
        log_event=shape.ident("log_event"),
    )


def _writes(ctx: Context, section: Section, conn: Conn, tenants: list[int], label: str) -> None:
    """Server time per event, plain against partitioned (seal as shipped, and keyed), rounds interleaved."""
    first, count = tenants[1], len(tenants) - 1
    variants: dict[str, tuple[Shape, str | None]] = {"plain": (PLAIN, None)}
    variants.update({f"partitioned, {seal}": (PARTED, seal) for seal in SEALS})
    variants[INDEXED_LABEL] = (INDEXED, None)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(ctx.pick(2, 8, 12)):
        for name in names[number % len(names) :] + names[: number % len(names)]:
            shape, seal = variants[name]
            if seal is not None:
                _install_seal(conn, seal)
            conn.execute(_write_block(shape, first, count, 10))  # plans cached anew
            started = time.perf_counter()
            conn.execute(_write_block(shape, first, count, EVENTS))
            times[name].append((time.perf_counter() - started) / EVENTS * 1e6)
    plain = times["plain"]
    for name in names[1:]:
        paired = statistics.median(p / b for b, p in zip(plain, times[name], strict=True))
        section.add(
            Row(
                f"log_event and its seal, {label}: {name}",
                statistics.median(plain),
                statistics.median(times[name]),
                "µs/event",
                None,
                paired_ratio=paired,
            )
        )
        ctx.log(f"audit growth: writes, {label}, {name}: ratio {paired:.2f}")


def _size(conn: Conn, shape: Shape) -> float:
    row = conn.execute(SIZE, (shape.table,)).fetchone()
    assert row is not None
    return float(row[0]) / 2**20


def _wal(conn: Conn) -> str:
    row = conn.execute("SELECT pg_catalog.pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _purge(conn: Conn, shape: Shape, low: datetime, high: datetime) -> tuple[float, int, int]:
    """Purge events older than ``high`` (the month from ``low``): wall seconds, WAL bytes, events removed."""
    before = _wal(conn)
    started = time.perf_counter()
    if shape is not PARTED:
        # now() is the transaction's, as in the purge: the cutoff is exactly ``high``.
        query = sql.SQL("SELECT {}(now() - %s::timestamptz)").format(shape.ident("purge_audit_log"))
        row = conn.execute(query, (high,)).fetchone()
    else:
        row = conn.execute(
            "SELECT audit_growth_parted.drop_partition(%s::regclass, %s)", (f"{PARTED.schema}.{_partition(low)}", high)
        ).fetchone()
    seconds = time.perf_counter() - started
    wal = conn.execute("SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), %s)", (before,)).fetchone()
    assert row is not None and wal is not None
    return seconds, int(wal[0]), int(row[0])


def _with_writers(url: Any, shape: Shape, tenants: list[int], settle: float, work: Callable[[], object]) -> Stall:
    """Run ``work`` while WRITERS connections each log events (one per transaction) for a tenant of their own."""
    stop = threading.Event()
    events: list[tuple[float, float]] = []  # (start, end), perf_counter
    lock = threading.Lock()
    failures: list[BaseException] = []
    query = sql.SQL("SELECT {}('bench.writer', 'a concurrent writer')").format(shape.ident("log_event"))

    def writer(tenant: int) -> None:
        try:
            with connect(url) as conn:
                conn.execute("SELECT pg_catalog.set_config('app.current_tenant', %s, false)", (str(tenant),))
                while not stop.is_set():
                    started = time.perf_counter()
                    conn.execute(query)
                    ended = time.perf_counter()
                    with lock:
                        events.append((started, ended))
        except BaseException as error:  # reported by the caller
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(tenant,)) for tenant in tenants[1 : WRITERS + 1]]
    for thread in threads:
        thread.start()
    try:
        time.sleep(settle / 4)  # connected and warm
        warm = time.perf_counter()
        time.sleep(settle)
        began = time.perf_counter()
        work()
        ended = time.perf_counter()
        time.sleep(min(0.5, settle / 4))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if failures:
        raise RuntimeError(f"a writer failed: {failures[0]!r}")
    before = [end - start for start, end in events if start >= warm and end < began]
    during = [end - start for start, end in events if end > began and start < ended]
    return Stall(
        before_max=max(before),
        before_p99=percentile(before, 0.99),
        during_max=max(during, default=0.0),
        purge=ended - began,
        events_during=len(during),
    )


def _pairs(
    section: Section, what: str, values: dict[Shape, float], unit: str, notes: dict[Shape, str] | None = None
) -> None:
    """One row per alternative measured, beside the plain copy's value."""
    for shape in (PARTED, INDEXED):
        if shape not in values:
            continue
        label = "partitioned" if shape is PARTED else INDEXED_LABEL
        note = "" if notes is None else f"{notes[PLAIN]} / {notes[shape]}"
        section.add(Row(f"{what}: {label}", values[PLAIN], values[shape], unit, None, note))


def _verify(conn: Conn, shape: Shape, tenant: int) -> str:
    """The first broken link of ``tenant``'s chain, or ""."""
    row = conn.execute(
        sql.SQL("SELECT event_id, chain_seq, problem FROM {}(%s)").format(shape.ident("verify_audit_chain")),
        (tenant,),
    ).fetchone()
    return "" if row is None else f"event {row[0]} (seq {row[1]}): {row[2]}"


def run(ctx: Context) -> Section:
    rows = ctx.pick(24_000, 1_200_000, 12_000_000)
    chains = ctx.pick(10, 100, 1_000)
    settle = {"smoke": 0.4, "quick": 2.0, "full": 4.0}[ctx.scale]
    section = Section(
        "The audit log under growth: one table, monthly partitions, or an index by chain",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + f" Here: {rows:,} events in {chains:,} chains, each month's purge removing a twelfth of them;"
        " baseline = the plain copy, rls_tenancy = the alternative the row names."
        " Nothing here is shipped, so nothing is judged.",
    )
    # Unsigned: the writers bind with a bare set_config; what is measured is the table's shape.
    with tenancy_database(ctx.server_url, signed=False) as db, connect(db.superuser_url) as conn:
        span = conn.execute(
            "SELECT m, m + interval '1 month' FROM generate_series("
            " date_trunc('month', now()) - interval '12 months', date_trunc('month', now()) + interval '1 month',"
            " interval '1 month') AS m"
        ).fetchall()
        months = [(_timestamp(low), _timestamp(high)) for low, high in span]
        _build(conn, months)
        tenants = _tenants(conn, chains)
        assert tenants == list(range(tenants[0], tenants[0] + chains)), "the writes take tenants by range"
        _writes(ctx, section, conn, tenants, "empty log")
        _fill(ctx, conn, tenants, rows, months[0][0], months[12][0])
        _writes(ctx, section, conn, tenants, f"{rows:,} events")
        _install_seal(conn, KEYED_GENERIC)  # the purges' writers: the partitioned copy at its best

        sizes = {shape: _size(conn, shape) for shape in SHAPES}
        _pairs(section, "table and indexes, full", sizes, "MiB")

        ctx.log("audit growth: purging the oldest month, no writers")
        purged = {shape: _purge(conn, shape, *months[0]) for shape in SHAPES}
        removed = {count for _, _, count in purged.values()}
        note = f"{removed.pop():,} events" if len(removed) == 1 else f"removed {sorted(removed)}: NOT THE SAME"
        _pairs(section, f"purge the oldest month, alone: wall time ({note})", {k: v[0] for k, v in purged.items()}, "s")
        _pairs(
            section,
            "purge the oldest month, alone: WAL written (full_page_writes off on this server)",
            {shape: wal / 2**20 for shape, (_, wal, _) in purged.items()},
            "MiB",
        )

        ctx.log("audit growth: purging the next month, writers running")
        stalls = {
            shape: _with_writers(db.superuser_url, shape, tenants, settle, partial(_purge, conn, shape, *months[1]))
            for shape in SHAPES
        }
        _pairs(
            section, "purge the next month, writers running: wall time", {k: v.purge for k, v in stalls.items()}, "s"
        )
        _pairs(
            section,
            "writers' longest wait, no purge running",
            {k: v.before_max * 1e3 for k, v in stalls.items()},
            "ms",
            {k: f"p99 {v.before_p99 * 1e3:.1f} ms" for k, v in stalls.items()},
        )
        _pairs(
            section,
            "writers' longest wait while the purge runs",
            {k: v.during_max * 1e3 for k, v in stalls.items()},
            "ms",
            {k: f"{v.events_during} events overlapped it" for k, v in stalls.items()},
        )

        after = {shape: _size(conn, shape) for shape in SHAPES}
        _pairs(section, "table and indexes after the purges, no VACUUM", after, "MiB")
        for shape in SHAPES:
            conn.execute(sql.SQL("VACUUM {}").format(shape.ident("audit_log")))
        _pairs(section, "table and indexes after the purges and VACUUM", {s: _size(conn, s) for s in SHAPES}, "MiB")

        ctx.log("audit growth: purging one day more of the unpartitioned copies, vacuumed, writers running")
        day = conn.execute("SELECT %s::timestamptz + interval '1 day'", (months[2][0],)).fetchone()
        assert day is not None
        days = {
            shape: _with_writers(
                db.superuser_url, shape, tenants, settle, partial(_purge, conn, shape, months[2][0], _timestamp(day[0]))
            )
            for shape in (PLAIN, INDEXED)
        }
        _pairs(
            section,
            "purge one day more after VACUUM, writers running: their longest wait",
            {k: v.during_max * 1e3 for k, v in days.items()},
            "ms",
            {k: f"the purge took {v.purge:.2f} s" for k, v in days.items()},
        )

        ctx.log("audit growth: verifying the hashed chain")
        problems = {shape.name: _verify(conn, shape, tenants[0]) for shape in SHAPES}
        base, parted_time = side_by_side(
            lambda: _verify(conn, PLAIN, tenants[0]),
            lambda: _verify(conn, PARTED, tenants[0]),
            repeats=ctx.pick(1, 3, 5),
            warmup=1,
        )
        length = conn.execute(
            "SELECT seq - anchor_seq FROM audit_growth_plain.audit_chain_heads WHERE chain = %s", (tenants[0],)
        ).fetchone()
        assert length is not None
        broken = "; ".join(f"{name} BROKEN: {problem}" for name, problem in problems.items() if problem)
        section.add(
            Row(
                f"verify one chain after the purges ({length[0]:,} events): partitioned",
                base * 1e3,
                parted_time * 1e3,
                "ms",
                None,
                broken or "intact in all three copies, from their anchors",
            )
        )
    return section
