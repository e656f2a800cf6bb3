"""End to end through Flask: the demo app against a plain Flask + SQLAlchemy app.

``GET /api/projects`` (read) and ``POST /api/projects`` (write), each app in a
server process of its own on the same PostgreSQL, loaded from a third
process by keep-alive clients as random tenants, 1 and 16 at a time. The
baseline (``benchmarks/endpoints_baseline.py``) does the same work by the
same means (ORM, token function, user load, an event row per write) with
explicit ``WHERE tenant_id`` as a role RLS does not apply to; what is left
is what the library costs, the audit log's hash chain on writes included.
A machine whose speed drifts (a shared one) must slow both apps alike. So
one client takes turns between the two apps request by request (only one
request in flight, as with one client of either app; each app's throughput
is its requests over the time they took), and 16 clients load each app in
turn in short rounds, back to back. The throughput ratio is the median of
the rounds' ratios; p99 is over all of an app's requests together; memory
is each server's peak over all of them. Each method's rows are then
measured again with the database requiring a signed tenant context and a
second server of the demo app signing with its key, against the same
baseline.
"""

from __future__ import annotations

import statistics

from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from benchmarks.context import Context
from benchmarks.dataset import connect
from benchmarks.endpoints_baseline import create_baseline_app
from benchmarks.harness import Row, Section, Target, percentile
from benchmarks.load import Load, Served, run_alternating, run_load
from rls_tenancy import ContextKey, UnsafeBypass, bind_engine
from rls_tenancy.binding.signing import ENVIRONMENT
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from saas_demo.app import create_app
from saas_demo.seed import Seeded, seed

THROUGHPUT = Target("ratio", ">=", 0.95)
P99 = Target("added", "<=", 1.0, "ms")
MEMORY = Target("ratio", "<=", 1.10)


def run(ctx: Context) -> Section:
    seconds = {"smoke": 0.3, "quick": 0.8, "full": 2.0}[ctx.scale]
    rounds = ctx.pick(1, 5, 15)
    section = Section(
        "End to end through Flask",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + f" {rounds} rounds of {seconds} s per app and setting.",
    )
    with ctx.demo_database() as db:
        seeded = prepare(db)
        tokens = [seeded.tokens["acme/ci"], seeded.tokens["globex/ci"]]
        signing = not signing_requested()  # else the database requires it and every app signs already
        key = ContextKey.generate()
        if signing:
            with connect(db.superuser_url) as conn:
                conn.execute("SELECT rls_tenancy.install_context_key(%s, %s)", (key.slot, key.key))
        baseline = Served(create_baseline_app, db.bypass_url)
        apps = [("", Served(create_app, db.app_url, db.bypass_url), False)]
        try:
            if signing:
                signed = Served(create_app, db.app_url, db.bypass_url, environment={ENVIRONMENT: str(key)})
                apps.append((", signed context", signed, True))
            # Each method's rows, unsigned then signed, before the next method: the reads see the same
            # projects whichever app serves them (the writes add some).
            for method, label in (("GET", "read: GET /api/projects"), ("POST", "write: POST /api/projects")):
                for suffix, tenancy, required in apps:
                    if signing:
                        with connect(db.superuser_url) as conn:
                            conn.execute("SELECT rls_tenancy.require_signed_context(%s)", (required,))
                    for clients in (1, 16):
                        what = f"{label}, {clients} client{'s' if clients > 1 else ''}{suffix}"
                        _rows(section, what, _load(baseline, tenancy, method, tokens, clients, rounds, seconds))
                        ctx.log(f"{what} done")
            base_rss, rls_rss = baseline.peak_rss_kib(), apps[0][1].peak_rss_kib()
            section.add(
                Row("peak resident memory of the server process", base_rss / 1024, rls_rss / 1024, "MiB", MEMORY)
            )
        finally:
            for _, served, _ in apps:
                served.stop()
            baseline.stop()
    return section


def _load(
    baseline: Served, tenancy: Served, method: str, tokens: list[str], clients: int, rounds: int, seconds: float
) -> dict[str, list[Load]]:
    """``rounds`` loads of both apps by ``clients`` clients, taking turns."""
    runs: dict[str, list[Load]] = {"baseline": [], "tenancy": []}
    for number in range(rounds):
        if clients == 1:
            loads = run_alternating((baseline.port, tenancy.port), method, "/api/projects", tokens, 2 * seconds)
        else:
            order = (baseline, tenancy) if number % 2 == 0 else (tenancy, baseline)
            done = {
                served: run_load(served.port, method, "/api/projects", tokens, clients, seconds) for served in order
            }
            loads = (done[baseline], done[tenancy])
        runs["baseline"].append(loads[0])
        runs["tenancy"].append(loads[1])
    return runs


def prepare(db: TenancyDatabase) -> Seeded:
    """The demo's tenants, users and tokens in ``db``, and what the baseline app needs there."""
    app_engine = bind_engine(create_engine(db.app_url))
    bypass_engine = create_engine(db.bypass_url)
    try:
        seeded = seed(app_engine, UnsafeBypass(bypass_engine))
    finally:
        app_engine.dispose()
        bypass_engine.dispose()
    _grant_baseline(db.superuser_url, str(db.bypass_url.username))
    return seeded


def _grant_baseline(superuser_url: URL, role: str) -> None:
    """The baseline's event table (beside the audit log) and what its role needs."""
    with connect(superuser_url) as conn:
        conn.execute(
            "CREATE TABLE public.bench_plain_events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " tenant_id bigint NOT NULL, user_id bigint, action text NOT NULL, message text NOT NULL,"
            " data jsonb, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            sql.SQL(
                "GRANT EXECUTE ON FUNCTION rls_tenancy.authenticate_token(bigint, bytea) TO {role};"
                " GRANT SELECT, INSERT ON public.bench_plain_events TO {role};"
                " GRANT USAGE ON SEQUENCE public.bench_plain_events_id_seq TO {role}"
            ).format(role=sql.Identifier(role))
        )


def _rows(section: Section, what: str, runs: dict[str, list[Load]]) -> None:
    failures = {name: sum(load.failures for load in loads) for name, loads in runs.items()}
    note = ""
    if any(failures.values()):
        firsts = [load.first_failure for loads in runs.values() for load in loads if load.first_failure]
        note = f"FAILED requests: baseline {failures['baseline']}, rls_tenancy {failures['tenancy']} ({firsts[0]})"
    throughput = {name: statistics.median(load.throughput for load in loads) for name, loads in runs.items()}
    paired = statistics.median(
        tenancy.throughput / base.throughput if base.throughput else 0.0
        for base, tenancy in zip(runs["baseline"], runs["tenancy"], strict=True)
    )
    pooled = {name: [latency for load in loads for latency in load.latencies] for name, loads in runs.items()}
    p99 = {name: percentile(latencies, 0.99) * 1e3 if latencies else 0.0 for name, latencies in pooled.items()}
    section.add(
        Row(
            f"{what}: throughput",
            throughput["baseline"],
            throughput["tenancy"],
            "req/s",
            THROUGHPUT,
            note,
            paired_ratio=paired,
        )
    )
    section.add(Row(f"{what}: p99 latency", p99["baseline"], p99["tenancy"], "ms", P99, note))
