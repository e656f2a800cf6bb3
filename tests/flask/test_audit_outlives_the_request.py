"""Security events outlive the request that failed, and a denial needs nothing more of a pool under pressure."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from rls_tenancy import UsageError, as_tenant
from rls_tenancy.flask import log, require_scopes, state
from rls_tenancy.flask import log_security_event as flask_log_security_event
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer
from tests.flask.audit_support import (
    ALICE,
    LOCALHOST,
    new_request_id,
    of_request,
    one_event,
    user_id,
    with_id,
)

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


@probe.post("/<name>/after-commit")
@require_scopes("projects:read")
def probe_after_commit(name: str) -> ResponseReturnValue:
    _probe_work(name)
    state().session().commit()
    log("probe.after_commit", "in a transaction nothing commits", name=name)
    return jsonify(committed=True)


@probe.post("/<name>/refused")
@require_scopes("projects:read")
def probe_refused(name: str) -> ResponseReturnValue:
    _probe_work(name)
    raise UsageError("the view refused the request after logging")


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


@pytest.mark.parametrize(
    ("ending", "status"), [("after-commit", 200), ("fail", 500), ("refused", 400), ("rollback", 200), ("commit", 200)]
)
def test_an_event_logged_after_the_last_commit_is_a_warning_when_the_request_ends(
    probe_app: Flask,
    seeded: Seeded,
    bypass_engine: Engine,
    caplog: pytest.LogCaptureFixture,
    ending: str,
    status: int,
) -> None:
    """Dropped by the Session's close, with nothing else to tell; a view that failed or rolled back loses it as said."""
    name, request_id = f"probe-{secrets.token_hex(4)}", new_request_id()
    with caplog.at_level(logging.WARNING, logger="rls_tenancy.audit"):
        answer = probe_app.test_client().post(
            f"/probe/{name}/{ending}", headers=with_id(request_id, bearer(seeded.tokens["acme/ci"]))
        )
    assert answer.status_code == status
    warnings = [record.getMessage() for record in caplog.records if record.name == "rls_tenancy.audit"]
    if ending != "after-commit":
        assert warnings == []
        return
    assert "probe.after_commit" not in [e.action for e in of_request(bypass_engine, request_id)]
    assert len(warnings) == 1, warnings
    assert "probe.after_commit" in warnings[0] and "probe.ordinary" not in warnings[0]
    assert "before the view's last commit" in warnings[0] and "log_security_event()" in warnings[0]


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
