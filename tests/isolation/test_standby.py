"""Reads on a hot standby: the binding, the wall, and a Flask request's reads routed there.

A second cluster streams from the first (``pg_basebackup``, started here from
local binaries). The standby holds the primary's policies, roles and rows and
answers read-only transactions only: the binding (``set_config``, the
session reset, a signed proof) writes nothing, so it works there unchanged.
Every read below runs as the application role. The Flask app checks
credentials on the primary and reads through ``tenancy.read_session`` on the
standby; a standby paused mid-stream (a lagging replica) then shows its
tenant's rows as of the lag, never another tenant's, and admits no token the
primary has revoked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from alembic.config import Config
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Connection, Engine, create_engine, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from rls_tenancy import ContextKeyError, UnsafeBypass, UsageError, as_tenant, bind_engine
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.flask import Tenancy
from rls_tenancy.identity.tokens import issue_token, revoke_token
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from rls_tenancy.testing.database import signing_requested
from rls_tenancy.testing.server import LocalCluster, find_bindir, local_cluster, standby_cluster
from saas_demo.models import Project
from saas_demo.seed import Seeded, seed
from tests.conftest import DEMO_ALEMBIC_INI
from tests.fix_flask import bearer


@dataclass(frozen=True)
class Replicated:
    primary: LocalCluster
    standby: LocalCluster
    db: TenancyDatabase
    seeded: Seeded
    #: The application role on the primary, and on the standby (both bound).
    app: Engine
    read: Engine
    bypass: UnsafeBypass

    def replayed(self) -> None:
        """Wait until the standby holds everything the primary committed so far."""
        self.standby.wait_for_replay(self.primary.wal_position())

    @contextmanager
    def primary_superuser(self) -> Iterator[Connection]:
        """A superuser's transaction in the test database on the primary, committed when the block ends."""
        engine = create_engine(self.db.superuser_url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def names(self, slug: str) -> set[str]:
        """The names of ``slug``'s projects the seed made (the invisible one included)."""
        with as_tenant(self.seeded.tenants[slug]), Session(self.app) as session:
            return set(session.scalars(select(Project.name)))


def on(cluster: LocalCluster, url: URL) -> URL:
    return url.set(host=cluster.url.host, port=cluster.port)


@pytest.fixture(scope="module")
def replicated(rls_break_database: Callable[[URL], None]) -> Iterator[Replicated]:
    if find_bindir() is None:
        pytest.skip("*** no local PostgreSQL binaries: a streaming standby cannot be started here ***")
    with (
        local_cluster() as primary,
        standby_cluster(primary) as standby,
        tenancy_database(primary.url, alembic_config=Config(DEMO_ALEMBIC_INI)) as db,
    ):
        rls_break_database(db.superuser_url)
        app = bind_engine(create_engine(db.app_url))
        read = bind_engine(create_engine(on(standby, db.app_url), pool_size=1, max_overflow=0))
        bypass = UnsafeBypass(create_engine(db.bypass_url))
        pair = Replicated(primary, standby, db, seed(app, bypass), app, read, bypass)
        pair.replayed()
        try:
            yield pair
        finally:
            for engine in (app, read, bypass.engine):
                engine.dispose()


@pytest.mark.rls_policy
def test_the_binding_holds_in_the_standbys_read_only_transactions(replicated: Replicated) -> None:
    acme, globex = replicated.seeded.tenants["acme"], replicated.seeded.tenants["globex"]
    for slug, tenant in (("acme", acme), ("globex", globex)):
        with as_tenant(tenant), replicated.read.connect() as conn:
            where = conn.execute(text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")).one()
            assert tuple(where) == (True, "on")
            # Raw SQL naming no tenant, and SQL naming the other one: only the bound tenant's rows.
            assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == replicated.names(slug)
            other = globex if tenant == acme else acme
            assert conn.execute(text("SELECT count(*) FROM projects WHERE tenant_id = :t"), {"t": other}).scalar() == 0
            assert set(conn.execute(text("SELECT DISTINCT tenant_id FROM tasks")).scalars()) == {tenant}


@pytest.mark.rls_policy
def test_no_tenant_on_the_standby_is_no_rows(replicated: Replicated) -> None:
    with replicated.read.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM rls_tenancy.users")).scalar() == 0


@pytest.mark.rls_binding
def test_a_pooled_standby_connection_keeps_nothing_from_one_tenant_for_the_next(replicated: Replicated) -> None:
    """One connection (pool of 1) serves acme, then globex; acme's SQL left what a standby lets it leave."""
    acme, globex = replicated.seeded.tenants["acme"], replicated.seeded.tenants["globex"]
    with as_tenant(acme), replicated.read.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.execute(text("SELECT set_config('app.current_tenant', :t, false)"), {"t": str(acme)})
        conn.execute(text("SELECT set_config('app.left_by', 'acme', false)"))
        conn.exec_driver_sql("PREPARE left_by_acme AS SELECT name FROM projects")
        conn.commit()
    with as_tenant(globex), replicated.read.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert not conn.execute(text("SELECT current_setting('app.left_by', true)")).scalar()
        assert conn.execute(text("SELECT count(*) FROM pg_prepared_statements WHERE from_sql")).scalar() == 0
        assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == replicated.names("globex")
    with replicated.read.connect() as conn:  # and nobody after globex: no rows
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


@pytest.mark.rls_signing
def test_injected_sql_on_the_standby_switches_the_tenant_only_where_the_context_is_unsigned(
    replicated: Replicated,
) -> None:
    acme, globex = replicated.seeded.tenants["acme"], replicated.seeded.tenants["globex"]
    if not signing_requested():
        pytest.skip("the unsigned boundary is the primary's (test_injection_boundary.py); this run is unsigned")
    with as_tenant(acme), replicated.read.connect() as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(globex)})
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


