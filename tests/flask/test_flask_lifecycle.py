"""A request's tenant lives and dies with the request, whatever the app does around it."""

from __future__ import annotations

import gc
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask, Request, abort, current_app, g, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import scoped_session, sessionmaker

from rls_tenancy import ConfigurationError, as_tenant, current_tenant_id, tenant_id_for_slug
from rls_tenancy.flask import Resolution, Tenancy, get_current_scopes, get_current_tenant
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.conftest import run_in_threads
from tests.fix_flask import bearer


@pytest.fixture(scope="module")
def engine(db: TenancyDatabase) -> Iterator[Engine]:
    made = create_engine(db.app_url)
    yield made
    made.dispose()


def _app(engine: Engine, seeded: Seeded) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine)

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        tenant = get_current_tenant()
        return jsonify(tenant=None if tenant is None else tenant.slug, scopes=sorted(get_current_scopes()))

    @app.get("/nested")
    def nested() -> ResponseReturnValue:
        inner = current_app.test_client().get("/whoami", headers=bearer(seeded.tokens["globex/ci"]))
        tenant = get_current_tenant()
        return jsonify(inner=inner.json, outer=None if tenant is None else tenant.slug, context=current_tenant_id())

    return app


def test_an_app_context_kept_pushed_shares_nothing_between_requests(demo_app: Flask, seeded: Seeded) -> None:
    """Apps that push an app context at import share ``g`` across requests; the tenancy must not."""
    client = demo_app.test_client()
    with demo_app.app_context():
        acme = client.get("/api/me", headers=bearer(seeded.tokens["acme/ci"])).json
        globex = client.get("/api/me", headers=bearer(seeded.tokens["globex/dashboard"])).json
        written = client.post("/api/projects", headers=bearer(seeded.tokens["globex/dashboard"]), json={"name": "x"})
    assert acme is not None and globex is not None
    assert (acme["tenant"]["slug"], globex["tenant"]["slug"]) == ("acme", "globex")
    assert globex["user"] is None and globex["scopes"] == ["projects:read"]
    assert written.status_code == 403


def test_a_failing_teardown_leaves_no_tenant_behind(engine: Engine, seeded: Seeded) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    seen: list[int | None] = []

    @app.before_request
    def registered_before_the_extension() -> None:  # runs after it all the same
        seen.append(current_tenant_id())

    Tenancy(app, engine=engine)

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        return jsonify(context=current_tenant_id())

    @app.teardown_request
    def broken(_error: BaseException | None) -> None:
        raise RuntimeError("a teardown that fails")

    client = app.test_client()
    gc.disable()  # the request's Session must be closed, not left for a cycle collection
    try:
        for headers in (bearer(seeded.tokens["acme/ci"]), {}, {"Authorization": "Bearer rlst_1_bad"}):
            with pytest.raises(RuntimeError, match="a teardown that fails"):
                client.get("/whoami", headers=headers)
            assert current_tenant_id() is None
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        gc.enable()
    # The extension resolves first; the anonymous request after the failed
    # teardown sees no tenant; the bad token is refused before any hook runs.
    assert seen == [seeded.tenants["acme"], None]


def test_a_request_made_inside_a_request_keeps_each_ones_tenant(engine: Engine, seeded: Seeded) -> None:
    answer = _app(engine, seeded).test_client().get("/nested", headers=bearer(seeded.tokens["acme/ci"])).json
    assert answer is not None
    assert answer["inner"]["tenant"] == "globex"
    assert (answer["outer"], answer["context"]) == ("acme", seeded.tenants["acme"])
    assert current_tenant_id() is None


def test_one_thread_serving_tenants_in_turn(engine: Engine, seeded: Seeded) -> None:
    """Threads that alternate tenants request by request, as a worker pool's threads do."""
    app = _app(engine, seeded)
    failures: list[str] = []

    def work(first: str) -> None:
        client = app.test_client()
        order = [first, "globex" if first == "acme" else "acme"] * 10
        for slug in order:
            answer = client.get("/whoami", headers=bearer(seeded.tokens[f"{slug}/dashboard"])).json
            if answer is None or answer["tenant"] != slug or current_tenant_id() is not None:
                failures.append(f"{slug}: {answer}")
            anonymous = client.get("/whoami").json
            if anonymous != {"tenant": None, "scopes": ["anonymous"]}:
                failures.append(f"after {slug}: {anonymous}")

    run_in_threads(work, ((slug,) for slug in ("acme", "globex") * 4))
    assert failures == []


def _organisation_app(engine: Engine, *, writes: str | None = None) -> Flask:
    """An app that looks the organisation its URL names up through the request's Session, before any tenant.

    ``writes``: and adds an object it never flushes (``"unflushed"``), or
    writes (``"written"``: ``txid_current()`` gives the transaction the id
    a write would).
    """
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    sessions = scoped_session(sessionmaker(engine))
    Tenancy(app, engine=engine, session=sessions)

    @app.url_value_preprocessor  # runs before every before_request, the extension's included
    def organisation(_endpoint: str | None, values: dict[str, object] | None) -> None:
        if values and "org" in values:
            g.org_id = tenant_id_for_slug(sessions(), str(values.pop("org")))
            if writes == "unflushed":
                sessions.add(Project(name="made before the tenant"))
            elif writes == "written":
                sessions.execute(text("SELECT txid_current()"))

    @app.get("/o/<org>/projects")
    def projects() -> ResponseReturnValue:
        return jsonify(org=g.org_id, ids=sorted(sessions.scalars(select(Project.id))))

    return app


