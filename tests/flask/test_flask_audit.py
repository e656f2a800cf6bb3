"""The audit log through Flask: security events of requests, the request id, the demo's audit API, the CLIs.

The database is shared by the whole test session, so each test finds its
own events by the unique ``X-Request-ID`` it sends, and reads them back as
the bypass role (which writes nothing when used directly). Nothing here
changes an existing event of the shared database: the test that breaks a
chain does so in a database of its own.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from click.testing import Result
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from rls_tenancy import AuditEvent, UnsafeBypass, as_tenant, bind_engine, log_event, log_security_event
from rls_tenancy.cli import main as rls_tenancy_main
from rls_tenancy.flask import log, require_scopes, state
from rls_tenancy.flask import log_security_event as flask_log_security_event
from rls_tenancy.identity.tokens import issue_token, revoke_token
from rls_tenancy.identity.users import User, email_matches
from rls_tenancy.orm.models import Tenant
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.app import create_app
from saas_demo.models import Project
from saas_demo.seed import PASSWORD, Seeded
from tests.fix_flask import bearer

ALICE = "alice@acme.example"  # acme: admin, projects:read, projects:write
HANK = "hank@globex.example"  # globex: projects:read, projects:write, no admin
LOCALHOST = "127.0.0.1"  # Flask's test client's remote address
GENERATED_ID = re.compile(r"[0-9a-f]{32}\Z")


# --- helpers ---------------------------------------------------------------------------------------------------


def new_request_id() -> str:
    return f"test-{secrets.token_hex(8)}"


def events(bypass_engine: Engine, *where: ColumnElement[bool]) -> list[AuditEvent]:
    """Events matching ``where``, oldest first, read as the bypass role."""
    with Session(bypass_engine) as session:
        return list(session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id)))


def of_request(bypass_engine: Engine, request_id: str) -> list[AuditEvent]:
    return events(bypass_engine, AuditEvent.request_id == request_id)


def one_event(bypass_engine: Engine, request_id: str) -> AuditEvent:
    found = of_request(bypass_engine, request_id)
    assert len(found) == 1, [(e.action, e.data) for e in found]
    return found[0]


def user_id(app_engine: Engine, tenant_id: int, email: str) -> int:
    with as_tenant(tenant_id), Session(app_engine) as session:
        found = session.scalar(select(User.id).where(email_matches(email)))
    assert found is not None
    return found


def log_in(client: FlaskClient, tenant: str, email: str, request_id: str | None = None) -> None:
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    answer = client.post("/api/login", json={"tenant": tenant, "email": email, "password": PASSWORD}, headers=headers)
    assert answer.status_code == 200, answer.json


def with_id(request_id: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Request-ID": request_id}


def rendered(url: URL) -> str:
    return url.render_as_string(hide_password=False)


# --- rejected tokens ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header", "claimed"),
    [
        ("unknown", "Bearer rlst_{acme}_" + "A" * 43, "acme"),
        ("unknown", "Bearer rlst_999999999999_" + "A" * 43, 999999999999),
        ("malformed", "Bearer rlst_not-a-token", None),
        ("malformed", "Bearer rlst_{acme}_short", None),
        ("malformed", "Bearer " + "x" * 200, None),
        ("malformed", "Bearer rlst_1_" + "é" * 43, None),
    ],
)
def test_bad_token_is_a_401_and_one_event_without_tenant(
    client: FlaskClient, seeded: Seeded, bypass_engine: Engine, kind: str, header: str, claimed: object
) -> None:
    """A forged token only claims a tenant: the event goes to no tenant's chain, the claim into its data."""
    acme = seeded.tenants["acme"]
    request_id = new_request_id()
    answer = client.get("/api/me", headers=with_id(request_id, {"Authorization": header.format(acme=acme)}))
    assert answer.status_code == 401 and answer.json is not None and answer.json["error"] == "invalid_token"
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.token_rejected", None, None)
    assert found.data == {"reason": kind, "claimed_tenant": acme if claimed == "acme" else claimed}
    assert (str(found.ip), found.request_id) == (LOCALHOST, request_id)