# The Flask app: credentials on the primary (engine), the view's reads on the standby (read_engine).


def reads_app(replicated: Replicated, read_engine: Engine | None) -> Flask:
    app = Flask(f"standby_reads_{secrets.token_hex(4)}")
    app.config.update(TESTING=True, SECRET_KEY=secrets.token_hex(16), RLS_TENANCY_REJECTION_WINDOW=0)
    tenancy = Tenancy(app, engine=replicated.app, read_engine=read_engine)

    @app.get("/projects")
    def projects() -> ResponseReturnValue:
        reads = tenancy.read_session
        names = sorted(reads.scalars(select(Project.name)))
        orm = sorted(project.name for project in reads.query(Project))  # the ORM filter, as on the primary
        standby = reads.scalar(text("SELECT pg_is_in_recovery()"))
        return jsonify(names=names, orm=orm, standby=standby, same=reads is tenancy.session)

    @app.post("/rename-on-read")
    def rename_on_read() -> ResponseReturnValue:
        try:
            tenancy.read_session.execute(update(Project).values(name="renamed"))
        except DBAPIError as error:
            return jsonify(refused=type(error.orig).__name__), 409
        return jsonify(refused=None)

    return app


def _dispose(app: Flask) -> None:
    state = app.extensions["rls_tenancy"]
    state.audit_engine.dispose()
    if state.read_sessions is not None:
        bound = state.read_sessions.kw["bind"]
        bound.dispose()


@pytest.fixture()
def standby_app(replicated: Replicated) -> Iterator[Flask]:
    app = reads_app(replicated, replicated.read)
    yield app
    _dispose(app)


@pytest.mark.rls_policy
def test_a_requests_reads_go_to_the_standby_bound_to_its_tenant(replicated: Replicated, standby_app: Flask) -> None:
    client = standby_app.test_client()
    for slug in ("acme", "globex"):
        answer = client.get("/projects", headers=bearer(replicated.seeded.tokens[f"{slug}/ci"]))
        assert answer.status_code == 200, answer.json
        assert answer.json == {
            "names": sorted(replicated.names(slug)),
            "orm": sorted(replicated.names(slug)),
            "standby": True,
            "same": False,
        }
    # No credentials: no tenant, and the ORM filter refuses (the extension's 4xx), nothing read.
    assert client.get("/projects").status_code in (400, 401)


@pytest.mark.parametrize("where", ["standby", "primary"])
def test_the_read_session_refuses_writes_even_on_the_primary(replicated: Replicated, where: str) -> None:
    engine = replicated.read if where == "standby" else bind_engine(create_engine(replicated.db.app_url))
    app = reads_app(replicated, engine)
    try:
        token = replicated.seeded.tokens["acme/ci"]
        answer = app.test_client().post("/rename-on-read", headers=bearer(token))
        assert answer.json == {"refused": "ReadOnlySqlTransaction"}
        assert "renamed" not in replicated.names("acme")
    finally:
        _dispose(app)
        if where == "primary":
            engine.dispose()


