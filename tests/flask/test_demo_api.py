"""The demo app's JSON API through Flask's test client, as the app role, against real PostgreSQL."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from rls_tenancy import UnsafeBypass, as_tenant
from rls_tenancy.identity.users import User
from saas_demo.seed import PASSWORD, Seeded
from tests.fix_flask import bearer


def app_engine_of(client: FlaskClient) -> Engine:
    """The demo app's own (bound) engine."""
    app: Flask = client.application
    engine: Engine = app.extensions["rls_tenancy"].engine
    return engine


def test_each_tenant_lists_only_its_own_projects(client: FlaskClient, seeded: Seeded) -> None:
    for slug in ("acme", "globex"):
        listed = client.get("/api/projects", headers=bearer(seeded.tokens[f"{slug}/ci"]))
        assert listed.status_code == 200
        ids = {p["id"] for p in listed.json["projects"]}  # type: ignore[index]
        assert ids and ids.isdisjoint(seeded.projects["globex" if slug == "acme" else "acme"])


def test_another_tenants_project_is_a_404_like_a_missing_one(client: FlaskClient, seeded: Seeded) -> None:
    acme = bearer(seeded.tokens["acme/ci"])
    foreign = client.get(f"/api/projects/{seeded.projects['globex'][0]}", headers=acme)
    missing = client.get("/api/projects/2147483647", headers=acme)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json == missing.json
    for method, body in (("patch", {"name": "mine now"}),):
        changed = getattr(client, method)(f"/api/projects/{seeded.projects['globex'][0]}", headers=acme, json=body)
        assert changed.status_code == 404
    own = client.get(f"/api/projects/{seeded.projects['globex'][0]}", headers=bearer(seeded.tokens["globex/ci"]))
    assert own.status_code == 200 and own.json["name"] != "mine now"  # type: ignore[index]


def test_batch_update_touches_only_the_callers_rows(client: FlaskClient, seeded: Seeded) -> None:
    acme, globex = bearer(seeded.tokens["acme/ci"]), bearer(seeded.tokens["globex/ci"])
    before = client.get("/api/projects?status=active", headers=globex).json["projects"]  # type: ignore[index]
    everything = seeded.projects["acme"] + seeded.projects["globex"]
    answer = client.post(
        "/api/projects/batch-update", headers=acme, json={"ids": everything, "name": "Renamed by acme"}
    )
    assert answer.status_code == 200
    updated = set(answer.json["updated"])  # type: ignore[index]
    assert updated and updated <= set(seeded.projects["acme"])
    assert set(answer.json["not_found"]) >= set(seeded.projects["globex"])  # type: ignore[index]
    assert client.get("/api/projects?status=active", headers=globex).json["projects"] == before  # type: ignore[index]
    invisible = client.get("/api/projects?status=invisible", headers=acme).json["projects"]  # type: ignore[index]
    assert all(p["name"] != "Renamed by acme" for p in invisible)


def test_create_and_update_a_project(client: FlaskClient, seeded: Seeded) -> None:
    acme = bearer(seeded.tokens["acme/ci"])
    created = client.post("/api/projects", headers=acme, json={"name": "From the tests"})
    assert created.status_code == 201
    project = created.json
    assert project is not None
    patched = client.patch(f"/api/projects/{project['id']}", headers=acme, json={"status": "archived"})
    assert patched.json == {**project, "status": "archived"}
    globex_view = client.get(f"/api/projects/{project['id']}", headers=bearer(seeded.tokens["globex/ci"]))
    assert globex_view.status_code == 404


def test_a_write_is_one_transaction(client: FlaskClient, seeded: Seeded) -> None:
    """The answer is read before the commit: no second transaction (and binding) to load what was written."""
    acme = bearer(seeded.tokens["acme/ci"])
    begun: list[object] = []
    engine = app_engine_of(client)

    def began(conn: object) -> None:
        begun.append(conn)

    event.listen(engine, "begin", began)
    try:
        created = client.post("/api/projects", headers=acme, json={"name": "One transaction"})
        assert created.status_code == 201 and len(begun) == 1
        project = created.json
        assert project is not None and project["name"] == "One transaction" and project["status"] == "active"
        patched = client.patch(f"/api/projects/{project['id']}", headers=acme, json={"status": "archived"})
        assert patched.json == {**project, "status": "archived"} and len(begun) == 2
    finally:
        event.remove(engine, "begin", began)
    stored = client.get(f"/api/projects/{project['id']}", headers=acme)
    assert stored.json == {**project, "status": "archived"}


def test_read_only_token_cannot_write(client: FlaskClient, seeded: Seeded) -> None:
    read_only = bearer(seeded.tokens["acme/dashboard"])
    assert client.get("/api/projects", headers=read_only).status_code == 200
    refused = client.post("/api/projects", headers=read_only, json={"name": "nope"})
    assert refused.status_code == 403
    assert refused.json == {
        "error": "insufficient_scope",
        "message": "this needs the scope(s) projects:write",
        "required": ["projects:write"],
    }
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_no_credentials_is_a_401_with_a_challenge(client: FlaskClient) -> None:
    answer = client.get("/api/projects")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert answer.json["error"] == "unauthorized"  # type: ignore[index]


