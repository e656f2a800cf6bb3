"""Feature flags through Flask: views, templates, the demo's endpoints, the CLI, OpenFeature."""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Iterator

import pytest
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from openfeature import api as openfeature_api
from openfeature.client import OpenFeatureClient
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from rls_tenancy import as_tenant
from rls_tenancy.errors import UnknownFeatureError
from rls_tenancy.features.declare import Feature, FeatureRegistry
from rls_tenancy.features.openfeature import TenancyFlagProvider
from rls_tenancy.flask import Tenancy
from rls_tenancy.flask.features import feature_enabled, request_flags
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.testing import TenancyDatabase
from saas_demo.features import BETA_REPORTS, NEW_DASHBOARD, NEW_SIGN_IN_FLOW
from saas_demo.seed import PASSWORD, Seeded
from tests.fix_flask import bearer


def _feature(client: FlaskClient, key: str, **headers: str) -> dict[str, object]:
    listed = client.get("/api/features", headers=headers).json
    assert listed is not None
    found: dict[str, object] = next(f for f in listed["features"] if f["key"] == key)
    return found


def test_anonymous_requests_get_defaults_and_ip_rollout(client: FlaskClient) -> None:
    ip_flag = _feature(client, NEW_SIGN_IN_FLOW.key)
    assert ip_flag["scope"] == "ip:127.0.0.1" and ip_flag["reason"] in ("rollout", "global-override")
    dashboard = _feature(client, NEW_DASHBOARD.key)  # no user: the default, no error page
    assert (dashboard["scope"], dashboard["reason"], dashboard["enabled"]) == (None, "default", False)


def test_callable_default_sees_the_request(client: FlaskClient, seeded: Seeded) -> None:
    # The demo's default: tenants created after 2017 get the new dashboard.
    dashboard = _feature(client, NEW_DASHBOARD.key, **bearer(seeded.tokens["globex/ci"]))
    assert dashboard["reason"] in ("default", "tenant-override")
    if dashboard["reason"] == "default":
        assert dashboard["enabled"] is True


def test_a_user_overrides_their_own_scope_only(demo_app: Flask, seeded: Seeded) -> None:
    client = demo_app.test_client()
    token = bearer(seeded.tokens["globex/ci"])  # hank: projects scopes, no admin
    me = client.get("/api/me", headers=token).json
    assert me is not None
    own = f"user:{me['user']['id']}"
    assert client.put(f"/api/features/{NEW_DASHBOARD.key}", json={"enabled": False}, headers=token).status_code == 200
    dashboard = _feature(client, NEW_DASHBOARD.key, **token)
    assert (dashboard["enabled"], dashboard["reason"], dashboard["scope"]) == (False, "tenant-override", own)
    denied = client.put(f"/api/features/{NEW_DASHBOARD.key}", json={"enabled": True, "scope": "user:1"}, headers=token)
    assert denied.status_code == 403 and denied.json is not None and denied.json["error"] == "insufficient_scope"
    admin_only = client.put(f"/api/features/{BETA_REPORTS.key}", json={"enabled": True, "scope": "*"}, headers=token)
    assert admin_only.status_code == 403
    cleared = client.delete(f"/api/features/{NEW_DASHBOARD.key}", headers=token)
    assert cleared.status_code == 200
    assert client.delete(f"/api/features/{NEW_DASHBOARD.key}", headers=token).status_code == 404


