"""Concurrency through the Flask app: many threads, random tenants, zero leaks, zero lost writes.

32 threads share one app (one engine, one pool) and issue mixed reads and
writes as random tenants for a fixed number of requests: listing (never a
foreign row), creating (every acknowledged project must be there afterwards,
in its tenant), renaming their own, and reaching for another tenant's
project by id (always the same 404 as a missing one). Afterwards every row
is checked in its tenant through the bypass role, and the audit chains are
verified. The same suite runs directly and through PgBouncer in transaction
pooling mode, with fewer server connections than clients.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from rls_tenancy import Tenant, UnsafeBypass, as_tenant
from rls_tenancy.audit.chain import verify_chains
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.pgbouncer import APPLICATION_NAME, NoPgBouncerError, PgBouncer, find_pgbouncer, pgbouncer
from saas_demo.app import create_app
from saas_demo.models import Project
from tests.conftest import run_in_threads
from tests.fix_flask import bearer
from tests.soak import FIGURES, count

pytestmark = pytest.mark.soak

THREADS = 32
TENANTS = 6


@dataclass
class Crowd:
    tokens: dict[int, str]  # tenant id: a read-write token
    seeded: dict[int, set[int]]  # tenant id: project ids that exist before the run
    written: dict[int, set[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def crowd(app_engine: Engine, bypass: UnsafeBypass) -> Crowd:
    tokens: dict[int, str] = {}
    seeded: dict[int, set[int]] = {}
    for _ in range(TENANTS):
        with bypass.session(reason="test: a crowd of tenants") as session:
            tenant = Tenant(slug=f"crowd-{secrets.token_hex(4)}", name="Crowd")
            session.add(tenant)
            session.flush()
            tenant_id = tenant.id
        with as_tenant(tenant_id), Session(app_engine) as session, session.begin():
            tokens[tenant_id] = issue_token(session, name="crowd", scopes=["projects:read", "projects:write"]).token
            projects = [Project(name=f"seed {index}") for index in range(3)]
            session.add_all(projects)
            session.flush()
            seeded[tenant_id] = {project.id for project in projects}
    return Crowd(tokens, seeded)


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest, db: TenancyDatabase) -> Iterator[PgBouncer | None]:
    if request.param == "direct":
        yield None
        return
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    logins = {
        str(db.app_url.username): str(db.app_url.password),
        str(db.bypass_url.username): str(db.bypass_url.password),
    }
    try:
        with pgbouncer(db.superuser_url, logins, server_connections=4) as running:
            yield running
    except NoPgBouncerError as error:
        pytest.fail(str(error))


def _app(db: TenancyDatabase, route: PgBouncer | None) -> Flask:
    url: URL = db.app_url if route is None else route.url(db.app_url)
    options: dict[str, Any] = {"pool_size": THREADS, "max_overflow": 0, "pool_timeout": 30}
    if route is not None:
        options["connect_args"] = {"prepare_threshold": None}  # PgBouncer < 1.21 cannot follow prepared statements
    return create_app(url, db.bypass_url, engine_options=options, TESTING=True, SECRET_KEY="x")


def _body(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), (response.status_code, response.get_data(as_text=True))
    return body


def _work(app: Flask, crowd: Crowd, seed: int, requests: int, statuses: list[int]) -> None:
    rng = random.Random(seed)
    tenants = sorted(crowd.tokens)
    with app.test_client() as client:
        for _ in range(requests):
            tenant = rng.choice(tenants)
            auth = bearer(crowd.tokens[tenant])
            dice = rng.random()
            if dice < 0.4:
                answer = client.get("/api/projects", headers=auth)
                seen = {project["id"] for project in _body(answer)["projects"]}
                with crowd.lock:
                    foreign = {pid for other, ids in crowd.seeded.items() if other != tenant for pid in ids}
                    foreign |= {pid for other, ids in crowd.written.items() if other != tenant for pid in ids}
                if seen & foreign:
                    FIGURES.add("leaks found")
                assert not seen & foreign
            elif dice < 0.7:
                answer = client.post("/api/projects", headers=auth, json={"name": f"crowd {seed}"})
                if answer.status_code == 201:
                    with crowd.lock:
                        crowd.written.setdefault(tenant, set()).add(_body(answer)["id"])
            elif dice < 0.85:
                own = rng.choice(sorted(crowd.seeded[tenant]))
                answer = client.patch(f"/api/projects/{own}", headers=auth, json={"name": f"renamed {seed}"})
            else:
                other = rng.choice([t for t in tenants if t != tenant])
                target = rng.choice(sorted(crowd.seeded[other]))
                answer = client.get(f"/api/projects/{target}", headers=auth)
                if answer.status_code != 404:
                    FIGURES.add("leaks found")
                assert answer.status_code == 404
            statuses.append(answer.status_code)


def test_many_threads_many_tenants_no_leak_no_lost_write(
    db: TenancyDatabase, crowd: Crowd, route: PgBouncer | None, bypass: UnsafeBypass, superuser_engine: Engine
) -> None:
    app = _app(db, route)
    per_thread = count(12, 500)
    statuses: list[int] = []
    crowd.written.clear()
    try:
        run_in_threads(lambda seed: _work(app, crowd, seed, per_thread, statuses), [(n,) for n in range(THREADS)])
    finally:
        tenancy = app.extensions["rls_tenancy"]
        tenancy.engine.dispose()
        tenancy.audit_engine.dispose()
        if tenancy.bypass is not None:
            tenancy.bypass.engine.dispose()
    FIGURES.add("requests", len(statuses))
    assert len(statuses) == THREADS * per_thread
    assert set(statuses) <= {200, 201, 404}, sorted(set(statuses))

    with bypass.session(reason="test: every row in its tenant after the crowd") as session:
        owners = dict(
            session.execute(select(Project.id, Project.tenant_id).where(Project.tenant_id.in_(crowd.tokens))).all()
        )
    for tenant, ids in crowd.written.items():
        lost = [pid for pid in ids if pid not in owners]
        moved = [pid for pid in ids if pid in owners and owners[pid] != tenant]
        FIGURES.add("writes lost", len(lost))
        if moved:
            FIGURES.add("leaks found", len(moved))
        assert not lost and not moved
    for tenant, ids in crowd.seeded.items():
        assert all(owners[pid] == tenant for pid in ids)
    with bypass.connect(reason="test: audit chains after the crowd") as conn:
        assert not [status for status in verify_chains(conn) if status.problem]

    if route is not None:  # fewer server connections than clients, and the transactions did share them
        with superuser_engine.connect() as admin:
            backends = admin.execute(
                select(func.count())
                .select_from(text("pg_stat_activity"))
                .where(text("usename = :role AND datname = :db AND application_name = :name")),
                {"role": db.roles.app, "db": db.name, "name": APPLICATION_NAME},
            ).scalar_one()
        assert 0 < backends <= route.server_connections < THREADS
