"""A request's window: no tenant before resolution and after its end, whatever surrounds it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, func, select
from werkzeug.routing import BaseConverter

from rls_tenancy import as_tenant, current_tenant_id, current_user_id
from rls_tenancy.flask import Tenancy
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer

# What a hook saw: (path, hook, tenant in context, user in context, projects a query returned)
Seen = tuple[str, str, int | None, int | None, int]


@pytest.fixture(scope="module")
def engine(db: TenancyDatabase) -> Iterator[Engine]:
    made = create_engine(db.app_url)
    yield made
    made.dispose()


def _hooked_app(engine: Engine, seeded: Seeded, seen: list[Seen]) -> Flask:
    """An app whose hooks outside the extension's window each record what they see, as the app role."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)

    def record(hook: str) -> None:
        with engine.connect() as connection:
            projects = connection.scalar(select(func.count()).select_from(Project)) or 0
        seen.append((request.path, hook, current_tenant_id(), current_user_id(), projects))

    class Recording(BaseConverter):
        def to_python(self, value: str) -> str:
            record("converter")
            return value

    app.url_map.converters["recording"] = Recording

    @app.teardown_request
    def registered_before_the_extension(_error: BaseException | None) -> None:  # runs after the extension's
        record("teardown")

    Tenancy(app, engine=engine)

    @app.url_value_preprocessor
    def preprocess(_endpoint: str | None, _values: dict[str, object] | None) -> None:
        record("url value preprocessor")

    @app.get("/hooks/<recording:name>")
    def hooks(name: str) -> ResponseReturnValue:
        record("view")
        return jsonify(name=name)

    @app.get("/outer/<slug>")
    def outer(slug: str) -> ResponseReturnValue:
        record("view")
        token = seeded.tokens.get(f"{slug}/dashboard")
        inner = current_app.test_client().get(f"/hooks/{slug}", headers={} if token is None else bearer(token))
        return jsonify(status=inner.status_code, context=current_tenant_id())

    return app


def _window(path: str, seen: list[Seen]) -> list[tuple[str, int | None, int | None, bool]]:
    """What ``path``'s hooks saw, and whether their query found any rows."""
    return [(hook, tenant, user, projects > 0) for at, hook, tenant, user, projects in seen if at == path]


def _expected(tenant: int | None) -> list[tuple[str, int | None, int | None, bool]]:
    return [
        ("converter", None, None, False),
        ("url value preprocessor", None, None, False),
        ("view", tenant, None, tenant is not None),
        ("teardown", None, None, False),
    ]


def test_hooks_outside_the_window_never_see_the_tenant_the_test_client_runs_under(
    engine: Engine, seeded: Seeded
) -> None:
    seen: list[Seen] = []
    client = _hooked_app(engine, seeded, seen).test_client()
    with as_tenant(seeded.tenants["globex"]):
        assert client.get("/hooks/anonymous").status_code == 200
        assert client.get("/hooks/acme", headers=bearer(seeded.tokens["acme/dashboard"])).status_code == 200
        assert current_tenant_id() == seeded.tenants["globex"]
    assert _window("/hooks/anonymous", seen) == _expected(None)
    assert _window("/hooks/acme", seen) == _expected(seeded.tenants["acme"])


def test_hooks_of_a_request_made_inside_a_view_never_see_the_outer_requests_tenant_or_user(
    engine: Engine, seeded: Seeded
) -> None:
    seen: list[Seen] = []
    client = _hooked_app(engine, seeded, seen).test_client()
    acme_user = bearer(seeded.tokens["acme/ci"])  # the outer request acts for acme and one of its users
    for slug in ("anonymous", "globex"):
        answer = client.get(f"/outer/{slug}", headers=acme_user).json
        assert answer == {"status": 200, "context": seeded.tenants["acme"]}
    assert _window("/hooks/anonymous", seen) == _expected(None)
    assert _window("/hooks/globex", seen) == _expected(seeded.tenants["globex"])
    hook, tenant, user, _found = _window("/outer/globex", seen)[1]
    assert (hook, tenant) == ("view", seeded.tenants["acme"]) and user is not None
