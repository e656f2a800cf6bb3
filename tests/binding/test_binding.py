"""Per-transaction binding: the database sees exactly the tenant in context, and nothing lingers."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import cast

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    exists,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import ExecutionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import sessionmaker

from rls_tenancy import NoTenantError, TenancyError, Tenant, TenantChangedError, UnsafeBypass, as_tenant, bind_engine
from rls_tenancy.tenant_tables import is_tenant_table
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from tests.conftest import World, run_in_threads

SETTING = text("SELECT current_setting('app.current_tenant', true)")
PID = text("SELECT pg_backend_pid()")


def _raw_setting(engine: Engine) -> tuple[int, str | None]:
    """(backend pid, setting) read through the raw DBAPI connection, bypassing every hook."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT pg_backend_pid(), current_setting('app.current_tenant', true)")
        pid, value = cursor.fetchone()  # type: ignore[misc]
        raw.rollback()
        return pid, value
    finally:
        raw.close()


def test_database_sees_the_tenant_in_context(pinned_engine: Engine, world: World) -> None:
    with pinned_engine.connect() as conn:
        assert conn.execute(SETTING).scalar() == ""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        assert conn.execute(SETTING).scalar() == str(world.a)
        assert conn.execute(text("SELECT rls_tenancy.current_tenant_id()")).scalar() == world.a


# Only a commit can carry a session-wide value onward (a rollback reverts even
# session-level SETs), so only that case guards the transaction-local binding.
@pytest.mark.parametrize(
    "ending", [pytest.param("commit", marks=pytest.mark.rls_binding), "rollback", "exception", "close"]
)
def test_binding_never_survives_the_transaction(pinned_engine: Engine, world: World, ending: str) -> None:
    with pinned_engine.connect() as conn:
        first_pid = conn.execute(PID).scalar()
    try:
        with as_tenant(world.a), pinned_engine.connect() as conn:
            assert conn.execute(SETTING).scalar() == str(world.a)
            if ending == "commit":
                conn.commit()
            elif ending == "rollback":
                conn.rollback()
            elif ending == "exception":
                conn.execute(text("SELECT 1 / 0"))
    except DBAPIError:
        assert ending == "exception"
    # The next user of the very same backend, hooks or no hooks, sees no tenant.
    pid, value = _raw_setting(pinned_engine)
    assert pid == first_pid
    assert value in ("", None)
    with pinned_engine.connect() as conn:
        assert conn.execute(PID).scalar() == first_pid
        assert conn.execute(SETTING).scalar() == ""
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0


@pytest.mark.rls_binding
def test_session_commit_rebinds_on_the_next_transaction(pinned_engine: Engine, world: World) -> None:
    """The sqlalchemy-tenants pitfall: a tenant set once per Session, lost or kept after commit."""
    factory = sessionmaker(pinned_engine)
    with factory() as session:
        with as_tenant(world.a):
            assert set(session.scalars(select(Project.name))) == world.projects[world.a]
            session.commit()
            assert set(session.scalars(select(Project.name))) == world.projects[world.a]
            session.commit()
        with as_tenant(world.b):
            assert set(session.scalars(select(Project.name))) == world.projects[world.b]
            session.rollback()
        assert session.execute(SETTING).scalar() == ""
        session.rollback()
    assert _raw_setting(pinned_engine)[1] in ("", None)


def test_a_transaction_begun_outside_sqlalchemy_is_still_bound(pinned_engine: Engine, world: World) -> None:
    """The binding is kept per SQLAlchemy transaction: an earlier one's never passes for this one's."""
    with as_tenant(world.a), pinned_engine.connect() as conn:
        assert conn.execute(SETTING).scalar() == str(world.a)
        conn.commit()
        # The driver begins the next transaction itself (a COPY through the
        # raw cursor, say), out of SQLAlchemy's sight.
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("SELECT 1")
        assert conn.execute(SETTING).scalar() == str(world.a)
        assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]


def test_an_engine_bound_mid_transaction_binds_its_next_statement(db: TenancyDatabase, world: World) -> None:
    engine = create_engine(db.app_url, pool_size=1, max_overflow=0)
    try:
        with as_tenant(world.a), engine.connect() as conn:
            assert conn.execute(SETTING).scalar() in ("", None)
            bind_engine(engine)
            assert conn.execute(SETTING).scalar() == str(world.a)
    finally:
        engine.dispose()


