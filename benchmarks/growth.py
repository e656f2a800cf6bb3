"""Growth: the RLS overhead ratio as tenants and rows grow.

The same shapes as the query-overhead section, on fresh tables of each size
(tenant 1 holding 10 % of the rows as before), each dropped after it is
measured. The ratio should stay flat: the policy adds one index condition
whose cost does not depend on how many tenants or rows there are.
"""

from __future__ import annotations

from benchmarks import dataset as data
from benchmarks.context import Context
from benchmarks.harness import Row, Section, Target
from benchmarks.shapes import SHAPES, measure

FLAT = Target("ratio", "<=", 1.05)
MEASURED = ("primary-key lookup", "COUNT over one small tenant")


def _grid(ctx: Context) -> list[tuple[int, int]]:
    if ctx.scale == "smoke":
        return [(10, 5_000), (200, 20_000)]
    if ctx.scale == "quick":
        return [(10, 100_000), (1_000, 100_000), (10_000, 1_000_000)]
    return [(tenants, rows) for rows in (100_000, 1_000_000, 10_000_000) for tenants in (10, 1_000, 100_000)]


def run(ctx: Context) -> Section:
    samples = ctx.pick(2, 41, 151)
    section = Section(
        "Growth: RLS overhead as tenants and rows grow",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
        + f" Measured as in the query-overhead section, {samples} samples per row.",
    )
    shapes = [shape for shape in SHAPES if shape.name in MEASURED]
    with ctx.library_database() as db:
        for number, (tenants, rows) in enumerate(_grid(ctx)):
            ctx.log(f"growth: {tenants:,} tenants, {rows:,} rows")
            items = data.build(db.superuser_url, name=f"growth{number}", tenants=tenants, rows=rows)
            try:
                with data.connect(db.app_url) as rls_conn, data.connect(db.bypass_url) as base_conn:
                    for shape in shapes:
                        loop = _loop(shape.batch * 10, rows // tenants) if shape.scans_tenant else None
                        base, rls, ratio = measure(shape, items, rls_conn, items, base_conn, samples=samples, loop=loop)
                        what = f"{shape.name}: {tenants:,} tenants, {rows:,} rows"
                        section.add(Row(what, base * 1e3, rls * 1e3, "ms", FLAT, paired_ratio=ratio))
            finally:
                data.drop(db.superuser_url, items)
    return section


def _loop(batch: int, rows_per_tenant: int) -> int:
    """Queries per sample of a shape that scans the tenant: fewer when a small tenant is large (10 tenants
    of 10,000,000 rows hold 1,000,000 each), so that its row takes about as long at every size."""
    return max(2, min(batch, batch * 10_000 // max(1, rows_per_tenant)))