@pytest.mark.parametrize("kind", ["revoked", "expired"])
def test_dead_token_is_a_401_and_one_event_of_its_tenant(
    client: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine, kind: str
) -> None:
    """A real token (its hash matched) that is revoked or expired belongs to its tenant's chain."""
    globex = seeded.tenants["globex"]
    expires = datetime.now(UTC) - timedelta(days=1) if kind == "expired" else None
    with as_tenant(globex), Session(app_engine) as session, session.begin():
        issued = issue_token(session, name=f"test {kind}", scopes=["projects:read"], expires_at=expires)
        if kind == "revoked":
            assert revoke_token(session, issued.id)
    request_id = new_request_id()
    answer = client.get("/api/projects", headers=with_id(request_id, bearer(issued.token)))
    assert answer.status_code == 401 and answer.json is not None and answer.json["error"] == "invalid_token"
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.token_rejected", globex, None)
    assert found.data == {"reason": kind}
    assert (str(found.ip), found.request_id) == (LOCALHOST, request_id)
    with as_tenant(globex), app_engine.connect() as conn:  # the tenant can read it
        assert conn.execute(select(AuditEvent.id).where(AuditEvent.request_id == request_id)).all()


def test_valid_token_and_no_token_write_no_event(client: FlaskClient, seeded: Seeded, bypass_engine: Engine) -> None:
    for headers in ({}, bearer(seeded.tokens["acme/ci"]), {"Authorization": "Basic dXNlcjpwYXNz"}):
        request_id = new_request_id()
        assert client.get("/api/me", headers=with_id(request_id, headers)).status_code == 200
        assert of_request(bypass_engine, request_id) == []


# --- logins ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "tenant", "reason", "data"),
    [
        ({"tenant": "acme", "email": ALICE, "password": "wrong"}, "acme", "wrong_password", {"email": ALICE}),
        ({"tenant": "acme", "email": "nobody@acme.example", "password": PASSWORD}, "acme", "unknown_user", {}),
        ({"tenant": "globex", "email": ALICE, "password": PASSWORD}, "globex", "unknown_user", {}),
        ({"tenant": "no-such-tenant", "email": ALICE, "password": PASSWORD}, None, "unknown_tenant", {}),
        ({"tenant": "Not A Slug", "email": ALICE, "password": PASSWORD}, None, "malformed", {}),
        ({"tenant": "acme", "email": "not an email", "password": PASSWORD}, None, "malformed", {}),
        ({}, None, "malformed", {}),
    ],
)
def test_failed_login_is_a_401_and_an_event(
    client: FlaskClient,
    seeded: Seeded,
    app_engine: Engine,
    bypass_engine: Engine,
    body: dict[str, str],
    tenant: str | None,
    reason: str,
    data: dict[str, object],
) -> None:
    request_id = new_request_id()
    answer = client.post("/api/login", json=body, headers=with_id(request_id))
    assert answer.status_code == 401
    assert answer.json == {"error": "invalid_credentials", "message": "wrong tenant, email or password"}
    found = one_event(bypass_engine, request_id)
    tenant_id = None if tenant is None else seeded.tenants[tenant]
    assert (found.action, found.tenant_id, found.user_id) == ("auth.login_failed", tenant_id, None)
    assert found.message == reason.replace("_", " ")
    expected: dict[str, object] = {"reason": reason, **data}
    if reason == "unknown_user":
        expected["email"] = body["email"]
    elif reason == "unknown_tenant":
        expected["tenant"] = body["tenant"]
    elif reason == "wrong_password":
        expected["user_id"] = user_id(app_engine, seeded.tenants["acme"], ALICE)
    assert found.data == expected
    assert (str(found.ip), found.request_id) == (LOCALHOST, request_id)
    assert client.get("/api/me").json["user"] is None  # type: ignore[index]


