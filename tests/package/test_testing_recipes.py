"""The fixtures docs/testing.md gives an app's own suite, run here as that suite would run them.

The page shows the marked ranges, copied so that they read without a docs
build (a test below holds each copy to its range): a fresh tenant per test
(with a user and an API token), and a Session whose work, commits included,
is rolled back after the test. It also says what does not work, pinned below: a Flask
request on the test's outer transaction. The app is a small one on the
demo's schema, made the way an app's factory makes it.
"""

# ruff: noqa: E402  (the included ranges carry their own imports)

from __future__ import annotations

# testing: make-tenant
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from rls_tenancy import Tenant, UnsafeBypass, User, as_tenant
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.testing import TenancyDatabase


@pytest.fixture(scope="session")
def admin(rls_database: TenancyDatabase) -> Iterator[UnsafeBypass]:
    """The bypass role, for what no tenant may do: making tenants."""
    engine = create_engine(rls_database.bypass_url)
    yield UnsafeBypass(engine)
    engine.dispose()


@dataclass(frozen=True)
class NewTenant:
    id: int
    slug: str
    user_id: int
    token: str  # for "Authorization: Bearer <token>": the user, with the scopes of its roles


@pytest.fixture()
def make_tenant(admin: UnsafeBypass, app: Flask) -> Callable[..., NewTenant]:
    """Call it for each tenant a test needs: every one is new, whatever earlier tests left behind."""
    state = app.extensions["rls_tenancy"]  # the app's own engine and token keys

    def make(roles: Sequence[str] = ("projects:read", "projects:write")) -> NewTenant:
        slug = f"t-{secrets.token_hex(4)}"  # unique in the run: nothing is cleaned between tests
        with admin.session(reason="test setup: a fresh tenant") as session:  # commits at the end
            tenant = Tenant(slug=slug, name=f"Tenant {slug}")
            session.add(tenant)
            session.flush()  # gives tenant.id
            tenant_id = tenant.id
        # The user and its token as the tenant, on the app's bound engine: the policies apply.
        with as_tenant(tenant_id), Session(state.engine) as session, session.begin():
            user = User(email=f"owner@{slug}.example", roles=list(roles))
            user.set_password(secrets.token_urlsafe(16))  # for tests that log in with it, keep it
            session.add(user)
            session.flush()  # gives user.id
            key = state.token_keys[0] if state.token_keys else None  # marked as RLS_TENANCY_TOKEN_KEYS asks
            issued = issue_token(session, name="test", scopes=roles, user_id=user.id, key=key)
            user_id = user.id
        return NewTenant(tenant_id, slug, user_id, issued.token)

    return make


# testing: end make-tenant

# testing: rollback-session
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from rls_tenancy import TenantQuery, bind_engine, scope_sessions


@pytest.fixture(scope="session")
def engine(rls_database: TenancyDatabase) -> Iterator[Engine]:
    engine = bind_engine(create_engine(rls_database.app_url))  # the app role, the tenant bound per transaction
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def Sessions(engine: Engine) -> sessionmaker[Session]:
    Sessions = sessionmaker(engine, query_cls=TenantQuery)  # or your app's own factory
    scope_sessions(Sessions)  # the ORM filter
    return Sessions


@pytest.fixture()
def session(
    engine: Engine, Sessions: sessionmaker[Session], make_tenant: Callable[..., NewTenant]
) -> Iterator[Session]:
    """A Session acting for a fresh tenant; all the test does with it is rolled back afterwards."""
    tenant = make_tenant()
    with as_tenant(tenant.id), engine.connect() as conn:  # the test runs inside this block, as the tenant
        outer = conn.begin()  # the test's one transaction, bound to the tenant
        session = Sessions(bind=conn, join_transaction_mode="create_savepoint")  # commit() releases a savepoint
        try:
            yield session
        finally:
            session.close()
            outer.rollback()  # what the test wrote, committed or not


# testing: end rollback-session

import re
from pathlib import Path

from flask import jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import scoped_session

from rls_tenancy import TenantChangedError
from rls_tenancy.flask import Tenancy, get_current_user, require_scopes
from saas_demo.models import Project


@pytest.fixture(scope="module")
def app(rls_database: TenancyDatabase) -> Iterator[Flask]:
    """A small app as a factory makes one: a scoped session on the app role's engine, and the extension."""
    app = Flask("recipes")
    app.config.update(TESTING=True, SECRET_KEY=secrets.token_hex(16))
    sessions = scoped_session(sessionmaker(create_engine(rls_database.app_url), query_cls=TenantQuery))
    bypass_engine = create_engine(rls_database.bypass_url)
    Tenancy().init_app(app, engine=sessions.session_factory.kw["bind"], session=sessions, bypass_engine=bypass_engine)
    app.extensions["recipes_sessions"] = sessions

    def email() -> str:
        user = get_current_user()
        assert user is not None
        return user.email

    @app.get("/projects")
    @require_scopes("projects:read")
    def projects() -> ResponseReturnValue:
        names = sessions().scalars(select(Project.name).order_by(Project.id)).all()
        return jsonify(user=email(), projects=list(names))

    @app.post("/projects")
    @require_scopes("projects:write")
    def create_project() -> ResponseReturnValue:
        session = sessions()
        session.add(Project(name=f"made by {email()}"))
        session.commit()
        return jsonify(created=True), 201

    yield app
    app.extensions["rls_tenancy"].dispose()


