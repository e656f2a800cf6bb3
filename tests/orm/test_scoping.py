"""The ORM wall on its own: scoping that holds even where RLS does not apply.

The ``orm_only`` sessions log in as a superuser, for whom PostgreSQL ignores
row level security, so whatever stays hidden there was hidden by the ORM
filter alone. The application role is used where the error paths matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest
from sqlalchemy import Engine, create_engine, delete, event, exc, func, insert, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session, aliased, joinedload, selectinload, sessionmaker, subqueryload
from sqlalchemy.orm import exc as orm_exc

from rls_tenancy import (
    ConfigurationError,
    NoTenantError,
    Tenant,
    TenantMismatchError,
    TenantQuery,
    UsageError,
    as_tenant,
    bind_engine,
    scope_sessions,
)
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.orm.scoping import _CRITERIA, TENANT_PARAMETER
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project, Task
from tests.conftest import World

if TYPE_CHECKING:
    from rls_tenancy.orm.scoping import ScopeTarget


class OrmOnlySession(Session):
    """A Session class of its own, so scoping it leaves other sessions alone."""


@pytest.fixture(scope="module")
def orm_only(superuser_engine: Engine) -> sessionmaker[OrmOnlySession]:
    factory = sessionmaker(superuser_engine, class_=OrmOnlySession, query_cls=TenantQuery)
    scope_sessions(OrmOnlySession)
    return factory


def _task_titles(projects: list[Project]) -> set[str]:
    return {t.title for p in projects for t in p.tasks}


Path = Callable[[Session], set[str]]

PATHS: dict[str, Path] = {
    "select": lambda s: set(s.scalars(select(Project.name))),
    "legacy-query": lambda s: {p.name for p in s.query(Project)},
    "filter-by-other-id": lambda s: {p.name for p in s.query(Project).filter(Project.id > 0)},
    "aliased": lambda s: set(s.scalars(select(aliased(Project).name))),
    "union": lambda s: set(s.scalars(union_all(select(Project.name), select(Project.name)))),
    "union-entities": lambda s: {
        p.name for p in s.scalars(select(aliased(Project, union_all(select(Project), select(Project)).subquery())))
    },
    "cte": lambda s: set(s.scalars(select(select(Project.name).cte().c.name))),
    "subquery-in": lambda s: set(s.scalars(select(Task.title).where(Task.project_id.in_(select(Project.id))))),
    "join": lambda s: {n for n, _ in s.execute(select(Project.name, Task.title).join(Project.tasks))},
    "lazy-load": lambda s: _task_titles(list(s.scalars(select(Project)))),
    "selectin-load": lambda s: _task_titles(list(s.scalars(select(Project).options(selectinload(Project.tasks))))),
    "joined-load": lambda s: _task_titles(list(s.scalars(select(Project).options(joinedload(Project.tasks))).unique())),
    "subquery-load": lambda s: _task_titles(list(s.scalars(select(Project).options(subqueryload(Project.tasks))))),
    "many-to-one": lambda s: {t.project.name for t in s.scalars(select(Task))},
}

EXPECTED = {
    "subquery-in": "tasks",
    "lazy-load": "tasks",
    "selectin-load": "tasks",
    "joined-load": "tasks",
    "subquery-load": "tasks",
}


@pytest.mark.rls_orm
@pytest.mark.parametrize("path", sorted(PATHS))
def test_orm_filter_alone_keeps_tenants_apart(orm_only: sessionmaker[OrmOnlySession], world: World, path: str) -> None:
    for tenant in (world.a, world.b):
        expected = world.tasks[tenant] if EXPECTED.get(path) == "tasks" else world.projects[tenant]
        with as_tenant(tenant), orm_only() as session:
            assert PATHS[path](session) == expected


def test_lifting_the_orm_filter_lifts_only_the_orm_filter(
    orm_only: sessionmaker[OrmOnlySession], raw_factory: sessionmaker[Session], world: World
) -> None:
    both = world.projects[world.a] | world.projects[world.b]
    with as_tenant(world.a), orm_only() as session:
        lifted = {p.name for p in session.query(Project).tenant_unconstrained_unsafe()}  # type: ignore[attr-defined]
        assert both <= lifted  # a superuser: nothing else filters
        option = select(Project.name).execution_options(tenant_unconstrained_unsafe=True)
        assert both <= set(session.scalars(option))
    with as_tenant(world.a), raw_factory() as session:  # the application role: RLS still filters
        assert {p.name for p in session.query(Project).tenant_unconstrained_unsafe()} == world.projects[world.a]  # type: ignore[attr-defined]


@pytest.mark.rls_orm
def test_orm_bulk_update_and_delete_are_scoped(orm_only: sessionmaker[OrmOnlySession], world: World) -> None:
    with as_tenant(world.a), orm_only() as session, session.begin():
        assert session.execute(update(Task).values(title=Task.title)).rowcount == len(world.tasks[world.a])  # type: ignore[attr-defined]
        victim = world.project_ids[world.b][0]
        assert session.execute(delete(Task).where(Task.project_id == victim)).rowcount == 0  # type: ignore[attr-defined]


@pytest.mark.rls_orm
def test_a_caller_cannot_choose_the_tenant_the_orm_filter_uses(
    orm_only: sessionmaker[OrmOnlySession], world: World
) -> None:
    # The filter's tenant is a parameter of the statement; one passed in by name is replaced.
    with as_tenant(world.a), orm_only() as session:
        given = {TENANT_PARAMETER: world.b}
        assert set(session.scalars(select(Project.name), given)) == world.projects[world.a]
        assert {p.name for p in session.query(Project).params(given)} == world.projects[world.a]


def test_the_orm_filter_without_its_tenant_fails_rather_than_running_unfiltered(
    superuser_engine: Engine, world: World
) -> None:
    statement = select(Project.name).options(_CRITERIA)
    with Session(superuser_engine) as session:  # not scoped: nothing supplies the tenant
        with pytest.raises(exc.StatementError, match=TENANT_PARAMETER):
            session.scalars(statement).all()
        assert set(session.scalars(statement, {TENANT_PARAMETER: world.b})) == world.projects[world.b]


def test_bulk_update_by_primary_key_cannot_reach_another_tenant(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    # Loader criteria do not apply to it: row level security alone stops it, and nothing is written.
    mine, theirs = world.project_ids[world.a][0], world.project_ids[world.b][0]
    with as_tenant(world.a), scoped_factory() as session:
        # Per row, the table's key (tenant_id, id): B's row named by its own key, or by A's tenant, is 0 rows.
        for tenant in (world.b, world.a):
            rows = [
                {"tenant_id": world.a, "id": mine, "name": "bulk mine"},
                {"tenant_id": tenant, "id": theirs, "name": "bulk theirs"},
            ]
            with pytest.raises(orm_exc.StaleDataError):
                session.execute(update(Project), rows)
            session.rollback()
        assert not set(session.scalars(select(Project.name))) & {"bulk mine", "bulk theirs"}


class _ResultCache:
    """An app's ORM result cache, keyed as SQLAlchemy's dogpile example keys it: the statement and its parameters."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}

    def __call__(self, state: ORMExecuteState) -> Any:
        if not state.is_select:
            return None
        cache_key = cast(Any, state.statement)._generate_cache_key()
        assert cache_key is not None
        key = cache_key.to_offline_string({}, state.statement, state.parameters or {})
        if key not in self.results:
            self.results[key] = state.invoke_statement().freeze()
        return self.results[key]()


