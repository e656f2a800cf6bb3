"""``alembic upgrade heads --sql`` on the examples' configs: the SQL for review, with no database.

docs/adopting.md shows the env.py of ``examples/existing_tables`` (checked
by ``tests/schema/test_converting_existing_tables.py``), with its
``run_migrations_offline()``; Alembic's template reads the placeholder
``sqlalchemy.url`` of ``alembic.ini`` instead and fails. Each example's
offline run renders the library's revision and the app's own, without
``$DATABASE_URL`` or ``-x url``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def _isolates(table: str) -> str:
    return f"SELECT rls_tenancy.enable_tenant_isolation(CAST(quote_ident('{table}') AS REGCLASS))"


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("existing_tables", ["-- Running upgrade inv_0001 -> inv_0002", _isolates("invoice_lines")]),
        ("tenant_blog", ["-- Running upgrade  -> blog_0001", _isolates("posts")]),
        ("saas_demo", ["-- Running upgrade  -> saas_0001", _isolates("tasks")]),
    ],
)
def test_upgrade_heads_sql_renders_without_a_database(example: str, expected: list[str]) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    ini = EXAMPLES / example / "alembic.ini"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "heads", "--sql"],
        capture_output=True,
        text=True,
        env=env,
        cwd=EXAMPLES.parent,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in ["-- Running upgrade  -> rls_tenancy_0001", *expected]:
        assert line in done.stdout, line
