"""The pgTAP tests in sql/tests, run with pg_prove as a DBA would: they pass, and they can fail.

This is the one place in the suite that may skip: pgTAP is a server
extension and pg_prove a Perl tool, neither installable from PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy.testing import TenancyDatabase

SQL_TESTS = sorted((Path(__file__).parents[2] / "sql" / "tests").glob("*.sql"))
PACKAGES = "postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl"


def _missing(url: URL) -> str | None:
    """Why pgTAP cannot run here, or None."""
    if shutil.which("pg_prove") is None:
        return "pg_prove is not on PATH"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            available = conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'pgtap'")).first()
    finally:
        engine.dispose()
    return None if available else "the PostgreSQL server has no pgtap extension available"


@pytest.fixture(scope="module")
def pgtap(rls_postgres_url: URL) -> None:
    reason = _missing(rls_postgres_url)
    if reason is not None:
        pytest.skip(
            f"*** pgTAP SQL TESTS SKIPPED: {reason}. The tests in sql/tests did NOT run. "
            f"On Debian/Ubuntu install the packages {PACKAGES} (for the server's major version), "
            "or pgTAP and pg_prove otherwise; `make test` does so when it can. ***"
        )


def _pg_prove(url: URL) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PGHOST": str(url.host or "localhost"),
        "PGPORT": str(url.port or 5432),
        "PGUSER": str(url.username or ""),
        "PGDATABASE": str(url.database),
    }
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    assert SQL_TESTS, "sql/tests has no .sql files"
    return subprocess.run(
        ["pg_prove", "--verbose", *map(str, SQL_TESTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.usefixtures("pgtap")
@pytest.mark.rls_policy  # with every policy replaced by USING (true), 02_isolation.sql must fail
def test_sql_tests_pass_on_the_migrated_database(db: TenancyDatabase) -> None:
    done = _pg_prove(db.superuser_url)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All tests successful." in output
    assert "not ok" not in output
    # Each file ran its whole plan: "ok 1 - ..." up to its last test.
    assert f"Files={len(SQL_TESTS)}," in output


@pytest.mark.usefixtures("pgtap")
def test_sql_tests_fail_on_a_sabotaged_database(unforced_database: TenancyDatabase) -> None:
    done = _pg_prove(unforced_database.superuser_url)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "All tests successful." not in output
    assert 'Failed test 2: "row level security is forced on every tenant table (owners included)"' in output
    assert "(public.projects)" in output  # pgTAP names the offending table
    # The doctor's own test fails too, with its message.
    assert "rls_tenancy.findings() reports no error" in output
    assert "does not FORCE row level security" in output
    # Only 02_isolation.sql fails.
    assert "sql/tests/02_isolation.sql (Wstat" in output
    assert output.count("(Wstat") == 1
