"""Query shapes, each as the app writes it under RLS and as a baseline would.

The RLS query leaves the tenant to the policy; the baseline, run by the
BYPASSRLS role, says ``tenant_id = %(t)s`` itself. Both run on their own
autocommit connection, a batch per sample, samples interleaved; the RLS
connection has the tenant set (untimed) before each sample.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.dataset import LARGE_TENANT, Dataset

Params = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    name: str
    rls: str  # templates: {items} and {notes} become the dataset's tables
    baseline: str
    params: Callable[[Dataset, int, random.Random], Params]
    batch: int = 20
    large: bool = False  # run as the large tenant rather than small ones

    def statement(self, dataset: Dataset, rls: bool) -> sql.Composed:
        template = self.rls if rls else self.baseline
        return sql.SQL(template).format(items=sql.Identifier(dataset.items), notes=sql.Identifier(dataset.notes))


def _an_item(dataset: Dataset, tenant: int, rng: random.Random) -> Params:
    """An id that belongs to ``tenant``, by dataset.build's distribution."""
    if tenant == LARGE_TENANT:
        return {"t": tenant, "id": rng.randint(1, dataset.large_rows)}
    others = max(1, dataset.tenants - 1)  # small tenant t holds ids g > large_rows with g % others == t - 2
    first = -(-(dataset.large_rows + 1 - (tenant - 2)) // others)
    last = (dataset.rows - (tenant - 2)) // others
    return {"t": tenant, "id": others * rng.randint(first, max(first, last)) + tenant - 2}


def _before(_dataset: Dataset, tenant: int, rng: random.Random) -> Params:
    return {"t": tenant, "before": "2026-01-01T00:00:00Z", "skip": rng.randint(0, 3)}


def _pattern(_dataset: Dataset, tenant: int, rng: random.Random) -> Params:
    return {"t": tenant, "pattern": f"%{rng.choice('0123456789abcdef')}{rng.choice('0123456789abcdef')}a%"}


def _tenant(_dataset: Dataset, tenant: int, _rng: random.Random) -> Params:
    return {"t": tenant}


SHAPES = (
    Shape(
        "primary-key lookup",
        "SELECT title FROM {items} WHERE id = %(id)s",
        "SELECT title FROM {items} WHERE tenant_id = %(t)s AND id = %(id)s",
        _an_item,
    ),
    Shape(
        "indexed range, LIMIT 20",
        "SELECT id, title FROM {items} WHERE created_at < %(before)s::timestamptz ORDER BY created_at DESC"
        " LIMIT 20 OFFSET %(skip)s",
        "SELECT id, title FROM {items} WHERE tenant_id = %(t)s AND created_at < %(before)s::timestamptz"
        " ORDER BY created_at DESC LIMIT 20 OFFSET %(skip)s",
        _before,
    ),
    Shape(
        "COUNT over one small tenant",
        "SELECT count(*) FROM {items}",
        "SELECT count(*) FROM {items} WHERE tenant_id = %(t)s",
        _tenant,
        batch=5,
    ),
    Shape(
        "COUNT over the large tenant (10 % of rows)",
        "SELECT count(*) FROM {items}",
        "SELECT count(*) FROM {items} WHERE tenant_id = %(t)s",
        _tenant,
        batch=1,
        large=True,
    ),
    Shape(
        "two-table join, LIMIT 20",
        "SELECT i.title, n.body FROM {items} AS i JOIN {notes} AS n ON n.item_id = i.id"
        " WHERE i.created_at < %(before)s::timestamptz ORDER BY i.created_at DESC LIMIT 20 OFFSET %(skip)s",
        "SELECT i.title, n.body FROM {items} AS i JOIN {notes} AS n ON n.item_id = i.id"
        " AND n.tenant_id = %(t)s WHERE i.tenant_id = %(t)s AND i.created_at < %(before)s::timestamptz"
        " ORDER BY i.created_at DESC LIMIT 20 OFFSET %(skip)s",
        _before,
    ),
    Shape(
        "text search, ILIKE (not leakproof)",
        "SELECT count(*) FROM {items} WHERE title ILIKE %(pattern)s",
        "SELECT count(*) FROM {items} WHERE tenant_id = %(t)s AND title ILIKE %(pattern)s",
        _pattern,
        batch=5,
    ),
)


def bind_session(conn: psycopg.Connection[Any], tenant: int) -> None:
    """Session-wide, for the benchmark connection only: the query cost is what is measured here."""
    conn.execute("SELECT pg_catalog.set_config('app.current_tenant', %s, false)", (str(tenant),))


def measure(
    shape: Shape,
    dataset: Dataset,
    rls_conn: psycopg.Connection[Any],
    rls_dataset: Dataset,
    base_conn: psycopg.Connection[Any],
    *,
    samples: int,
    seed: int = 7,
) -> tuple[float, float]:
    """Median seconds per query: (baseline, RLS), from interleaved batches.

    ``rls_dataset`` may differ from ``dataset`` to time an anti-pattern table
    against the sound baseline.
    """
    rng = random.Random(seed)
    tenants = [LARGE_TENANT] if shape.large else dataset.small_tenants(16)
    base_sql, rls_sql = shape.statement(dataset, rls=False), shape.statement(rls_dataset, rls=True)
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(samples + 2):  # the first two warm caches and plans
        tenant = tenants[index % len(tenants)]
        batch = [shape.params(dataset, tenant, rng) for _ in range(shape.batch)]
        bind_session(rls_conn, tenant)
        order = ((base_conn, base_sql, 0), (rls_conn, rls_sql, 1))
        for conn, statement, which in order if index % 2 == 0 else order[::-1]:
            elapsed = _timed(conn, statement, batch)
            if index >= 2:
                times[which].append(elapsed / shape.batch)
    return statistics.median(times[0]), statistics.median(times[1])


def _timed(conn: psycopg.Connection[Any], statement: sql.Composed, batch: list[Params]) -> float:
    start = time.perf_counter()
    for params in batch:
        conn.execute(statement, params).fetchall()
    return time.perf_counter() - start


def results(conn: psycopg.Connection[Any], statement: sql.Composed, params: Params) -> list[tuple[Any, ...]]:
    return conn.execute(statement, params).fetchall()


def plan(conn: psycopg.Connection[Any], statement: sql.Composed, params: Params) -> dict[str, Any]:
    """EXPLAIN's JSON plan of ``statement`` (not run)."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params).fetchone()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return dict(document[0]["Plan"])


def index_conditions(node: dict[str, Any]) -> Iterator[str]:
    """Every index condition in a plan tree."""
    for key in ("Index Cond", "Recheck Cond"):
        if key in node:
            yield str(node[key])
    for child in node.get("Plans", []):
        yield from index_conditions(child)