class _CachedSession(Session):
    """A Session class whose sessions an app's cache listens on, set up before any scoping."""


@pytest.mark.rls_orm
@pytest.mark.parametrize("listens_on", ["sessionmaker", "parent class"])
def test_a_result_cache_listening_before_the_scoping_never_serves_one_tenant_rows_to_another(
    app_engine: Engine, world: World, listens_on: str
) -> None:
    """The scoping runs first among a Session's ``do_orm_execute`` listeners, whatever was there before it.

    A cache that ran first would key the statement without its tenant, and
    answer every tenant (and a request with none) from the first one's rows,
    without asking the database.
    """
    factory = sessionmaker(app_engine, class_=_CachedSession, query_cls=TenantQuery)
    cache = _ResultCache()
    event.listen(factory if listens_on == "sessionmaker" else _CachedSession, "do_orm_execute", cache)
    try:
        scope_sessions(factory)
        # The second has a parameter of its own: such a key lists the statement's parameters, the tenant's among them.
        for statement in (select(Project.name), select(Project.name).where(Project.id > 0)):
            for tenant in (world.a, world.b, world.a):
                with as_tenant(tenant), factory() as session:
                    assert set(session.scalars(statement)) == world.projects[tenant]
            with factory() as session, pytest.raises(NoTenantError):
                session.scalars(statement)
        assert len(cache.results) == 4  # one entry per tenant and statement
    finally:
        event.remove(factory if listens_on == "sessionmaker" else _CachedSession, "do_orm_execute", cache)