def test_an_admin_overrides_for_the_tenant_and_other_tenants_do_not_see_it(demo_app: Flask, seeded: Seeded) -> None:
    admin = demo_app.test_client()
    login = admin.post("/api/login", json={"tenant": "acme", "email": "alice@acme.example", "password": PASSWORD})
    assert login.status_code == 200
    assert admin.put(f"/api/features/{BETA_REPORTS.key}", json={"enabled": False, "scope": "*"}).status_code == 200
    try:
        acme = _feature(admin, BETA_REPORTS.key)
        assert (acme["enabled"], acme["reason"]) == (False, "tenant-override")
        globex = demo_app.test_client()
        listed = globex.get("/api/features", headers=bearer(seeded.tokens["globex/ci"])).json
        assert listed is not None
        assert [o for o in listed["overrides"] if o["feature"] == BETA_REPORTS.key] == []
        assert next(f for f in listed["features"] if f["key"] == BETA_REPORTS.key)["reason"] != "tenant-override"
    finally:
        assert admin.delete(f"/api/features/{BETA_REPORTS.key}?scope=*").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("put", "/api/features/no-such-flag", {"enabled": True}, 404),
        ("put", f"/api/features/{BETA_REPORTS.key}", {"enabled": "yes"}, 400),
        ("put", f"/api/features/{BETA_REPORTS.key}", {"enabled": True, "scope": 7}, 400),
        ("put", f"/api/features/{BETA_REPORTS.key}", {"enabled": True, "scope": "x" * 201}, 400),
        ("put", f"/api/features/{BETA_REPORTS.key}", {"enabled": True, "extra": 1}, 400),
        ("put", f"/api/features/{BETA_REPORTS.key}", [True], 400),
        ("delete", "/api/features/no-such-flag", None, 404),
    ],
)
def test_bad_override_requests_are_4xx_json(
    client: FlaskClient, seeded: Seeded, method: str, path: str, body: object, status: int
) -> None:
    response = getattr(client, method)(path, json=body, headers=bearer(seeded.tokens["acme/ci"]))
    assert response.status_code == status and response.json is not None and "error" in response.json


def test_anonymous_override_is_401(client: FlaskClient) -> None:
    assert client.put(f"/api/features/{BETA_REPORTS.key}", json={"enabled": True}).status_code == 401


@pytest.fixture(scope="module")
def flag_app(db: TenancyDatabase, app_engine: Engine) -> Iterator[Flask]:
    registry = FeatureRegistry()
    for n in range(10):
        Feature(f"page-{n}", scope=("ip", "user", "tenant")[n % 3], enable_chance=0.5, registry=registry)
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test")
    Tenancy(app, engine=app_engine, features=registry)

    @app.get("/page")
    def page() -> str:
        return render_template_string(
            "{% for n in range(10) %}{{ 'on' if feature_enabled('page-' ~ n) else 'off' }} {% endfor %}"
            "{{ feature_enabled('page-0') }}"
        )

    @app.get("/view")
    def view() -> str:
        values = [feature_enabled(f"page-{n}") for n in range(10)] * 3
        return f"{sum(values)} {request_flags().queries}"

    yield app


