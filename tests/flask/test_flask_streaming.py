"""Streamed bodies: as the request's tenant and user with ``stream_with_tenant``, and every connection back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import TenantQuery, current_tenant_id, current_user_id
from rls_tenancy.flask import Tenancy, get_current_tenant, state, stream_with_tenant
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer

NAMING = text("SELECT count(*) FROM projects WHERE tenant_id = :tenant")


@pytest.fixture(scope="module")
def engine(db: TenancyDatabase) -> Iterator[Engine]:
    made = create_engine(db.app_url, pool_size=2, max_overflow=0)
    yield made
    made.dispose()


def _streaming_app(engine: Engine, seeded: Seeded, closes: list[Session], opened: list[Session]) -> Flask:
    class Counting(Session):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

        def close(self) -> None:
            closes.append(self)
            super().close()

    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine, session=sessionmaker(engine, class_=Counting, query_cls=TenantQuery))

    @app.get("/rows")
    def rows() -> ResponseReturnValue:
        def body() -> Iterator[str]:
            yield f"tenant {current_tenant_id()} user {current_user_id()}\n"
            session = state().session()  # the request's own Session was closed before the body runs
            yield f"projects {session.scalar(select(func.count()).select_from(Project))}\n"
            for name, tenant in sorted(seeded.tenants.items()):  # plain SQL naming each tenant
                yield f"{name} {session.scalar(NAMING, {'tenant': tenant})}\n"

        return Response(stream_with_tenant(body()), mimetype="text/plain")

    @app.get("/whoami")
    def whoami() -> ResponseReturnValue:
        tenant = get_current_tenant()
        return jsonify(tenant=None if tenant is None else tenant.id, user=current_user_id())

    return app


def _lines(response_text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in response_text.splitlines())


@pytest.mark.rls_policy  # the body's plain SQL names the other tenants: only the policy stands in the way
def test_a_streamed_body_runs_as_the_requests_tenant_and_user_and_sees_no_other_tenant(
    engine: Engine, seeded: Seeded
) -> None:
    closes: list[Session] = []
    opened: list[Session] = []
    client = _streaming_app(engine, seeded, closes, opened).test_client()
    answers = {}
    for slug in ("acme", "globex"):
        token = bearer(seeded.tokens[f"{slug}/ci"])
        who = client.get("/whoami", headers=token).json
        assert who is not None and who["tenant"] == seeded.tenants[slug]
        response = client.get("/rows", headers=token)
        assert response.status_code == 200
        answers[slug] = _lines(response.text)
        assert answers[slug]["tenant"] == f"{seeded.tenants[slug]} user {who['user']}"
        assert answers[slug]["projects"] != "0"  # other tests may have added some
        assert answers[slug][slug] == answers[slug]["projects"]  # naming its own tenant: its rows
    assert answers["acme"]["globex"] == "0"
    assert answers["globex"]["acme"] == "0"
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len(opened) == 6  # each request's own (its token checked in it), and one more per body
    assert {id(s) for s in closes} == {id(s) for s in opened}  # the bodies' closed when their streams ended


def test_a_request_without_a_tenant_gets_401_before_any_of_the_body_goes_out(engine: Engine, seeded: Seeded) -> None:
    response = _streaming_app(engine, seeded, [], []).test_client().get("/rows")
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "unauthorized"
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_stream_the_client_leaves_early_gives_its_connection_back(engine: Engine, seeded: Seeded) -> None:
    closes: list[Session] = []
    opened: list[Session] = []
    client = _streaming_app(engine, seeded, closes, opened).test_client()
    response = client.get("/rows", headers=bearer(seeded.tokens["acme/ci"]), buffered=False)
    chunks = iter(response.response)
    next(chunks)  # the first line; the body has not queried yet
    assert b"projects" in next(chunks)  # now it holds a connection, in a transaction
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert len(opened) == 2 and len(closes) == 1  # the request's own closed at its teardown
    response.close()  # the client went away: the server closes the body
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert {id(s) for s in closes} == {id(s) for s in opened}