NO_TENANT_STATEMENTS: dict[str, Callable[[Session], object]] = {
    "select": lambda s: s.scalars(select(Project)).all(),
    "legacy-query": lambda s: s.query(Project).all(),
    "unconstrained": lambda s: s.query(Project).tenant_unconstrained_unsafe().all(),  # type: ignore[attr-defined]
    "count": lambda s: s.scalar(select(func.count()).select_from(Project)),
    "union": lambda s: s.execute(union_all(select(Task.title), select(Task.title))).all(),
    "aliased": lambda s: s.scalars(select(aliased(Task))).all(),
    "get": lambda s: s.get(Project, 1),
    "bulk-update": lambda s: s.execute(update(Project).values(name="x")),
    "bulk-delete": lambda s: s.execute(delete(Task)),
    "insert": lambda s: s.execute(insert(Project).values(name="x")),
    "bulk-insert": lambda s: s.execute(insert(Project), [{"name": "x"}, {"name": "y"}]),
}


@pytest.mark.parametrize("statement", sorted(NO_TENANT_STATEMENTS))
def test_orm_without_tenant_raises_instead_of_returning_nothing(
    scoped_factory: sessionmaker[Session], statement: str
) -> None:
    with scoped_factory() as session, pytest.raises(NoTenantError, match="as_tenant"):
        NO_TENANT_STATEMENTS[statement](session)


def test_statements_without_tenant_bound_models_run_without_tenant(
    scoped_factory: sessionmaker[Session],
) -> None:
    with scoped_factory() as session:
        assert session.scalars(select(Tenant)).all() == []  # not tenant-bound: RLS shows none
        assert session.execute(text("SELECT 1")).scalar() == 1


def test_new_objects_take_the_tenant_in_context(
    scoped_factory: sessionmaker[Session], bypass: UnsafeBypass, world: World
) -> None:
    with as_tenant(world.a), scoped_factory() as session, session.begin():
        project = Project(name="from context")
        session.add(project)
        session.flush()
        assert project.tenant_id == world.a
        assert project.tenant.id == world.a
    with bypass.session(reason="test: verify owner tenant") as admin:
        stored = admin.scalars(select(Project.tenant_id).where(Project.name == "from context")).all()
    assert world.a in stored


def _scoped(bind: Engine | None = None, **options: Any) -> sessionmaker[Session]:
    """A sessionmaker as the README makes one: TenantQuery, scoped."""
    factory = sessionmaker(bind, query_cls=TenantQuery, **options)
    scope_sessions(factory)
    return factory


def test_an_object_an_apps_own_flush_listener_adds_takes_the_tenant_too(
    app_engine: Engine, bypass: UnsafeBypass, world: World
) -> None:
    """A before_flush listener registered after scope_sessions() (an audit trail of the app's) adds rows the
    library's own flush check has already passed: they take the tenant in context all the same."""
    factory = _scoped(app_engine)
    name = f"history-{world.a}"

    @event.listens_for(factory, "before_flush")
    def history(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(new, Project) and new.name != name for new in session.new):
            session.add(Project(name=name))

    with as_tenant(world.a), factory() as session, session.begin():
        session.add(Project(name="the app's row"))
    with as_tenant(world.b), factory() as session, session.begin():
        session.add(Project(name="b's row"))
    with bypass.session(reason="test: where the listener's rows went") as admin:
        stored = admin.scalars(select(Project.tenant_id).where(Project.name == name)).all()
    assert sorted(stored) == sorted([world.a, world.b])  # one per flush, each in the tenant in context
    with factory() as session:  # no tenant: refused, not written elsewhere
        session.add(Project(name="nobody's"))
        with pytest.raises(NoTenantError):
            session.flush()


def _reads_its_own(factory: sessionmaker[Session], world: World) -> None:
    with as_tenant(world.a), factory() as session:
        assert {p.name for p in session.scalars(select(Project))} == world.projects[world.a]