def test_shared_plans_need_no_tenant(client: FlaskClient) -> None:
    assert client.get("/api/plans").json == {"plans": ["Free", "Pro"]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/projects", {"name": ""}),
        ("/api/projects", {"name": "x" * 101}),
        ("/api/projects", {"name": "ok", "tenant_id": 1}),
        ("/api/projects", {"name": "ok", "status": "deleted"}),
        ("/api/projects", ["not", "an", "object"]),
        ("/api/projects/batch-update", {"ids": [], "status": "active"}),
        ("/api/projects/batch-update", {"ids": [2**31], "status": "active"}),
        ("/api/projects/batch-update", {"ids": ["1"], "status": "active"}),
        ("/api/projects/batch-update", {"ids": [True], "status": "active"}),
        ("/api/projects/batch-update", {"ids": [1], "tenant_id": 2}),
    ],
)
def test_bad_bodies_are_400s(client: FlaskClient, seeded: Seeded, path: str, body: object) -> None:
    answer = client.post(path, headers=bearer(seeded.tokens["acme/ci"]), json=body)
    assert answer.status_code == 400
    assert answer.json is not None and answer.json["error"] == "bad_request"


@pytest.mark.parametrize("path", ["/api/projects/0", "/api/projects/99999999999999999999", "/api/projects/abc"])
def test_ids_outside_the_column_are_404s_not_500s(client: FlaskClient, seeded: Seeded, path: str) -> None:
    answer = client.get(path, headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 404
    assert answer.json is not None


def test_not_json_is_a_400(client: FlaskClient, seeded: Seeded) -> None:
    answer = client.post(
        "/api/projects", headers=bearer(seeded.tokens["acme/ci"]), data="name=x", content_type="text/plain"
    )
    assert answer.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/projects"),
        ("POST", "/api/projects/batch-update"),
        ("POST", "/api/login"),
        ("PATCH", "/api/projects/{project}"),
        ("PUT", "/api/features/beta-reports"),
    ],
)
def test_json_nested_too_deeply_to_parse_is_a_400(client: FlaskClient, seeded: Seeded, method: str, path: str) -> None:
    """5 KB nested 2500 deep: Python's JSON decoder raises RecursionError, not the ValueError of bad JSON."""
    deep = b"[" * 2500 + b"]" * 2500
    answer = client.open(
        path.format(project=seeded.projects["acme"][0]),
        method=method,
        data=deep,
        headers={**bearer(seeded.tokens["acme/ci"]), "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.data[:200]
    assert answer.json == {"error": "invalid_request", "message": "the JSON body is nested too deeply"}


def test_login_with_the_session(client: FlaskClient, seeded: Seeded) -> None:
    wrong = client.post("/api/login", json={"tenant": "acme", "email": "alice@acme.example", "password": "nope"})
    assert wrong.status_code == 401
    other_tenant = client.post(
        "/api/login", json={"tenant": "globex", "email": "alice@acme.example", "password": PASSWORD}
    )
    assert other_tenant.status_code == 401 and other_tenant.json == wrong.json
    assert (
        client.post(
            "/api/login", json={"tenant": "acme", "email": "ALICE@acme.example", "password": PASSWORD}
        ).status_code
        == 200
    )
    me = client.get("/api/me").json
    assert me is not None
    assert me["tenant"]["slug"] == "acme" and me["user"]["email"] == "alice@acme.example"
    assert me["scopes"] == ["admin", "projects:read", "projects:write"]
    listed = {p["id"] for p in client.get("/api/projects").json["projects"]}  # type: ignore[index]
    assert listed and listed.isdisjoint(seeded.projects["globex"])
    client.post("/api/logout")
    assert client.get("/api/me").json["tenant"] is None  # type: ignore[index]
    assert client.get("/api/projects").status_code == 401


def test_a_session_outliving_its_user_is_anonymous(client: FlaskClient, seeded: Seeded, bypass: UnsafeBypass) -> None:
    with as_tenant(seeded.tenants["acme"]), Session(app_engine_of(client)) as session, session.begin():
        user = User(email="short-lived@acme.example", roles=["projects:read"])
        user.set_password(PASSWORD)
        session.add(user)
    assert (
        client.post(
            "/api/login", json={"tenant": "acme", "email": "short-lived@acme.example", "password": PASSWORD}
        ).status_code
        == 200
    )
    assert client.get("/api/projects").status_code == 200
    with bypass.connect(reason="test: delete a user behind a session's back") as conn:
        conn.execute(text("DELETE FROM rls_tenancy.users WHERE email = 'short-lived@acme.example'"))
    assert client.get("/api/me").json["tenant"] is None  # type: ignore[index]
    assert client.get("/api/projects").status_code == 401


def test_emails_beyond_ascii_log_in_as_stored(client: FlaskClient, seeded: Seeded) -> None:
    """PostgreSQL, not Python, lowers the address, as the unique index does."""
    with as_tenant(seeded.tenants["acme"]), Session(app_engine_of(client)) as session, session.begin():
        user = User(email="JÖRG@acme.example", roles=["projects:read"])
        user.set_password(PASSWORD)
        session.add(user)
    answer = client.post("/api/login", json={"tenant": "acme", "email": "JÖRG@acme.example", "password": PASSWORD})
    assert answer.status_code == 200
    assert client.get("/api/me").json["user"]["email"] == "JÖRG@acme.example"  # type: ignore[index]
