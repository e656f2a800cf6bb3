"""Fixtures: one migrated database per run, engines per role, fresh tenants per test.

The sabotage runs (``--rls-break=policy|binding|orm``, with the markers
``rls_policy``, ``rls_binding`` and ``rls_orm``) come from the library's
pytest plugin, as they would in an application's suite.
"""

from __future__ import annotations

import gc
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import Tenant, TenantQuery, UnsafeBypass, bind_engine, scope_sessions
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.models import Project, Task
from tests.soak import FIGURES, SOAK

pytest_plugins = ["pytester", "tests.fix_flask"]  # pytester: the plugin run as an app's suite would run it


def run_in_threads(work: Callable[..., object], arguments: Iterable[tuple[object, ...]]) -> None:
    """Run ``work(*args)`` for each tuple in a thread of its own, all at once; wait for all."""
    threads = [threading.Thread(target=work, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


_BIND_BARE = text(
    "SELECT set_config('app.current_tenant', :tenant, true), set_config('app.current_user_id', :user, true)"
)
# As a superuser or the owner role: sign_context() is the owner's, and reads the key.
SIGN_WHERE_REQUIRED = text("SELECT rls_tenancy.sign_context() WHERE rls_tenancy.context_signing_required()")


def bind_then_become(conn: Connection, tenant: int, role: str, user: int | None = None) -> None:
    """Bind ``tenant`` (and ``user``) by hand, signed where the database requires it, then ``SET LOCAL ROLE``.

    For tests that act as the app role inside a superuser's transaction
    (DDL first, then the app role's view of it).
    """
    conn.execute(_BIND_BARE, {"tenant": str(tenant), "user": "" if user is None else str(user)})
    conn.execute(SIGN_WHERE_REQUIRED)
    conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", role))


def ddl(template: str, *names: str) -> str:
    """DDL naming roles or databases: ``{}`` in ``template`` become quoted identifiers."""
    return sql.SQL(template).format(*(sql.Identifier(name) for name in names)).as_string(None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The leak hunt's figures, printed; written to $RLS_TENANCY_FIGURES when set (make soak)."""
    totals = FIGURES.totals()
    if not any(totals.values()):
        return
    terminalreporter.section("isolation figures" + (" (soak)" if SOAK else ""))
    for name, value in totals.items():
        terminalreporter.write_line(f"{name:>18}: {value:,}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("RLS_TENANCY_FIGURES")
    if target and any(FIGURES.totals().values()):
        title = "Soak figures" if SOAK else "Isolation figures (bounded run)"
        verdict = (
            f"\n{session.testscollected} tests collected, {session.testsfailed} failed (pytest exit {exitstatus}).\n"
        )
        Path(target).write_text(FIGURES.markdown(title) + verdict)


DEMO_ALEMBIC_INI = Path(__file__).parent.parent / "examples" / "saas_demo" / "alembic.ini"


@pytest.fixture(scope="session")
def rls_alembic_config() -> Config:
    """The demo app's migrations, with the library's as a branch: what an adopting app does."""
    return Config(DEMO_ALEMBIC_INI)


@pytest.fixture(scope="session")
def db(rls_database: TenancyDatabase) -> TenancyDatabase:
    """The migrated test database (projects and tasks isolated), its policies opened under ``--rls-break=policy``."""
    return rls_database


@pytest.fixture(scope="session")
def superuser_engine(db: TenancyDatabase) -> Iterator[Engine]:
    engine = create_engine(db.superuser_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def app_engine(db: TenancyDatabase) -> Iterator[Engine]:
    """The application's engine: app role, tenant bound per transaction."""
    engine = bind_engine(create_engine(db.app_url, pool_size=5))
    yield engine
    engine.dispose()


@pytest.fixture()
def pinned_engine(db: TenancyDatabase) -> Iterator[Engine]:
    """A pool of exactly one connection: every checkout is the same backend."""
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def bypass_engine(db: TenancyDatabase) -> Iterator[Engine]:
    engine = create_engine(db.bypass_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def bypass(bypass_engine: Engine) -> UnsafeBypass:
    return UnsafeBypass(bypass_engine)


@pytest.fixture(scope="session")
def scoped_factory(app_engine: Engine) -> sessionmaker[Session]:
    """Sessions with both walls: ORM scoping and RLS."""
    factory = sessionmaker(app_engine, query_cls=TenantQuery)
    scope_sessions(factory)
    return factory


@pytest.fixture(scope="session")
def raw_factory(app_engine: Engine) -> sessionmaker[Session]:
    """Sessions without the ORM filter: whatever they see, RLS alone decided."""
    return sessionmaker(app_engine, query_cls=TenantQuery)


@dataclass(frozen=True)
class World:
    """Two fresh tenants, each with two projects of one task each."""

    a: int
    b: int
    projects: dict[int, set[str]]
    tasks: dict[int, set[str]]
    project_ids: dict[int, list[int]]

    def other(self, tenant_id: int) -> int:
        return self.b if tenant_id == self.a else self.a


def _distinctive_id() -> int:
    # Twelve digits: easy to spot in query text, impossible to confuse with a row count.
    return 100_000_000_000 + secrets.randbelow(800_000_000_000)


@pytest.fixture()
def world(bypass: UnsafeBypass) -> World:
    projects: dict[int, set[str]] = {}
    tasks: dict[int, set[str]] = {}
    project_ids: dict[int, list[int]] = {}
    with bypass.session(reason="test setup: create tenants") as session:
        ids = []
        for label in ("a", "b"):
            tenant = Tenant(id=_distinctive_id(), slug=f"{label}-{secrets.token_hex(4)}", name=f"Tenant {label}")
            session.add(tenant)
            session.flush()
            ids.append(tenant.id)
            names = {f"{label}-project-{n}-{secrets.token_hex(2)}" for n in range(2)}
            rows = [Project(tenant_id=tenant.id, name=name) for name in sorted(names)]
            session.add_all(rows)
            session.flush()
            session.add_all(Task(tenant_id=tenant.id, project_id=row.id, title=f"task of {row.name}") for row in rows)
            projects[tenant.id] = names
            tasks[tenant.id] = {f"task of {name}" for name in names}
            project_ids[tenant.id] = [row.id for row in rows]
    return World(a=ids[0], b=ids[1], projects=projects, tasks=tasks, project_ids=project_ids)


@pytest.fixture(scope="session")
def unforced_database(rls_postgres_url: URL) -> Iterator[TenancyDatabase]:
    """A scratch demo database of its own with a committed flaw: projects does not force row level security."""
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE public.projects NO FORCE ROW LEVEL SECURITY")
        finally:
            engine.dispose()
        yield database


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_per_module() -> Iterator[None]:
    """Collect garbage as each module ends, so an unclosed connection is reported in the module that leaked it."""
    yield
    gc.collect()