def bearer(tenant: NewTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.token}"}


def test_a_fresh_tenant_comes_with_a_user_and_a_token(app: Flask, make_tenant: Callable[..., NewTenant]) -> None:
    acme, globex = make_tenant(), make_tenant(roles=["projects:read"])
    assert acme.id != globex.id and acme.slug != globex.slug
    client = app.test_client()
    assert client.post("/projects", headers=bearer(acme)).status_code == 201
    mine = client.get("/projects", headers=bearer(acme))
    assert mine.status_code == 200
    assert mine.json == {"user": f"owner@{acme.slug}.example", "projects": [f"made by owner@{acme.slug}.example"]}
    theirs = client.get("/projects", headers=bearer(globex))  # a new tenant starts empty
    assert theirs.json == {"user": f"owner@{globex.slug}.example", "projects": []}
    assert client.post("/projects", headers=bearer(globex)).status_code == 403  # the token has the roles' scopes
    with as_tenant(acme.id), Session(app.extensions["rls_tenancy"].engine) as session:
        user = session.get(User, acme.user_id)
        assert user is not None and user.roles == ["projects:read", "projects:write"]
        assert not user.check_password("not the password")  # it has one: read in the tenant's Session


@pytest.fixture(autouse=True)
def left_behind(admin: UnsafeBypass) -> Iterator[list[str]]:
    """Projects a test wrote through ``session``: looked for once the other fixtures are torn down."""
    names: list[str] = []
    yield names  # autouse: set up before, so torn down after, the test's other fixtures
    if names:
        with admin.session(reason="test: what the rolled-back session left") as check:
            assert check.scalar(select(func.count()).select_from(Project).where(Project.name.in_(names))) == 0


def test_a_rolled_back_session_commits_only_savepoints(
    left_behind: list[str], session: Session, admin: UnsafeBypass, make_tenant: Callable[..., NewTenant]
) -> None:
    name = f"rolled back {secrets.token_hex(4)}"
    left_behind.append(name)
    session.add(Project(name=name))
    session.commit()  # releases a savepoint: the test's transaction is still open
    assert session.scalars(select(Project.name).where(Project.name == name)).all() == [name]
    with admin.session(reason="test: another connection's view") as other:  # uncommitted, so not there
        assert other.scalar(select(func.count()).select_from(Project).where(Project.name == name)) == 0
    session.add(Project(name="never flushed"))
    session.rollback()  # back to the last savepoint; the test's transaction goes on
    assert session.scalars(select(Project.name).where(Project.name.in_([name, "never flushed"]))).all() == [name]
    elsewhere = make_tenant()
    with pytest.raises(TenantChangedError), as_tenant(elsewhere.id):  # one tenant per test transaction
        session.scalars(select(Project.name)).all()


def test_a_flask_request_cannot_join_the_tests_transaction(app: Flask, make_tenant: Callable[..., NewTenant]) -> None:
    """Not supported, as docs/testing.md says: the request's scoped session bound to the test's connection."""
    tenant = make_tenant()
    sessions: scoped_session[Session] = app.extensions["recipes_sessions"]
    before = dict(sessions.session_factory.kw)
    conn = app.extensions["rls_tenancy"].engine.connect()
    outer = conn.begin()
    sessions.configure(bind=conn, join_transaction_mode="create_savepoint")
    try:
        with pytest.raises(InvalidRequestError, match="Session already has a Connection associated"):
            app.test_client().get("/projects", headers=bearer(tenant))
    finally:
        sessions.remove()
        sessions.session_factory.kw.clear()
        sessions.session_factory.kw.update(before)
        outer.rollback()
        conn.close()
    assert app.test_client().get("/projects", headers=bearer(tenant)).status_code == 200  # the app as before


@pytest.mark.parametrize("name", ["make-tenant", "rollback-session"])
def test_the_page_shows_each_fixture_as_it_runs_here(name: str) -> None:
    """docs/testing.md copies each marked range into a plain code block, byte for byte."""
    here = Path(__file__).read_text()
    fixture = here.split(f"# testing: {name}\n", 1)[1].split(f"# testing: end {name}\n", 1)[0]
    page = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
    assert fixture.strip("\n") + "\n" in blocks, f"docs/testing.md has no copy of the {name!r} range as it is here"
