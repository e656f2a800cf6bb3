"""scope_sessions() scopes every new sessionmaker, whatever address it reuses.

SQLAlchemy's event registry is keyed by ``id()``: a sessionmaker made after
another one was collected often gets its class at the same address, and
"already scoped?" must not be answered for the dead one. The sessions here
log in as a superuser, for whom PostgreSQL ignores row level security, so
what stays hidden was hidden by the ORM filter alone. ``gc.collect(1)``
collects the young generations, where the dropped class is, in well under a
millisecond; a full collection per round took about 100 ms.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from flask import Flask, Request, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import NoTenantError, as_tenant, scope_sessions
from rls_tenancy.flask import Resolution, Tenancy, state
from rls_tenancy.orm import scoping
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from tests.conftest import World

ROUNDS = 300
APPS = 60


def _names(session: Session) -> set[str]:
    return set(session.scalars(select(Project.name)))


@pytest.mark.rls_orm
def test_each_of_hundreds_of_short_lived_sessionmakers_is_scoped(superuser_engine: Engine, world: World) -> None:
    addresses: set[int] = set()
    unscoped = 0
    for _ in range(ROUNDS):
        factory = sessionmaker(superuser_engine)
        addresses.add(id(factory.class_))
        scope_sessions(factory)
        with factory() as session:
            try:
                _names(session)
                unscoped += 1
            except NoTenantError:
                pass
            with as_tenant(world.a):
                assert _names(session) == world.projects[world.a]
        del factory, session
        gc.collect(1)
    assert unscoped == 0
    assert len(addresses) < ROUNDS  # addresses were reused: the case under test happened


@pytest.mark.rls_orm
def test_each_short_lived_session_subclass_is_scoped(superuser_engine: Engine) -> None:
    unscoped = 0
    for _ in range(ROUNDS // 3):
        session_class = type("AppSession", (Session,), {})
        scope_sessions(session_class)
        with session_class(superuser_engine) as session:
            try:
                _names(session)
                unscoped += 1
            except NoTenantError:
                pass
        del session_class, session
        gc.collect(1)
    assert unscoped == 0


def test_scoping_one_sessionmaker_twice_listens_once(superuser_engine: Engine) -> None:
    with sessionmaker(superuser_engine)() as unscoped:
        everyones = len(unscoped.dispatch.do_orm_execute)  # the listeners every Session has (the users' grants)
    factory = sessionmaker(superuser_engine)
    scope_sessions(factory)
    scope_sessions(factory)
    with factory() as session:
        assert len(session.dispatch.do_orm_execute) == everyones + 1


def _tenant_from_header(request: Request) -> Resolution | None:
    given = request.headers.get("X-Test-Tenant")
    return None if given is None else Resolution(tenant_id=int(given))


def _app(engine: Engine, sessions: sessionmaker[Session] | None) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test", RLS_TENANCY_RESOLVERS=[])

    @app.get("/projects")
    def projects() -> ResponseReturnValue:
        return jsonify(sorted(_names(state().session())))

    @app.get("/scoped")
    def scoped() -> ResponseReturnValue:
        return jsonify(event.contains(type(state().session()), "do_orm_execute", scoping._scope_statement))

    Tenancy().init_app(app, engine=engine, session=sessions, resolvers=[_tenant_from_header])
    return app


@pytest.fixture(scope="module")
def engine(db: TenancyDatabase) -> Iterator[Engine]:
    """One engine for every app: the apps, and their sessionmakers, come and go."""
    made = create_engine(db.app_url, pool_size=1)
    yield made
    made.dispose()


# Not marked rls_orm: the bound engine refuses a statement on a tenant table without a tenant too, so an
# anonymous request is a 401 with the ORM filter off. Whether each app's sessions are scoped is asked directly.
@pytest.mark.parametrize("own_sessionmaker", [False, True], ids=["the-extensions-sessionmaker", "the-apps-own"])
def test_every_app_of_an_app_factory_refuses_anonymous_queries(
    engine: Engine, world: World, own_sessionmaker: bool
) -> None:
    answers: list[int] = []
    for _ in range(APPS):
        app = _app(engine, sessionmaker(engine) if own_sessionmaker else None)
        client = app.test_client()
        assert client.get("/scoped").json is True
        answers.append(client.get("/projects").status_code)
        tenant = client.get("/projects", headers={"X-Test-Tenant": str(world.a)})
        assert set(tenant.json or []) == world.projects[world.a]
        del app, client, tenant
        gc.collect()
    assert answers == [401] * APPS
