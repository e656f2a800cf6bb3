"""Security events of requests through Flask: bad tokens, logins, denied scopes, the request id, the demo's writes.

The database is shared by the whole test session, so each test finds its
own events by the unique ``X-Request-ID`` it sends.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rls_tenancy import AuditEvent, as_tenant
from rls_tenancy.identity.tokens import issue_token, revoke_token
from saas_demo.seed import PASSWORD, Seeded
from tests.fix_flask import bearer
from tests.flask.audit_support import (
    ALICE,
    GENERATED_ID,
    HANK,
    LOCALHOST,
    events,
    log_in,
    new_request_id,
    of_request,
    one_event,
    user_id,
    with_id,
)

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
