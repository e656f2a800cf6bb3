"""A bound engine's QueuePool hands an idle connection back to the tenant it last served.

What it saves is the session reset a change of tenant costs; what a
connection may do does not change (tests/binding/test_session_reset.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World

PID = text("SELECT pg_backend_pid()")


@pytest.fixture(params=[False, True], ids=["fifo", "lifo"])
def two_connections(request: pytest.FixtureRequest, db: TenancyDatabase) -> Iterator[Engine]:
    engine = bind_engine(create_engine(db.app_url, pool_size=2, max_overflow=0, pool_use_lifo=request.param))
    yield engine
    engine.dispose()


def _served(engine: Engine, world: World) -> dict[int, int]:
    """A's and B's transactions at once, on the pool's two connections: their backend pids.

    A's connection is returned last, so the pool's own order (oldest first,
    or newest first) would hand A's connection to B in one of the two
    orders, B's to A in the other.
    """
    pids = {}
    with as_tenant(world.a), engine.connect() as first:
        pids[world.a] = first.execute(PID).scalar_one()
        with as_tenant(world.b), engine.connect() as second:
            pids[world.b] = second.execute(PID).scalar_one()
            second.commit()
        first.commit()
    return pids


def _idle(engine: Engine) -> int:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedin()


def _pid_for(engine: Engine, tenant: int) -> int:
    with as_tenant(tenant), engine.connect() as conn:
        return int(conn.execute(PID).scalar_one())


def test_each_tenant_gets_back_the_connection_it_last_used(two_connections: Engine, world: World) -> None:
    pids = _served(two_connections, world)
    assert _pid_for(two_connections, world.a) == pids[world.a]
    assert _pid_for(two_connections, world.b) == pids[world.b]
    assert _pid_for(two_connections, world.b) == pids[world.b]
    assert _pid_for(two_connections, world.a) == pids[world.a]


def test_a_tenant_no_connection_served_takes_the_one_the_pool_would_have(two_connections: Engine, world: World) -> None:
    pids = _served(two_connections, world)
    lifo = two_connections.pool._pool.use_lifo  # type: ignore[attr-defined]
    expected = pids[world.a] if lifo else pids[world.b]  # A's was returned last
    with two_connections.connect() as conn:  # no tenant
        assert conn.execute(PID).scalar_one() == expected
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() == 0


def test_one_request_at_a_time_opens_a_connection_per_tenant_up_to_the_pool_size(
    two_connections: Engine, world: World
) -> None:
    """Rather than reset the only idle connection, a pool below its size opens another; at its size, it reuses."""
    first = _pid_for(two_connections, world.a)
    second = _pid_for(two_connections, world.b)
    assert second != first
    assert [_pid_for(two_connections, tenant) for tenant in (world.a, world.b, world.a)] == [first, second, first]
    assert _idle(two_connections) == 2
    third = _pid_for(two_connections, 10**12 + world.a)  # a third tenant: the pool is at its size
    assert third in (first, second)
    assert _idle(two_connections) == 2


def test_affinity_survives_dispose(two_connections: Engine, world: World) -> None:
    two_connections.dispose()
    pids = _served(two_connections, world)
    assert _pid_for(two_connections, world.a) == pids[world.a]
    assert _pid_for(two_connections, world.b) == pids[world.b]


def test_the_tenant_on_a_connection_handed_back_is_still_checked(two_connections: Engine, world: World) -> None:
    """Affinity picks a connection; the binding still binds the tenant in context, whoever it served."""
    _served(two_connections, world)
    for tenant in (world.a, world.b, world.a):
        with as_tenant(tenant), two_connections.connect() as conn:
            assert set(conn.execute(text("SELECT name FROM projects")).scalars()) == world.projects[tenant]


@pytest.mark.parametrize("pool", [NullPool, type("MyQueuePool", (QueuePool,), {})])
def test_other_pools_keep_their_own_order(db: TenancyDatabase, pool: type) -> None:
    engine = bind_engine(create_engine(db.app_url, poolclass=pool))
    try:
        assert type(engine.pool) is pool
        if isinstance(engine.pool, QueuePool):
            assert type(engine.pool._pool) is sqla_queue.Queue  # noqa: SLF001
    finally:
        engine.dispose()


def test_threads_sharing_the_pool_each_see_their_own_tenant_and_stay_within_its_limits(
    db: TenancyDatabase, world: World, superuser_engine: Engine
) -> None:
    """Eight threads, two tenants and none, a pool of three plus one overflow: rows, and the pool's limits, hold."""
    name = "affinity-threads"
    engine = bind_engine(
        create_engine(db.app_url, pool_size=3, max_overflow=1, pool_timeout=30, connect_args={"application_name": name})
    )
    sessions = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    most: list[int] = []
    wrong: list[str] = []

    def work(number: int) -> None:
        for turn in range(60):
            tenant = (world.a, world.b, None)[(number + turn) % 3]
            with as_tenant(tenant) if tenant is not None else _no_tenant(), engine.connect() as conn:
                names = set(conn.execute(text("SELECT name FROM projects")).scalars())
                with superuser_engine.connect() as monitor:  # the app role may not list sessions (sql/017)
                    most.append(int(monitor.execute(sessions, {"name": name}).scalar_one()))
                if names != (world.projects[tenant] if tenant is not None else set()):
                    wrong.append(f"{tenant}: {sorted(names)}")

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
        assert wrong == []
        assert max(most) <= 4  # pool_size + max_overflow: opening for a tenant never passes them
        queue_pool = engine.pool
        assert isinstance(queue_pool, QueuePool)
        assert queue_pool.checkedout() == 0 and queue_pool.checkedin() <= 3
    finally:
        engine.dispose()


class _no_tenant:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None