def test_engines_derived_with_execution_options_are_bound(pinned_engine: Engine, world: World) -> None:
    derived = pinned_engine.execution_options(isolation_level="REPEATABLE READ")
    for tenant in (world.a, world.b):
        with as_tenant(tenant), derived.connect() as conn:
            assert conn.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[tenant]


@pytest.mark.filterwarnings("ignore:The garbage collector is trying to clean up", "ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_abandoned_connection_returns_to_the_pool_when_collected(db: TenancyDatabase, world: World) -> None:
    """What the binding keeps with the pooled connection must not keep an abandoned Connection alive.

    A request whose teardown failed drops its Session mid-transaction; the
    pool gets the connection back when the garbage collector finds it, which
    it cannot if the pooled connection's own info still refers to it.
    """
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0, pool_timeout=1))
    try:
        conn = engine.connect()
        with as_tenant(world.a):
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        del conn
        gc.collect()
        with as_tenant(world.b), engine.connect() as again:  # a TimeoutError if it was not returned
            assert set(again.execute(select(Project.name)).scalars()) == world.projects[world.b]
    finally:
        engine.dispose()


def test_switching_tenant_inside_a_transaction_is_refused(pinned_engine: Engine, world: World) -> None:
    with as_tenant(world.a), pinned_engine.connect() as conn:
        conn.execute(SETTING)
        with as_tenant(world.b), pytest.raises(TenantChangedError, match=f"bound to tenant {world.a}"):
            conn.execute(text("SELECT name FROM projects"))
        conn.rollback()
        with as_tenant(world.b):
            assert conn.execute(SETTING).scalar() == str(world.b)


def _names_of(engine: Engine, tenant: int) -> set[str]:
    with as_tenant(tenant), engine.connect() as conn:
        return set(conn.execute(text("SELECT name FROM projects")).scalars())


def test_a_transaction_that_had_a_statement_refused_does_not_commit(
    pinned_engine: Engine, app_engine: Engine, world: World
) -> None:
    # The refused statement was the one undoing work: committing the rest would keep what it undid.
    with as_tenant(world.a):
        conn = pinned_engine.connect()
        conn.begin()
        savepoint = conn.begin_nested()
        conn.execute(text("UPDATE projects SET name = name || ' undone'"))
    try:
        with as_tenant(world.b):
            with pytest.raises(TenantChangedError):
                savepoint.rollback()
            with pytest.raises(TenantChangedError, match="rolled back, not committed"):
                conn.commit()
            conn.rollback()  # what SQLAlchemy asks of a connection whose savepoint failed
        assert _names_of(app_engine, world.a) == world.projects[world.a]
        with as_tenant(world.a):  # the connection goes on, in a transaction of its own
            conn.execute(text("UPDATE projects SET name = name || ' kept'"))
            conn.commit()
        assert _names_of(app_engine, world.a) == {f"{name} kept" for name in world.projects[world.a]}
    finally:
        conn.close()


def test_a_refused_statement_is_not_committed_by_returning_to_the_tenant(pinned_engine: Engine, world: World) -> None:
    factory = sessionmaker(pinned_engine)
    with factory() as session:
        with as_tenant(world.a):
            session.execute(text("UPDATE projects SET name = name || ' half'"))
        with as_tenant(world.b), pytest.raises(TenantChangedError):
            session.execute(text("UPDATE projects SET name = name || ' other half'"))
        with as_tenant(world.a):
            with pytest.raises(TenantChangedError, match="rolled back"):
                session.commit()
            session.rollback()
    assert _names_of(pinned_engine, world.a) == world.projects[world.a]


def test_leaving_the_context_inside_a_transaction_is_refused(pinned_engine: Engine, world: World) -> None:
    factory = sessionmaker(pinned_engine)
    with factory() as session:
        with as_tenant(world.a):
            session.execute(SETTING)
        with pytest.raises(TenantChangedError, match="now \\(none\\)"):
            session.execute(SETTING)


