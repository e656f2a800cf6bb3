"""The migrated demo database, as the doctor reports it: only its recorded exemptions and known warnings.

It also holds who may run ``rls_tenancy.findings()`` and what the docs say it returns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.doctor import Finding, findings
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import ddl
from tests.doctor.support import EXPECTED_CLEAN, FINDINGS, WARNINGS, clean, finding_rows, key_of, run

DOCTOR_DOCS = Path(__file__).parents[2] / "docs" / "doctor.md"


@pytest.mark.rls_policy  # the policies replaced by USING (true) are policy_not_tenant_keyed errors
def test_migrated_database_reports_only_its_recorded_exemptions(superuser_engine: Engine) -> None:
    with superuser_engine.connect() as conn:
        found = finding_rows(conn)
        database = conn.execute(text("SELECT current_database()")).scalar_one()
    assert {key_of(row) for row in found} == clean(database)
    assert len(found) == len(EXPECTED_CLEAN) + len(WARNINGS)
    for row in found:
        assert ("(exempt: " in row[3]) == (row[0] == "info")
        assert row[4].strip()


def test_the_docs_name_the_columns_findings_returns(bypass_engine: Engine) -> None:
    """docs/doctor.md's first query, as a DBA copies it, names what comes back."""
    documented = next(line for line in DOCTOR_DOCS.read_text().splitlines() if "FROM rls_tenancy.findings()" in line)
    with bypass_engine.connect() as conn:
        columns = list(conn.execute(text("SELECT * FROM rls_tenancy.findings() LIMIT 0")).keys())
    assert documented.split("--")[1].split(":")[1].replace(",", " ").split() == columns


def test_bypass_role_reads_the_same_report_through_doctor_findings(bypass_engine: Engine) -> None:
    with bypass_engine.connect() as conn:
        found = findings(conn)
        covered = set(conn.execute(text("SELECT table_name FROM rls_tenancy.coverage")).scalars())
    assert {(f.severity, f.check, f.object) for f in found} == clean(conn.engine.url.database or "")
    assert all(isinstance(f, Finding) and f.fix.strip() for f in found)
    assert {"public.projects", "public.tasks"} <= covered


def test_owner_role_may_run_findings(superuser_engine: Engine, db: TenancyDatabase) -> None:
    with superuser_engine.connect() as conn, conn.begin():
        run(conn, ddl("SET LOCAL ROLE {}", db.roles.owner))
        assert conn.execute(text("SELECT current_user")).scalar() == db.roles.owner
        assert {key_of(row) for row in finding_rows(conn)} == clean(db.name)


def test_app_role_may_not_run_findings(app_engine: Engine) -> None:
    with app_engine.connect() as conn, pytest.raises(DBAPIError) as refused:
        conn.execute(text(FINDINGS))
    assert getattr(refused.value.orig, "sqlstate", None) == "42501"
    # Refused at the door (findings() itself), not somewhere inside it.
    assert "permission denied for function findings" in str(refused.value.orig)
    with app_engine.connect() as conn, pytest.raises(DBAPIError) as refused:
        conn.execute(text("SELECT * FROM rls_tenancy.coverage"))
    assert getattr(refused.value.orig, "sqlstate", None) == "42501"
