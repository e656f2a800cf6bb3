"""Feature flags and the audit log: what a check costs, and what the hash chain costs.

Flags: once a request's overrides are loaded (one query for all flags), a
check is a few dictionary lookups and, for a rollout, a SHA-256 of the key
and scope; it is timed against a dictionary lookup of a precomputed bool.
The target of 5 µs per check keeps even a page checking dozens of flags
under a tenth of a millisecond. Queries per request are counted through the
demo app's ``GET /api/features``, which evaluates every declared flag.

Audit: events per second, one event per transaction, as the application
role with the tenant bound, through ``log_event`` (hash chain sealed at
commit under the tenant's chain lock) against a plain INSERT of the same
columns into an equivalent table (same role, RLS, an index on
``(tenant_id, id)``). One tenant with one writer, one tenant with 8 writers
contending for its chain, and 8 tenants with a writer each. Short rounds
alternate which side goes first; the ratio is the median of the rounds'
ratios. Afterwards every acknowledged event is counted and every chain
verified.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from benchmarks.context import Context
from benchmarks.dataset import connect
from benchmarks.harness import Row, Section, Target, side_by_side
from benchmarks.shapes import session_proof
from rls_tenancy import Tenant, UnsafeBypass, as_tenant, bind_engine, log_event
from rls_tenancy.audit.chain import verify_chains
from rls_tenancy.features.declare import Feature, FeatureRegistry
from rls_tenancy.features.flags import Flags
from rls_tenancy.features.overrides import set_global_override, set_override
from saas_demo.app import create_app
from saas_demo.seed import seed

CHECK = Target("value", "<=", 5.0, "µs")
ONE_QUERY = Target("value", "==", 1)
ONE_TENANT = Target("ratio", ">=", 0.5)
# The seal stays at commit (decided); across tenants it is judged at 0.6 of plain inserts.
MANY_TENANTS = Target("ratio", ">=", 0.6)
WRITERS = 8

#: The baseline table, shared with the pgbench scripts beside it.
PLAIN_TABLE = (Path(__file__).parent / "pgbench" / "plain_table.sql").read_bytes()
PLAIN_INSERT = text("INSERT INTO public.bench_plain_audit (action, message, data) VALUES (:action, :message, :data)")

# The same two writes on the server alone: 200 transactions of one event each,
# in one DO block (a client's own work, the same for both, left out). The
# tenant comes from the session setting bench.tenant.
SERVER_EVENTS = 200
SERVER_PLAIN = """DO $$ BEGIN FOR n IN 1..200 LOOP
    PERFORM set_config('app.current_tenant', current_setting('bench.tenant'), true);
    INSERT INTO public.bench_plain_audit (action, message, data) VALUES ('bench.server', 'a plain event', '{"n": 1}');
    COMMIT;
END LOOP; END $$"""
SERVER_AUDITED = """DO $$ BEGIN FOR n IN 1..200 LOOP
    PERFORM set_config('app.current_tenant', current_setting('bench.tenant'), true);
    PERFORM rls_tenancy.log_event('bench.server', 'an audited event', '{"n": 1}');
    COMMIT;