def test_an_association_table_keyed_through_tenant_tables_is_one_too(pinned_engine: Engine) -> None:
    """Its ``tenant_id`` reaches the tenants through composite keys into two tenant tables, not directly.

    Before, a statement on it without a tenant got RLS's empty answer
    instead of :class:`NoTenantError`.
    """
    metadata = MetaData()
    projects = cast(Table, Project.__table__).to_metadata(metadata)
    tags = Table(
        "tags",
        metadata,
        Column("tenant_id", BigInteger, ForeignKey("rls_tenancy.tenants.id"), primary_key=True),
        Column("id", BigInteger, primary_key=True),
    )
    project_tags = Table(
        "project_tags",
        metadata,
        Column("tenant_id", BigInteger, nullable=False),
        Column("project_id", BigInteger, nullable=False),
        Column("tag_id", BigInteger, nullable=False),
        ForeignKeyConstraint(["tenant_id", "project_id"], [projects.c.tenant_id, projects.c.id]),
        ForeignKeyConstraint(["tenant_id", "tag_id"], [tags.c.tenant_id, tags.c.id]),
    )
    unrelated = Table("notes", metadata, Column("tenant_id", BigInteger, ForeignKey("projects.id"), nullable=False))
    assert is_tenant_table(project_tags)
    assert not is_tenant_table(unrelated)  # a key into a tenant table's id, not its tenant_id
    for statement in (select(project_tags.c.tag_id), delete(project_tags).where(project_tags.c.tag_id < 0)):
        with pinned_engine.connect() as conn, pytest.raises(NoTenantError, match="as_tenant"):
            conn.execute(statement)  # refused before it is sent: the table is not even in this database


def test_a_core_statement_on_a_tenant_table_without_a_tenant_raises_rather_than_returning_nothing(
    pinned_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """Through a Connection of a bound engine, as through a scoped Session: never a silent empty result."""
    projects = cast(Table, Project.__table__)
    statements = {
        "select": select(projects.c.name),
        "exists": select(exists().where(projects.c.id > 0)),
        "insert": insert(projects).values(name="nobody's"),
        "update": update(projects).where(projects.c.id < 0).values(name="nobody's"),
        "delete": delete(projects).where(projects.c.id < 0),
        "a tenant table in a subquery": select(Tenant.id).where(Tenant.id.in_(select(projects.c.tenant_id))),
    }
    for what, statement in statements.items():
        with pinned_engine.connect() as conn, pytest.raises(NoTenantError, match="as_tenant"):
            conn.execute(statement)
            pytest.fail(f"{what}: ran without a tenant")
        with as_tenant(world.a), pinned_engine.connect() as conn:
            conn.execute(statement)  # the same statement, with a tenant: runs
            conn.rollback()
    # A tenant_id that may be NULL marks rows every tenant shares, which its policies may show without a tenant.
    overrides = Table(
        "feature_overrides",
        MetaData(),
        Column("tenant_id", BigInteger, ForeignKey("rls_tenancy.tenants.id"), nullable=True),
        Column("feature", Text),
        schema="rls_tenancy",
    )
    with pinned_engine.connect() as conn:  # without a tenant table: runs, and RLS answers
        conn.execute(select(overrides.c.feature).where(overrides.c.tenant_id.is_(None))).all()
        assert conn.execute(select(Tenant.id)).all() == []
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0  # raw SQL names no known table

    async def run_async() -> None:
        engine = bind_engine(create_async_engine(db.app_url))
        try:
            async with engine.connect() as conn:
                with pytest.raises(NoTenantError):
                    await conn.execute(select(projects.c.name))
        finally:
            await engine.dispose()

    asyncio.run(run_async())


def test_tenant_id_never_appears_in_query_text(pinned_engine: Engine, superuser_engine: Engine, world: World) -> None:
    """pg_stat_activity shows every session's last statement to monitoring roles (and, without sql/017, its role)."""
    seen: list[str] = []

    def observe(_cursor: object, _statement: str, _parameters: object, context: ExecutionContext) -> None:
        # A dialect listener after the binding hook (which goes first), before
        # the statement is sent: the backend's last statement is the binding.
        conn = context.root_connection
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with superuser_engine.connect() as observer:
            query = text("SELECT query FROM pg_stat_activity WHERE pid = :pid")
            seen.append(observer.execute(query, {"pid": pid}).scalar_one())

    with pinned_engine.connect():  # the dialect's first-connect queries are not the subject
        pass
    event.listen(pinned_engine.dialect, "do_execute", observe)
    try:
        with as_tenant(world.a), pinned_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        event.remove(pinned_engine.dialect, "do_execute", observe)
    assert "set_config('app.current_tenant', $1, true)" in seen[0]
    assert str(world.a) not in seen[0]


def test_threads_each_see_their_own_tenant(app_engine: Engine, world: World) -> None:
    factory = sessionmaker(app_engine)
    start = threading.Barrier(6)
    failures: list[str] = []

    def work(tenant: int) -> None:
        start.wait()
        for _ in range(25):
            with as_tenant(tenant), factory() as session:
                seen = set(session.scalars(select(Project.name)))
                if seen != world.projects[tenant]:
                    failures.append(f"tenant {tenant} saw {seen}")

    run_in_threads(work, ((t,) for t in (world.a, world.b) * 3))
    assert failures == []


def test_asyncio_tasks_each_see_their_own_tenant(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=2))

        async def work(tenant: int) -> set[str]:
            seen: set[str] = set()
            with as_tenant(tenant):
                for _ in range(10):
                    async with engine.connect() as conn:
                        await asyncio.sleep(0)  # let the other task run in between
                        seen |= set((await conn.execute(select(Project.name))).scalars())
            return seen

        try:
            seen_a, seen_b = await asyncio.gather(work(world.a), work(world.b))
        finally:
            await engine.dispose()
        assert seen_a == world.projects[world.a]
        assert seen_b == world.projects[world.b]

    asyncio.run(scenario())


