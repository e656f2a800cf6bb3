"""Faults: the database failing under the app. A clear error, then business as usual.

A backend terminated mid-transaction, the server going away and coming back
under load, a statement timeout, an exhausted pool. Each is a typed error in
Python and a 503 JSON answer with ``Retry-After`` in Flask; the next request
works, in the right tenant; nothing acknowledged is lost and nothing
half-written remains; security events already acknowledged survive.

The restart is played at the network (``RoundTripProxy.outage``: every
connection cut, new ones refused, then back), so the suite can run against a
server it does not own.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from alembic.config import Config
from flask import Flask
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.exc import OperationalError, TimeoutError
from sqlalchemy.orm import Session

from rls_tenancy import RoleNames, UnsafeBypass, as_tenant, bind_engine, unavailable_reason
from rls_tenancy.audit.chain import verify_chains
from rls_tenancy.schema.migrate import upgrade
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, signing_requested
from rls_tenancy.testing.proxy import RoundTripProxy
from rls_tenancy.testing.server import LocalCluster, find_bindir, local_cluster
from saas_demo.app import create_app
from saas_demo.models import Project
from saas_demo.seed import Seeded, seed
from tests.conftest import DEMO_ALEMBIC_INI, World, run_in_threads
from tests.fix_flask import bearer
from tests.soak import FIGURES, count

pytestmark = pytest.mark.soak


def _dispose(app: Flask) -> None:
    tenancy = app.extensions["rls_tenancy"]
    tenancy.engine.dispose()
    tenancy.audit_engine.dispose()
    if tenancy.bypass is not None:
        tenancy.bypass.engine.dispose()


@pytest.fixture()
def proxy(db: TenancyDatabase) -> Iterator[RoundTripProxy]:
    assert db.app_url.host and db.app_url.port
    with RoundTripProxy(db.app_url.host, db.app_url.port) as running:
        yield running


# Each rejection written at once: the load below checks that every acknowledged one survives the fault.
EACH_REJECTION = {"RLS_TENANCY_REJECTION_WINDOW": 0}


def _app(db: TenancyDatabase, url: Any = None, **engine_options: Any) -> Flask:
    return create_app(
        url or db.app_url, db.bypass_url, engine_options=engine_options, TESTING=True, SECRET_KEY="x", **EACH_REJECTION
    )


def _body(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(as_text=True)
    return body


def _assert_unavailable(response: Any, reason: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert _body(response)["error"] == "database_unavailable"
    assert reason in _body(response)["message"]
    assert response.headers["Retry-After"] == "1"


def _projects(bypass: UnsafeBypass, tenant: int) -> dict[str, int]:
    with bypass.session(reason="test: read back after a fault") as session:
        rows = session.execute(select(Project.name, Project.tenant_id).where(Project.tenant_id == tenant))
        return {name: owner for name, owner in rows}


def _chains_intact(bypass: UnsafeBypass) -> None:
    with bypass.connect(reason="test: verify the audit chains after faults") as conn:
        broken = [status for status in verify_chains(conn) if status.problem]
    assert not broken


# --- Python: typed errors --------------------------------------------------------------------


def test_a_terminated_backend_is_a_typed_error_and_the_pool_recovers(
    db: TenancyDatabase, superuser_engine: Engine, bypass: UnsafeBypass, world: World
) -> None:
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0))
    try:
        with as_tenant(world.a), Session(engine) as session:
            session.add(Project(name="half-written"))
            session.flush()
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
            with superuser_engine.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            with pytest.raises(OperationalError) as caught:
                session.commit()
        assert unavailable_reason(caught.value) == "the connection to the database was lost"
        FIGURES.add("faults injected")
        assert "half-written" not in _projects(bypass, world.a)
        with as_tenant(world.b), Session(engine) as session:
            assert set(session.scalars(select(Project.name))) == world.projects[world.b]
    finally:
        engine.dispose()


def test_a_statement_timeout_is_a_typed_error(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 50"))
        with pytest.raises(OperationalError) as caught:
            conn.execute(text("SELECT pg_sleep(2)"))
    assert unavailable_reason(caught.value) == "the database did not answer in time"
    FIGURES.add("faults injected")


def test_an_exhausted_pool_is_a_typed_error(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    try:
        with engine.connect():
            with pytest.raises(TimeoutError) as caught, as_tenant(world.a), engine.connect():
                pass
        assert unavailable_reason(caught.value) == "every database connection is in use"
        FIGURES.add("faults injected")
    finally:
        engine.dispose()


def test_errors_that_are_bugs_are_not_called_unavailability(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises(Exception) as caught:
            conn.execute(text("SELECT 1 / 0"))
    assert unavailable_reason(caught.value) is None
    assert unavailable_reason(ValueError("x")) is None


# --- Flask: 503, then business as usual ---------------------------------------------------------


def test_a_backend_terminated_mid_request_is_a_503_and_nothing_half_written(
    db: TenancyDatabase, seeded: Seeded, superuser_engine: Engine, bypass: UnsafeBypass
) -> None:
    app = _app(db)
    engine: Engine = app.extensions["rls_tenancy"].engine
    acme = bearer(seeded.tokens["acme/ci"])

    def kill_own_backend(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO projects"):
            with superuser_engine.connect() as admin:
                pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
                admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

    try:
        event.listen(engine, "before_cursor_execute", kill_own_backend)
        with app.test_client() as client:
            failed = client.post("/api/projects", headers=acme, json={"name": "never half-written"})
        event.remove(engine, "before_cursor_execute", kill_own_backend)
        _assert_unavailable(failed, "connection to the database was lost")
        FIGURES.add("faults injected")
        assert "never half-written" not in _projects(bypass, seeded.tenants["acme"])
        with app.test_client() as client:
            created = client.post("/api/projects", headers=acme, json={"name": "after the fault"})
            assert created.status_code == 201
            listed = client.get("/api/projects", headers=acme)
        assert listed.status_code == 200
        ids = {project["id"] for project in _body(listed)["projects"]}
        assert _body(created)["id"] in ids and ids.isdisjoint(seeded.projects["globex"])
    finally:
        _dispose(app)


def test_a_statement_timeout_is_a_503_and_the_row_is_unchanged(
    db: TenancyDatabase, seeded: Seeded, bypass: UnsafeBypass
) -> None:
    app = _app(db, connect_args={"options": "-c statement_timeout=300"})
    acme = bearer(seeded.tokens["acme/ci"])
    project = seeded.projects["acme"][0]
    try:
        with app.test_client() as client:
            before = client.get(f"/api/projects/{project}", headers=acme).json
            with bypass.session(reason="test: hold a row lock") as locker:
                locker.execute(select(Project).where(Project.id == project).with_for_update()).scalar_one()
                stuck = client.patch(f"/api/projects/{project}", headers=acme, json={"name": "timed out"})
            _assert_unavailable(stuck, "did not answer in time")
            FIGURES.add("faults injected")
            assert client.get(f"/api/projects/{project}", headers=acme).json == before
    finally:
        _dispose(app)


def test_an_exhausted_pool_is_a_503_and_the_next_request_works(db: TenancyDatabase, seeded: Seeded) -> None:
    app = _app(db, pool_size=1, max_overflow=0, pool_timeout=0.2)
    engine: Engine = app.extensions["rls_tenancy"].engine
    globex = bearer(seeded.tokens["globex/ci"])
    try:
        with app.test_client() as client:
            with engine.connect():
                _assert_unavailable(client.get("/api/projects", headers=globex), "every database connection is in use")
            FIGURES.add("faults injected")
            listed = client.get("/api/projects", headers=globex)
        assert listed.status_code == 200
        ids = {project["id"] for project in _body(listed)["projects"]}
        assert ids and ids.isdisjoint(seeded.projects["acme"])
    finally:
        _dispose(app)


def _under_load(app: Flask, seeded: Seeded, bypass: UnsafeBypass, interrupt: Callable[[], None], label: str) -> None:
    """Writers and readers in two tenants, ``interrupt`` mid-run; then nothing acknowledged may be missing."""
    requests = count(48, 2_000)
    tenants = {slug: bearer(seeded.tokens[f"{slug}/ci"]) for slug in ("acme", "globex")}
    acknowledged: dict[str, list[tuple[str, int]]] = {"acme": [], "globex": []}
    rejected: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    halfway = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with app.test_client() as client:
            for number in range(requests // 4):
                if number == requests // 8:
                    halfway.set()
                slug = rng.choice(sorted(tenants))
                if rng.random() < 0.1:  # a forged token: a security event, acknowledged by its 401
                    answer = client.get("/api/projects", headers=bearer("rt_forged." + "x" * 40))
                    if answer.status_code == 401:
                        with lock:
                            rejected.append(answer.headers["X-Request-ID"])
                elif rng.random() < 0.5:
                    name = f"{label} {seed}-{number}"
                    answer = client.post("/api/projects", headers=tenants[slug], json={"name": name})
                    if answer.status_code == 201:
                        with lock:
                            acknowledged[slug].append((name, _body(answer)["id"]))
                else:
                    answer = client.get("/api/projects", headers=tenants[slug])
                    if answer.status_code == 200:
                        other = "globex" if slug == "acme" else "acme"
                        seen = {project["id"] for project in _body(answer)["projects"]}
                        leaked = seen & {pid for _, pid in acknowledged[other]} | (seen & set(seeded.projects[other]))
                        if leaked:
                            FIGURES.add("leaks found")
                        assert not leaked
                with lock:
                    statuses.append(answer.status_code)

    def interruption() -> None:
        halfway.wait(timeout=30)
        interrupt()
        FIGURES.add("faults injected")

    run_in_threads(lambda which: interruption() if which < 0 else worker(which), [(-1,), (1,), (2,), (3,), (4,)])
    FIGURES.add("requests", len(statuses))
    assert set(statuses) <= {200, 201, 401, 503}, sorted(set(statuses))
    assert 503 in statuses  # the fault was seen...
    with app.test_client() as client:  # ...and is over
        assert client.get("/api/projects", headers=tenants["acme"]).status_code == 200
    for slug, written in acknowledged.items():
        stored = _projects(bypass, seeded.tenants[slug])
        lost = [name for name, _ in written if name not in stored]
        FIGURES.add("writes lost", len(lost))
        assert not lost
    with bypass.connect(reason="test: acknowledged security events survive") as conn:
        logged = set(
            conn.execute(
                text("SELECT request_id FROM rls_tenancy.audit_log WHERE request_id = ANY(:ids)"), {"ids": rejected}
            ).scalars()
        )
    assert logged == set(rejected)
    _chains_intact(bypass)


def test_an_outage_under_load_loses_nothing_acknowledged(
    db: TenancyDatabase, seeded: Seeded, proxy: RoundTripProxy, bypass: UnsafeBypass
) -> None:
    """The network to the database cut and refused for a while, mid-run."""
    app = _app(db, db.app_url.set(host="127.0.0.1", port=proxy.port), pool_timeout=2)

    def outage() -> None:
        with proxy.outage():
            threading.Event().wait(0.3)

    try:
        _under_load(app, seeded, bypass, outage, "outage")
    finally:
        _dispose(app)


@pytest.fixture(scope="module")
def restartable() -> Iterator[LocalCluster]:
    """A server of the test's own, so that it can be restarted."""
    if find_bindir() is None:
        pytest.skip("*** no local PostgreSQL binaries: a real restart is not tested here (the network outage is) ***")
    with local_cluster() as cluster:
        yield cluster


