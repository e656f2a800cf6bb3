"""A request's window: no tenant before resolution, whatever surrounds it, and only its own teardown ends it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask, Response, copy_current_request_context, current_app, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.routing import BaseConverter

from rls_tenancy import NoTenantError, TenantQuery, as_tenant, current_tenant_id, current_user_id
from rls_tenancy.flask import Tenancy, state
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
        try:
            with engine.connect() as connection:
                projects = connection.scalar(select(func.count()).select_from(Project)) or 0
        except NoTenantError:  # no tenant in context: refused, as no rows would have been
            projects = 0
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


def _counting_sessions(engine: Engine, closes: list[Session]) -> sessionmaker[Session]:
    class Counting(Session):
        def close(self) -> None:
            closes.append(self)
            super().close()

    return sessionmaker(engine, class_=Counting, query_cls=TenantQuery)


def test_a_copied_request_context_ending_in_a_thread_leaves_the_running_request_alone(
    engine: Engine, seeded: Seeded
) -> None:
    closes: list[Session] = []
    failures: list[BaseException] = []
    ended: list[tuple[bool, int | None]] = []  # (in the request's thread, tenant) at teardown
    requesting = threading.current_thread()
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)

    @app.teardown_request
    def registered_before_the_extension(_error: BaseException | None) -> None:
        ended.append((threading.current_thread() is requesting, current_tenant_id()))

    Tenancy(app, engine=engine, session=_counting_sessions(engine, closes))

    @app.get("/threaded")
    def threaded() -> ResponseReturnValue:
        session = state().session()
        loaded = session.scalars(select(Project)).all()

        @copy_current_request_context
        def work() -> str:
            return request.path

        def run() -> None:
            try:
                work()
            except BaseException as error:  # noqa: BLE001 - reported by the test
                failures.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return jsonify(
            kept=len(loaded) > 0 and all(project in session for project in loaded),
            same_session=state().session() is session,
            still_reads=len(session.scalars(select(Project)).all()) == len(loaded),
            closes=len(closes),
            context=current_tenant_id(),
        )

    answer = app.test_client().get("/threaded", headers=bearer(seeded.tokens["acme/ci"])).json
    assert failures == []
    assert answer == {
        "kept": True,
        "same_session": True,
        "still_reads": True,
        "closes": 0,
        "context": seeded.tenants["acme"],
    }
    assert len(closes) == 1  # by the request's own teardown, once
    assert ended == [(False, None), (True, None)]  # the thread's pop runs the app's teardowns; ours cleared
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_session_a_streamed_body_opens_after_the_request_ended_is_closed_with_the_stream(
    engine: Engine, seeded: Seeded
) -> None:
    """Flask runs the teardown again, outside the request's context, when a stream_with_context body ends."""
    closes: list[Session] = []
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine, session=_counting_sessions(engine, closes))

    @app.get("/stream")
    def stream() -> ResponseReturnValue:
        tenant = seeded.tenants["acme"]

        def body() -> Iterator[str]:
            with as_tenant(tenant):  # the body runs in the server's context, which has none
                yield str(len(state().session().scalars(select(Project)).all()))

        return Response(stream_with_context(body()))

    response = app.test_client().get("/stream")  # anonymous: no Session before the body's
    assert int(response.text) > 0
    assert len(closes) == 1
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
