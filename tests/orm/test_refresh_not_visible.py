"""A refresh that finds no row, in a Session that acted for several tenants: still an ObjectDeletedError."""

from __future__ import annotations

import pickle

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import ObjectDeletedError

from rls_tenancy import TenantMismatchError, as_tenant, scope_sessions
from rls_tenancy.errors import ObjectNotVisibleError
from saas_demo.models import Project, Task
from tests.conftest import World


def test_a_row_deleted_since_is_still_an_object_deleted_error(
    scoped_factory: sessionmaker[Session], app_engine: Engine, world: World
) -> None:
    with scoped_factory() as session:
        with as_tenant(world.b):
            session.scalars(select(Project)).all()
            session.commit()
        with as_tenant(world.a):
            project = session.get(Project, world.project_ids[world.a][0])
            assert project is not None
            session.commit()  # expires it
            with app_engine.begin() as conn:  # another transaction, same tenant, deletes it
                gone = {"id": world.project_ids[world.a][0]}
                conn.execute(text("DELETE FROM tasks WHERE project_id = :id"), gone)
                conn.execute(text("DELETE FROM projects WHERE id = :id"), gone)
            with pytest.raises(ObjectDeletedError, match=f"not visible to tenant {world.a}.*or deleted since") as info:
                project.name  # noqa: B018
    assert isinstance(info.value, TenantMismatchError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ObjectNotVisibleError and copy.args == info.value.args


def test_an_object_of_another_tenant_is_both_errors(scoped_factory: sessionmaker[Session], world: World) -> None:
    with scoped_factory() as session:
        with as_tenant(world.a):
            pid = world.project_ids[world.a][0]
            project = session.get(Project, pid)
            assert project is not None
            session.commit()
        with as_tenant(world.b):
            session.scalars(select(Project)).all()
            session.commit()
            with pytest.raises(ObjectNotVisibleError, match=f"Project \\({pid},\\) is not visible") as info:
                project.name  # noqa: B018
        session.rollback()
    assert isinstance(info.value, TenantMismatchError) and isinstance(info.value, ObjectDeletedError)


class KeptSession(Session):
    pass


@pytest.mark.rls_orm
def test_a_relationship_of_another_tenants_object_is_refused_not_loaded_empty(app_engine: Engine, world: World) -> None:
    """Kept across a commit (``expire_on_commit=False``), an object's lazy relationships would load as "none".

    SQLAlchemy then keeps that as the relationship's value: the project would have no tasks even back under
    its own tenant.
    """
    factory = sessionmaker(app_engine, class_=KeptSession, expire_on_commit=False)
    scope_sessions(factory)  # this class alone
    first, second = world.project_ids[world.a][:2]
    with factory() as session:
        with as_tenant(world.a):
            project = session.get(Project, first)
            task = session.scalars(select(Task).where(Task.project_id == second)).one()
            assert project is not None
            session.commit()
        with as_tenant(world.b):
            with pytest.raises(TenantMismatchError, match=f"Project \\({first},\\) belongs to tenant {world.a}"):
                project.tasks  # noqa: B018
            with pytest.raises(TenantMismatchError, match=f"Task .* belongs to tenant {world.a}"):
                task.project  # noqa: B018
            session.rollback()
        with as_tenant(world.a):
            assert {t.title for t in project.tasks} <= world.tasks[world.a] and project.tasks
            assert task.project.id == second