def test_login_and_logout_are_events_of_the_user(
    client: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine
) -> None:
    acme = seeded.tenants["acme"]
    alice = user_id(app_engine, acme, ALICE)
    login_id, logout_id, again_id = new_request_id(), new_request_id(), new_request_id()
    log_in(client, "acme", ALICE, login_id)
    logged_in = one_event(bypass_engine, login_id)
    assert (logged_in.action, logged_in.tenant_id, logged_in.user_id) == ("auth.login", acme, alice)
    assert (logged_in.message, str(logged_in.ip)) == (ALICE, LOCALHOST)
    assert client.get("/api/me").json["user"]["id"] == alice  # type: ignore[index]
    assert client.post("/api/logout", headers=with_id(logout_id)).status_code == 200
    logged_out = one_event(bypass_engine, logout_id)
    assert (logged_out.action, logged_out.tenant_id, logged_out.user_id) == ("auth.logout", acme, alice)
    # Nobody left to log out: no event.
    assert client.post("/api/logout", headers=with_id(again_id)).status_code == 200
    assert of_request(bypass_engine, again_id) == []


@pytest.mark.parametrize("token", ["globex/ci", "acme/dashboard"])
def test_logout_is_recorded_for_the_session_user_it_ends(
    client: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine, token: str
) -> None:
    """A request carrying a bearer token and a login cookie: the cookie's user is the one logged out."""
    acme = seeded.tenants["acme"]
    alice = user_id(app_engine, acme, ALICE)
    log_in(client, "acme", ALICE)
    request_id = new_request_id()
    answer = client.post("/api/logout", headers=with_id(request_id, bearer(seeded.tokens[token])))
    assert answer.status_code == 200
    assert client.get("/api/me").json["user"] is None  # type: ignore[index]  # alice's session is gone
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.logout", acme, alice)


# --- denied scopes -----------------------------------------------------------------------------------------------


def test_denied_scope_is_a_403_and_an_event_of_the_request(
    client: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine
) -> None:
    acme, globex = seeded.tenants["acme"], seeded.tenants["globex"]
    request_id = new_request_id()
    refused = client.post(
        "/api/projects", json={"name": "nope"}, headers=with_id(request_id, bearer(seeded.tokens["acme/dashboard"]))
    )
    assert refused.status_code == 403
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.scope_denied", acme, None)  # a user-less token
    assert found.data == {"missing": ["projects:write"], "endpoint": "api.create_project"}
    assert found.message == "POST /api/projects needs projects:write"
    assert (str(found.ip), found.request_id) == (LOCALHOST, request_id)

    log_in(client, "globex", HANK)
    request_id = new_request_id()
    assert client.get("/api/audit", headers=with_id(request_id)).status_code == 403
    found = one_event(bypass_engine, request_id)
    hank = user_id(app_engine, globex, HANK)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.scope_denied", globex, hank)
    assert found.data == {"missing": ["admin"], "endpoint": "api.audit_events"}


def test_missing_credentials_are_not_a_scope_event(client: FlaskClient, bypass_engine: Engine) -> None:
    request_id = new_request_id()
    assert client.post("/api/projects", json={"name": "x"}, headers=with_id(request_id)).status_code == 401
    assert of_request(bypass_engine, request_id) == []


# --- the headline: security events outlive a failed request --------------------------------------------------------

probe = Blueprint("audit_probe", __name__, url_prefix="/probe")


def _probe_work(name: str) -> None:
    session = state().session()
    session.add(Project(name=name))
    session.flush()
    log("probe.ordinary", "belongs to the request's transaction", name=name)
    flask_log_security_event("probe.security", "committed at once", name=name)


@probe.post("/<name>/fail")
@require_scopes("projects:read")
def probe_fail(name: str) -> ResponseReturnValue:
    _probe_work(name)
    raise RuntimeError("the view failed after logging")


@probe.post("/<name>/rollback")
@require_scopes("projects:read")
def probe_rollback(name: str) -> ResponseReturnValue:
    _probe_work(name)
    state().session().rollback()
    return jsonify(rolled_back=True)


@probe.post("/<name>/commit")
@require_scopes("projects:read")
def probe_commit(name: str) -> ResponseReturnValue:
    _probe_work(name)
    state().session().commit()
    return jsonify(committed=True)


