"""The doctor's command lines, ``rls-tenancy doctor`` and ``flask tenancy doctor``: their output and exit codes."""

from __future__ import annotations

import json
import secrets

import pytest
from alembic.config import Config
from flask import Flask
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from rls_tenancy.cli import main
from rls_tenancy.doctor import DoctorInputError, findings
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.app import create_app
from tests.conftest import DEMO_ALEMBIC_INI, ddl
from tests.doctor.support import INFOS, WARNINGS, clean, finding_rows, key_of, planted_in, run

# findings(boolean) replaced by one that reports nothing, as the owner role may (it owns the function).
BLIND = (
    "CREATE OR REPLACE FUNCTION rls_tenancy.findings(distributed boolean)"
    " RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)"
    " LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$ BEGIN RETURN; END $fn$"
)


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
    err = capsys.readouterr().err
    assert "permission denied" in err
    # The message says who may run it, and how: the application role is what $DATABASE_URL names in most apps.
    assert f"as {db.roles.app!r}" in err and "bypass role" in err and "--database-url" in err


def test_flask_tenancy_doctor_exits_0_on_the_demo_app(demo_app: Flask) -> None:
    result = demo_app.test_cli_runner().invoke(args=["tenancy", "doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"0 error(s), {len(WARNINGS)} warning(s), {INFOS} info(s)"
    machine = demo_app.test_cli_runner().invoke(args=["tenancy", "doctor", "--json"])
    assert machine.exit_code == 0, machine.output
    assert json.loads(machine.output)["counts"] == {"error": 0, "warning": len(WARNINGS), "info": INFOS}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(BLIND, id="findings() replaced by one that reports nothing"),
        pytest.param(
            "ALTER FUNCTION rls_tenancy.role_name(text) SET search_path = public, pg_catalog, pg_temp",
            id="role_name() made to search public first",
        ),
        pytest.param(
            "CREATE OR REPLACE FUNCTION rls_tenancy.role_name(purpose text) RETURNS name LANGUAGE sql STABLE"
            " SET search_path = pg_catalog, pg_temp AS $$ SELECT 'postgres'::name $$",
            id="role_name() replaced by one that names another role",
        ),
        # An overload of the same number of arguments with the shipped body once took the tampered one's place
        # in the check (keyed by name and argument count), while findings() still called role_name(text).
        pytest.param(
            "CREATE OR REPLACE FUNCTION rls_tenancy.role_name(purpose text) RETURNS name LANGUAGE sql STABLE"
            " SET search_path = pg_catalog, pg_temp AS $$ SELECT 'postgres'::name $$;"
            " CREATE FUNCTION rls_tenancy.role_name(purpose varchar) RETURNS name LANGUAGE sql STABLE"
            " SET search_path = pg_catalog, pg_temp"
            " AS $$ SELECT role_name FROM rls_tenancy.roles WHERE roles.purpose = role_name.purpose $$",
            id="role_name() replaced, beside an overload with the shipped body",
        ),
        pytest.param(
            "CREATE FUNCTION rls_tenancy.findings(distributed boolean, verbose boolean)"
            " RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)"
            " LANGUAGE sql STABLE"
            " AS $$ SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text WHERE false $$",
            id="an overload of findings() the scripts do not define",
        ),
    ],
)
def test_a_doctor_changed_by_the_owner_role_is_refused_before_it_reports(
    superuser_engine: Engine, db: TenancyDatabase, tamper: str
) -> None:
    """The SQL doctor cannot vouch for itself (its own check would be replaced with it): the package checks it."""
    planted = [ddl("ALTER ROLE {} BYPASSRLS", db.roles.app), ddl("SET ROLE {}", db.roles.owner), tamper, "RESET ROLE"]
    with planted_in(superuser_engine, planted) as conn:
        with pytest.raises(DoctorInputError, match="not the ones this version of rls_tenancy installs"):
            findings(conn)


@pytest.mark.usefixtures("stays_clean")
def test_a_roles_table_pointed_at_another_existing_role_is_refused(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    decoy = f"doctor_decoy_{secrets.token_hex(4)}"
    planted = [
        ddl("ALTER ROLE {} BYPASSRLS", db.roles.app),
        ddl("CREATE ROLE {} NOLOGIN", decoy),
        sql.SQL("UPDATE rls_tenancy.roles SET role_name = {} WHERE purpose = 'app'")
        .format(sql.Literal(decoy))
        .as_string(None),
    ]
    with planted_in(superuser_engine, planted) as conn:
        # the report, made about the decoy, says nothing of the application role's BYPASSRLS
        assert "app_role_bypassrls" not in {key_of(row)[1] for row in finding_rows(conn)}
        with pytest.raises(DoctorInputError, match="re-pointed"):
            findings(conn)


def test_cli_doctor_exits_2_when_its_functions_were_replaced(
    rls_postgres_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        try:
            with engine.begin() as conn:
                for statement in [
                    ddl("ALTER ROLE {} BYPASSRLS", database.roles.app),
                    ddl("SET ROLE {}", database.roles.owner),
                    BLIND,
                    "RESET ROLE",
                ]:
                    run(conn, statement)
        finally:
            engine.dispose()
        status = main(["doctor", "--database-url", _url(database.superuser_url)])
        captured = capsys.readouterr()
        app = create_app(database.app_url, database.bypass_url, TESTING=True, SECRET_KEY="doctor")
        try:
            through_flask = app.test_cli_runner().invoke(args=["tenancy", "doctor"])
        finally:
            app.extensions["rls_tenancy"].dispose()
        # the roles are the cluster's own: the database goes, the attribute is taken back
        cleanup = create_engine(database.superuser_url)
        try:
            with cleanup.begin() as conn:
                run(conn, ddl("ALTER ROLE {} NOBYPASSRLS", database.roles.app))
        finally:
            cleanup.dispose()
    assert status == 2
    assert captured.out == ""
    assert "rls_tenancy.findings(boolean) differs" in captured.err
    assert through_flask.exit_code == 2, through_flask.output  # before: a traceback, exit 1
    assert "rls_tenancy.findings(boolean) differs" in through_flask.output
