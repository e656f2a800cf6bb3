"""Flask answers a library error as itself when SQLAlchemy wrapped it, and ``db.session.query()`` has the escape hatch.

SQLAlchemy wraps what is raised while it compiles a statement in its
``StatementError``: the refresh of another tenant's expired object in a
statement's criteria, say. With Flask-SQLAlchemy, ``db.session`` makes its
own ``Query``: ``init_app(db=db)`` gives it ``tenant_unconstrained_unsafe()``
too, keeping Flask-SQLAlchemy's methods.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, Request, jsonify
from flask.typing import ResponseReturnValue
from flask_sqlalchemy.query import Query as FlaskQuery
from sqlalchemy import exc

from rls_tenancy import NoTenantError, TenancyError, TenantMismatchError
from rls_tenancy.errors import ObjectNotVisibleError
from rls_tenancy.flask import Tenancy
from rls_tenancy.flask.resolvers import Resolution
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World
from tests.flask.fsa_support import Project, fsa


def _tenant_header(given: Request) -> Resolution | None:
    tenant = given.headers.get("X-Tenant")
    return None if tenant is None else Resolution(int(tenant))


#: What the view raises, wrapped by SQLAlchemy as it would be while compiling a statement.
WRAPPED: dict[str, Exception] = {
    "not-visible": ObjectNotVisibleError(None, "Project (1,) is not visible to tenant 2"),
    "mismatch": TenantMismatchError("Project (1,) belongs to tenant 1"),
    "no-tenant": NoTenantError("no tenant in context"),
    "bare": TenancyError("something the library refused, with no handler of its own"),
    "other": KeyError("not the library's"),
}


@pytest.fixture(scope="module")
def app(db: TenancyDatabase) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=db.app_url.render_as_string(hide_password=False), SECRET_KEY="test")
    fsa.init_app(app)
    Tenancy(app, db=fsa, resolvers=[_tenant_header])

    @app.get("/wrapped/<kind>")
    def wrapped(kind: str) -> ResponseReturnValue:
        raise exc.StatementError("(wrapped while compiling)", "SELECT ...", {}, WRAPPED[kind])

    @app.get("/unconstrained")
    def unconstrained() -> ResponseReturnValue:
        query = fsa.session.query(Project)
        return jsonify(sorted(p.name for p in query.tenant_unconstrained_unsafe().all()))  # type: ignore[attr-defined]

    @app.get("/page")
    def page() -> ResponseReturnValue:
        # Flask-SQLAlchemy's methods, which SQLAlchemy's Query type does not declare.
        paged = fsa.session.query(Project).order_by(Project.id).paginate(page=1, per_page=1)  # type: ignore[attr-defined]
        first = fsa.session.query(Project).order_by(Project.id).first_or_404()  # type: ignore[attr-defined]
        return jsonify(total=paged.total, first=first.name)

    yield app
    app.extensions["rls_tenancy"].dispose()
    with app.app_context():
        for engine in fsa.engines.values():
            engine.dispose()


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("not-visible", 403, "tenant_mismatch"),
        ("mismatch", 403, "tenant_mismatch"),
        ("no-tenant", 401, "unauthorized"),
        ("bare", 500, "internal_error"),
        ("other", 500, "internal_error"),
    ],
)
def test_a_wrapped_library_error_gets_its_own_answer(
    app: Flask, world: World, kind: str, status: int, error: str
) -> None:
    app.testing = False  # the 500s answered, not raised into the test
    # A NoTenantError in a request that has a tenant is code that lost it: a 500; without one, a 401.
    headers = {} if kind == "no-tenant" else {"X-Tenant": str(world.a)}
    try:
        response = app.test_client().get(f"/wrapped/{kind}", headers=headers)
    finally:
        app.testing = True
    assert (response.status_code, response.is_json) == (status, True)
    assert response.json is not None and response.json["error"] == error


@pytest.mark.rls_policy
def test_db_session_query_has_the_escape_hatch_and_row_level_security_still_applies(app: Flask, world: World) -> None:
    client = app.test_client()
    for tenant in (world.a, world.b):
        response = client.get("/unconstrained", headers={"X-Tenant": str(tenant)})
        assert response.status_code == 200 and set(response.json or ()) == world.projects[tenant]


def test_db_session_query_keeps_flask_sqlalchemys_methods(app: Flask, world: World) -> None:
    with app.app_context():
        assert isinstance(fsa.session.query(Project), FlaskQuery)
    response = app.test_client().get("/page", headers={"X-Tenant": str(world.a)})
    assert response.status_code == 200 and response.json is not None
    assert response.json["total"] == len(world.projects[world.a]) and response.json["first"] in world.projects[world.a]