def test_a_real_server_restart_under_load_loses_nothing_acknowledged(restartable: LocalCluster) -> None:
    """PostgreSQL stopped (fast shutdown: sessions ended) and started again, mid-run."""
    roles = RoleNames()
    passwords = {roles.app: secrets.token_urlsafe(12), roles.bypass: secrets.token_urlsafe(12)}
    upgrade(restartable.url, roles=roles, config=Config(DEMO_ALEMBIC_INI))
    if signing_requested():
        require_signing(restartable.url)
    conninfo = restartable.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        for role, password in passwords.items():
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    with RoundTripProxy("127.0.0.1", restartable.port) as proxy:
        app_url = restartable.url.set(username=roles.app, password=passwords[roles.app], port=proxy.port)
        bypass_url = restartable.url.set(username=roles.bypass, password=passwords[roles.bypass], port=proxy.port)
        bypass = UnsafeBypass(create_engine(bypass_url))
        seeder = bind_engine(create_engine(app_url))
        seeded = seed(seeder, bypass)
        seeder.dispose()
        app = create_app(
            app_url, bypass_url, engine_options={"pool_timeout": 2}, TESTING=True, SECRET_KEY="x", **EACH_REJECTION
        )

        def restart() -> None:
            restartable.stop()
            threading.Event().wait(0.3)
            restartable.start()
            proxy.target = ("127.0.0.1", restartable.port)
            bypass.engine.dispose()  # the test's own checks afterwards start afresh; the app's pool must cope

        try:
            _under_load(app, seeded, bypass, restart, "restart")
        finally:
            _dispose(app)
            bypass.engine.dispose()


def test_a_connection_lost_after_the_response_is_made_does_not_turn_it_into_a_500(
    db: TenancyDatabase, seeded: Seeded, superuser_engine: Engine
) -> None:
    """Ending the request rolls back; with the server gone that fails, and must not undo the answer."""
    app = _app(db)
    state = app.extensions["rls_tenancy"]

    @app.get("/api/vanishing")
    def vanishing() -> dict[str, int]:
        session = state.sessions()
        names = session.scalars(select(Project.name)).all()
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with superuser_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        return {"projects": len(names)}

    acme = bearer(seeded.tokens["acme/ci"])
    try:
        with app.test_client() as client:
            answered = client.get("/api/vanishing", headers=acme)
            assert answered.status_code == 200 and _body(answered)["projects"] >= len(seeded.projects["acme"])
            FIGURES.add("faults injected")
            listed = client.get("/api/projects", headers=acme)  # the same thread's next Session is a fresh one
        assert listed.status_code == 200
        assert {project["id"] for project in _body(listed)["projects"]}.isdisjoint(seeded.projects["globex"])
    finally:
        _dispose(app)
