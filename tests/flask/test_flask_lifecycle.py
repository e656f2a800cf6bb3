"""A request's tenant lives and dies with the request, whatever the app does around it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine

from rls_tenancy import current_tenant_id
from rls_tenancy.flask import Tenancy, get_current_scopes, get_current_tenant
from rls_tenancy.testing import TenancyDatabase
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