def test_pre_ping_pools_still_bind(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url, pool_pre_ping=True, pool_size=1, max_overflow=0))
    try:
        for tenant in (world.a, world.b, world.a):
            with as_tenant(tenant), engine.connect() as conn:
                assert set(conn.execute(select(Project.name)).scalars()) == world.projects[tenant]
    finally:
        engine.dispose()


def test_autocommit_cannot_carry_a_tenant(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url, isolation_level="AUTOCOMMIT"))
    try:
        with as_tenant(world.a), pytest.raises(TenancyError, match="AUTOCOMMIT"):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        with engine.connect() as conn:  # no tenant: nothing to bind, nothing visible
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
    finally:
        engine.dispose()


def test_bind_engine_is_idempotent_and_refuses_other_drivers(app_engine: Engine) -> None:
    assert bind_engine(app_engine) is app_engine
    with pytest.raises(TenancyError, match="psycopg"):
        bind_engine(create_engine("sqlite://"))


def test_a_dropped_connection_fails_cleanly_and_the_pool_recovers(
    pinned_engine: Engine, superuser_engine: Engine, world: World
) -> None:
    with pinned_engine.connect() as conn:
        pid = conn.execute(PID).scalar()
    with superuser_engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with as_tenant(world.a), pinned_engine.connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            conn.execute(select(Project.name))
        assert caught.value.connection_invalidated
    with as_tenant(world.a), pinned_engine.connect() as conn:
        assert conn.execute(PID).scalar() != pid
        assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]


def test_two_phase_transactions_are_bound_too(pinned_engine: Engine, world: World) -> None:
    for tenant in (world.a, world.a, world.b):
        with as_tenant(tenant), pinned_engine.connect() as conn:
            transaction = conn.begin_twophase()
            assert conn.execute(SETTING).scalar() == str(tenant)
            assert set(conn.execute(select(Project.name)).scalars()) == world.projects[tenant]
            transaction.rollback()


def test_async_autocommit_cannot_carry_a_tenant(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url, isolation_level="AUTOCOMMIT"))
        try:
            with as_tenant(world.a), pytest.raises(TenancyError, match="AUTOCOMMIT"):
                async with engine.connect() as conn:
                    await conn.execute(select(Project.name))
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_asyncio_writes_stay_in_their_tenant(db: TenancyDatabase, bypass: UnsafeBypass, world: World) -> None:
    async def scenario() -> None:
        engine = bind_engine(create_async_engine(db.app_url))

        async def write(tenant: int) -> None:
            with as_tenant(tenant):
                for n in range(5):
                    async with engine.begin() as conn:
                        await asyncio.sleep(0)
                        await conn.execute(
                            text("INSERT INTO projects (name) VALUES (:n)"), {"n": f"async-{tenant}-{n}"}
                        )

        try:
            await asyncio.gather(write(world.a), write(world.b))
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    with bypass.session(reason="test: where did the async writes land") as session:
        rows = session.execute(select(Project.tenant_id, Project.name).where(Project.name.like("async-%"))).all()
    assert {(t, n) for t, n in rows if n.startswith(f"async-{world.a}-")} == {
        (world.a, f"async-{world.a}-{n}") for n in range(5)
    }
    assert all(name.startswith(f"async-{tenant}-") for tenant, name in rows)
