"""A one-query ORM transaction taken apart: what binding and scoping each cost.

``python -m benchmarks.session_parts`` runs the round-trips section's
one-query transaction through a ``Session`` in several variants (the
baseline, binding alone, scoping alone, both, the same through
``engine.connect()``), each on an engine of its own, the variants' turns in
a shuffled order so that none follows itself more often than another. For
each it reports the round trips counted on the wire, the median client CPU
per transaction (``time.thread_time``), the median wall time, and the CPU
its PostgreSQL backend spent per transaction (``/proc/<pid>/schedstat``,
when the server runs on this machine). ``--delay 0.001`` puts the delaying
proxy of the round-trips section in between.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import sessionmaker

from benchmarks import dataset as data
from benchmarks.round_trips import DATASET, PlainItem, TenantItem, _count, _engine, _proxy_process, _transaction
from rls_tenancy import TenantQuery, as_tenant, scope_sessions
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import tenancy_database
from rls_tenancy.testing.proxy import RoundTripProxy
from rls_tenancy.testing.server import postgres_server


@dataclass(frozen=True)
class Variant:
    """One way of running the transaction; ``bound``: a bound engine as the app role, else the bypass role."""

    name: str
    bound: bool
    scoped: bool = False  # scope_sessions on its sessionmaker (and no explicit WHERE tenant_id)
    mixin: bool = False  # TenantItem (TenantBoundMixin) instead of PlainItem
    query_cls: bool = False  # sessionmaker(query_cls=TenantQuery)
    core: bool = False  # engine.connect() and text(), as the section's first rows


VARIANTS = (
    Variant("baseline: plain Session, explicit WHERE", bound=False),
    Variant("bound + scoped + TenantQuery (README)", bound=True, scoped=True, mixin=True, query_cls=True),
    Variant("bound + scoped", bound=True, scoped=True, mixin=True),
    Variant("bound, plain Session, explicit WHERE", bound=True, mixin=True),
    Variant("bound, plain Session and model", bound=True),
    Variant("unbound, scoped", bound=False, scoped=True, mixin=True, query_cls=True),
    Variant("unbound, plain Session, mixin model", bound=False, mixin=True),
    Variant("connect(): baseline", bound=False, core=True),
    Variant("connect(): bound", bound=True, core=True),
)


@dataclass(frozen=True)
class Measured:
    client_cpu_us: float  # medians per transaction
    wall_us: float
    backend_cpu_us: float | None  # mean per transaction


def transaction(variant: Variant, engine: Engine, items: data.Dataset) -> Callable[[], None]:
    if variant.core:
        return _transaction(engine, items, 1, variant.bound)
    rng = random.Random(11)
    tenant = items.small_tenants(1)[0]
    factory = sessionmaker(engine, query_cls=TenantQuery) if variant.query_cls else sessionmaker(engine)
    if variant.scoped:
        scope_sessions(factory)
    if variant.mixin:

        def mixin() -> None:
            with as_tenant(tenant), factory() as session, session.begin():
                query = select(TenantItem).where(TenantItem.id == rng.randint(1, items.rows))
                if not variant.scoped:
                    query = query.where(TenantItem.tenant_id == tenant)
                session.scalars(query).all()

        return mixin

    def plain() -> None:
        with as_tenant(tenant), factory() as session, session.begin():
            wanted = PlainItem.id == rng.randint(1, items.rows)
            session.scalars(select(PlainItem).where(wanted, PlainItem.tenant_id == tenant)).all()

    return plain


def round_trips(db: TenancyDatabase, items: data.Dataset, variants: tuple[Variant, ...]) -> dict[str, float]:
    """Round trips per transaction of each variant, counted on the wire."""
    counted = {}
    with RoundTripProxy(str(db.app_url.host), int(db.app_url.port or 5432)) as proxy:
        for variant in variants:
            engine = _engine(_url(db, variant, proxy.port), variant.bound)
            try:
                counted[variant.name] = _count(proxy, transaction(variant, engine, items))
            finally:
                engine.dispose()
    return counted


def measure(
    engines: dict[Variant, Engine], items: data.Dataset, transactions: int, rng: random.Random
) -> dict[str, Measured]:
    """Each variant ``transactions`` times, in turns of a shuffled order; per-transaction figures."""
    work = {variant: transaction(variant, engine, items) for variant, engine in engines.items()}
    backends = {variant: _backend_pid(engine, items) for variant, engine in engines.items()}
    for one in work.values():  # connected, statements prepared, caches filled
        for _ in range(20):
            one()
    cpu: dict[Variant, list[float]] = {variant: [] for variant in work}
    wall: dict[Variant, list[float]] = {variant: [] for variant in work}
    before = {variant: _backend_ns(pid) for variant, pid in backends.items()}
    order = list(work)
    gc.collect()
    gc.disable()
    try:
        for _ in range(transactions):
            for variant in rng.sample(order, len(order)):
                started, started_cpu = time.perf_counter(), time.thread_time()
                work[variant]()
                cpu[variant].append(time.thread_time() - started_cpu)
                wall[variant].append(time.perf_counter() - started)
    finally:
        gc.enable()
    measured = {}
    for variant in order:
        start, end = before[variant], _backend_ns(backends[variant])
        backend = None if start is None or end is None else (end - start) / transactions / 1e3
        measured[variant.name] = Measured(
            statistics.median(cpu[variant]) * 1e6, statistics.median(wall[variant]) * 1e6, backend
        )
    return measured


def _url(db: TenancyDatabase, variant: Variant, port: int | None) -> URL:
    url = db.app_url if variant.bound else db.bypass_url
    return url if port is None else url.set(host="127.0.0.1", port=port)


def _backend_pid(engine: Engine, items: data.Dataset) -> int:
    with as_tenant(items.small_tenants(1)[0]), engine.connect() as conn:  # pool_size=1: the variant's backend
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        conn.commit()
    return pid


def _backend_ns(pid: int) -> int | None:
    """CPU time a local backend has run, in ns; None when this machine cannot see it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def _engines(db: TenancyDatabase, variants: tuple[Variant, ...], delay: float) -> Iterator[dict[Variant, Engine]]:
    with ExitStack() as stack:
        port = None
        if delay:
            port = stack.enter_context(_proxy_process(str(db.app_url.host), int(db.app_url.port or 5432), delay=delay))
        engines = {variant: _engine(_url(db, variant, port), variant.bound) for variant in variants}
        try:
            yield engines
        finally:
            for engine in engines.values():
                engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.session_parts", description=__doc__)
    parser.add_argument("--transactions", type=int, default=3000, help="per variant and run (default 3000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each way through a proxy (default none)")
    args = parser.parse_args(argv)
    rng = random.Random(5)
    with postgres_server() as server_url, tenancy_database(server_url) as db:
        items = data.build(db.superuser_url, name=DATASET, tenants=10, rows=10_000)
        for name, trips in round_trips(db, items, VARIANTS).items():
            print(f"round trips  {name:44} {trips:g}")
        with _engines(db, VARIANTS, args.delay) as engines:
            for run in range(1, args.runs + 1):
                measured = measure(engines, items, args.transactions, rng)
                base = measured[VARIANTS[0].name]
                print(f"run {run}: {args.transactions} transactions per variant, delay {args.delay * 1e3:g} ms")
                print(f"  {'variant':44} {'client CPU µs':>14} {'added':>7} {'wall µs':>8} {'ratio':>6}", end="")
                print(f" {'backend µs':>10}")
                for name, row in measured.items():
                    backend = "–" if row.backend_cpu_us is None else f"{row.backend_cpu_us:.0f}"
                    print(
                        f"  {name:44} {row.client_cpu_us:14.0f} {row.client_cpu_us - base.client_cpu_us:+7.0f}"
                        f" {row.wall_us:8.0f} {row.wall_us / base.wall_us:6.3f} {backend:>10}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
