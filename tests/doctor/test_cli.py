"""The doctor's command lines, ``rls-tenancy doctor`` and ``flask tenancy doctor``: their output and exit codes."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from sqlalchemy.engine import URL

from rls_tenancy.cli import main
from rls_tenancy.testing import TenancyDatabase
from tests.doctor.support import INFOS, WARNINGS, clean


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize(
    "role",
    ["superuser", "bypass"],
)
def test_cli_doctor_on_the_clean_database_exits_0_and_prints_a_table(
    db: TenancyDatabase, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.superuser_url if role == "superuser" else db.bypass_url
    status = main(["doctor", "--database-url", _url(url)])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"0 error(s), {len(WARNINGS)} warning(s), {INFOS} info(s)"
    assert lines[-2] == f"({INFOS} info finding(s), exemptions and notes, not shown: --info shows them)"
    assert not [line for line in lines if line.startswith("INFO ")]
    assert sum(line.strip().startswith("fix: ") for line in lines) == len(WARNINGS)
    assert main(["doctor", "--database-url", _url(url), "--info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"0 error(s), {len(WARNINGS)} warning(s), {INFOS} info(s)"
    assert any(
        line.startswith("INFO ") and "unique_without_tenant" in line and "rls_tenancy.users_pkey" in line
        for line in lines
    )
    assert sum(line.strip().startswith("fix: ") for line in lines) == INFOS + len(WARNINGS)


@pytest.mark.parametrize(
    "role",
    ["superuser", "bypass"],
)
def test_cli_doctor_json_has_counts_and_findings(
    db: TenancyDatabase, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.superuser_url if role == "superuser" else db.bypass_url
    status = main(["doctor", "--database-url", _url(url), "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"error": 0, "warning": len(WARNINGS), "info": INFOS}
    assert {(f["severity"], f["check"], f["object"]) for f in report["findings"]} == clean(db.name)
    assert all(set(f) == {"severity", "check", "object", "message", "fix"} for f in report["findings"])


@pytest.mark.parametrize(
    "role",
    ["superuser", "bypass"],
)
def test_cli_doctor_exits_1_and_names_a_committed_error(
    unforced_database: TenancyDatabase, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = unforced_database.superuser_url if role == "superuser" else unforced_database.bypass_url
    status = main(["doctor", "--database-url", _url(url)])
    assert status == 1
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["ERROR", "rls_not_forced", "public.projects"] for line in out.splitlines()), out
    assert "fix: ALTER TABLE public.projects FORCE ROW LEVEL SECURITY;" in out
    assert out.splitlines()[-1].startswith(f"1 error(s), {len(WARNINGS)} warning(s)")
    status = main(["doctor", "--database-url", _url(url), "--json"])
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["error"] == 1
    assert [f["check"] for f in report["findings"] if f["severity"] == "error"] == ["rls_not_forced"]


def test_cli_doctor_exits_2_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    unreachable = "postgresql://nobody:secret@127.0.0.1:1/nowhere"
    assert main(["doctor", "--database-url", unreachable]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("rls-tenancy: database error:")
    assert "Traceback" not in captured.err


def test_cli_doctor_exits_2_for_a_role_that_may_not_run_it(
    db: TenancyDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["doctor", "--database-url", _url(db.app_url)])
    assert status == 2
    assert "permission denied" in capsys.readouterr().err


def test_flask_tenancy_doctor_exits_0_on_the_demo_app(demo_app: Flask) -> None:
    result = demo_app.test_cli_runner().invoke(args=["tenancy", "doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"0 error(s), {len(WARNINGS)} warning(s), {INFOS} info(s)"
    machine = demo_app.test_cli_runner().invoke(args=["tenancy", "doctor", "--json"])
    assert machine.exit_code == 0, machine.output
    assert json.loads(machine.output)["counts"] == {"error": 0, "warning": len(WARNINGS), "info": INFOS}
