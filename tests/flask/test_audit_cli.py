"""The audit CLIs: verify, anchors, purge, and a broken chain in a database of its own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from click.testing import Result
from flask import Flask
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy import AuditEvent, UnsafeBypass, as_tenant, bind_engine, log_event
from rls_tenancy.cli import main as rls_tenancy_main
from rls_tenancy.orm.models import Tenant
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.app import create_app
from saas_demo.seed import Seeded
from tests.flask.audit_support import (
    events,
    rendered,
)

# --- command line ------------------------------------------------------------------------------------------------


def flask_audit(app: Flask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["tenancy", "audit", *args], input=input)


def test_flask_audit_verify_says_intact(demo_app: Flask, seeded: Seeded) -> None:
    result = flask_audit(demo_app, "verify")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"\d+ chain\(s\) intact", lines[-1])
    assert any(re.fullmatch(rf"tenant {seeded.tenants['acme']}: \d+ events, intact", line) for line in lines)
    assert any(re.fullmatch(r"events without a tenant: \d+ events, intact", line) for line in lines)


def test_exported_heads_are_accepted_as_anchors(demo_app: Flask, seeded: Seeded, tmp_path: Path) -> None:
    result = flask_audit(demo_app, "heads")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["format"] == "rls_tenancy.audit-anchors.v1"
    heads = {h["tenant_id"]: h for h in document["heads"]}
    assert heads[seeded.tenants["acme"]]["seq"] > 0 and re.fullmatch(
        r"[0-9a-f]{64}", heads[seeded.tenants["acme"]]["hash"]
    )
    anchors = tmp_path / "heads.json"
    anchors.write_text(result.output, encoding="utf-8")
    checked = flask_audit(demo_app, "verify", "--anchors", str(anchors))
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[-1].endswith(f", {len(heads)} anchor(s) match")


def test_anchor_that_no_longer_matches_fails_verify(demo_app: Flask, seeded: Seeded, tmp_path: Path) -> None:
    """Tampering with the anchor file (not the database) must be reported like a rewritten chain."""
    document = json.loads(flask_audit(demo_app, "heads").output)
    acme = seeded.tenants["acme"]
    for head in document["heads"]:
        if head["tenant_id"] == acme:
            head["hash"] = "00" * 32
    anchors = tmp_path / "heads.json"
    anchors.write_text(json.dumps(document), encoding="utf-8")
    result = flask_audit(demo_app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1
    assert f"ANCHOR MISMATCH: chain of tenant {acme}: event " in result.output
    assert "a different hash" in result.output and "1 problem(s) found" in result.output


def test_unreadable_anchors_are_a_clean_error(demo_app: Flask, tmp_path: Path) -> None:
    anchors = tmp_path / "heads.json"
    anchors.write_text('{"format": "something else"}', encoding="utf-8")
    result = flask_audit(demo_app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read the anchors")
    assert "Traceback" not in result.output


def test_anchors_that_are_not_utf8_are_a_clean_error(demo_app: Flask, tmp_path: Path) -> None:
    anchors = tmp_path / "heads.json"
    anchors.write_bytes(b"\xff\xfe")
    result = flask_audit(demo_app, "verify", "--anchors", str(anchors))
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read the anchors from ")
    assert "Traceback" not in result.output


def test_flask_audit_purge(demo_app: Flask, bypass_engine: Engine) -> None:
    before = len(events(bypass_engine, AuditEvent.action != "bypass.used"))
    declined = flask_audit(demo_app, "purge", "--older-than-days", "3650", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert flask_audit(demo_app, "purge", "--older-than-days", "0", "--yes").exit_code == 2
    result = flask_audit(demo_app, "purge", "--older-than-days", "3650", "--yes")
    assert result.exit_code == 0, result.output
    assert result.output == "removed 0 audit event(s)\n"
    assert len(events(bypass_engine, AuditEvent.action != "bypass.used")) == before
    assert flask_audit(demo_app, "verify").exit_code == 0


def test_standalone_cli_verifies_and_exports(
    db: TenancyDatabase, seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = rendered(db.bypass_url)
    assert rls_tenancy_main(["audit-verify", "--database-url", url]) == 0
    assert re.search(r"^\d+ chain\(s\) intact$", capsys.readouterr().out, re.MULTILINE)
    assert rls_tenancy_main(["audit-heads", "--database-url", url]) == 0
    exported = capsys.readouterr().out
    assert json.loads(exported)["format"] == "rls_tenancy.audit-anchors.v1"
    anchors = tmp_path / "heads.json"
    anchors.write_text(exported, encoding="utf-8")
    assert rls_tenancy_main(["audit-verify", "--database-url", url, "--anchors", str(anchors)]) == 0
    assert "anchor(s) match" in capsys.readouterr().out
    anchors.write_text("not json", encoding="utf-8")
    assert rls_tenancy_main(["audit-verify", "--database-url", url, "--anchors", str(anchors)]) == 2
    assert capsys.readouterr().err.startswith("rls-tenancy: cannot read the anchors")
    # The application role is not the bypass role: refused, not a false "intact".
    assert rls_tenancy_main(["audit-verify", "--database-url", rendered(db.app_url)]) == 2
    # No database to ask: "could not check" (2), never "broken" (1) or "intact" (0).
    unreachable = rendered(db.bypass_url.set(host="127.0.0.1", port=1))
    assert rls_tenancy_main(["audit-verify", "--database-url", unreachable]) == 2
    assert "rls-tenancy: database error:" in capsys.readouterr().err


# --- a broken chain, in a database of its own --------------------------------------------------------------------


@pytest.fixture(scope="module")
def spare_db(rls_postgres_url: URL, rls_alembic_config: Config) -> Iterator[TenancyDatabase]:
    """A second migrated database, so that breaking a chain leaves the shared one alone."""
    with tenancy_database(rls_postgres_url, alembic_config=rls_alembic_config) as database:
        yield database


REWRITE = [
    "ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_append_only, DISABLE TRIGGER audit_log_content_fixed",
    "UPDATE rls_tenancy.audit_log SET message = 'rewritten' WHERE id = :id",
    """UPDATE rls_tenancy.audit_log l
          SET hash = rls_tenancy.audit_event_hash(l.id, l.tenant_id, l.seq, l.user_id, l.db_role, l.action,
                                                  l.message, l.ip, l.request_id, l.data, l.created_at, l.prev_hash)
        WHERE id = :id AND :consistent""",
    """UPDATE rls_tenancy.audit_chain_heads h SET hash = l.hash
         FROM rls_tenancy.audit_log l WHERE l.id = :id AND h.chain = l.tenant_id AND :consistent""",
    "ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER audit_log_append_only, ENABLE TRIGGER audit_log_content_fixed",
]


def rewrite(superuser: Engine, event_id: int, *, consistent: bool) -> None:
    """As a superuser: change an event's message, and re-seal it (and the chain head) when ``consistent``."""
    with superuser.begin() as conn:
        for statement in REWRITE:
            conn.execute(text(statement), {"id": event_id, "consistent": consistent})