def test_a_scoped_sessionmaker_on_an_engine_nobody_bound_is_refused_not_empty(
    db: TenancyDatabase, world: World
) -> None:
    """A replica's engine the app made itself and forgot to bind: the ORM sees a tenant, the database none."""
    replica = create_engine(db.app_url)
    factory = _scoped(replica)
    try:
        with as_tenant(world.a), factory() as session, pytest.raises(ConfigurationError, match="not bound"):
            session.scalars(select(Project)).all()
        bind_engine(replica)
        _reads_its_own(factory, world)
    finally:
        replica.dispose()
    owners = create_engine(db.superuser_url)  # not under row level security: the ORM filter alone, as tests use
    factory = _scoped(owners)
    try:
        _reads_its_own(factory, world)
    finally:
        owners.dispose()


@pytest.mark.parametrize(
    "how", ["binds", "configured after scoping", "connected before scoping", "the second of two binds", "core"]
)
def test_an_unbound_engine_reached_another_way_is_refused_too(
    app_engine: Engine, db: TenancyDatabase, world: World, how: str
) -> None:
    replica = create_engine(db.app_url)
    try:
        if how == "binds":
            factory = _scoped(binds={Project: replica})
        elif how == "the second of two binds":  # the first statement's engine is bound: the second's begins later
            factory = _scoped(binds={Project: app_engine, Task: replica})
            with as_tenant(world.a), factory() as session, pytest.raises(ConfigurationError, match="not bound"):
                session.scalars(select(Project)).all()
                session.scalars(select(Task)).all()
            return
        elif how == "core":  # not an ORM statement: the Session's beginning on the engine is what is checked
            factory = _scoped(replica)
            with as_tenant(world.a), factory() as session, pytest.raises(ConfigurationError, match="not bound"):
                session.execute(text("SELECT count(*) FROM projects")).scalar()
            return
        elif how == "configured after scoping":
            factory = _scoped()
            factory.configure(bind=replica)
        else:
            with replica.connect():  # a connection the pool keeps, made before anyone watched
                pass
            factory = _scoped(replica)
        with as_tenant(world.a), factory() as session, pytest.raises(ConfigurationError, match="not bound"):
            session.scalars(select(Project)).all()
    finally:
        replica.dispose()


def test_an_engine_used_outside_scoped_sessions_before_binding_is_not_refused(
    db: TenancyDatabase, world: World
) -> None:
    """A startup health check on the engine, before the app binds it: no Session, nothing to refuse."""
    engine = create_engine(db.app_url)
    factory = _scoped(engine)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        bind_engine(engine)
        _reads_its_own(factory, world)
    finally:
        engine.dispose()


class AddedForSyncSession(Session):
    pass


@pytest.mark.parametrize("flushed_by", ["a query's autoflush", "the commit", "async commit"])
def test_an_object_added_for_one_tenant_is_never_flushed_into_another(
    scoped_factory: sessionmaker[Session], db: TenancyDatabase, bypass: UnsafeBypass, world: World, flushed_by: str
) -> None:
    """A job adding each tenant's rows in that tenant's block and committing once would write them all to the last."""
    name = f"meant for a, {flushed_by}"
    if flushed_by == "async commit":

        async def main() -> None:
            engine = bind_engine(create_async_engine(db.app_url))
            factory = async_sessionmaker(engine, sync_session_class=AddedForSyncSession)  # scopes this class only
            scope_sessions(factory)
            try:
                async with factory() as session:
                    with as_tenant(world.a):
                        session.add(Project(name=name))
                    with as_tenant(world.b), pytest.raises(TenantMismatchError, match="added to the session acting"):
                        await session.commit()
            finally:
                await engine.dispose()

        asyncio.run(main())
    else:
        with scoped_factory() as session:
            with as_tenant(world.a):
                session.add(Project(name=name))
            with as_tenant(world.b), pytest.raises(TenantMismatchError, match="added to the session acting for"):
                if flushed_by == "the commit":
                    session.commit()
                else:
                    session.scalars(select(Project)).all()
    with bypass.session(reason="test: nothing written anywhere") as admin:
        assert admin.scalars(select(Project.tenant_id).where(Project.name == name)).all() == []


def test_flush_without_tenant_raises(scoped_factory: sessionmaker[Session]) -> None:
    with scoped_factory() as session:
        session.add(Project(name="nobody's"))
        with pytest.raises(NoTenantError):
            session.flush()


def test_rows_never_move_between_tenants(scoped_factory: sessionmaker[Session], world: World) -> None:
    with as_tenant(world.a), scoped_factory() as session:
        project = session.scalars(select(Project)).first()
        assert project is not None
        project.tenant_id = world.b
        with pytest.raises(TenantMismatchError, match="cannot change"):
            session.flush()


