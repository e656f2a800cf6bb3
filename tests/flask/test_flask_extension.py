"""The Flask extension's conventions: init_app, config, several apps, teardown, resolvers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from rls_tenancy import UsageError, as_tenant, current_tenant_id
from rls_tenancy.flask import Resolution, Tenancy, TenancyState, get_current_language, get_current_tenant, state
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer


@pytest.fixture(scope="module")
def engine(db: TenancyDatabase) -> Iterator[Engine]:
    made = create_engine(db.app_url)
    yield made
    made.dispose()


def _app(engine: Engine, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True, **config)

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        tenant = get_current_tenant()
        return jsonify(tenant=None if tenant is None else tenant.slug, context=current_tenant_id())

    @app.get("/language")
    def language() -> ResponseReturnValue:
        return jsonify(language=get_current_language())

    @app.get("/boom")
    def boom() -> ResponseReturnValue:
        raise RuntimeError("the view failed")

    return app


def test_init_app_follows_the_flask_conventions(engine: Engine) -> None:
    app = _app(engine, RLS_TENANCY_LANGUAGES=["de", "en"], RLS_TENANCY_DEFAULT_LANGUAGE="de")
    tenancy = Tenancy()
    tenancy.init_app(app, engine=engine)
    assert isinstance(app.extensions["rls_tenancy"], TenancyState)
    assert app.config["RLS_TENANCY_LANGUAGES"] == ["de", "en"]  # setdefault keeps what the app set
    assert app.config["RLS_TENANCY_RESOLVERS"] == ["token", "session"]  # and shows the defaults
    assert app.config["RLS_TENANCY_SUBDOMAIN_OF"] is None
    assert not hasattr(tenancy, "app")
    with pytest.raises(RuntimeError, match="already registered"):
        tenancy.init_app(app, engine=engine)


def test_one_extension_serves_several_apps(engine: Engine) -> None:
    tenancy = Tenancy(engine=engine)
    german = _app(engine, RLS_TENANCY_LANGUAGES=["de"], RLS_TENANCY_DEFAULT_LANGUAGE="de")
    french = _app(engine, RLS_TENANCY_LANGUAGES=["fr"], RLS_TENANCY_DEFAULT_LANGUAGE="fr")
    tenancy.init_app(german)
    tenancy.init_app(french)
    assert german.test_client().get("/language").json == {"language": "de"}
    assert french.test_client().get("/language").json == {"language": "fr"}


def test_state_without_init_app_says_what_to_do() -> None:
    with Flask(__name__).app_context(), pytest.raises(RuntimeError, match=r"forget to call Tenancy.init_app"):
        state()


@pytest.mark.parametrize(
    ("options", "config", "message"),
    [
        ({}, {}, "needs db=... .* or engine="),
        ({"db": object(), "engine": "x"}, {}, "not both"),
        ({"resolvers": ["cookie"]}, {}, "unknown resolver 'cookie'"),
        ({"resolvers": ["subdomain"]}, {}, "RLS_TENANCY_SUBDOMAIN_OF"),
        ({}, {"RLS_TENANCY_DEFAULT_LANGUAGE": "xx"}, "must be one of RLS_TENANCY_LANGUAGES"),
        ({}, {"RLS_TENANCY_READ_DATABASE_URL": "standby:5432"}, "RLS_TENANCY_READ_DATABASE_URL is not a database URL"),
        ({}, {"RLS_TENANCY_BYPASS_DATABASE_URL": "admin@db"}, "RLS_TENANCY_BYPASS_DATABASE_URL is not a database URL"),
        ({}, {"RLS_TENANCY_READ_DATABASE_URL": "sqlite:///cache.db"}, "needs PostgreSQL, not sqlite"),
    ],
)
def test_misconfiguration_is_a_clear_error(
    engine: Engine, options: dict[str, Any], config: dict[str, object], message: str
) -> None:
    if "engine" not in options and "db" not in options and message != "needs db=... .* or engine=":
        options = {**options, "engine": engine}
    with pytest.raises(UsageError, match=message):
        Tenancy(_app(engine, **config), **options)


def test_an_option_it_does_not_have_is_refused_by_name(engine: Engine) -> None:
    options: dict[str, Any] = {"engine": engine, "colour": "blue"}
    with pytest.raises(TypeError, match="colour"):
        Tenancy(_app(engine), **options)
    with pytest.raises(TypeError, match="colour"):
        Tenancy().init_app(_app(engine), **options)


def test_init_app_options_replace_the_constructors_and_the_session_is_the_requests(engine: Engine) -> None:
    """The app-factory pattern: options given to init_app win; ``tenancy.session`` is the request's session."""
    chosen = sessionmaker(engine)
    tenancy = Tenancy(session=sessionmaker(engine), resolvers=["token"])
    app = _app(engine)
    tenancy.init_app(app, engine=engine, session=chosen, resolvers=["session"])
    assert app.config["RLS_TENANCY_RESOLVERS"] == ["session"]
    with app.test_request_context("/"):
        assert tenancy.session is state().session()
        assert isinstance(tenancy.session, Session)
        assert isinstance(tenancy.session, chosen.class_)
        assert tenancy.session.bind is engine


