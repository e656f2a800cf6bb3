"""What a newcomer looks up: an audit event's attributes, and the migration for an app's own tenant table.

The pages are checked against what exists: every column of
``rls_tenancy.audit_log`` is named in the API reference, and the SQL that
docs/adopting.md gives for making one tenant per organisation runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import URL

from rls_tenancy import AuditEvent
from rls_tenancy.testing.database import tenancy_database

DOCS = Path(__file__).parents[2] / "docs"


def test_every_attribute_of_an_audit_event_is_documented() -> None:
    page = (DOCS / "api.md").read_text().split("## Audit log", 1)[1].split("\n## ", 1)[0]
    for column in AuditEvent.__table__.columns:
        assert f"`{column.name}`" in page, f"api.md does not name AuditEvent.{column.name}"
    assert "`as_dict()`" in page


class _RecordingOp:
    """Alembic's ``op``, as far as the page's snippet uses it, run on one connection."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

    def execute(self, statement: str) -> None:
        self.connection.execute(text(statement))

    def add_column(self, table: str, column: sa.Column[Any]) -> None:
        kind = column.type.compile(self.connection.dialect)
        self.connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


def test_one_tenant_per_organisation_as_adopting_says(rls_postgres_url: URL) -> None:
    """Run as a migration runs (the owner, on a database the library's install has just made), with ids
    that are not the tenants' sequence's next: each organisation's id becomes its tenant's, and the next
    tenant draws a new one."""
    page = (DOCS / "adopting.md").read_text()
    section = page.split("**An app with a tenant table of its own**", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    with tenancy_database(rls_postgres_url) as db:
        engine = sa.create_engine(db.superuser_url)
        try:
            with engine.begin() as connection:
                connection.execute(text("CREATE TABLE organisations (id serial PRIMARY KEY, name text UNIQUE)"))
                connection.execute(
                    text("INSERT INTO organisations (id, name) VALUES (7, 'Acme Ltd.'), (12, '  Globex & Co ')")
                )
                namespace: dict[str, Any] = {"op": _RecordingOp(connection), "sa": sa}
                exec(snippet.group(1), namespace)
                namespace["upgrade"]()
                made = connection.execute(
                    text(
                        "SELECT o.id, t.id, t.slug, t.name FROM organisations AS o "
                        "JOIN rls_tenancy.tenants AS t ON t.id = o.tenant_id ORDER BY o.id"
                    )
                ).all()
                later = connection.execute(
                    text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('later', 'Later') RETURNING id")
                ).scalar_one()
        finally:
            engine.dispose()
    assert [tuple(row) for row in made] == [
        (7, 7, "acme-ltd", "Acme Ltd."),
        (12, 12, "globex-co", "  Globex & Co "),
    ]
    assert later == 13
