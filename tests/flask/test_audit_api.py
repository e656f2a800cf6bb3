"""The demo's GET /api/audit: the admin scope, every event of the tenant once, filters and bad parameters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from rls_tenancy import AuditEvent, log_security_event
from saas_demo.seed import Seeded
from tests.fix_flask import bearer
from tests.flask.audit_support import (
    ALICE,
    HANK,
    events,
    log_in,
    new_request_id,
    one_event,
)

# --- the demo's GET /api/audit -----------------------------------------------------------------------------------


@pytest.fixture()
def acme_admin(client: FlaskClient, seeded: Seeded) -> FlaskClient:
    """The client, logged in as alice (acme's admin)."""
    log_in(client, "acme", ALICE)
    return client


def audit(client: FlaskClient, **query: object) -> dict[str, Any]:
    answer = client.get("/api/audit", query_string={k: str(v) for k, v in query.items()})
    assert answer.status_code == 200, answer.json
    body: dict[str, Any] = answer.json  # type: ignore[assignment]
    return body


def every_page(client: FlaskClient, **query: object) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = audit(client, **query)
    while True:
        found.extend(page["events"])
        if page["next"] is None:
            return found
        assert page["next"] == page["events"][-1]["id"]
        page = audit(client, **query, before=page["next"])


def test_audit_api_needs_credentials_and_the_admin_scope(client: FlaskClient, seeded: Seeded) -> None:
    anonymous = client.get("/api/audit")
    assert anonymous.status_code == 401 and anonymous.json is not None and anonymous.json["error"] == "unauthorized"
    token = client.get("/api/audit", headers=bearer(seeded.tokens["acme/ci"]))  # alice's, narrowed to projects:*
    assert token.status_code == 403 and token.json is not None and token.json["required"] == ["admin"]
    log_in(client, "globex", HANK)
    refused = client.get("/api/audit")
    assert refused.status_code == 403 and refused.json is not None and refused.json["error"] == "insufficient_scope"


def test_audit_api_shows_every_event_of_the_tenant_once_and_nothing_else(
    acme_admin: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine
) -> None:
    acme, globex = seeded.tenants["acme"], seeded.tenants["globex"]
    for _ in range(12):  # enough for several pages, whatever else the session logged
        log_security_event(app_engine, "test.filler", tenant_id=acme)
    mine = log_security_event(app_engine, "test.mine", tenant_id=acme)
    theirs = log_security_event(app_engine, "test.theirs", tenant_id=globex)
    nobodys = log_security_event(app_engine, "test.nobodys", tenant_id=None)
    listed = every_page(acme_admin, limit=5)
    ids = [e["id"] for e in listed]
    assert len(ids) > 10
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)  # newest first, each once
    assert {e["tenant_id"] for e in listed} == {acme}
    assert mine in ids and theirs not in ids and nobodys not in ids
    assert set(ids) == {e.id for e in events(bypass_engine, AuditEvent.tenant_id == acme)}
    first = listed[0]
    assert first["id"] == mine and first["action"] == "test.mine"
    assert set(first) == {
        "id", "tenant_id", "user_id", "db_role", "action", "message", "ip", "request_id", "data", "created_at", "seq",
        "hash",
    }  # fmt: skip
    assert every_page(acme_admin, limit=200) == listed  # the page size changes nothing


def test_audit_api_filters(acme_admin: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine) -> None:
    acme = seeded.tenants["acme"]
    login_id = new_request_id()
    log_in(acme_admin, "acme", ALICE, login_id)
    login = one_event(bypass_engine, login_id)
    logins = every_page(acme_admin, action="auth.login")
    assert login.id in [e["id"] for e in logins] and {e["action"] for e in logins} == {"auth.login"}
    assert every_page(acme_admin, action="test.never-logged") == []

    marks = [log_security_event(app_engine, "test.mark", tenant_id=acme) for _ in range(3)]
    middle = events(bypass_engine, AuditEvent.id == marks[1])[0].created_at
    since = every_page(acme_admin, since=middle.isoformat())
    until = every_page(acme_admin, until=middle.isoformat())
    assert [e["id"] for e in since] == [marks[2], marks[1]]  # inclusive, and nothing logged after
    assert marks[0] in [e["id"] for e in until] and marks[1] not in [e["id"] for e in until]
    assert all(datetime.fromisoformat(e["created_at"]) < middle for e in until)
    # The same instant written with another offset is the same bound.
    elsewhere = middle.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    assert every_page(acme_admin, since=elsewhere) == since
    page = audit(acme_admin, limit=1)
    assert [e["id"] for e in page["events"]] == [marks[2]] and page["next"] == marks[2]
    page = audit(acme_admin, before=marks[2], limit=1)
    assert [e["id"] for e in page["events"]] == [marks[1]]


@pytest.mark.parametrize(
    "query",
    [
        {"action": "Not An Action"},
        {"action": "x" * 65},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "-1"},
        {"limit": "1.5"},
        {"limit": "abc"},
        {"limit": ""},
        {"limit": "٣"},
        {"limit": "9" * 5000},  # beyond the digits int() converts
        {"limit": "0" * 5000 + "1"},
        {"since": "2026-01-01T00:00:00"},
        {"since": "yesterday"},
        {"until": "2026-01-01"},
        {"before": "0"},
        {"before": "abc"},
        {"before": str(2**63)},
        {"before": "9" * 5000},
    ],
)
def test_audit_api_refuses_bad_parameters(acme_admin: FlaskClient, query: dict[str, str]) -> None:
    answer = acme_admin.get("/api/audit", query_string=query)
    assert answer.status_code == 400
    assert answer.json is not None and answer.json["error"] == "bad_request"