@probe.post("/anonymous")
def probe_anonymous() -> ResponseReturnValue:
    return jsonify(id=flask_log_security_event("probe.anonymous", "no tenant in this request"))


PROBE_DOMAIN = "example.test"


@pytest.fixture(scope="module")
def probe_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    """The demo app plus the probe views, also resolving tenants from ``<slug>.example.test`` hosts."""
    app = create_app(
        db.app_url,
        db.bypass_url,
        TESTING=True,
        SECRET_KEY="probe secret",
        RLS_TENANCY_RESOLVERS=["token", "session", "subdomain"],
        RLS_TENANCY_SUBDOMAIN_OF=PROBE_DOMAIN,
        RLS_TENANCY_REJECTION_WINDOW=0,
    )
    app.register_blueprint(probe)
    yield app
    tenancy = app.extensions["rls_tenancy"]
    tenancy.engine.dispose()
    tenancy.bypass.engine.dispose()


def project_named(app_engine: Engine, tenant_id: int, name: str) -> bool:
    with as_tenant(tenant_id), Session(app_engine) as session:
        return session.scalar(select(Project.id).where(Project.name == name)) is not None


@pytest.mark.parametrize(("ending", "status"), [("fail", 500), ("rollback", 200), ("commit", 200)])
def test_security_events_outlive_the_request_and_ordinary_ones_do_not(
    probe_app: Flask, seeded: Seeded, app_engine: Engine, bypass_engine: Engine, ending: str, status: int
) -> None:
    acme = seeded.tenants["acme"]
    alice = user_id(app_engine, acme, ALICE)
    name, request_id = f"probe-{secrets.token_hex(4)}", new_request_id()
    answer = probe_app.test_client().post(
        f"/probe/{name}/{ending}", headers=with_id(request_id, bearer(seeded.tokens["acme/ci"]))
    )
    assert answer.status_code == status
    assert answer.headers["X-Request-ID"] == request_id
    found = of_request(bypass_engine, request_id)
    kept = ["probe.ordinary", "probe.security"] if ending == "commit" else ["probe.security"]
    assert sorted(e.action for e in found) == kept
    for each in found:
        assert (each.tenant_id, each.user_id, str(each.ip), each.data) == (acme, alice, LOCALHOST, {"name": name})
        assert each.seq is not None
    assert project_named(app_engine, acme, name) is (ending == "commit")  # the event went with the work


def test_security_event_of_an_anonymous_request_has_no_tenant(probe_app: Flask, bypass_engine: Engine) -> None:
    request_id = new_request_id()
    answer = probe_app.test_client().post("/probe/anonymous", headers=with_id(request_id))
    assert answer.status_code == 200 and answer.json is not None
    found = one_event(bypass_engine, request_id)
    assert found.id == answer.json["id"]
    assert (found.tenant_id, found.user_id, found.action) == (None, None, "probe.anonymous")


def test_credentials_on_another_tenants_host_are_an_event(
    probe_app: Flask, seeded: Seeded, app_engine: Engine, bypass_engine: Engine
) -> None:
    acme, globex = seeded.tenants["acme"], seeded.tenants["globex"]
    request_id = new_request_id()
    answer = probe_app.test_client().get(
        "/api/me",
        base_url=f"http://globex.{PROBE_DOMAIN}",
        headers=with_id(request_id, bearer(seeded.tokens["acme/ci"])),
    )
    assert answer.status_code == 401
    found = one_event(bypass_engine, request_id)
    alice = user_id(app_engine, acme, ALICE)
    assert (found.action, found.tenant_id, found.user_id) == ("auth.wrong_tenant", acme, alice)
    assert found.data == {"host_tenant": globex, "source": "token"}
    assert str(found.ip) == LOCALHOST


