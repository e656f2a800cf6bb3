"""Query shapes, each as the app writes it under RLS and as a baseline would.

The RLS query leaves the tenant to the policy; the baseline, run by the
BYPASSRLS role, says ``tenant_id = {t}`` itself. See :func:`measure` for how
they are timed.
"""

from __future__ import annotations

import gc
import itertools
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
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.binding.signing import configured_key

Params = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    name: str
    rls: str  # templates: {items}, {notes} and {parted} become the dataset's tables
    baseline: str
    params: Callable[[Dataset, int, random.Random], Params]
    batch: int = 20
    large: bool = False  # run as the large tenant rather than small ones
    weight: float = 1.0  # of the run's samples, for shapes much slower than the others
    scans_tenant: bool = False  # its cost grows with the tenant's rows (a COUNT, a text search)

    @property
    def tables(self) -> int:
        """How many isolated tables the query reads: each checks a signed context's proof once."""
        return 1 + ("{notes}" in self.rls)

    def statement(self, dataset: Dataset, rls: bool, *, in_loop: bool = False) -> sql.Composed:
        """The query for a client (psycopg placeholders) or for :func:`measure`'s loop (``p->>name``)."""
        template = self.rls if rls else self.baseline
        values = {name: (_loop_value if in_loop else _client_value)(name, kind) for name, kind in _TYPES.items()}
        return sql.SQL(template).format(
            items=sql.Identifier(dataset.items),
            notes=sql.Identifier(dataset.notes),
            parted=sql.Identifier(dataset.parted or dataset.items),
            **values,
        )


#: Every parameter a shape may use, with its SQL type.
_TYPES = {"id": "bigint", "t": "bigint", "skip": "integer", "before": "timestamptz", "pattern": "text"}


def _client_value(name: str, kind: str) -> sql.Composable:
    return sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(kind))


def _loop_value(name: str, kind: str) -> sql.Composable:
    return sql.SQL("(p ->> {})::{}").format(sql.Literal(name), sql.SQL(kind))


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
        "SELECT title FROM {items} WHERE id = {id}",
        "SELECT title FROM {items} WHERE tenant_id = {t} AND id = {id}",
        _an_item,
    ),
    Shape(
        "primary-key lookup, hash-partitioned by tenant (pruned to one partition)",
        "SELECT title FROM {parted} WHERE id = {id}",
        "SELECT title FROM {parted} WHERE tenant_id = {t} AND id = {id}",
        _an_item,
    ),
    # What the ORM filter sends (scope_sessions adds tenant_id = :param): the planner prunes at planning.
    Shape(
        "primary-key lookup, hash-partitioned, with the ORM filter's tenant_id",
        "SELECT title FROM {parted} WHERE tenant_id = {t} AND id = {id}",
        "SELECT title FROM {parted} WHERE tenant_id = {t} AND id = {id}",
        _an_item,
    ),
    Shape(
        "indexed range, LIMIT 20",
        "SELECT id, title FROM {items} WHERE created_at < {before} ORDER BY created_at DESC LIMIT 20 OFFSET {skip}",
        "SELECT id, title FROM {items} WHERE tenant_id = {t} AND created_at < {before}"
        " ORDER BY created_at DESC LIMIT 20 OFFSET {skip}",
        _before,
    ),
    Shape(
        "COUNT over one small tenant",
        "SELECT count(*) FROM {items}",
        "SELECT count(*) FROM {items} WHERE tenant_id = {t}",
        _tenant,
        batch=5,
        scans_tenant=True,
    ),
    Shape(
        "COUNT over the large tenant (10 % of rows)",
        "SELECT count(*) FROM {items}",
        "SELECT count(*) FROM {items} WHERE tenant_id = {t}",
        _tenant,
        batch=1,
        large=True,
        weight=0.3,
        scans_tenant=True,
    ),
    Shape(
        "two-table join, LIMIT 20",
        "SELECT i.title, n.body FROM {items} AS i JOIN {notes} AS n ON n.item_id = i.id"
        " WHERE i.created_at < {before} ORDER BY i.created_at DESC LIMIT 20 OFFSET {skip}",
        "SELECT i.title, n.body FROM {items} AS i JOIN {notes} AS n ON n.item_id = i.id"
        " AND n.tenant_id = {t} WHERE i.tenant_id = {t} AND i.created_at < {before}"
        " ORDER BY i.created_at DESC LIMIT 20 OFFSET {skip}",
        _before,
    ),
    Shape(
        "text search, ILIKE (not leakproof)",
        "SELECT count(*) FROM {items} WHERE title ILIKE {pattern}",
        "SELECT count(*) FROM {items} WHERE tenant_id = {t} AND title ILIKE {pattern}",
        _pattern,
        batch=5,
        scans_tenant=True,
    ),
)


