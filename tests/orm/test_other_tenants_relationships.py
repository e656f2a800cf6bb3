"""Relationships of another tenant's object, kept in a Session used across tenants: refused, never empty.

The criteria and RLS would answer "none" for them: a lazy load would keep
that as the relationship's value, a dynamic or write-only relationship (or
``with_parent()``) would return it. These mappings of the demo's tables add
the relationship styles the demo does not use: a one-to-many joined on
``project_id`` alone (no ``tenant_id`` needed to load it), dynamic and
write-only. Everything runs as the application role.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, Identity, Integer, PrimaryKeyConstraint, String, func, select
from sqlalchemy.orm import (
    DeclarativeBase,
    DynamicMapped,
    Mapped,
    Session,
    WriteOnlyMapped,
    defer,
    load_only,
    mapped_column,
    relationship,
    sessionmaker,
    with_parent,
)

from rls_tenancy import TenantBoundMixin, TenantMismatchError, as_tenant, scope_sessions
from rls_tenancy.orm import scoping
from tests.conftest import World


class Base(DeclarativeBase):
    pass


class Item(TenantBoundMixin, Base):
    """The demo's ``tasks`` table."""

    __tablename__ = "tasks"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    project_id: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(100))
    folder: Mapped[Folder] = relationship(
        primaryjoin="Item.project_id == Folder.id", foreign_keys="Item.project_id", viewonly=True
    )


class Folder(TenantBoundMixin, Base):
    """The demo's ``projects`` table, with one relationship of each style to its tasks."""

    __tablename__ = "projects"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    name: Mapped[str] = mapped_column(String(100))
    items: Mapped[list[Item]] = relationship(
        primaryjoin="Item.project_id == Folder.id", foreign_keys="Item.project_id", viewonly=True
    )
    dynamic_items: DynamicMapped[Item] = relationship(
        primaryjoin="and_(Item.project_id == Folder.id, Item.tenant_id == Folder.tenant_id)",
        foreign_keys="[Item.tenant_id, Item.project_id]",
        viewonly=True,
    )
    written_items: WriteOnlyMapped[Item] = relationship(
        primaryjoin="and_(Item.project_id == Folder.id, Item.tenant_id == Folder.tenant_id)",
        foreign_keys="[Item.tenant_id, Item.project_id]",
        overlaps="folder,items,dynamic_items",
    )


class AcrossTenants(Session):
    """Scoped on its own, kept unexpired across commits, as a job reusing one Session might."""


@pytest.fixture(scope="module")
def kept(app_engine: Engine) -> sessionmaker[AcrossTenants]:
    factory = sessionmaker(app_engine, class_=AcrossTenants, expire_on_commit=False)
    scope_sessions(factory)
    return factory


@pytest.fixture(scope="module")
def expiring(app_engine: Engine) -> sessionmaker[AcrossTenants]:
    """The same, with SQLAlchemy's default: a commit expires every object."""
    factory = sessionmaker(app_engine, class_=AcrossTenants)
    scope_sessions(factory)
    return factory


def _folder(session: Session, folder_id: int, *how: object) -> Folder:
    return session.scalars(select(Folder).options(*how).where(Folder.id == folder_id)).one()  # type: ignore[arg-type]


@pytest.mark.rls_orm
@pytest.mark.parametrize("how", ["load_only", "defer"])
def test_a_lazy_load_is_refused_when_the_parents_tenant_id_was_not_loaded(
    kept: sessionmaker[AcrossTenants], world: World, how: str
) -> None:
    """Without ``tenant_id`` in the object, the check asks the database, through the refresh check."""
    option = load_only(Folder.name) if how == "load_only" else defer(Folder.tenant_id)
    folder_id = world.project_ids[world.a][0]
    with kept() as session:
        with as_tenant(world.a):
            folder = _folder(session, folder_id, option)
            assert "tenant_id" not in folder.__dict__
            session.commit()
        with as_tenant(world.b):
            with pytest.raises(TenantMismatchError, match=f"Folder \\({folder_id},\\) is not visible to tenant"):
                folder.items  # noqa: B018
            session.rollback()
        with as_tenant(world.a):  # nothing empty was kept
            assert {item.title for item in folder.items} <= world.tasks[world.a] and folder.items