def test_flask_sqlalchemy_must_be_initialised_first(engine: Engine) -> None:
    from flask_sqlalchemy import SQLAlchemy

    with pytest.raises(RuntimeError, match=r"call db.init_app\(app\) before"):
        Tenancy(_app(engine), db=SQLAlchemy())


def test_a_request_never_inherits_the_callers_tenant(engine: Engine, seeded: Seeded) -> None:
    app = _app(engine)
    Tenancy(app, engine=engine)
    with as_tenant(seeded.tenants["globex"]):
        assert app.test_client().get("/whoami").json == {"tenant": None, "context": None}
        assert current_tenant_id() == seeded.tenants["globex"]  # and gives it back afterwards


def test_the_context_is_cleared_whatever_happened(engine: Engine, seeded: Seeded) -> None:
    app = _app(engine, PROPAGATE_EXCEPTIONS=False)
    Tenancy(app, engine=engine)
    client = app.test_client()
    acme = bearer(seeded.tokens["acme/ci"])
    assert client.get("/whoami", headers=acme).json == {"tenant": "acme", "context": seeded.tenants["acme"]}
    assert client.get("/boom", headers=acme).status_code == 500
    assert client.get("/whoami", headers={"Authorization": "Bearer rlst_1_bad"}).status_code == 401
    assert current_tenant_id() is None


def test_custom_resolvers_plug_in_and_the_first_answer_wins(engine: Engine, seeded: Seeded) -> None:
    def from_header(request: object) -> Resolution | None:
        slug = getattr(request, "headers").get("X-Test-Tenant")  # noqa: B009
        return None if slug is None else Resolution(seeded.tenants[slug], source="test-header")

    app = _app(engine)
    Tenancy(app, engine=engine, resolvers=[from_header, "token"])
    client = app.test_client()
    assert client.get("/whoami", headers={"X-Test-Tenant": "globex"}).json["tenant"] == "globex"  # type: ignore[index]
    both = {"X-Test-Tenant": "globex", **bearer(seeded.tokens["acme/ci"])}
    assert client.get("/whoami", headers=both).json["tenant"] == "globex"  # type: ignore[index]
    assert client.get("/whoami", headers=bearer(seeded.tokens["acme/ci"])).json["tenant"] == "acme"  # type: ignore[index]


def test_the_header_resolver_in_the_docs_names_a_tenant_and_answers_bad_headers_with_4xx(
    engine: Engine, seeded: Seeded
) -> None:
    page = (Path(__file__).parents[2] / "docs" / "flask.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", page.split("**A resolver of your own**", 1)[1], re.S)
    assert snippet is not None
    app = _app(engine)
    exec(snippet.group(1), {"app": app})
    Tenancy(app, engine=engine)
    client = app.test_client()

    def whoami(**headers: str) -> tuple[int, Any]:
        answer = client.get("/whoami", headers=headers)
        return answer.status_code, answer.json

    assert whoami(**{"X-Tenant": "globex"}) == (200, {"tenant": "globex", "context": seeded.tenants["globex"]})
    assert whoami() == (200, {"tenant": None, "context": None})  # no header: no tenant
    status, body = whoami(**{"X-Tenant": "nobody-here"})
    assert (status, body["error"]) == (404, "unknown_tenant")
    for malformed in ("Acme", "-acme", "acme\x00", "a" * 64, ""):
        status, body = whoami(**{"X-Tenant": malformed})
        assert (status, body["error"]) == (400, "invalid_request"), malformed
    # Credentials win over the header.
    status, body = whoami(**{"X-Tenant": "globex"}, **bearer(seeded.tokens["acme/ci"]))
    assert (status, body["tenant"]) == (200, "acme")