# --- the request id ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["test-{hex}", "{hex}" + "!~" * 56, "a" * 112 + "{hex}"])
def test_well_formed_request_id_is_echoed_and_stored(
    client: FlaskClient, seeded: Seeded, bypass_engine: Engine, given: str
) -> None:
    request_id = given.format(hex=secrets.token_hex(8))
    assert len(request_id) <= 128
    answer = client.get("/api/me", headers=with_id(request_id, {"Authorization": "Bearer forged"}))
    assert answer.status_code == 401
    assert answer.headers["X-Request-ID"] == request_id
    assert one_event(bypass_engine, request_id).action == "auth.token_rejected"


@pytest.mark.parametrize(
    "given",
    ["has spaces {hex}", "x" * 200 + "{hex}", "a" * 113 + "{hex}", "réq-{hex}", "", "tab\t{hex}"],
)
def test_malformed_request_id_is_replaced(
    client: FlaskClient, seeded: Seeded, bypass_engine: Engine, given: str
) -> None:
    """A client cannot write what it likes into the log: a bad id is replaced, never refused with a 500."""
    request_id = given.format(hex=secrets.token_hex(8))
    answer = client.get("/api/me", headers=with_id(request_id, {"Authorization": "Bearer forged"}))
    assert answer.status_code == 401
    echoed = answer.headers["X-Request-ID"]
    assert GENERATED_ID.match(echoed) and echoed != request_id
    found = one_event(bypass_engine, echoed)
    assert (found.action, str(found.ip)) == ("auth.token_rejected", LOCALHOST)


@pytest.mark.parametrize(
    ("remote", "stored"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),  # written as inet writes it
        ("fe80::1%eth0", "fe80::1"),  # a zone is not part of the address
        ("/run/app.sock", None),  # a unix socket's path: no address
        ("", None),
    ],
)
def test_the_client_address_is_stored_with_each_event(
    client: FlaskClient, bypass_engine: Engine, remote: str, stored: str | None
) -> None:
    request_id = new_request_id()
    for _ in range(2):  # the second time from the cache of parsed addresses
        answer = client.get(
            "/api/me",
            headers=with_id(request_id, {"Authorization": "Bearer forged"}),
            environ_base={"REMOTE_ADDR": remote},
        )
        assert answer.status_code == 401
    found = events(bypass_engine, AuditEvent.request_id == request_id)
    assert [None if event.ip is None else str(event.ip) for event in found] == [stored, stored]


def test_every_request_gets_its_own_generated_id(client: FlaskClient) -> None:
    first, second = client.get("/api/plans"), client.get("/api/plans")
    assert first.status_code == second.status_code == 200
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"]}
    assert len(ids) == 2 and all(GENERATED_ID.match(i) for i in ids)


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
        {"since": "2026-01-01T00:00:00"},
        {"since": "yesterday"},
        {"until": "2026-01-01"},
        {"before": "0"},
        {"before": "abc"},
        {"before": str(2**63)},
    ],
)
def test_audit_api_refuses_bad_parameters(acme_admin: FlaskClient, query: dict[str, str]) -> None:
    answer = acme_admin.get("/api/audit", query_string=query)
    assert answer.status_code == 400
    assert answer.json is not None and answer.json["error"] == "bad_request"


# --- the demo's own events ---------------------------------------------------------------------------------------


def test_project_writes_are_logged_with_the_request(
    client: FlaskClient, seeded: Seeded, app_engine: Engine, bypass_engine: Engine
) -> None:
    acme = seeded.tenants["acme"]
    alice = user_id(app_engine, acme, ALICE)
    ci = bearer(seeded.tokens["acme/ci"])
    request_id = new_request_id()
    created = client.post("/api/projects", json={"name": "Audited"}, headers=with_id(request_id, ci))
    assert created.status_code == 201 and created.json is not None
    project_id = created.json["id"]
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("project.created", acme, alice)
    assert found.data == {"project_id": project_id, "name": "Audited"}

    request_id = new_request_id()
    patched = client.patch(f"/api/projects/{project_id}", json={"status": "archived"}, headers=with_id(request_id, ci))
    assert patched.status_code == 200
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id, found.user_id) == ("project.updated", acme, alice)
    assert found.data == {"project_id": project_id, "changes": {"status": "archived"}}

    request_id = new_request_id()
    body = {"ids": [project_id, seeded.projects["globex"][0]], "name": "Audited twice"}
    batch = client.post("/api/projects/batch-update", json=body, headers=with_id(request_id, ci))
    assert batch.status_code == 200
    found = one_event(bypass_engine, request_id)
    assert (found.action, found.tenant_id) == ("project.batch_updated", acme)
    assert found.data == {"project_ids": [project_id], "changes": {"name": "Audited twice"}}