STYLES: dict[str, Callable[[Session, Folder], object]] = {
    "dynamic": lambda _s, folder: folder.dynamic_items.all(),
    "dynamic-count": lambda _s, folder: folder.dynamic_items.count(),
    "write-only": lambda s, folder: s.scalars(folder.written_items.select()).all(),
    "write-only-count": lambda s, folder: s.scalar(folder.written_items.select().with_only_columns(func.count())),
    "with_parent": lambda s, folder: s.scalars(select(Item).where(with_parent(folder, Folder.items))).all(),
    "compared": lambda s, folder: s.scalars(select(Item).where(Item.folder == folder)).all(),
}


@pytest.mark.rls_orm
@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("expired", [False, True], ids=["kept", "expired"])
def test_a_relationship_queried_through_another_tenants_object_is_refused(
    kept: sessionmaker[AcrossTenants], expiring: sessionmaker[AcrossTenants], world: World, style: str, expired: bool
) -> None:
    """Dynamic, write-only, ``with_parent()`` and comparisons: the object is in the statement's criteria.

    Expired (the default ``expire_on_commit``), the object is loaded again
    while the statement is compiled, where SQLAlchemy would wrap the
    library's error in its ``StatementError``: checked first, the error
    arrives as itself.
    """
    factory = expiring if expired else kept
    folder_id = world.project_ids[world.a][0]
    with factory() as session:
        with as_tenant(world.a):
            folder = _folder(session, folder_id)
            session.commit()
        with as_tenant(world.b), pytest.raises(TenantMismatchError, match=f"Folder \\({folder_id},\\)"):
            STYLES[style](session, folder)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_the_same_object_back_in_its_tenant_answers_in_full(
    kept: sessionmaker[AcrossTenants], world: World, style: str
) -> None:
    """No false refusal: after acting for another tenant, the session's own tenant's objects still work."""
    folder_id = world.project_ids[world.a][0]
    with kept() as session:
        with as_tenant(world.a):
            folder = _folder(session, folder_id, load_only(Folder.name))
            expected = STYLES[style](session, folder)
            session.commit()
        with as_tenant(world.b):
            session.scalars(select(Folder)).all()
            session.commit()
        with as_tenant(world.a):
            assert STYLES[style](session, folder) == expected and expected
            assert STYLES[style](session, _folder(session, folder_id, load_only(Folder.name))) == expected


@pytest.mark.rls_orm
def test_another_tenants_object_added_to_a_session_of_one_tenant_is_refused(
    kept: sessionmaker[AcrossTenants], world: World
) -> None:
    """An object loaded by another Session, then added: the session acted for one tenant, not the object."""
    folder_id = world.project_ids[world.a][0]
    with as_tenant(world.a), kept() as elsewhere:
        folder = _folder(elsewhere, folder_id, load_only(Folder.name))
        elsewhere.expunge(folder)
    with as_tenant(world.b), kept() as session:
        session.add(folder)
        with pytest.raises(TenantMismatchError, match=f"Folder \\({folder_id},\\)"):
            folder.dynamic_items.all()


def test_a_session_of_one_tenant_does_not_walk_its_statements(
    kept: sessionmaker[AcrossTenants], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common case (a request, a job for one tenant) pays nothing for the check of criteria."""

    def walked(_statement: object) -> None:
        raise AssertionError("a session of one tenant walked a statement's criteria")

    monkeypatch.setattr(scoping, "_criteria_parents", walked)
    with as_tenant(world.a), kept() as session:
        folder = _folder(session, world.project_ids[world.a][0])
        assert session.scalars(select(Item).where(with_parent(folder, Folder.items))).all()
        assert folder.dynamic_items.count() == len(folder.items) == 1
