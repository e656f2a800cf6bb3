"""The wall itself: as the application role, no path reads or writes another tenant's rows.

Paths marked ``rls_policy`` have no ORM filter in front of them (Core, text()
SQL, the unconstrained escape hatch, sessions without scoping), so only row
level security stands between tenants there; they must fail when the policy
is broken (``--rls-break=policy``).
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import TenantMismatchError, as_tenant
from rls_tenancy.bypass import UnsafeBypass
from saas_demo.models import Base, Project, Task
from tests.conftest import World

PROJECTS = Base.metadata.tables["projects"]

ReadPath = Callable[[Session, World], set[str]]

READ_PATHS: dict[str, ReadPath] = {
    "orm-select": lambda s, w: set(s.scalars(select(Project.name))),
    "orm-entities": lambda s, w: {p.name for p in s.scalars(select(Project))},
    "legacy-query": lambda s, w: {p.name for p in s.query(Project)},
    "session-get": lambda s, w: {
        p.name for i in w.project_ids[w.a] + w.project_ids[w.b] if (p := s.get(Project, i)) is not None
    },
    "unconstrained-query": lambda s, w: {p.name for p in s.query(Project).tenant_unconstrained_unsafe()},  # type: ignore[attr-defined]
    "unconstrained-select": lambda s, w: set(
        s.scalars(select(Project.name).execution_options(tenant_unconstrained_unsafe=True))
    ),
    "core-table": lambda s, w: set(s.connection().execute(select(PROJECTS.c.name)).scalars()),
    "text-sql": lambda s, w: set(s.execute(text("SELECT name FROM projects")).scalars()),
    "count": lambda s, w: {str(s.scalar(select(func.count()).select_from(Project)))},
}


def _expected(path: str, world: World, tenant: int) -> set[str]:
    return {str(len(world.projects[tenant]))} if path == "count" else world.projects[tenant]


@pytest.fixture(
    params=[
        # No ORM filter at all: what is seen is what PostgreSQL allows.
        pytest.param("raw_factory", marks=pytest.mark.rls_policy, id="rls-only"),
        pytest.param("scoped_factory", id="orm-and-rls"),
    ]
)
def factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """Sessions with RLS alone, and with the ORM filter in front of it."""
    chosen: sessionmaker[Session] = request.getfixturevalue(request.param)
    return chosen


@pytest.mark.parametrize("path", sorted(READ_PATHS))
def test_reads_see_only_own_rows(factory: sessionmaker[Session], world: World, path: str) -> None:
    for tenant in (world.a, world.b):
        with as_tenant(tenant), factory() as session:
            assert READ_PATHS[path](session, world) == _expected(path, world, tenant)


@pytest.mark.rls_policy
def test_child_rows_and_relationship_loads_stay_in_tenant(raw_factory: sessionmaker[Session], world: World) -> None:
    with as_tenant(world.a), raw_factory() as session:
        assert set(session.scalars(select(Task.title))) == world.tasks[world.a]
        titles = {t.title for p in session.scalars(select(Project)) for t in p.tasks}
        assert titles == world.tasks[world.a]
        joined = session.execute(select(Task.title, Project.name).join(Task.project)).all()
        assert {title for title, _ in joined} == world.tasks[world.a]


@pytest.mark.rls_policy
def test_no_tenant_means_no_rows_at_the_database(app_engine: Engine, world: World) -> None:
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM rls_tenancy.tenants")).scalar() == 0


WritePath = Callable[[Session, int], int]

UPDATES: dict[str, WritePath] = {
    "orm-bulk-update": lambda s, pid: (
        s.execute(  # type: ignore[attr-defined]
            update(Project).where(Project.id == pid).values(name="stolen")
        ).rowcount
    ),
    "core-update": lambda s, pid: (
        s.connection().execute(update(PROJECTS).where(PROJECTS.c.id == pid).values(name="stolen")).rowcount
    ),
    "text-update": lambda s, pid: (
        s.execute(  # type: ignore[attr-defined]
            text("UPDATE projects SET name = 'stolen' WHERE id = :id"), {"id": pid}
        ).rowcount
    ),
    "orm-bulk-delete": lambda s, pid: s.execute(delete(Project).where(Project.id == pid)).rowcount,  # type: ignore[attr-defined]
    "legacy-query-update": lambda s, pid: (
        s.query(Project).filter(Project.id == pid).update({"name": "stolen"}, synchronize_session=False)
    ),
    "legacy-query-delete": lambda s, pid: s.query(Project).filter(Project.id == pid).delete(synchronize_session=False),
    "core-delete": lambda s, pid: s.connection().execute(delete(PROJECTS).where(PROJECTS.c.id == pid)).rowcount,
    "text-delete": lambda s, pid: (
        s.execute(  # type: ignore[attr-defined]
            text("DELETE FROM projects WHERE id = :id"), {"id": pid}
        ).rowcount
    ),
}


def _names_as_admin(bypass: UnsafeBypass, tenant: int) -> set[str]:
    with bypass.session(reason="test: check what really is in the table") as session:
        return set(session.scalars(select(Project.name).where(Project.tenant_id == tenant)))


@pytest.mark.parametrize("path", sorted(UPDATES))
def test_cannot_update_or_delete_other_tenants_rows(
    factory: sessionmaker[Session], bypass: UnsafeBypass, world: World, path: str
) -> None:
    victim = world.project_ids[world.b][0]
    with as_tenant(world.a), factory() as session, session.begin():
        assert UPDATES[path](session, victim) == 0
    assert _names_as_admin(bypass, world.b) == world.projects[world.b]


def _is_rls_violation(error: DBAPIError) -> bool:
    return isinstance(error.orig, psycopg.errors.InsufficientPrivilege) and "row-level security" in str(error.orig)


def _orm_insert(session: Session, tenant: int) -> int:
    session.add(Project(tenant_id=tenant, name="planted"))
    session.flush()
    return 1


INSERTS: dict[str, WritePath] = {
    "core-insert": lambda s, tenant: (
        s.connection().execute(insert(PROJECTS).values(tenant_id=tenant, name="planted")).rowcount
    ),
    "text-insert": lambda s, tenant: (
        s.execute(  # type: ignore[attr-defined]
            text("INSERT INTO projects (tenant_id, name) VALUES (:t, 'planted')"), {"t": tenant}
        ).rowcount
    ),
    "orm-add": lambda s, tenant: _orm_insert(s, tenant),
    "move-row": lambda s, tenant: (
        s.execute(  # type: ignore[attr-defined]
            text("UPDATE projects SET tenant_id = :t"), {"t": tenant}
        ).rowcount
    ),
}


@pytest.mark.rls_policy
@pytest.mark.parametrize("path", sorted(INSERTS))
def test_cannot_write_rows_into_another_tenant(
    raw_factory: sessionmaker[Session], bypass: UnsafeBypass, world: World, path: str
) -> None:
    with as_tenant(world.a), raw_factory() as session:
        with pytest.raises(DBAPIError) as caught:
            INSERTS[path](session, world.b)
        assert _is_rls_violation(caught.value)
    assert _names_as_admin(bypass, world.b) == world.projects[world.b]
    assert _names_as_admin(bypass, world.a) == world.projects[world.a]


def test_scoped_session_refuses_foreign_tenant_before_flush(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        session.add(Project(tenant_id=world.b, name="planted"))
        with pytest.raises(TenantMismatchError, match=f"tenant_id={world.b}"):
            session.flush()


@pytest.mark.rls_policy
def test_inserts_without_tenant_are_refused(app_engine: Engine, world: World) -> None:
    for statement in (
        "INSERT INTO projects (name) VALUES ('orphan')",
        "INSERT INTO projects (tenant_id, name) VALUES (:t, 'x')",
    ):
        with app_engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                conn.execute(text(statement), {"t": world.a})
            assert _is_rls_violation(caught.value)


def test_insert_without_tenant_id_lands_in_bound_tenant(app_engine: Engine, bypass: UnsafeBypass, world: World) -> None:
    with as_tenant(world.a), app_engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (name) VALUES ('defaulted')"))
    assert "defaulted" in _names_as_admin(bypass, world.a)


def test_child_cannot_reference_another_tenants_parent(raw_factory: sessionmaker[Session], world: World) -> None:
    """Foreign-key checks ignore RLS; the composite key still keeps tenants apart."""
    foreign_project = world.project_ids[world.b][0]
    missing_project = max(world.project_ids[world.b]) + 10_000_000
    messages = []
    for target in (foreign_project, missing_project):
        with as_tenant(world.a), raw_factory() as session:
            session.add(Task(tenant_id=world.a, project_id=target, title="dangling"))
            with pytest.raises(IntegrityError) as caught:
                session.flush()
            messages.append(str(caught.value.orig).replace(str(target), "<id>"))
    # Same error whether the id exists in another tenant or nowhere: no oracle.
    assert messages[0] == messages[1]