def test_all_flags_of_a_request_cost_one_query(flag_app: Flask, seeded: Seeded) -> None:
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    engine = flag_app.extensions["rls_tenancy"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        anonymous = flag_app.test_client().get("/page")
        flag_queries_anonymous = sum("feature_overrides" in s for s in statements)
        statements.clear()
        with_token = flag_app.test_client().get("/view", headers=bearer(seeded.tokens["acme/ci"]))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert anonymous.status_code == 200 and len(anonymous.text.split()) == 11
    assert flag_queries_anonymous == 1
    assert with_token.status_code == 200 and with_token.text.endswith(" 1")
    assert sum("feature_overrides" in s for s in statements) == 1


def test_unknown_flag_is_an_error_not_a_silent_false(flag_app: Flask) -> None:
    def evaluate() -> None:
        with flag_app.test_request_context("/"):
            flag_app.preprocess_request()
            with pytest.raises(UnknownFeatureError, match="no feature 'nope'"):
                feature_enabled("nope")

    # A context of its own, as each request gets from the extension's WSGI wrapper.
    contextvars.copy_context().run(evaluate)


def test_openfeature_provider_evaluates_like_feature_enabled(demo_app: Flask, seeded: Seeded) -> None:
    domain = f"rls-{secrets.token_hex(3)}"
    openfeature_api.set_provider(TenancyFlagProvider(), domain)
    client = openfeature_api.get_client(domain)
    try:
        contextvars.copy_context().run(_evaluate_through_openfeature, demo_app, client, seeded)
        outside = client.get_boolean_details(NEW_DASHBOARD.key, True)  # no request: the caller's default
        assert (outside.value, outside.error_code) == (True, ErrorCode.GENERAL)
    finally:
        openfeature_api.clear_providers()


def _evaluate_through_openfeature(demo_app: Flask, client: OpenFeatureClient, seeded: Seeded) -> None:
    with demo_app.test_request_context("/", headers=bearer(seeded.tokens["acme/ci"])):
        demo_app.preprocess_request()
        for feature in (NEW_SIGN_IN_FLOW, NEW_DASHBOARD, BETA_REPORTS):
            details = client.get_boolean_details(feature.key, not feature_enabled(feature))
            assert details.value == feature_enabled(feature)
            expected = request_flags().explain(feature).reason
            assert details.reason == {"rollout": Reason.SPLIT, "default": Reason.DEFAULT}.get(
                expected, Reason.TARGETING_MATCH
            )
        missing = client.get_boolean_details("no-such-flag", True)
        assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
        wrong_type = client.get_string_details(NEW_DASHBOARD.key, "fallback")
        assert (wrong_type.value, wrong_type.error_code) == ("fallback", ErrorCode.TYPE_MISMATCH)


def test_cli_lists_sets_and_clears_overrides(demo_app: Flask) -> None:
    runner = demo_app.test_cli_runner()
    listed = runner.invoke(args=["tenancy", "features", "list", "acme"])
    assert listed.exit_code == 0 and "new-sign-in-flow\tscope=ip\trollout=90%" in listed.output
    set_global = runner.invoke(args=["tenancy", "features", "set", BETA_REPORTS.key, "off", "--global"])
    assert set_global.exit_code == 0, set_global.output
    try:
        anonymous = demo_app.test_client()
        assert _feature(anonymous, BETA_REPORTS.key)["reason"] == "global-override"
        assert "override\tbeta-reports\t*\toff\tglobal" in runner.invoke(args=["tenancy", "features", "list"]).output
    finally:
        cleared = runner.invoke(args=["tenancy", "features", "clear", BETA_REPORTS.key, "--global"])
        assert cleared.exit_code == 0, cleared.output
    tenant = runner.invoke(args=["tenancy", "features", "set", BETA_REPORTS.key, "on", "--tenant", "acme"])
    assert tenant.exit_code == 0, tenant.output
    assert runner.invoke(args=["tenancy", "features", "clear", BETA_REPORTS.key, "--tenant", "acme"]).exit_code == 0
    for bad in (
        ["set", BETA_REPORTS.key, "on"],  # neither --tenant nor --global
        ["set", BETA_REPORTS.key, "on", "--tenant", "acme", "--global"],
        ["set", "no-such-flag", "on", "--global"],
        ["set", BETA_REPORTS.key, "on", "--tenant", "no-such-tenant"],
        ["clear", BETA_REPORTS.key, "--tenant", "acme"],  # nothing to clear
    ):
        result = runner.invoke(args=["tenancy", "features", *bad])
        assert result.exit_code in (1, 2) and "Traceback" not in result.output, (bad, result.output)


def test_an_override_without_a_scope_to_override_is_a_400(demo_app: Flask, seeded: Seeded, app_engine: Engine) -> None:
    # An admin token that belongs to no user: new-dashboard is decided per user, so there is nothing to override.
    with as_tenant(seeded.tenants["acme"]), Session(app_engine) as session, session.begin():
        issued = issue_token(session, name=f"admin-{secrets.token_hex(3)}", scopes=["admin"])
    client = demo_app.test_client()
    token = bearer(issued.token)
    for method in ("put", "delete"):
        response = getattr(client, method)(f"/api/features/{NEW_DASHBOARD.key}", json={"enabled": True}, headers=token)
        assert response.status_code == 400, (method, response.status_code, response.json)
        assert response.json is not None and response.json["error"] == "invalid_request"
        assert "scope" in response.json["message"]
