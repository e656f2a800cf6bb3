"""The unsafe bypass: sees every tenant, only through its own engine, only with a reason."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import InsecureRoleError, NoTenantError, UnsafeBypass, UsageError, as_tenant, scope_sessions
from rls_tenancy.orm.scoping import _check_flush, _scope_statement
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project, Task
from tests.conftest import World


def test_bypass_sees_every_tenant_and_the_app_never_does(
    bypass: UnsafeBypass, raw_factory: sessionmaker[Session], world: World
) -> None:
    both = world.projects[world.a] | world.projects[world.b]
    with bypass.session(reason="test: admin report across tenants") as session:
        assert both <= set(session.scalars(select(Project.name)))
    with bypass.connect(reason="test: admin report, Core") as conn:
        assert both <= set(conn.execute(text("SELECT name FROM projects")).scalars())
    with as_tenant(world.a), raw_factory() as session:
        seen = {p.name for p in session.query(Project).tenant_unconstrained_unsafe()}  # type: ignore[attr-defined]
        assert seen == world.projects[world.a]


@pytest.fixture()
def global_scoping() -> Iterator[None]:
    """Scope every Session in the process, as an app might, and undo it after."""
    scope_sessions(Session)
    yield
    event.remove(Session, "do_orm_execute", _scope_statement)
    event.remove(Session, "before_flush", _check_flush)


def test_bypass_sessions_are_not_scoped_even_with_a_tenant_in_context(
    bypass: UnsafeBypass, world: World, global_scoping: None
) -> None:
    with as_tenant(world.a), bypass.session(reason="test: support looks at tenant b") as session:
        assert world.projects[world.b] <= set(session.scalars(select(Project.name)))


def test_bypass_needs_explicit_tenant_on_new_rows(bypass: UnsafeBypass, global_scoping: None) -> None:
    with pytest.raises(NoTenantError, match="has no tenant_id"):
        with bypass.session(reason="test: import without tenant") as session:
            session.add(Project(name="homeless"))
            session.flush()


def test_bypass_rolls_back_on_error(bypass: UnsafeBypass, world: World) -> None:
    with pytest.raises(RuntimeError):
        with bypass.session(reason="test: half-done admin job") as session:
            session.add(Project(tenant_id=world.a, name="half-written"))
            session.flush()
            raise RuntimeError("job failed")
    with bypass.session(reason="test: check") as session:
        assert session.scalars(select(Project).where(Project.name == "half-written")).all() == []


@pytest.mark.parametrize("reason", ["", "   ", None, 42, "x" * 501])
def test_bypass_needs_a_reason(bypass: UnsafeBypass, reason: object) -> None:
    with pytest.raises(UsageError), bypass.session(reason=reason):  # type: ignore[arg-type]
        pass
    with pytest.raises(UsageError), bypass.connect(reason=reason):  # type: ignore[arg-type]
        pass


def test_bypass_logs_its_reason(bypass: UnsafeBypass, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="rls_tenancy.bypass"),
        bypass.connect(reason="nightly billing"),
    ):
        pass
    assert [r.getMessage() for r in caplog.records] == ["unsafe bypass entered: nightly billing"]


@pytest.mark.parametrize("who", ["app", "superuser"])
def test_bypass_refuses_roles_unfit_for_it(db: TenancyDatabase, who: str) -> None:
    engine = create_engine(db.app_url if who == "app" else db.superuser_url)
    expected = "lacks BYPASSRLS" if who == "app" else "is a superuser"
    try:
        with pytest.raises(InsecureRoleError, match=expected), UnsafeBypass(engine).connect(reason="test"):
            pass
    finally:
        engine.dispose()


def test_bypass_engine_is_not_reachable_from_the_app_role(app_engine: Engine, db: TenancyDatabase) -> None:
    with app_engine.connect() as conn:
        reachable = conn.execute(
            text("SELECT pg_has_role(current_user, CAST(:r AS name), 'MEMBER')"), {"r": db.roles.bypass}
        ).scalar()
    assert reachable is False


def test_bypass_takes_the_tenant_from_a_related_parent(
    bypass: UnsafeBypass, world: World, global_scoping: None
) -> None:
    with bypass.session(reason="test: admin adds a task to tenant b's project") as session:
        project = session.get(Project, world.project_ids[world.b][0])
        assert project is not None
        task = Task(project=project, title="added by support")
        session.add(task)
        session.flush()
        assert task.tenant_id == world.b