def test_a_session_begun_before_the_tenant_is_resolved_ends_before_the_request_acts_for_it(
    engine: Engine, seeded: Seeded
) -> None:
    """Its transaction is bound to no tenant: before, the view's first query raised TenantChangedError, a 500."""
    client = _organisation_app(engine).test_client()
    answer = client.get("/o/acme/projects", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 200, answer.json
    with as_tenant(seeded.tenants["acme"]), sessionmaker(engine)() as session:
        own = sorted(session.scalars(select(Project.id)))
    assert answer.json == {"org": seeded.tenants["acme"], "ids": own}
    assert set(seeded.projects["acme"]) <= set(own)
    assert client.get("/o/acme/projects").status_code == 401  # no tenant: the ORM query refuses, as always


@pytest.mark.parametrize("writes", ["unflushed", "written"])
def test_changes_made_before_the_tenant_is_resolved_are_refused_not_lost(
    engine: Engine, seeded: Seeded, writes: str
) -> None:
    """Rolled back, they would vanish behind a 200: the mistake is named (a 500 outside TESTING)."""
    client = _organisation_app(engine, writes=writes).test_client()
    with pytest.raises(ConfigurationError, match="wrote before its tenant was resolved"):
        client.get("/o/acme/projects", headers=bearer(seeded.tokens["acme/ci"]))


def test_a_resolver_of_the_apps_own_may_look_up_through_the_requests_session(engine: Engine, seeded: Seeded) -> None:
    """Its lookup begins the request Session's transaction, bound to no tenant, during resolution."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    sessions = scoped_session(sessionmaker(engine))

    def by_header(request: Request) -> Resolution | None:
        slug = request.headers.get("X-Tenant")
        tenant = None if slug is None else tenant_id_for_slug(sessions(), slug)
        return None if tenant is None else Resolution(tenant, None, None, source="X-Tenant")

    Tenancy(app, engine=engine, session=sessions, resolvers=[by_header])

    @app.get("/projects")
    def projects() -> ResponseReturnValue:
        return jsonify(ids=sorted(sessions.scalars(select(Project.id))))

    answer = app.test_client().get("/projects", headers={"X-Tenant": "acme"})
    assert answer.status_code == 200, answer.json
    assert answer.json is not None and set(seeded.projects["acme"]) <= set(answer.json["ids"])


def test_a_view_that_loses_its_tenant_in_a_thread_is_a_500_not_a_401(engine: Engine, seeded: Seeded) -> None:
    """The request resolved a tenant: a NoTenantError in it is code that lost it, not missing credentials."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test")  # not TESTING: answered, not raised
    sessions = scoped_session(sessionmaker(engine))
    Tenancy(app, engine=engine, session=sessions)

    @app.get("/fan-out")
    def fan_out() -> ResponseReturnValue:
        def count() -> int:  # a thread of its own: no request context, no tenant
            with sessionmaker(engine)() as session:
                return len(session.scalars(select(Project.id)).all())

        with ThreadPoolExecutor(1) as pool:
            return jsonify(count=pool.submit(count).result())

    client = app.test_client()
    answer = client.get("/fan-out", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 500
    assert "WWW-Authenticate" not in answer.headers
    assert client.get("/fan-out").status_code == 401  # without credentials it still asks for them


def test_changes_a_teardown_would_commit_after_the_extensions_are_named_in_a_warning(
    engine: Engine, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    """The extension's teardown closes the request's Session first: the app's later commit has nothing to write."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    sessions = scoped_session(sessionmaker(engine))
    Tenancy(app, engine=engine, session=sessions)
    name = "committed at teardown " + secrets.token_hex(4)

    @app.post("/projects")
    def add() -> ResponseReturnValue:
        sessions.add(Project(name=name))
        return jsonify(added=True), 201

    @app.get("/projects/<int:project_id>")
    def show(project_id: int) -> ResponseReturnValue:
        project = sessions.get_one(Project, project_id)
        project.name = project.name  # set, not changed: nothing to store, nothing to warn of
        return jsonify(name=project.name)

    @app.post("/refused")
    def refused() -> ResponseReturnValue:
        sessions.add(Project(name=name + " refused"))
        abort(422)  # meant to store nothing: nothing to warn of

    @app.teardown_appcontext
    def commit(_error: BaseException | None) -> None:
        sessions.commit()

    client = app.test_client()
    with caplog.at_level("WARNING", logger="rls_tenancy.flask"):
        shown = client.get(f"/projects/{seeded.projects['acme'][0]}", headers=bearer(seeded.tokens["acme/ci"]))
        assert shown.status_code == 200
        assert client.post("/refused", headers=bearer(seeded.tokens["acme/ci"])).status_code == 422
        assert caplog.text == ""
        assert client.post("/projects", headers=bearer(seeded.tokens["acme/ci"])).status_code == 201
    assert "1 new, 0 changed and 0 deleted object(s)" in caplog.text
    with as_tenant(seeded.tenants["acme"]), sessionmaker(engine)() as session:
        assert session.scalars(select(Project.id).where(Project.name == name)).all() == []
