"""What a signed request for no user pays for its reset: ``python -m benchmarks.anonymous_reset``.

Signed, each block acting for no user (a request) begins with a session
reset, as two of them may be two clients. One-query transactions of a
tenant, each in a block of its own, on one pooled connection, three ways
taking turns round by round: for no user (a reset each), for no user with
that rule off (a measurement only: it lets one client's SQL reach the
next), and for a user (whose requests keep the session their user left).
Printed: the median wall time per transaction, on this machine, without
network latency.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from alembic.config import Config
from sqlalchemy import Engine, create_engine, select

from benchmarks.context import DEMO_ALEMBIC_INI
from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.binding import engine as binding
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.testing.database import require_signing, tenancy_database
from rls_tenancy.testing.server import postgres_server
from saas_demo.models import Project

_SEED_TENANT = "INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('anon', 'Anon') RETURNING id"
_SEED_USER = "INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (%s, 'u@anon.example') RETURNING id"
_SEED_PROJECTS = "INSERT INTO public.projects (tenant_id, name) SELECT %s, 'p' || n FROM generate_series(1, 100) n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anonymous_reset", description=__doc__)
    parser.add_argument("--transactions", type=int, default=1000, help="per way and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with (
        postgres_server() as server,
        tenancy_database(server, alembic_config=Config(str(DEMO_ALEMBIC_INI)), signed=False) as db,
    ):
        superuser = db.superuser_url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(superuser) as conn:
            tenant = _one(conn, _SEED_TENANT)
            user = _one(conn, _SEED_USER, tenant)
            conn.execute(_SEED_PROJECTS, (tenant,))
        key = ContextKey.generate(1)
        require_signing(db.superuser_url, key)
        engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0), context_key=key)
        try:
            for line in _measure(engine, tenant, user, args.transactions, args.rounds):
                print(line)
        finally:
            engine.dispose()
    return 0


def _one(conn: psycopg.Connection[Any], query: str, *values: object) -> int:
    row = conn.execute(query, values or None).fetchone()
    assert row is not None
    return int(row[0])


def _measure(engine: Engine, tenant: int, user: int, transactions: int, rounds: int) -> list[str]:
    shipped = binding._needs_reset

    def rule_off(*args: Any, **kwargs: Any) -> bool:  # the block-per-client rule off: user None counts as one
        kwargs["beginning"] = None
        return shipped(*args, **kwargs)

    def run(acting_for: int | None) -> float:
        started = time.perf_counter()
        for number in range(transactions):
            with as_tenant(tenant, user=acting_for), engine.connect() as conn:
                conn.execute(select(Project.name).where(Project.id == 1 + number % 50)).all()
                conn.commit()
        return (time.perf_counter() - started) / transactions * 1e6

    ways: dict[str, tuple[int | None, Callable[..., bool]]] = {
        "for no user, a reset each": (None, shipped),
        "for no user, the rule off": (None, rule_off),
        "for a user": (user, shipped),
    }
    times: dict[str, list[float]] = {way: [] for way in ways}
    run(None), run(user)  # warm: connected, plans cached
    try:
        for number in range(rounds):
            order = list(ways) if number % 2 == 0 else list(reversed(ways))
            for way in order:
                acting_for, rule = ways[way]
                binding._needs_reset = rule
                times[way].append(run(acting_for))
    finally:
        binding._needs_reset = shipped
    return [f"{way:28} {statistics.median(spent):7.0f} µs per transaction" for way, spent in times.items()]


if __name__ == "__main__":
    raise SystemExit(main())