def test_cli_exits_1_on_a_broken_chain_and_anchors_catch_a_consistent_rewrite(
    spare_db: TenancyDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    superuser = create_engine(spare_db.superuser_url)
    app_engine = bind_engine(create_engine(spare_db.app_url))
    bypass_engine = create_engine(spare_db.bypass_url)
    app = create_app(spare_db.app_url, spare_db.bypass_url, TESTING=True, SECRET_KEY="spare")
    bypass_url = rendered(spare_db.bypass_url)
    try:
        with UnsafeBypass(bypass_engine).session("test: tenants of the spare database") as s:
            tenants = [Tenant(slug=f"spare-{n}", name=f"Spare {n}") for n in range(2)]
            s.add_all(tenants)
            s.flush()
            first, second = (t.id for t in tenants)
        logged: dict[int, list[int]] = {first: [], second: []}
        for tenant_id in (first, second, first, second):
            with as_tenant(tenant_id), app_engine.begin() as conn:
                logged[tenant_id].append(log_event(conn, "test.spare"))
        assert flask_audit(app, "verify").exit_code == 0
        anchors = tmp_path / "heads.json"
        anchors.write_text(flask_audit(app, "heads").output, encoding="utf-8")

        # The owner rewrites the newest event of one chain and re-seals it: the chain alone looks intact...
        rewrite(superuser, logged[second][-1], consistent=True)
        plain = flask_audit(app, "verify")
        assert plain.exit_code == 0, plain.output
        # ...but not against the anchors taken before.
        anchored = flask_audit(app, "verify", "--anchors", str(anchors))
        assert anchored.exit_code == 1
        assert f"ANCHOR MISMATCH: chain of tenant {second}: event 2 was anchored" in anchored.output
        assert rls_tenancy_main(["audit-verify", "--database-url", bypass_url, "--anchors", str(anchors)]) == 1
        capsys.readouterr()

        # An edit without re-sealing breaks the chain itself.
        rewrite(superuser, logged[first][0], consistent=False)
        broken = flask_audit(app, "verify")
        assert broken.exit_code == 1
        assert f"tenant {first}: 2 events, BROKEN at event {logged[first][0]} (#1): its content does not match" in (
            broken.output
        )
        assert f"tenant {second}: 2 events, intact" in broken.output
        assert broken.output.splitlines()[-1] == "1 problem(s) found"
        assert rls_tenancy_main(["audit-verify", "--database-url", bypass_url]) == 1
        assert "BROKEN at event" in capsys.readouterr().out
    finally:
        tenancy = app.extensions["rls_tenancy"]
        tenancy.engine.dispose()
        tenancy.bypass.engine.dispose()
        app_engine.dispose()
        bypass_engine.dispose()
        superuser.dispose()