END LOOP; END $$"""


def run(ctx: Context) -> Section:
    section = Section("Feature flags and the audit log", __doc__.split("\n\n", 1)[1].replace("\n", " ").strip())
    with ctx.demo_database() as db:
        app_engine = bind_engine(create_engine(db.app_url, pool_size=WRITERS + 2))
        bypass = UnsafeBypass(create_engine(db.bypass_url))
        try:
            seeded = seed(app_engine, bypass)
            _flags(ctx, section, app_engine, bypass)
            _queries_per_request(section, db.app_url, db.bypass_url, seeded.tokens["acme/ci"])
            with connect(db.superuser_url) as conn:
                conn.execute(PLAIN_TABLE)
            tenants = _tenants(bypass, WRITERS)
            _audit_on_the_server(ctx, section, db.app_url, tenants[0])
            _audit(ctx, section, app_engine, bypass, tenants)
        finally:
            app_engine.dispose()
            bypass.engine.dispose()
    return section


def _flags(ctx: Context, section: Section, engine: Engine, bypass: UnsafeBypass) -> None:
    registry = FeatureRegistry()
    features = [
        Feature("bench-default", scope="tenant", registry=registry),
        Feature("bench-rollout", scope="tenant", enable_chance=0.5, registry=registry),
        Feature("bench-tenant-override", scope="tenant", allow_overrides="admin", registry=registry),
        Feature("bench-global-override", scope="tenant", registry=registry),
    ]
    tenant = _tenants(bypass, 1)[0]
    with bypass.session(reason="benchmark: a global override") as session:
        set_global_override(session, features[3], True, registry=registry)
    checks = ctx.pick(2_000, 200_000, 1_000_000)
    with as_tenant(tenant), Session(engine) as session:
        set_override(session, features[2], True, granted=["admin"], registry=registry)
        session.commit()
        flags = Flags(session, registry)
        values = {feature.key: flags.is_enabled(feature) for feature in features}
        keys = [feature.key for feature in features]

        def tenancy() -> None:
            for index in range(checks):
                flags.is_enabled(keys[index & 3])

        def baseline() -> None:
            for index in range(checks):
                values.get(keys[index & 3])

        base, flagged = side_by_side(baseline, tenancy, repeats=ctx.pick(1, 5, 9), warmup=1)
        section.add(Row("flag check, in memory", base / checks * 1e6, flagged / checks * 1e6, "µs", CHECK))
        section.add(
            Row(
                f"queries for {checks:,} checks of {len(features)} flags in one unit of work",
                None,
                flags.queries,
                "queries",
                ONE_QUERY,
            )
        )


def _queries_per_request(section: Section, app_url: URL, bypass_url: URL, token: str) -> None:
    app: Flask = create_app(app_url, bypass_url, TESTING=True)
    engine: Engine = app.extensions["rls_tenancy"].engine
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: statements.append(statement))
    try:
        with app.test_client() as client:
            client.get("/api/features", headers={"Authorization": f"Bearer {token}"})  # warm
            statements.clear()
            answer = client.get("/api/features", headers={"Authorization": f"Bearer {token}"})
        loads = [
            statement for statement in statements if "o.feature = ANY" in statement
        ]  # the flags load, not the list
        note = "" if answer.status_code == 200 else f"request failed: {answer.status_code}"
        flags = len(answer.get_json().get("features", [])) if answer.status_code == 200 else 0
        section.add(
            Row(
                f"queries for flags in a request evaluating all {flags} demo flags",
                None,
                len(loads),
                "queries",
                ONE_QUERY,
                note,
            )
        )
    finally:
        tenancy = app.extensions["rls_tenancy"]
        for each in (tenancy.engine, tenancy.audit_engine, tenancy.bypass.engine if tenancy.bypass else None):
            if each is not None:
                each.dispose()


def _tenants(bypass: UnsafeBypass, count: int) -> list[int]:
    with bypass.session(reason="benchmark: tenants") as session:
        made = [Tenant(slug=f"bench-{time.monotonic_ns()}-{n}", name="Benchmark") for n in range(count)]
        session.add_all(made)
        session.flush()
        return [tenant.id for tenant in made]


def _audit(ctx: Context, section: Section, engine: Engine, bypass: UnsafeBypass, tenants: list[int]) -> None:
    seconds = {"smoke": 0.2, "quick": 0.75, "full": 1.5}[ctx.scale]
    rounds = ctx.pick(1, 6, 16)
    acknowledged = {"audited": 0, "plain": 0}
    cases = [
        ("one tenant, 1 writer", [tenants[0]], ONE_TENANT),
        (f"one tenant, {WRITERS} writers", [tenants[0]] * WRITERS, ONE_TENANT),
        (f"{WRITERS} tenants, a writer each", tenants[:WRITERS], MANY_TENANTS),
    ]
    for what, writers, target in cases:
        rates: dict[str, list[float]] = {"audited": [], "plain": []}
        for number in range(rounds):
            order = ["plain", "audited"] if number % 2 == 0 else ["audited", "plain"]
            for kind in order:
                written = _write_for(engine, writers, seconds, _audited if kind == "audited" else _plain)
                acknowledged[kind] += written
                rates[kind].append(written / seconds)
        base, audited = statistics.median(rates["plain"]), statistics.median(rates["audited"])
        # Each round's two runs are back to back: the median of their ratios
        # holds up when the machine's speed drifts between rounds.
        paired = statistics.median(a / p if p else 0.0 for p, a in zip(rates["plain"], rates["audited"], strict=True))
        section.add(Row(f"audit events per second, {what}", base, audited, "events/s", target, paired_ratio=paired))
        ctx.log(f"audit, {what}: ratio {paired:.2f}")
    with bypass.connect(reason="benchmark: count and verify the audit events") as conn:
        stored = conn.execute(
            select(func.count()).select_from(text("rls_tenancy.audit_log")).where(text("action = 'bench.event'"))
        ).scalar_one()
        broken = [status for status in verify_chains(conn) if status.problem]
    note = f"{stored:,} stored, {len(broken)} broken chain(s)"
    section.add(
        Row(
            "acknowledged audit events stored, chains intact",
            acknowledged["audited"],
            stored,
            "events",
            Target("ratio", "==", 1.0),
            note if broken else "",
        )
    )


def _audit_on_the_server(ctx: Context, section: Section, app_url: URL, tenant: int) -> None:
    """Server time per committed event, as the application role: what the chain costs PostgreSQL."""
    times: dict[str, list[float]] = {"plain": [], "audited": []}
    with connect(app_url) as conn:
        conn.execute(
            "SELECT set_config('bench.tenant', %s, false), set_config('app.context_proof', %s, false)",
            (str(tenant), session_proof(conn, tenant)),
        )
        for block in (SERVER_PLAIN, SERVER_AUDITED):  # warm: plans cached, chain head created
            conn.execute(block)
        for number in range(ctx.pick(2, 8, 20)):
            order = ["plain", "audited"] if number % 2 == 0 else ["audited", "plain"]
            for kind in order:
                started = time.perf_counter()
                conn.execute(SERVER_PLAIN if kind == "plain" else SERVER_AUDITED)
                times[kind].append((time.perf_counter() - started) / SERVER_EVENTS * 1e6)
    paired = statistics.median(a / p for p, a in zip(times["plain"], times["audited"], strict=True))
    section.add(
        Row(
            "server time per committed event (DO loop), one tenant",
            statistics.median(times["plain"]),
            statistics.median(times["audited"]),
            "µs",
            None,
            "not judged: what PostgreSQL spends; a client adds its own work to both",
            paired_ratio=paired,
        )
    )
    ctx.log(f"audit on the server: ratio {paired:.2f}")


def _audited(session: Session, number: int) -> None:
    log_event(session, "bench.event", "an audited event", data={"n": number})


def _plain(session: Session, number: int) -> None:
    session.execute(PLAIN_INSERT, {"action": "bench.event", "message": "a plain event", "data": f'{{"n": {number}}}'})


def _write_for(engine: Engine, tenants: list[int], seconds: float, write: Callable[[Session, int], None]) -> int:
    """Events committed, one per transaction, by one thread per entry of ``tenants`` for ``seconds``."""
    counts = [0] * len(tenants)
    deadline = time.perf_counter() + seconds

    def writer(slot: int) -> None:
        with as_tenant(tenants[slot]):
            while time.perf_counter() < deadline:
                with Session(engine) as session, session.begin():
                    write(session, counts[slot])
                counts[slot] += 1

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(len(tenants))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)