@pytest.fixture()
def foreign_object(orm_only: sessionmaker[OrmOnlySession], world: World) -> Iterator[tuple[Session, Project]]:
    """A project of tenant B, loaded through the escape hatch into a session acting for A."""
    with as_tenant(world.a), orm_only() as session:
        query = session.query(Project).tenant_unconstrained_unsafe()  # type: ignore[attr-defined]
        yield session, query.filter(Project.tenant_id == world.b).first()


def test_changing_another_tenants_object_is_refused(foreign_object: tuple[Session, Project], world: World) -> None:
    session, project = foreign_object
    with as_tenant(world.a):
        project.name = "renamed by a"
        with pytest.raises(TenantMismatchError, match=f"tenant {world.b}"):
            session.flush()


def test_deleting_another_tenants_object_is_refused(foreign_object: tuple[Session, Project], world: World) -> None:
    session, project = foreign_object
    with as_tenant(world.a):
        session.delete(project)
        with pytest.raises(TenantMismatchError, match=f"tenant {world.b}"):
            session.flush()


def test_a_related_parent_of_another_tenant_is_refused(foreign_object: tuple[Session, Project], world: World) -> None:
    session, project = foreign_object
    with as_tenant(world.a):
        session.add(Task(project=project, title="smuggled"))
        with pytest.raises(TenantMismatchError, match=f"tenant {world.b}"):
            session.flush()


def test_the_tenant_relationship_cannot_point_elsewhere(orm_only: sessionmaker[OrmOnlySession], world: World) -> None:
    with as_tenant(world.a), orm_only() as session:
        other = session.get(Tenant, world.b)
        session.add(Project(tenant=other, name="elsewhere"))
        with pytest.raises(TenantMismatchError, match=f"tenant_id={world.b}"):
            session.flush()


class OwnAsyncSyncSession(Session):
    """The sync_session_class of the async sessions below: scoping it leaves other sessions alone."""


@pytest.mark.rls_orm
@pytest.mark.parametrize("given", ["async_sessionmaker", "async_scoped_session", "AsyncSession-class"])
def test_async_sessions_are_scoped_through_their_sync_session_class(
    db: TenancyDatabase, world: World, given: str
) -> None:
    # A superuser: PostgreSQL applies no policy, so what stays hidden, the ORM filter hid.
    async def main() -> tuple[set[str], set[str]]:
        engine = create_async_engine(db.superuser_url)

        class OwnAsyncSession(AsyncSession):
            sync_session_class = OwnAsyncSyncSession

        factory = async_sessionmaker(engine, class_=OwnAsyncSession)
        targets: dict[str, ScopeTarget] = {
            "async_sessionmaker": factory,
            "async_scoped_session": async_scoped_session(factory, scopefunc=asyncio.current_task),
            "AsyncSession-class": OwnAsyncSession,
        }
        scope_sessions(targets[given])
        try:
            async with factory() as session:
                with as_tenant(world.a):
                    mine = set((await session.scalars(select(Project.name))).all())
                await session.rollback()
                with pytest.raises(NoTenantError):
                    await session.scalars(select(Project))
            async with AsyncSession(engine) as other:  # another sync_session_class: not scoped
                with as_tenant(world.a):
                    unscoped = set((await other.scalars(select(Project.name))).all())
            return mine, unscoped
        finally:
            await engine.dispose()

    mine, unscoped = asyncio.run(main())
    assert mine == world.projects[world.a]
    assert world.projects[world.b] <= unscoped


def test_scope_sessions_names_what_it_takes() -> None:
    with pytest.raises(UsageError, match="sessionmaker"):
        scope_sessions(object())  # type: ignore[arg-type]


def test_refreshing_an_object_of_another_tenant_is_a_tenancy_error(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    # SQLAlchemy reported the row deleted: it exists, for the tenant the object was loaded for.
    with scoped_factory() as session:
        with as_tenant(world.a):
            project = session.scalars(select(Project).order_by(Project.name)).first()
            assert project is not None
            session.commit()  # expires it
        with as_tenant(world.b):
            theirs = session.scalars(select(Project).order_by(Project.name)).first()
            assert theirs is not None
            session.commit()
            with pytest.raises(TenantMismatchError, match=f"not visible to tenant {world.b}"):
                project.name  # noqa: B018
            assert theirs.name in world.projects[world.b]  # the session's own refreshes still load
        session.rollback()
        with as_tenant(world.a):
            assert project.name in world.projects[world.a]
