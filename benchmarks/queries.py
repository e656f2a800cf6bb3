"""Query overhead of RLS: the same shapes with the policy and with an explicit WHERE.

1,000,000 items over 1,000 tenants, one of which holds 10 % of them (and
500,000 notes). Each shape is checked first: the RLS query and the baseline
return the same rows, and EXPLAIN shows an index condition on ``tenant_id``.
Beside them, two anti-patterns on the same data, timed against the same
sound baseline, so a regression toward them is obvious: a policy through a
VOLATILE function (no index can use it) and a table whose only index does
not lead with ``tenant_id``.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import dataset as data
from benchmarks.context import Context
from benchmarks.harness import Row, Section, Target
from benchmarks.shapes import SHAPES, Shape, bind_session, index_conditions, measure, plan, results
from rls_tenancy.binding.context_key import ContextKey

OVERHEAD = Target("ratio", "<=", 1.05)


def run(ctx: Context) -> Section:
    rows = ctx.pick(20_000, 1_000_000, 1_000_000)
    tenants = ctx.pick(50, 1_000, 1_000)
    samples = ctx.pick(2, 61, 301)
    section = Section(
        f"Query overhead of RLS ({rows:,} rows, {tenants:,} tenants, one with 10 %)",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + " Server-side time per query (each sample runs the query 10 to 200 times in a PL/pgSQL loop, pages"
        f" warm), {samples} samples interleaved; the ratio is the median of the per-sample ratios. The RLS side"
        " runs as the application"
        " role with the tenant bound, the baseline as the BYPASSRLS role with `WHERE tenant_id = ...`.",
    )
    with ctx.library_database() as db:
        ctx.log(f"building {rows:,} rows")
        items = data.build(db.superuser_url, name="bench", tenants=tenants, rows=rows, parted=True)
        with data.connect(db.app_url) as rls_conn, data.connect(db.bypass_url) as base_conn:
            indexed = 0
            for shape in SHAPES:
                check = _check(shape, items, rls_conn, base_conn)
                indexed += check == ""
                base, rls, ratio = measure(shape, items, rls_conn, items, base_conn, samples=samples)
                section.add(Row(shape.name, base * 1e3, rls * 1e3, "ms", OVERHEAD, check, paired_ratio=ratio))
                ctx.log(f"{shape.name}: ratio {ratio:.3f}")
            section.add(
                Row(
                    "shapes whose RLS query returns the baseline's rows, with an index condition on tenant_id",
                    None,
                    indexed,
                    "shapes",
                    Target("value", "==", len(SHAPES)),
                )
            )
            _signed_rows(ctx, section, db.superuser_url, items, rls_conn, base_conn, samples)
            # RLS is applied while planning: a query PostgreSQL plans afresh for
            # each execution (a custom plan) pays it each time. With generic plans
            # (planned once per connection) what is left is the execution.
            for conn in (rls_conn, base_conn):
                conn.execute("SET plan_cache_mode = force_generic_plan")
            for shape in SHAPES:
                base, rls, ratio = measure(shape, items, rls_conn, items, base_conn, samples=max(2, samples // 2))
                what = f"{shape.name}, generic plans"
                section.add(Row(what, base * 1e3, rls * 1e3, "ms", None, "planning excluded", paired_ratio=ratio))
            _signed_rows(
                ctx, section, db.superuser_url, items, rls_conn, base_conn, max(2, samples // 2), ", generic plans"
            )
            for conn in (rls_conn, base_conn):
                conn.execute("RESET plan_cache_mode")
            for name, shape, table in _anti_patterns(ctx, db.superuser_url, items):
                base, rls, ratio = measure(shape, items, rls_conn, table, base_conn, samples=2, loop=1)
                section.add(Row(name, base * 1e3, rls * 1e3, "ms", None, "anti-pattern", paired_ratio=ratio))
    return section


def _signed_rows(
    ctx: Context,
    section: Section,
    superuser_url: Any,
    items: data.Dataset,
    rls_conn: psycopg.Connection[Any],
    base_conn: psycopg.Connection[Any],
    samples: int,
    plans: str = "",
) -> None:
    """Each shape again with a signed context required, beside the baseline and the unsigned policy.

    The unsigned and signed policies are each timed against the baseline,
    sample by sample; a row's ``added`` is what the signed one adds per query
    over the unsigned one, against 10 µs for each isolated table it reads.
    ``plans`` names the connections' plan cache mode, when not the default.
    """
    key = ContextKey.generate()
    with data.connect(superuser_url) as conn:
        conn.execute("SELECT rls_tenancy.install_context_key(%s, %s)", (key.slot, key.key))
    for shape in SHAPES:
        unsigned, signed = _unsigned_then_signed(shape, items, rls_conn, base_conn, superuser_url, key, samples)
        base, rls, ratio = signed
        section.add(Row(f"{shape.name}, signed context{plans}", base * 1e3, rls * 1e3, "ms", None, paired_ratio=ratio))
        # Each side's ratio is paired with the baseline sample by sample; the baseline's time
        # turns their difference into µs (two runs' medians would differ by their drift).
        before, after = base * unsigned[2] * 1e6, base * ratio * 1e6
        section.add(
            Row(
                f"{shape.name}: signed over unsigned, per query{plans}",
                before,
                after,
                "µs",
                Target("added", "<=", 10.0 * shape.tables),
                f"{shape.tables} isolated table(s)",
            )
        )
        added = after - before
        ctx.log(f"{shape.name}, signed{plans}: ratio {ratio:.3f} (unsigned {unsigned[2]:.3f}), +{added:.1f} µs")


def _unsigned_then_signed(
    shape: Shape,
    items: data.Dataset,
    rls_conn: psycopg.Connection[Any],
    base_conn: psycopg.Connection[Any],
    superuser_url: Any,
    key: ContextKey,
    samples: int,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    measured = []
    for required in (False, True):
        with data.connect(superuser_url) as conn:
            conn.execute("SELECT rls_tenancy.require_signed_context(%s)", (required,))
        measured.append(measure(shape, items, rls_conn, items, base_conn, samples=samples, key=key))
    with data.connect(superuser_url) as conn:
        conn.execute("SELECT rls_tenancy.require_signed_context(false)")
    return measured[0], measured[1]


def _check(
    shape: Shape, items: data.Dataset, rls_conn: psycopg.Connection[Any], base_conn: psycopg.Connection[Any]
) -> str:
    """'' when the RLS query returns the baseline's rows and uses a tenant_id index; else what is wrong."""
    tenant = data.LARGE_TENANT if shape.large else items.small_tenants(1)[0]
    params = shape.params(items, tenant, random.Random(3))
    bind_session(rls_conn, tenant)
    rls_statement, base_statement = shape.statement(items, rls=True), shape.statement(items, rls=False)
    problems = []
    seen, expected = results(rls_conn, rls_statement, params), results(base_conn, base_statement, params)
    if seen != expected or not expected or expected == [(0,)]:
        problems.append(f"RLS returned {len(seen)} rows, baseline {len(expected)}")
    if not any("tenant_id" in condition for condition in index_conditions(plan(rls_conn, rls_statement, params))):
        problems.append("no index condition on tenant_id")
    return "wrong: " + "; ".join(problems) if problems else ""


