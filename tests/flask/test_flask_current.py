"""Scopes, language and the user, as the seed's slides define them (with their bugs fixed)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from rls_tenancy import as_tenant
from rls_tenancy.flask import (
    Tenancy,
    get_current_language,
    get_current_scopes,
    get_current_tenant,
    get_current_user,
    login,
    require_scopes,
    state,
)
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.identity.users import User
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer


@pytest.fixture(scope="module")
def app(db: TenancyDatabase, app_engine: Engine) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test", TESTING=True, RLS_TENANCY_LANGUAGES=["en", "de", "fr"], RLS_TENANCY_DEFAULT_LANGUAGE="en"
    )
    Tenancy(app, engine=app_engine)

    @app.get("/current")
    def current() -> ResponseReturnValue:
        user = get_current_user()
        return jsonify(
            user=None if user is None else user.email,
            scopes=sorted(get_current_scopes()),
            language=get_current_language(),
        )

    @app.get("/admin")
    @require_scopes("admin")
    def admin() -> ResponseReturnValue:
        return jsonify(ok=True)

    @app.post("/test-login/<int:user_id>")
    def test_login(user_id: int) -> ResponseReturnValue:
        with as_tenant(tenant_of[user_id]), Session(app_engine) as session:
            found = session.get(User, user_id)
            assert found is not None
            login(found)
        return jsonify(ok=True)

    tenant_of: dict[int, int] = {}
    app.config["tenant_of"] = tenant_of
    yield app


@dataclass(frozen=True)
class Person:
    user_id: int
    token: str  # a token of this user with scopes {"projects:read", "admin"}


def _person(app: Flask, engine: Engine, tenant_id: int, roles: list[str], language: str | None) -> Person:
    with as_tenant(tenant_id), Session(engine) as session, session.begin():
        user = User(email=f"{secrets.token_hex(4)}@example.test", roles=roles, language=language)
        session.add(user)
        session.flush()
        token = issue_token(session, name="test", scopes=["projects:read", "admin"], user_id=user.id)
        app.config["tenant_of"][user.id] = tenant_id
        return Person(user.id, token.token)


def test_token_scopes_narrow_the_users_roles(app: Flask, app_engine: Engine, seeded: Seeded) -> None:
    person = _person(app, app_engine, seeded.tenants["acme"], ["projects:read", "projects:write"], None)
    assert app.test_client().get("/current", headers=bearer(person.token)).json["scopes"] == ["projects:read"]  # type: ignore[index]


def test_a_session_user_has_all_their_roles(app: Flask, app_engine: Engine, seeded: Seeded) -> None:
    person = _person(app, app_engine, seeded.tenants["acme"], ["admin", "projects:write"], None)
    client = app.test_client()
    client.post(f"/test-login/{person.user_id}")
    assert client.get("/current").json["scopes"] == ["admin", "projects:write"]  # type: ignore[index]
    assert client.get("/admin").status_code == 200


def test_a_token_without_a_user_has_the_tokens_scopes(app: Flask, seeded: Seeded) -> None:
    answer = app.test_client().get("/current", headers=bearer(seeded.tokens["acme/dashboard"]))
    assert answer.json == {"user": None, "scopes": ["projects:read"], "language": "en"}


def test_anonymous_requests_have_the_anonymous_scope(app: Flask) -> None:
    assert app.test_client().get("/current").json["scopes"] == ["anonymous"]  # type: ignore[index]


def test_require_scopes_says_401_without_credentials_and_403_without_the_scope(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    anonymous = client.get("/admin")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    lacking = client.get("/admin", headers=bearer(seeded.tokens["acme/dashboard"]))
    assert lacking.status_code == 403 and lacking.json["required"] == ["admin"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "en"),
        ("de", "de"),
        ("da, de;q=0.8, en;q=0.5", "de"),  # the seed's accept_languages[0] would say "da"
        ("fr-CH", "fr"),  # no exact match: the primary language serves
        ("de-DE, en;q=0.5", "de"),  # the preferred language by its primary tag, before a lesser exact match
        ("de-de,en-us;q=0.7,en;q=0.3", "de"),
        ("*", "en"),
        ("de;q=0, fr;q=0.1", "fr"),
        ("pt-BR", "en"),
        ("de;q=0.1, fr;q=0.9", "fr"),
        ("%%%, ;;;", "en"),
    ],
)
def test_language_is_negotiated_over_the_apps_languages(app: Flask, accept: str | None, expected: str) -> None:
    headers = {} if accept is None else {"Accept-Language": accept}
    assert app.test_client().get("/current", headers=headers).json["language"] == expected  # type: ignore[index]


@pytest.mark.parametrize(("users_language", "expected"), [("de", "de"), ("es", "fr"), (None, "fr")])
def test_the_users_language_wins_when_the_app_speaks_it(
    app: Flask, app_engine: Engine, seeded: Seeded, users_language: str | None, expected: str
) -> None:
    person = _person(app, app_engine, seeded.tenants["globex"], ["projects:read"], users_language)
    answer = app.test_client().get("/current", headers={**bearer(person.token), "Accept-Language": "fr"})
    assert answer.json["language"] == expected  # type: ignore[index]


def _renaming_app(app_engine: Engine, *, own_handler: bool) -> Flask:
    """A view whose commit fails on a value too long; the tenant read after it, by a hook or the app's handler."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test")  # not TESTING: a 500 is answered, not raised
    Tenancy(app, engine=app_engine)

    @app.post("/rename/<int:project_id>")
    def rename(project_id: int) -> ResponseReturnValue:
        session = state().session()
        project = session.get(Project, project_id)
        assert project is not None
        project.name = str(request.get_json()["name"])
        session.commit()
        return jsonify(name=project.name)

    if own_handler:

        @app.errorhandler(DataError)
        def bad_value(_error: DataError) -> ResponseReturnValue:
            tenant = get_current_tenant()
            return jsonify(error="bad_value", tenant=None if tenant is None else tenant.slug), 422

    else:

        @app.after_request
        def tenant_header(response: Response) -> Response:
            tenant = get_current_tenant()
            if tenant is not None:
                response.headers["X-Tenant-Slug"] = tenant.slug
            return response

    return app


