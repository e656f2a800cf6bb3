"""Both integration styles under load: Flask-SQLAlchemy's ``db.Model`` and the plain demo app."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select, text

from rls_tenancy import NoTenantError, UnsafeBypass, as_tenant
from rls_tenancy.flask import Tenancy, require_scopes
from rls_tenancy.testing import TenancyDatabase
from saas_demo.seed import Seeded
from tests.conftest import World, run_in_threads
from tests.fix_flask import bearer
from tests.flask.fsa_support import Project, fsa


@pytest.fixture(scope="module")
def app(db: TenancyDatabase) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=db.app_url.render_as_string(hide_password=False),
        SQLALCHEMY_BINDS={"cache": "sqlite://"},  # a bind without tenant tables is left alone
        SECRET_KEY="test",
        TESTING=True,
    )
    fsa.init_app(app)
    Tenancy(app, db=fsa)

    @app.get("/projects")
    @require_scopes("projects:read")
    def projects() -> ResponseReturnValue:
        return jsonify(sorted(p.id for p in Project.query.all()))

    @app.get("/unconstrained")
    @require_scopes("projects:read")
    def unconstrained() -> ResponseReturnValue:
        return jsonify(sorted(p.id for p in Project.query.tenant_unconstrained_unsafe().all()))

    yield app
    with app.app_context():
        for engine in fsa.engines.values():
            engine.dispose()


def _ids(bypass: UnsafeBypass, tenant_id: int) -> set[int]:
    """What the table really holds for a tenant, seen through the bypass."""
    with bypass.connect(reason="test: the truth about a tenant's projects") as conn:
        return set(conn.execute(text("SELECT id FROM projects WHERE tenant_id = :t"), {"t": tenant_id}).scalars())


def test_model_query_answers_for_the_requests_tenant(app: Flask, bypass: UnsafeBypass, seeded: Seeded) -> None:
    client = app.test_client()
    for slug in ("acme", "globex"):
        headers = bearer(seeded.tokens[f"{slug}/ci"])
        mine = client.get("/projects", headers=headers).json
        assert mine is not None and set(mine) == _ids(bypass, seeded.tenants[slug])
        # Lifting the ORM filter leaves row level security.
        assert client.get("/unconstrained", headers=headers).json == mine


def test_model_query_outside_a_request_needs_as_tenant(app: Flask, world: World) -> None:
    with app.app_context():
        with pytest.raises(NoTenantError):
            Project.query.all()
        with as_tenant(world.a):
            assert {p.name for p in Project.query.all()} == world.projects[world.a]
            project = Project(name="via flask-sqlalchemy")
            fsa.session.add(project)
            fsa.session.commit()
            assert project.tenant_id == world.a
            assert fsa.session.scalars(select(Project.tenant_id).distinct()).all() == [world.a]


def test_model_query_keeps_flask_sqlalchemys_methods(app: Flask, world: World) -> None:
    """``Model.query`` of a TenantBoundMixin model is Flask-SQLAlchemy's query with the escape hatch:
    ``paginate()`` and ``first_or_404()`` stay (``get_or_404()`` too, which SQLAlchemy 2 calls legacy),
    filtered to the tenant."""
    from werkzeug.exceptions import NotFound

    with app.test_request_context(), as_tenant(world.a):
        page = Project.query.order_by(Project.id).paginate(page=1, per_page=50)
        assert {p.name for p in page.items} == world.projects[world.a]
        mine = page.items[0]
        assert Project.query.filter_by(id=mine.id).first_or_404() is mine
        assert Project.query.tenant_unconstrained_unsafe().count() == len(world.projects[world.a])  # RLS still
    with app.test_request_context(), as_tenant(world.b):
        with pytest.raises(NotFound):
            Project.query.filter_by(id=mine.id).first_or_404()  # a's project, asked for as b
        fsa.session.rollback()


@pytest.mark.parametrize("style", ["flask-sqlalchemy", "plain"])
def test_concurrent_requests_for_different_tenants(
    style: str, app: Flask, demo_app: Flask, bypass: UnsafeBypass, seeded: Seeded
) -> None:
    """16 threads, each with its own client, alternating tenants: every answer is the caller's own."""
    target, path = (app, "/projects") if style == "flask-sqlalchemy" else (demo_app, "/api/projects")
    own = {slug: _ids(bypass, seeded.tenants[slug]) for slug in ("acme", "globex")}
    start = threading.Barrier(16)
    failures: list[str] = []

    def work(slug: str) -> None:
        client = target.test_client()
        start.wait()
        for _ in range(15):
            answer = client.get(path, headers=bearer(seeded.tokens[f"{slug}/ci"]))
            body = answer.json
            ids = set(body if isinstance(body, list) else [p["id"] for p in body["projects"]])  # type: ignore[index]
            if answer.status_code != 200 or not ids or not ids <= own[slug]:
                failures.append(f"{slug}: {answer.status_code} {ids}")

    run_in_threads(work, ((slug,) for slug in ("acme", "globex") * 8))
    assert failures == []
