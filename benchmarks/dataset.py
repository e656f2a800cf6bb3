"""The benchmark tables: items and their notes, skewed over many tenants.

Tenant 1 holds ``large_share`` of the items (the one big customer every SaaS
has); the rest are spread evenly over tenants 2..``tenants``. Each table is
isolated with ``rls_tenancy.enable_tenant_isolation`` exactly as an app's
migration would; the bypass role (BYPASSRLS) runs the baseline queries with
explicit ``WHERE tenant_id = ...`` on the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

LARGE_TENANT = 1
#: The partitioned copy of the items: hash partitions by tenant_id, as a SaaS might shard its biggest table.
PARTITIONS = 16


@dataclass(frozen=True)
class Dataset:
    items: str  # table names, in the public schema
    notes: str
    parted: str  # the items again, hash-partitioned by tenant_id ("" when not built)
    tenants: int
    rows: int
    large_rows: int

    def small_tenants(self, count: int) -> list[int]:
        """``count`` tenants other than the large one, spread over the range."""
        others = max(1, self.tenants - 1)
        step = max(1, others // max(1, count))
        return [2 + (index * step) % others for index in range(count)] if self.tenants > 1 else [LARGE_TENANT]


def connect(url: URL, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=autocommit
    )


def build(
    superuser_url: URL, *, name: str, tenants: int, rows: int, large_share: float = 0.10, parted: bool = False
) -> Dataset:
    """Create and fill ``<name>_items`` and ``<name>_notes`` (one note per two items), isolated.

    ``parted``: ``<name>_parted`` too, the items again in hash partitions by tenant_id.
    """
    large_rows = int(rows * large_share) if tenants > 1 else rows
    items, notes = sql.Identifier(f"{name}_items"), sql.Identifier(f"{name}_notes")
    with connect(superuser_url) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {items} (tenant_id bigint NOT NULL, id bigint NOT NULL,"
                " created_at timestamptz NOT NULL, title text NOT NULL, PRIMARY KEY (tenant_id, id))"
            ).format(items=items)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {items} SELECT CASE WHEN g <= %(large)s THEN %(big)s"
                " ELSE 2 + (g %% greatest(%(tenants)s - 1, 1)) END,"
                " g, timestamptz '2026-01-01' - g * interval '1 second', md5(g::text)"
                " FROM generate_series(1, %(rows)s) AS g"
            ).format(items=items),
            {"large": large_rows, "big": LARGE_TENANT, "tenants": tenants, "rows": rows},
        )
        conn.execute(
            sql.SQL("CREATE INDEX {index} ON {items} (tenant_id, created_at)").format(
                index=sql.Identifier(f"{name}_items_created"), items=items
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE {notes} (tenant_id bigint NOT NULL, id bigint NOT NULL, item_id bigint NOT NULL,"
                " body text NOT NULL, PRIMARY KEY (tenant_id, id),"
                " FOREIGN KEY (tenant_id, item_id) REFERENCES {items} (tenant_id, id))"
            ).format(notes=notes, items=items)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {notes} SELECT tenant_id, id, id, 'note ' || title FROM {items} WHERE id % 2 = 0"
            ).format(notes=notes, items=items)
        )
        conn.execute(
            sql.SQL("CREATE INDEX {index} ON {notes} (tenant_id, item_id)").format(
                index=sql.Identifier(f"{name}_notes_item"), notes=notes
            )
        )
        copy = sql.Identifier(f"{name}_parted")
        tables = [items, notes, copy] if parted else [items, notes]
        if parted:
            conn.execute(
                sql.SQL("CREATE TABLE {parted} (LIKE {items} INCLUDING ALL) PARTITION BY HASH (tenant_id)").format(
                    parted=copy, items=items
                )
            )
            for remainder in range(PARTITIONS):
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {part} PARTITION OF {parted} FOR VALUES WITH (MODULUS {m}, REMAINDER {r})"
                    ).format(
                        part=sql.Identifier(f"{name}_parted_{remainder}"),
                        parted=copy,
                        m=sql.Literal(PARTITIONS),
                        r=sql.Literal(remainder),
                    )
                )
            conn.execute(sql.SQL("INSERT INTO {parted} SELECT * FROM {items}").format(parted=copy, items=items))
        for table in tables:
            conn.execute(
                sql.SQL("SELECT rls_tenancy.enable_tenant_isolation({})").format(sql.Literal(table.as_string()))
            )
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
    return Dataset(f"{name}_items", f"{name}_notes", f"{name}_parted" if parted else "", tenants, rows, large_rows)


def drop(superuser_url: URL, dataset: Dataset) -> None:
    with connect(superuser_url) as conn:
        names = [name for name in (dataset.parted, dataset.notes, dataset.items) if name]
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(map(sql.Identifier, names))))