def test_without_a_read_engine_the_read_session_is_the_requests_session(replicated: Replicated) -> None:
    app = reads_app(replicated, None)
    try:
        answer = app.test_client().get("/projects", headers=bearer(replicated.seeded.tokens["acme/ci"]))
        assert answer.json == {
            "names": sorted(replicated.names("acme")),
            "orm": sorted(replicated.names("acme")),
            "standby": False,
            "same": True,
        }
    finally:
        _dispose(app)


@pytest.mark.rls_policy
def test_a_lagging_standby_shows_its_tenant_as_of_the_lag_and_admits_no_revoked_token(
    replicated: Replicated, standby_app: Flask
) -> None:
    acme, globex = replicated.seeded.tenants["acme"], replicated.seeded.tenants["globex"]
    with as_tenant(acme), Session(replicated.app) as session, session.begin():
        doomed = issue_token(session, name="doomed", scopes=["projects:read"])
    replicated.replayed()  # the standby knows the token as valid
    before = sorted(replicated.names("acme"))
    client = standby_app.test_client()
    replicated.standby.pause_replay()
    try:
        suffix = secrets.token_hex(3)
        with as_tenant(acme), Session(replicated.app) as session, session.begin():
            session.add(Project(name=f"late acme {suffix}"))
            assert revoke_token(session, doomed.id)
        with as_tenant(globex), Session(replicated.app) as session, session.begin():
            session.add(Project(name=f"late globex {suffix}"))
        # A token issued after the standby stopped: checked on the primary, so it is admitted.
        with as_tenant(acme), Session(replicated.app) as session, session.begin():
            fresh = issue_token(session, name="fresh", scopes=["projects:read"])

        lagging = client.get("/projects", headers=bearer(fresh.token))
        assert lagging.status_code == 200, lagging.json
        assert (lagging.json or {})["names"] == before  # acme's rows as of the lag: nothing of globex, old or new
        # Revoked on the primary, still valid on the standby: refused, as the primary says.
        assert client.get("/projects", headers=bearer(doomed.token)).status_code == 401
    finally:
        replicated.standby.resume_replay()
    replicated.replayed()
    caught_up = (client.get("/projects", headers=bearer(fresh.token)).json or {})["names"]
    assert caught_up == sorted([*before, f"late acme {suffix}"])


def test_the_read_engine_can_come_from_the_config(replicated: Replicated) -> None:
    app = Flask(f"standby_config_{secrets.token_hex(4)}")
    standby_url = on(replicated.standby, replicated.db.app_url).render_as_string(hide_password=False)
    app.config.update(TESTING=True, RLS_TENANCY_READ_DATABASE_URL=standby_url)
    tenancy = Tenancy(app, engine=replicated.app)

    @app.get("/where")
    def where() -> ResponseReturnValue:
        return jsonify(standby=tenancy.read_session.scalar(text("SELECT pg_is_in_recovery()")))

    try:
        answer = app.test_client().get("/where", headers=bearer(replicated.seeded.tokens["acme/ci"]))
        assert answer.json == {"standby": True}
        with app.app_context(), pytest.raises(UsageError, match="belongs to a request"):
            _ = tenancy.read_session
    finally:
        _dispose(app)


def test_a_key_the_standby_has_not_replayed_fails_at_connect_not_with_empty_answers(replicated: Replicated) -> None:
    """Rotation (docs/signed-context.md): a new key in slot 2 reaches the standby as replay does."""
    key = ContextKey.generate(slot=2)
    engine = bind_engine(create_engine(on(replicated.standby, replicated.db.app_url)), context_key=key)
    install = text("SELECT rls_tenancy.install_context_key(:slot, :key)")
    replicated.standby.pause_replay()
    try:
        with replicated.primary_superuser() as conn:
            conn.execute(install, {"slot": key.slot, "key": key.key})
        with pytest.raises(ContextKeyError, match="slot 2, which holds no key"), engine.connect():
            pass
    finally:
        replicated.standby.resume_replay()
    replicated.replayed()
    try:
        with as_tenant(replicated.seeded.tenants["acme"]), engine.connect() as conn:
            assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == replicated.names("acme")
    finally:
        engine.dispose()
        with replicated.primary_superuser() as conn:
            conn.execute(text("SELECT rls_tenancy.retire_context_key(2)"))
        replicated.replayed()
