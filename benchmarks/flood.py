"""The audit log under a flood of junk tokens: the rate it leaves, and the rows it writes.

The demo app (repeated rejections counted per source and minute, the
default; tokens marked by a token key, as the demo configures it) is loaded
from one address with bearer tokens that hold for no tenant, well-formed
made-up ones (without the key's mark, refused before any lookup) and
malformed ones, and one real token, revoked, sent again and again, and,
taking turns with them, with no credentials at all; all answer 401. The ratio is the flood's rate over the rate without
credentials, 1 client (request by request) and 16 (rounds back to back).
Two more servers of the demo app, shown for comparison: one writes every
rejection (``RLS_TENANCY_REJECTION_WINDOW=0``, as before the counting), one
has no token key (``RLS_TENANCY_TOKEN_KEYS=""``), so each well-formed token
is looked up in the database. Then the rows the counted flood wrote to the
audit log, per reason and started minute.
"""

from __future__ import annotations

import functools
import math
import statistics
import time

from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from benchmarks.context import Context
from benchmarks.dataset import connect
from benchmarks.endpoints import prepare
from benchmarks.harness import Row, Section, Target
from benchmarks.load import Load, Served, run_alternating, run_load
from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.identity.token_key import token_keys
from rls_tenancy.identity.tokens import issue_token, revoke_token
from saas_demo.app import create_app

RATE = Target("ratio", ">=", 0.9)
ROWS = Target("value", "<=", 2, "rows")
PATH = "/api/projects"
FLOODS = {
    "well-formed tokens of no tenant": [f"rlst_{n}_" + "A" * 43 for n in range(1, 200)],
    "malformed tokens": ["rlst_not-a-token", "rlst_1_short", "x" * 80],
}
_REJECTED = sql.SQL(
    "SELECT count(*) FROM rls_tenancy.audit_log"
    " WHERE action = 'auth.token_rejected' AND id > %s AND id <= %s AND ip = '127.0.0.1'"
)


def run(ctx: Context) -> Section:
    seconds = {"smoke": 0.3, "quick": 0.8, "full": 2.0}[ctx.scale]
    rounds = ctx.pick(1, 5, 15)
    section = Section(
        "The audit log under a flood of junk tokens",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip() + f" {rounds} rounds of {seconds} s per side.",
    )
    with ctx.demo_database() as db:
        seeded = prepare(db)
        floods = {**FLOODS, "a revoked token, replayed": [_revoked(db.app_url, seeded.tenants["acme"])]}
        with connect(db.superuser_url) as conn:
            first = conn.execute("SELECT coalesce(max(id), 0) FROM rls_tenancy.audit_log").fetchone()
        last = int(str(first[0])) if first else 0
        app = Served(create_app, db.app_url, db.bypass_url)
        each = Served(functools.partial(create_app, RLS_TENANCY_REJECTION_WINDOW=0), db.app_url, db.bypass_url)
        unkeyed = Served(functools.partial(create_app, RLS_TENANCY_TOKEN_KEYS=""), db.app_url, db.bypass_url)
        started, requests = time.monotonic(), 0
        try:
            for kind, junk in floods.items():
                for clients in (1, 16):
                    what = f"{kind}, {clients} client{'s' if clients > 1 else ''}"
                    runs = _flood(app.port, junk, clients, rounds, seconds)
                    requests += sum(len(load.latencies) + load.failures for load in runs["flood"])
                    _rows(section, what, runs, RATE)
                    ctx.log(f"flood of {what} done")
            elapsed = time.monotonic() - started
            with connect(db.superuser_url) as conn:
                row = conn.execute("SELECT coalesce(max(id), 0) FROM rls_tenancy.audit_log").fetchone()
            last_counted = int(str(row[0])) if row else 0
            well_formed = next(iter(FLOODS.values()))
            for server, how in ((each, "every rejection written"), (unkeyed, "no token key: each looked up")):
                for clients in (1, 16):
                    what = f"{next(iter(FLOODS))}, {clients} client{'s' if clients > 1 else ''}, {how}"
                    _rows(section, what, _flood(server.port, well_formed, clients, rounds, seconds), None)
        finally:
            app.stop()
            each.stop()
            unkeyed.stop()
        minutes = math.ceil(elapsed / 60)
        with connect(db.superuser_url) as conn:  # the counted flood's rows (the other server's come after)
            counted = conn.execute(_REJECTED, (last, last_counted)).fetchone()
        written = int(str(counted[0])) if counted else 0
        section.add(
            Row(
                "audit rows per reason and started minute of the flood",
                None,
                written / len(floods) / minutes,
                "rows",
                ROWS,
                f"{written} rows for {requests:,} junk requests over {minutes} minute(s)",
            )
        )
    return section


def _revoked(app_url: URL, tenant: int) -> str:
    """A real token of ``tenant``, marked by the configured key, and revoked."""
    keys = token_keys(None)
    engine = bind_engine(create_engine(app_url))
    try:
        with as_tenant(tenant), Session(engine) as session, session.begin():
            issued = issue_token(session, name="revoked", scopes=["projects:read"], key=keys[0] if keys else None)
            revoke_token(session, issued.id)
    finally:
        engine.dispose()
    return issued.token


def _flood(port: int, junk: list[str], clients: int, rounds: int, seconds: float) -> dict[str, list[Load]]:
    runs: dict[str, list[Load]] = {"none": [], "flood": []}
    for number in range(rounds):
        if clients == 1:
            none, flood = run_alternating(
                (port, port), "GET", PATH, [""], 2 * seconds, second_tokens=junk, expected=401
            )
        else:
            order = (("none", [""]), ("flood", junk)) if number % 2 == 0 else (("flood", junk), ("none", [""]))
            done = {name: run_load(port, "GET", PATH, tokens, clients, seconds, expected=401) for name, tokens in order}
            none, flood = done["none"], done["flood"]
        runs["none"].append(none)
        runs["flood"].append(flood)
    return runs


def _rows(section: Section, what: str, runs: dict[str, list[Load]], target: Target | None) -> None:
    failed = sum(load.failures for loads in runs.values() for load in loads)
    firsts = [load.first_failure for loads in runs.values() for load in loads if load.first_failure]
    note = f"FAILED requests: {failed} ({firsts[0]})" if failed else ""
    rate = {name: statistics.median(load.throughput for load in loads) for name, loads in runs.items()}
    paired = statistics.median(
        flood.throughput / none.throughput if none.throughput else 0.0
        for none, flood in zip(runs["none"], runs["flood"], strict=True)
    )
    section.add(Row(f"{what}: rate", rate["none"], rate["flood"], "req/s", target, note, paired_ratio=paired))