def _anti_patterns(ctx: Context, superuser_url: Any, items: data.Dataset) -> list[tuple[str, Shape, data.Dataset]]:
    """Tables (sharing the data) that show what the library's policy shape avoids."""
    by_name = {shape.name: shape for shape in SHAPES}
    lookup, count = by_name["primary-key lookup"], by_name["COUNT over one small tenant"]
    with data.connect(superuser_url) as conn:
        ctx.log("anti-patterns: a VOLATILE policy function; no tenant index")
        for suffix, key in (("volatile", "tenant_id, id"), ("unindexed", "id")):
            table = sql.Identifier(f"{items.items}_{suffix}")
            conn.execute(
                sql.SQL("CREATE TABLE {t} (LIKE {items} INCLUDING DEFAULTS, PRIMARY KEY ({key}))").format(
                    t=table, items=sql.Identifier(items.items), key=sql.SQL(key)
                )
            )
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(table, sql.Identifier(items.items)))
            conn.execute("SELECT rls_tenancy.enable_tenant_isolation(%s::regclass)", (table.as_string(conn),))
        conn.execute(
            # PL/pgSQL: PostgreSQL would inline a SQL function, volatile or not, and index it after all.
            "CREATE FUNCTION public.bench_volatile_tenant() RETURNS bigint LANGUAGE plpgsql VOLATILE"
            " AS $$ BEGIN RETURN nullif(current_setting('app.current_tenant', true), '')::bigint; END $$"
        )
        conn.execute(
            sql.SQL("ALTER POLICY tenant_isolation ON {} USING (tenant_id = public.bench_volatile_tenant())").format(
                sql.Identifier(f"{items.items}_volatile")
            )
        )
        # enable_tenant_isolation added an index on tenant_id; the anti-pattern is its absence.
        index = conn.execute(
            "SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
            (sql.Identifier(f"{items.items}_unindexed").as_string(conn),),
        ).fetchall()
        for (name,) in index:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(str(name))))
        for suffix in ("volatile", "unindexed"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(f"{items.items}_{suffix}")))
    volatile = data.Dataset(
        f"{items.items}_volatile", items.notes, items.parted, items.tenants, items.rows, items.large_rows
    )
    unindexed = data.Dataset(
        f"{items.items}_unindexed", items.notes, items.parted, items.tenants, items.rows, items.large_rows
    )
    return [
        ("primary-key lookup, policy through a VOLATILE function", lookup, volatile),
        ("COUNT over one small tenant, policy through a VOLATILE function", count, volatile),
        ("primary-key lookup, no index leading with tenant_id", lookup, unindexed),
        ("COUNT over one small tenant, no index leading with tenant_id", count, unindexed),
    ]