def test_a_given_scoped_session_is_removed_after_each_request(engine: Engine, seeded: Seeded) -> None:
    sessions = scoped_session(sessionmaker(engine))
    app = _app(engine)
    Tenancy(app, engine=engine, session=sessions)
    app.test_client().get("/whoami", headers=bearer(seeded.tokens["acme/ci"]))
    assert not sessions.registry.has()


@pytest.mark.parametrize(
    ("resolvers", "host", "status", "error"),
    [
        (["session", "subdomain"], "example.test", 404, "no_tenant"),  # the bare domain names no tenant
        (["session", "subdomain"], "acme.example.test", 200, None),
        (["token", "session"], "example.test", 401, "unauthorized"),  # no hosts: credentials are what is missing
    ],
)
def test_a_tenant_query_without_a_tenant_is_a_404_where_hosts_name_tenants(
    engine: Engine, seeded: Seeded, resolvers: list[str], host: str, status: int, error: str | None
) -> None:
    """A query of tenant rows with no tenant: never an empty list; 404 on a host naming none, else 401."""
    app = _app(engine, RLS_TENANCY_RESOLVERS=resolvers, RLS_TENANCY_SUBDOMAIN_OF="example.test")

    @app.get("/projects")
    def projects() -> ResponseReturnValue:
        return jsonify(sorted(p.id for p in state().session().scalars(select(Project))))

    Tenancy(app, engine=engine)
    answer = app.test_client().get("/projects", headers={"Host": host})
    assert answer.status_code == status, answer.json
    body = answer.json
    assert body is not None
    if error is None:
        assert set(seeded.projects["acme"]) <= set(body) and not set(seeded.projects["globex"]) & set(body)
    else:
        assert body["error"] == error


def test_dispose_closes_the_pooled_connections_of_every_engine_it_uses(db: TenancyDatabase, seeded: Seeded) -> None:
    """``state().dispose()``: what a test's teardown calls before its database is dropped."""
    engine = create_engine(db.app_url)
    app = _app(
        engine,
        RLS_TENANCY_BYPASS_DATABASE_URL=db.bypass_url.render_as_string(hide_password=False),
        RLS_TENANCY_READ_DATABASE_URL=db.app_url.render_as_string(hide_password=False),
    )
    Tenancy(app, engine=engine)

    @app.get("/read")
    def read() -> ResponseReturnValue:
        return jsonify(projects=len(state().read_session().scalars(select(Project)).all()))

    client = app.test_client()
    answer = client.get("/read", headers=bearer(seeded.tokens["acme/ci"])).json
    assert answer is not None and answer["projects"] > 0  # other tests may have added some
    assert client.get("/whoami", headers=bearer("rlst_1_" + "x" * 43)).status_code == 401  # audited: the audit engine
    tenancy: TenancyState = app.extensions["rls_tenancy"]
    assert tenancy.bypass is not None and tenancy.read_engine is not None
    with tenancy.bypass.connect(reason="test") as connection:
        connection.execute(select(1))
    engines = [tenancy.engine, tenancy.audit_engine, tenancy.bypass.engine, tenancy.read_engine]
    pools = [engine.pool for engine in engines]
    assert all(pool.checkedin() > 0 for pool in pools)  # type: ignore[attr-defined]
    tenancy.dispose()
    assert all(pool.checkedin() == 0 for pool in pools)  # type: ignore[attr-defined]
    assert all(engine.pool is not pool for engine, pool in zip(engines, pools, strict=True))