@pytest.mark.parametrize("own_handler", [False, True], ids=["after-request-hook", "apps-own-handler"])
def test_the_tenant_read_after_a_failed_statement_keeps_the_requests_4xx(
    app_engine: Engine, seeded: Seeded, own_handler: bool
) -> None:
    """The failed transaction is rolled back before it is read from again: before, its 400 (or 422) was a 500."""
    client = _renaming_app(app_engine, own_handler=own_handler).test_client()
    project = seeded.projects["acme"][0]
    answer = client.post(f"/rename/{project}", json={"name": "x" * 101}, headers=bearer(seeded.tokens["acme/ci"]))
    if own_handler:
        assert (answer.status_code, answer.json) == (422, {"error": "bad_value", "tenant": "acme"})
    else:
        assert answer.status_code == 400, answer.json
        assert answer.headers["X-Tenant-Slug"] == "acme"
    with as_tenant(seeded.tenants["acme"]), Session(app_engine) as session:
        assert len(session.get_one(Project, project).name) <= 100  # nothing written


def test_a_json_value_of_a_type_the_driver_cannot_send_is_a_400(app_engine: Engine, seeded: Seeded) -> None:
    """A view that passes a JSON object on where text goes: psycopg refuses it before sending, as a DataError."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test")  # not TESTING: a 500 is answered, not raised
    Tenancy(app, engine=app_engine)

    @app.post("/projects")
    def add() -> ResponseReturnValue:
        session = state().session()
        session.add(Project(name=request.get_json()["name"]))  # unchecked: the client's value, as sent
        session.commit()
        return jsonify(added=True), 201

    client = app.test_client()
    name = "typed " + secrets.token_hex(4)
    for sent, status in (({"nested": name}, 400), (name, 201)):
        answer = client.post("/projects", json={"name": sent}, headers=bearer(seeded.tokens["acme/ci"]))
        assert answer.status_code == status, (sent, answer.json)
    with as_tenant(seeded.tenants["acme"]), Session(app_engine) as session:
        assert session.scalars(select(Project.name).where(Project.name.contains(name))).all() == [name]


def test_the_tenant_read_in_a_views_except_block_leaves_its_recovery_alone(app_engine: Engine, seeded: Seeded) -> None:
    """A savepoint's statement fails, the view logs the tenant, rolls back to the savepoint and goes on.

    The helper reads apart: rolling the request's transaction back, as it
    once did, lost the view's first write and broke its savepoint.
    """
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test")  # not TESTING: a 500 is answered, not raised
    Tenancy(app, engine=app_engine)
    name = "kept " + secrets.token_hex(4)

    @app.post("/projects")
    def add() -> ResponseReturnValue:
        session = state().session()
        session.add(Project(name=name))
        session.flush()
        savepoint = session.begin_nested()
        try:
            session.execute(text("INSERT INTO projects (name) VALUES (NULL)"))  # an optional extra, refused
        except IntegrityError:
            tenant = get_current_tenant()
            savepoint.rollback()
        session.commit()
        return jsonify(tenant=None if tenant is None else tenant.slug), 201

    answer = app.test_client().post("/projects", headers=bearer(seeded.tokens["acme/ci"]))
    assert (answer.status_code, answer.json) == (201, {"tenant": "acme"})
    with as_tenant(seeded.tenants["acme"]), Session(app_engine) as session:
        assert session.scalars(select(Project.name).where(Project.name == name)).all() == [name]
