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
from sqlalchemy import Engine, text

from rls_tenancy import AuditEvent

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


def test_one_tenant_per_organisation_as_adopting_says(bypass_engine: Engine) -> None:
    page = (DOCS / "adopting.md").read_text()
    section = page.split("**An app with a tenant table of its own**", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    with bypass_engine.connect() as connection:
        connection.execute(text("CREATE TEMP TABLE organisations (id serial PRIMARY KEY, name text UNIQUE)"))
        connection.execute(text("INSERT INTO organisations (name) VALUES ('Acme Ltd.'), ('  Globex & Co ')"))
        namespace: dict[str, Any] = {"op": _RecordingOp(connection), "sa": sa}
        exec(snippet.group(1), namespace)
        namespace["upgrade"]()
        made = connection.execute(
            text(
                "SELECT o.name, t.slug, t.name FROM organisations AS o "
                "JOIN rls_tenancy.tenants AS t ON t.id = o.tenant_id ORDER BY o.id"
            )
        ).all()
        connection.rollback()
    assert [tuple(row) for row in made] == [
        ("Acme Ltd.", "acme-ltd", "Acme Ltd."),
        ("  Globex & Co ", "globex-co", "  Globex & Co "),
    ]
