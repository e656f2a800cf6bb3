"""docs/adopting.md, "Converting existing tables": the documented migration, run on tables that hold rows.

The app (examples/existing_tables) had its own Alembic chain, inv_0001, with
serial ids and a plain foreign key, and rows in both tables. inv_0002, the
migration the page shows, converts them; this runs exactly that file.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from existing_tables.models import Base
from psycopg import sql
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy import RoleNames, as_tenant, bind_engine
from rls_tenancy.schema.migrate import downgrade, upgrade
from rls_tenancy.testing import empty_database
from rls_tenancy.testing.database import require_signing, signing_requested

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "existing_tables"
INI = EXAMPLE / "alembic.ini"
ROLES = RoleNames(owner="conv_owner", app="conv_app", bypass="conv_admin")
# Where an exported DATABASE_URL would send a migration: nowhere. Neither path below may go there.
ELSEWHERE = "postgresql://nobody@127.0.0.1:1/elsewhere"

KEYS = text(
    "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid IN ('invoices'::regclass, 'invoice_lines'::regclass) AND contype IN ('p', 'f') "
    "AND confrelid IS DISTINCT FROM 'rls_tenancy.tenants'::regclass ORDER BY 1, 2"
)
ROWS = text(
    "SELECT i.id, i.number, t.slug FROM invoices i JOIN rls_tenancy.tenants t ON t.id = i.tenant_id ORDER BY i.id"
)
LINES = text("SELECT id, invoice_id, tenant_id FROM invoice_lines ORDER BY id")


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture()
def before(rls_postgres_url: URL) -> Iterator[URL]:
    """The app's database before adoption: its own revision inv_0001, rows in both tables, no rls_tenancy."""
    with empty_database(rls_postgres_url, prefix="rls_conv") as url:
        alembic = [sys.executable, "-m", "alembic", "-c", str(INI)]
        # From the command line, as the page says: `-x url=...` wins over $DATABASE_URL.
        done = subprocess.run(
            [*alembic, "-x", "url=" + _libpq(url), "upgrade", "inv_0001"],
            env={**os.environ, "DATABASE_URL": ELSEWHERE},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute("INSERT INTO invoices (number) VALUES ('INV-1'), ('INV-2'), ('INV-3')")
            conn.execute("DELETE FROM invoices WHERE id = 3")  # the sequence gave 3: never again
            conn.execute("INSERT INTO invoice_lines (invoice_id, amount) VALUES (1, 10), (1, 5), (2, 7)")
        yield url


def _app_url(url: URL) -> URL:
    """The app role's URL, with a fresh password."""
    password = secrets.token_urlsafe(18)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLES.app), sql.Literal(password)))
    return url.set(username=ROLES.app, password=password)


def _count(conn: Connection, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)).as_string()
    return int(conn.exec_driver_sql(query).scalar_one())


def test_the_documented_migration_converts_tables_holding_rows(before: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    # The connection upgrade() hands env.py comes first: an exported DATABASE_URL changes nothing.
    monkeypatch.setenv("DATABASE_URL", ELSEWHERE)
    upgrade(before, roles=ROLES, config=Config(INI))
    if signing_requested():  # as every test database of the signed run: the bound engine signs
        require_signing(before)

    superuser = create_engine(before)
    try:
        with superuser.begin() as conn:
            # The rows kept their ids and got the tenant; the lines took their invoice's.
            assert conn.execute(ROWS).all() == [(1, "INV-1", "legacy"), (2, "INV-2", "legacy")]
            legacy = conn.execute(text("SELECT id FROM rls_tenancy.tenants WHERE slug = 'legacy'")).scalar_one()
            assert conn.execute(LINES).all() == [(1, 1, legacy), (2, 1, legacy), (3, 2, legacy)]
            assert conn.execute(KEYS).all() == [
                ("invoice_lines", "FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices(tenant_id, id)"),
                ("invoice_lines", "PRIMARY KEY (tenant_id, id)"),
                ("invoices", "PRIMARY KEY (tenant_id, id)"),
            ]
            identity = text(
                "SELECT attrelid::regclass::text, attidentity FROM pg_attribute "
                "WHERE attrelid IN ('invoices'::regclass, 'invoice_lines'::regclass) AND attname = 'id' ORDER BY 1"
            )
            assert conn.execute(identity).all() == [("invoice_lines", "a"), ("invoices", "a")]
            other = conn.execute(
                text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('other', 'Other') RETURNING id")
            ).scalar_one()

            # The models and the migrated tables agree: autogenerate has nothing left to write.
            def only_these(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
                return type_ != "table" or name in Base.metadata.tables

            context = MigrationContext.configure(
                conn, opts={"include_object": only_these, "compare_server_default": True, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        superuser.dispose()

    app = bind_engine(create_engine(_app_url(before)))
    try:
        with as_tenant(legacy), app.begin() as conn:  # the app role, bound to the rows' tenant: all of them
            assert [row.id for row in conn.execute(text("SELECT id FROM invoices ORDER BY id"))] == [1, 2]
            assert _count(conn, "invoice_lines") == 3
            new = conn.execute(text("INSERT INTO invoices (number) VALUES ('INV-4') RETURNING id")).scalar_one()
            assert new == 4  # after the serial's last id (3, deleted), not after max(id)
            line = text("INSERT INTO invoice_lines (invoice_id, amount) VALUES (:i, 1) RETURNING id")
            assert conn.execute(line, {"i": new}).scalar_one() == 4
        with as_tenant(other), app.begin() as conn:  # another tenant: none of them
            assert (_count(conn, "invoices"), _count(conn, "invoice_lines")) == (0, 0)
            named = text("SELECT count(*) FROM invoices WHERE tenant_id = :t OR id IN (1, 2, 4)")
            assert conn.execute(named, {"t": legacy}).scalar_one() == 0
            # Its line cannot name the legacy tenant's invoice: (other, 1) is no invoice.
            with pytest.raises(Exception, match="invoice_lines_invoice_id_fkey"):
                with conn.begin_nested():
                    conn.execute(line, {"i": 1})
            assert conn.execute(text("INSERT INTO invoices (number) VALUES ('O-1') RETURNING id")).scalar_one() == 5
    finally:
        app.dispose()

    downgrade(before, roles=ROLES, config=Config(INI), revision="inv_0001")
    superuser = create_engine(before)
    try:
        with superuser.begin() as conn:
            assert conn.execute(KEYS).all() == [
                ("invoice_lines", "FOREIGN KEY (invoice_id) REFERENCES invoices(id)"),
                ("invoice_lines", "PRIMARY KEY (id)"),
                ("invoices", "PRIMARY KEY (id)"),
            ]
            numbers = text("SELECT id, number FROM invoices ORDER BY id")
            assert conn.execute(numbers).all() == [(1, "INV-1"), (2, "INV-2"), (4, "INV-4"), (5, "O-1")]
    finally:
        superuser.dispose()


def _python_block_after(page: str, heading: str) -> str:
    section = page.split(heading, 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, heading
    return found.group(1)


def test_the_env_py_the_page_shows_is_the_examples() -> None:
    page = (ROOT / "docs" / "adopting.md").read_text()
    shown = _python_block_after(page, "In `env.py`")
    assert shown.strip() in (EXAMPLE / "migrations" / "env.py").read_text()