def test_refused_project_writes_log_nothing(client: FlaskClient, seeded: Seeded, bypass_engine: Engine) -> None:
    ci = bearer(seeded.tokens["acme/ci"])
    attempts = [
        ("patch", f"/api/projects/{seeded.projects['globex'][0]}", {"name": "mine now"}),  # 404
        ("post", "/api/projects", {"name": ""}),  # 400
        ("patch", f"/api/projects/{seeded.projects['acme'][0]}", {"tenant_id": 2}),  # 400
    ]
    for method, path, body in attempts:
        request_id = new_request_id()
        answer = getattr(client, method)(path, json=body, headers=with_id(request_id, ci))
        assert answer.status_code in (400, 404)
        assert of_request(bypass_engine, request_id) == []


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


# --- denials under pressure and with odd paths --------------------------------------------------------------------


@pytest.fixture()
def one_connection_app(db: TenancyDatabase) -> Iterator[Flask]:
    """An app whose pool holds one connection: a request that needs two would wait forever."""
    from rls_tenancy.flask import Tenancy

    engine = create_engine(db.app_url, pool_size=1, max_overflow=0, pool_timeout=3)
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test")
    Tenancy(app, engine=engine)

    @app.get("/docs/<name>")
    @require_scopes("admin")
    def docs(name: str) -> ResponseReturnValue:
        return jsonify(name=name)

    yield app
    engine.dispose()
    app.extensions["rls_tenancy"].audit_engine.dispose()


def test_a_denial_needs_no_second_connection_of_the_request_pool(
    one_connection_app: Flask, seeded: Seeded, bypass_engine: Engine
) -> None:
    """Scopes load the user through the request's connection; the event must not wait for another."""
    request_id = new_request_id()
    response = one_connection_app.test_client().get(
        "/docs/plan", headers=with_id(request_id, bearer(seeded.tokens["globex/ci"]))
    )
    assert response.status_code == 403
    assert one_event(bypass_engine, request_id).action == "auth.scope_denied"


def test_the_audit_pool_follows_the_app_engine_when_it_is_disposed(
    one_connection_app: Flask, seeded: Seeded, bypass_engine: Engine
) -> None:
    """After ``engine.dispose()`` (at shutdown, in a forked worker), no audit connection opened before is reused."""
    audit_engine = one_connection_app.extensions["rls_tenancy"].audit_engine

    def audit_backend() -> int:
        with audit_engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def denied() -> None:
        request_id = new_request_id()
        response = one_connection_app.test_client().get(
            "/docs/plan", headers=with_id(request_id, bearer(seeded.tokens["globex/ci"]))
        )
        assert response.status_code == 403
        assert one_event(bypass_engine, request_id).action == "auth.scope_denied"

    denied()
    before = audit_backend()
    assert audit_backend() == before  # kept while the app's engine lives
    one_connection_app.extensions["rls_tenancy"].engine.dispose()
    after = audit_backend()
    assert after != before
    assert audit_backend() == after
    denied()  # and events are still written


def test_a_nul_in_the_path_is_still_a_recorded_403(
    one_connection_app: Flask, seeded: Seeded, bypass_engine: Engine
) -> None:
    request_id = new_request_id()
    response = one_connection_app.test_client().get(
        "/docs/a%00b", headers=with_id(request_id, bearer(seeded.tokens["globex/ci"]))
    )
    assert response.status_code == 403
    found = one_event(bypass_engine, request_id)
    assert found.message == "GET /docs/ab needs admin"