def bind_session(conn: psycopg.Connection[Any], tenant: int, key: ContextKey | None = None) -> None:
    """Session-wide, for the benchmark connection only: the query cost is what is measured here.

    With ``key`` (or ``$RLS_TENANCY_CONTEXT_KEY``, a run against signing
    databases), the proof too: a database that requires one checks it in
    every statement.
    """
    conn.execute(
        "SELECT pg_catalog.set_config('app.current_tenant', %s, false),"
        " pg_catalog.set_config('app.context_proof', %s, false)",
        (str(tenant), session_proof(conn, tenant, key)),
    )


def session_proof(conn: psycopg.Connection[Any], tenant: int, key: ContextKey | None = None) -> str:
    """A proof of ``tenant`` (no user) for this connection's backend, good for five minutes; empty without a key."""
    key = key or configured_key(None)
    return "" if key is None else key.proof(tenant, None, pid=conn.info.backend_pid)


def measure(
    shape: Shape,
    dataset: Dataset,
    rls_conn: psycopg.Connection[Any],
    rls_dataset: Dataset,
    base_conn: psycopg.Connection[Any],
    *,
    samples: int,
    seed: int = 7,
    loop: int | None = None,
    key: ContextKey | None = None,
) -> tuple[float, float, float]:
    """Median server-side seconds per query (baseline, RLS) and the median of the per-sample ratios.

    Each side runs its query ``shape.batch * 10`` times per sample in a
    PL/pgSQL loop on its own connection (a temporary function, so the plan is
    cached as a prepared statement's would be), samples interleaved. Timing
    the query from the client instead measures mostly the client, the
    loopback and the scheduler: on a small machine two identical connections
    differ by 15 % there. Each sample is timed warm (its pages read once
    before, untimed): what is compared is the CPU the policy costs, not I/O
    that either side may pay first. ``rls_dataset`` may differ from ``dataset``, to time
    an anti-pattern table against the sound baseline.
    """
    loop = loop or shape.batch * 10
    samples = max(2, round(samples * shape.weight))
    rng = random.Random(seed)
    tenants = [LARGE_TENANT] if shape.large else dataset.small_tenants(16)
    base_loop = _loop_function(base_conn, shape.statement(dataset, rls=False, in_loop=True))
    rls_loop = _loop_function(rls_conn, shape.statement(rls_dataset, rls=True, in_loop=True))
    times: tuple[list[float], list[float]] = ([], [])
    gc.collect()
    gc.disable()  # a collection inside one sample and not the other is noise
    try:
        for index in range(samples + 1):  # the first warms caches and plans
            tenant = tenants[index % len(tenants)]
            params = json.dumps([shape.params(dataset, tenant, rng) for _ in range(loop)])
            bind_session(rls_conn, tenant, key)
            # Warm: whichever side ran second would otherwise find the tenant's
            # pages in shared buffers that the first had to read.
            # Both warm, in the timed order, so each timed run follows the other side's.
            order = ((base_conn, base_loop, 0), (rls_conn, rls_loop, 1))
            order = order if index % 2 == 0 else order[::-1]
            for conn, function, _ in order:
                conn.execute(sql.SQL("SELECT {}(%s::jsonb)").format(function), (params,))
            for conn, function, which in order:
                start = time.perf_counter()
                conn.execute(sql.SQL("SELECT {}(%s::jsonb)").format(function), (params,))
                if index:
                    times[which].append((time.perf_counter() - start) / loop)
    finally:
        gc.enable()
    ratios = [rls / base for base, rls in zip(times[0], times[1], strict=True)]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


_functions = itertools.count()


def _loop_function(conn: psycopg.Connection[Any], query: sql.Composed) -> sql.Composed:
    """A temporary function running ``query`` once per element of its jsonb array argument."""
    name = sql.SQL("pg_temp.{}").format(sql.Identifier(f"bench_loop_{next(_functions)}"))
    body = sql.SQL(
        "DECLARE p jsonb; BEGIN FOR p IN SELECT jsonb_array_elements(params)"
        " LOOP PERFORM * FROM ({}) AS q; END LOOP; END"
    ).format(query)
    conn.execute(
        sql.SQL("CREATE FUNCTION {}(params jsonb) RETURNS void LANGUAGE plpgsql AS {}").format(
            name, sql.Literal(body.as_string(conn))
        )
    )
    return name


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
