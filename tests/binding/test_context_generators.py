"""The tenant and generators: decorated ones run as their tenant, suspended ones put nothing back.

What a tenant is observed to be is what a transaction as the app role sees:
the names of the projects visible to it (none without a tenant).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import secrets
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from rls_tenancy import NoTenantError, as_tenant, bind_engine, current_tenant_id, require_tenant_id
from rls_tenancy import context as context_module
from rls_tenancy.errors import AmbiguousTenantError
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World

Seen = Callable[[], set[str]]


@pytest.fixture()
def seen(app_engine: Engine) -> Seen:
    """The project names a fresh transaction of the app role sees, as the code calling it acts now."""

    def names() -> set[str]:
        with app_engine.begin() as conn:
            return set(conn.execute(text("SELECT name FROM projects")).scalars())

    return names


def test_a_decorated_generator_runs_as_its_tenant_and_its_caller_keeps_its_own(world: World, seen: Seen) -> None:
    @as_tenant(world.a)
    def names_of_a() -> Iterator[set[str]]:
        for _ in range(3):
            yield seen()

    rounds = 0
    with as_tenant(world.b):
        for names in names_of_a():
            assert names == world.projects[world.a]
            assert seen() == world.projects[world.b]
            rounds += 1
    assert rounds == 3
    assert seen() == set()


def test_send_throw_and_close_reach_a_decorated_generator_as_its_tenant(world: World, seen: Seen) -> None:
    observed: list[tuple[str, set[str]]] = []

    @as_tenant(world.a)
    def conversation() -> Generator[set[str], str, None]:
        try:
            while True:
                try:
                    sent = yield seen()
                    observed.append((sent, seen()))
                except LookupError:
                    observed.append(("thrown", seen()))
        finally:
            observed.append(("closed", seen()))

    a, b = world.projects[world.a], world.projects[world.b]
    with as_tenant(world.b):
        talk = conversation()
        assert next(talk) == a
        assert seen() == b
        assert talk.send("hello") == a
        assert seen() == b
        assert talk.throw(LookupError("thrown in")) == a
        assert seen() == b
        talk.close()
        assert seen() == b
    assert observed == [("hello", a), ("thrown", a), ("closed", a)]


def test_leaving_a_decorated_generator_early_closes_it_as_its_tenant(world: World, seen: Seen) -> None:
    at_close: list[set[str]] = []

    @as_tenant(world.a)
    def names_of_a() -> Iterator[set[str]]:
        try:
            while True:
                yield seen()
        finally:
            at_close.append(seen())

    with as_tenant(world.b):
        for _names in names_of_a():
            break
        assert seen() == world.projects[world.b]
    assert at_close == [world.projects[world.a]]


def test_a_decorated_generator_keeps_the_blocks_of_its_own_across_yields(world: World, seen: Seen) -> None:
    @as_tenant(world.a)
    def both() -> Iterator[set[str]]:
        with as_tenant(world.b):
            yield seen()
            yield seen()
        yield seen()

    with as_tenant(world.b):
        assert list(both()) == [world.projects[world.b]] * 2 + [world.projects[world.a]]


def test_a_decorated_async_generator_runs_as_its_tenant_in_each_task(world: World, seen: Seen) -> None:
    observed: list[tuple[str, set[str]]] = []

    @as_tenant(world.a)
    async def names_of_a() -> AsyncGenerator[set[str], None]:
        try:
            while True:
                await asyncio.sleep(0)
                try:
                    yield seen()
                except LookupError:
                    observed.append(("thrown", seen()))
        finally:
            observed.append(("closed", seen()))

    async def caller(tenant: int) -> list[bool]:
        mine = world.projects[tenant]
        right: list[bool] = []
        with as_tenant(tenant):
            talk = names_of_a()
            for _ in range(3):
                right.append(await talk.__anext__() == world.projects[world.a])
                await asyncio.sleep(0)
                right.append(seen() == mine)
            right.append(await talk.athrow(LookupError("thrown in")) == world.projects[world.a])
            right.append(seen() == mine)
            await talk.aclose()
            right.append(seen() == mine)
        return right

    async def main() -> list[list[bool]]:
        return list(await asyncio.gather(caller(world.b), caller(world.b)))

    assert asyncio.run(main()) == [[True] * 9] * 2
    assert observed == [("thrown", world.projects[world.a])] * 2 + [("closed", world.projects[world.a])] * 2


def _suspended_in_block(tenant: int, seen: Seen) -> Generator[set[str], None, None]:
    with as_tenant(tenant):
        yield seen()
        yield seen()


def test_a_block_around_a_yield_stays_the_generators_and_the_caller_keeps_its_own(world: World, seen: Seen) -> None:
    a, b = world.projects[world.a], world.projects[world.b]
    between: list[set[str]] = []
    with as_tenant(world.b):
        for names in _suspended_in_block(world.a, seen):
            assert names == a
            between.append(seen())
        assert seen() == b
    assert between == [b, b]
    assert seen() == set()


def test_without_a_tenant_of_its_own_the_caller_has_none_between_steps(world: World, seen: Seen) -> None:
    steps = _suspended_in_block(world.a, seen)
    assert next(steps) == world.projects[world.a]
    assert current_tenant_id() is None
    assert seen() == set()
    with pytest.raises(NoTenantError):
        require_tenant_id()
    assert next(steps) == world.projects[world.a]
    steps.close()


def test_a_block_the_caller_enters_around_a_step_does_not_replace_the_generators_own(world: World, seen: Seen) -> None:
    steps = _suspended_in_block(world.a, seen)
    with as_tenant(world.b):
        assert next(steps) == world.projects[world.a]
        assert seen() == world.projects[world.b]
    with as_tenant(world.b):
        assert next(steps) == world.projects[world.a]  # resumed inside B's block: still A's
        assert seen() == world.projects[world.b]
    assert seen() == set()


def test_a_block_entered_inside_the_step_wins_over_the_generators(world: World, seen: Seen) -> None:
    def nested() -> Iterator[set[str]]:
        with as_tenant(world.a):
            yield seen()
            with as_tenant(world.b):
                yield seen()
            yield seen()

    with as_tenant(world.b):
        assert [(names, seen()) for names in nested()] == [
            (world.projects[world.a], world.projects[world.b]),
            (world.projects[world.b], world.projects[world.b]),
            (world.projects[world.a], world.projects[world.b]),
        ]


def test_yield_from_and_exitstack_blocks_stay_inside_the_generator(world: World, seen: Seen) -> None:
    def stacked() -> Iterator[set[str]]:
        with ExitStack() as stack:
            stack.enter_context(as_tenant(world.a))
            yield seen()

    def delegating() -> Iterator[set[str]]:
        yield from stacked()
        yield from _suspended_in_block(world.a, seen)

    with as_tenant(world.b):
        for names in delegating():
            assert names == world.projects[world.a]
            assert seen() == world.projects[world.b]


class _Scope:
    """A context manager class around ``as_tenant``, as apps write them."""

    def __init__(self, tenant: int) -> None:
        self.block = as_tenant(tenant)

    def __enter__(self) -> None:
        self.block.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.block.__exit__(*exc)


def test_blocks_a_generator_enters_through_context_managers_stay_inside_it(world: World, seen: Seen) -> None:
    def through_contextmanager() -> Iterator[set[str]]:
        with _acting_for(world.a):
            yield seen()

    def through_a_class() -> Iterator[set[str]]:
        with _Scope(world.a):
            yield seen()

    for steps in (through_contextmanager(), through_a_class()):
        with as_tenant(world.b):
            for names in steps:
                assert names == world.projects[world.a]
                assert seen() == world.projects[world.b]
        assert seen() == set()


class _Job:
    """A job helper as apps write them: its ``__enter__`` reaches ``as_tenant`` through helpers of its own."""

    def __init__(self, tenant: int) -> None:
        self.tenant, self.stack = tenant, ExitStack()

    def __enter__(self) -> None:
        self._set_up()

    def _set_up(self) -> None:
        self._enter_tenant()

    def _enter_tenant(self) -> None:
        self.stack.enter_context(as_tenant(self.tenant))

    def __exit__(self, *_exc: object) -> None:
        self.stack.close()


def _entered_through(calls: int, block: as_tenant) -> None:
    if calls:
        _entered_through(calls - 1, block)
    else:
        block.__enter__()


def test_a_block_entered_through_many_helpers_stays_inside_the_generator(world: World, seen: Seen) -> None:
    """Before, a block entered three calls or more below the generator's body was shown to its caller."""

    def through_a_job() -> Iterator[set[str]]:
        with _Job(world.a):
            yield seen()
            yield seen()

    def through_calls(calls: int) -> Iterator[set[str]]:
        block = as_tenant(world.a)
        _entered_through(calls, block)
        try:
            yield seen()
        finally:
            block.__exit__(None, None, None)

    async def through_calls_async(calls: int) -> AsyncGenerator[set[str], None]:
        block = as_tenant(world.a)
        _entered_through(calls, block)
        try:
            yield seen()
        finally:
            block.__exit__(None, None, None)

    async def iterate_async(calls: int) -> list[tuple[set[str], set[str]]]:
        with as_tenant(world.b):
            return [(names, seen()) async for names in through_calls_async(calls)]

    step = (world.projects[world.a], world.projects[world.b])
    for steps in (through_a_job(), *(through_calls(calls) for calls in (0, 3, 12))):
        with as_tenant(world.b):
            assert [(names, seen()) for names in steps] in ([step], [step, step])
    for calls in (0, 3, 12):
        assert asyncio.run(iterate_async(calls)) == [step]


def test_an_async_generators_block_stays_inside_it(world: World, seen: Seen) -> None:
    async def suspended() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.a):
            for _ in range(3):
                await asyncio.sleep(0)
                yield seen()

    async def caller() -> list[tuple[set[str], set[str]]]:
        with as_tenant(world.b):
            return [(names, seen()) async for names in suspended()]

    async def main() -> list[list[tuple[set[str], set[str]]]]:
        return list(await asyncio.gather(caller(), caller()))

    step = (world.projects[world.a], world.projects[world.b])
    assert asyncio.run(main()) == [[step] * 3] * 2


async def _async_names(conn: AsyncConnection) -> set[str]:
    return set((await conn.execute(text("SELECT name FROM projects"))).scalars())


@pytest.mark.parametrize("caller", [None, "b"])
def test_an_async_generators_block_reaches_an_async_engines_statements(
    db: TenancyDatabase, world: World, caller: str | None
) -> None:
    # The AsyncEngine runs the binding in a greenlet, whose stack holds no generator frame.
    marker = f"written for a {secrets.token_hex(3)}"

    async def main() -> tuple[list[set[str]], list[set[str]], set[str], set[str]]:
        engine = bind_engine(create_async_engine(db.app_url))

        async def rows_of_a() -> AsyncGenerator[set[str], None]:
            with as_tenant(world.a):
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO projects (name) VALUES (:n)"), {"n": marker})
                for _ in range(2):
                    async with engine.connect() as conn:
                        yield await _async_names(conn)

        async def between() -> set[str]:  # the caller's own statements while the generator is suspended
            async with engine.connect() as conn:
                return await _async_names(conn)

        try:
            with as_tenant(world.b) if caller else ExitStack():
                steps, others = [], []
                async for names in rows_of_a():
                    steps.append(names)
                    others.append(await between())
            with as_tenant(world.a):
                in_a = await between()
            with as_tenant(world.b):
                in_b = await between()
            return steps, others, in_a, in_b
        finally:
            await engine.dispose()

    steps, others, in_a, in_b = asyncio.run(main())
    assert steps == [world.projects[world.a] | {marker}] * 2
    assert others == [world.projects[world.b] if caller else set()] * 2
    assert marker in in_a and marker not in in_b


def test_a_generators_block_reaches_statements_inside_run_sync(db: TenancyDatabase, world: World) -> None:
    # The generator runs in the greenlet; psycopg's guarded cursor in the coroutine awaiting it.
    def names_of_a(conn: Connection) -> Iterator[str]:
        with as_tenant(world.a):
            yield from conn.execute(text("SELECT name FROM projects")).scalars().all()

    async def main() -> tuple[set[str], set[str]]:
        engine = bind_engine(create_async_engine(db.app_url))
        try:
            async with engine.connect() as conn:
                mine = await conn.run_sync(lambda sync: set(names_of_a(sync)))
                await conn.rollback()
                with as_tenant(world.b):
                    theirs = await conn.run_sync(
                        lambda sync: set(sync.execute(text("SELECT name FROM projects")).scalars())
                    )
            return mine, theirs
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == (world.projects[world.a], world.projects[world.b])


def test_an_asynccontextmanager_around_as_tenant_shows_its_tenant_to_the_body(world: World, seen: Seen) -> None:
    @asynccontextmanager
    async def acting_for(tenant: int) -> AsyncGenerator[None, None]:
        with as_tenant(tenant):
            yield

    async def main() -> tuple[set[str], set[str]]:
        with as_tenant(world.b):
            async with acting_for(world.a):
                inside = seen()
            return inside, seen()

    assert asyncio.run(main()) == (world.projects[world.a], world.projects[world.b])


def test_a_generator_closed_elsewhere_leaves_nothing_of_it_held_in_the_callers_context(
    world: World, seen: Seen
) -> None:
    class Held:
        pass

    def holding(held: Held) -> Generator[set[str], None, None]:
        with as_tenant(world.a):
            yield seen()
            yield seen()

    held = Held()
    alive = weakref.ref(held)
    steps = holding(held)
    next(steps)  # its block's entry is now in this thread's context
    del held
    closer = threading.Thread(target=steps.close)  # ends in the other thread's context
    closer.start()
    closer.join()
    del steps
    gc.collect()
    assert alive() is None
    assert current_tenant_id() is None


def test_a_generator_finalized_after_the_block_ended_leaves_no_tenant(world: World, seen: Seen) -> None:
    with as_tenant(world.b):
        kept = _suspended_in_block(world.a, seen)
        next(kept)
    assert seen() == set()
    del kept
    gc.collect()
    assert current_tenant_id() is None
    assert seen() == set()


def test_a_generator_left_by_one_job_puts_no_tenant_into_the_next(world: World, seen: Seen) -> None:
    def first_job() -> Generator[set[str], None, None]:
        with as_tenant(world.b):
            kept = _suspended_in_block(world.a, seen)
            next(kept)
        return kept

    def next_job(kept: Generator[set[str], None, None]) -> set[str]:
        del kept  # the last reference: finalized here, in the worker
        gc.collect()
        return seen()

    with ThreadPoolExecutor(max_workers=1) as worker:
        assert worker.submit(next_job, worker.submit(first_job).result()).result() == set()


def test_a_generator_closed_in_another_thread_changes_nothing_there(world: World, seen: Seen) -> None:
    with as_tenant(world.b):
        kept = _suspended_in_block(world.a, seen)
        next(kept)
    there: list[object] = []

    def close_it() -> None:
        with as_tenant(world.b):
            try:
                kept.close()
            except Exception as error:  # any error at all is the failure under test
                there.append(error)
            there.append(seen() == world.projects[world.b])
        there.append(current_tenant_id())

    thread = threading.Thread(target=close_it)
    thread.start()
    thread.join()
    assert there == [True, None]
    assert seen() == set()


def test_an_async_generator_closed_in_another_task_changes_nothing_there(world: World, seen: Seen) -> None:
    async def suspended() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.a):
            yield seen()
            yield seen()

    async def start() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.b):
            kept = suspended()
            await kept.__anext__()
        return kept

    async def close(kept: AsyncGenerator[set[str], None]) -> tuple[bool, int | None]:
        with as_tenant(world.b):
            await kept.aclose()
            right = seen() == world.projects[world.b]
        return right, current_tenant_id()

    async def main() -> tuple[bool, int | None]:
        kept = await asyncio.create_task(start())
        return await asyncio.create_task(close(kept))

    assert asyncio.run(main()) == (True, None)
    assert seen() == set()


@contextmanager
def _acting_for(tenant: int) -> Iterator[int]:
    with as_tenant(tenant):
        yield tenant


def test_a_contextmanager_around_as_tenant_still_shows_its_tenant_to_the_with_body(world: World, seen: Seen) -> None:
    with as_tenant(world.b):
        with _acting_for(world.a):
            assert seen() == world.projects[world.a]
        assert seen() == world.projects[world.b]
    assert seen() == set()


@pytest.fixture()
def acting_for_a(world: World) -> Iterator[int]:
    with as_tenant(world.a):
        yield world.a


def test_a_fixture_around_as_tenant_still_shows_its_tenant_to_the_test(
    acting_for_a: int, world: World, seen: Seen
) -> None:
    assert seen() == world.projects[acting_for_a]


async def _spawned(how: str, work: Callable[[], set[str]]) -> set[str]:
    """Run ``work`` in a task or thread started here, as each asyncio way of starting one does."""

    async def coroutine() -> set[str]:
        return work()

    if how == "create_task":
        return await asyncio.create_task(coroutine())
    if how == "gather":
        (names,) = await asyncio.gather(coroutine())
        return names
    if how == "task_group":
        try:
            async with asyncio.TaskGroup() as group:
                task = group.create_task(coroutine())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return task.result()
    if how == "wait_for":
        return await asyncio.wait_for(coroutine(), timeout=30)
    return await asyncio.to_thread(work)


SPAWNS = ["create_task", "gather", "task_group", "wait_for", "to_thread"]


@pytest.mark.parametrize("how", SPAWNS)
def test_work_started_inside_a_generators_block_never_acts_for_the_caller(world: World, seen: Seen, how: str) -> None:
    # Its context is a copy of the caller's, where the block is the generator's: it cannot act for the caller's B.
    async def per_tenant_job() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.a):
            yield await _spawned(how, seen)

    async def main() -> None:
        with as_tenant(world.b):
            async for _ in per_tenant_job():
                pass

    with pytest.raises(AmbiguousTenantError, match=r"with as_tenant\(\.\.\.\)` inside the coroutine"):
        asyncio.run(main())


def test_a_write_started_inside_a_generators_block_is_refused_not_committed_for_the_caller(
    db: TenancyDatabase, world: World, seen: Seen
) -> None:
    marker = f"meant for a {secrets.token_hex(3)}"

    async def main() -> None:
        engine = bind_engine(create_async_engine(db.app_url))

        async def write() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO projects (name) VALUES (:n)"), {"n": marker})

        async def per_tenant_job() -> AsyncGenerator[None, None]:
            with as_tenant(world.a):
                await asyncio.gather(write())
                yield

        try:
            with as_tenant(world.b):
                async for _ in per_tenant_job():
                    pass
        finally:
            await engine.dispose()

    with pytest.raises(AmbiguousTenantError):
        asyncio.run(main())
    with as_tenant(world.b):
        assert marker not in seen()
    with as_tenant(world.a):
        assert marker not in seen()


@pytest.mark.parametrize("how", SPAWNS)
def test_work_the_caller_starts_while_a_generator_is_suspended_in_a_block_never_acts_for_the_generator(
    world: World, seen: Seen, how: str
) -> None:
    async def suspended() -> AsyncGenerator[None, None]:
        with as_tenant(world.a):
            yield

    async def main() -> None:
        with as_tenant(world.b):
            async for _ in suspended():
                await _spawned(how, seen)  # a sibling: B's, but it looks like a child of A's block

    with pytest.raises(AmbiguousTenantError):
        asyncio.run(main())


@pytest.mark.parametrize("how", SPAWNS)
def test_a_decorated_generator_and_its_caller_each_pass_their_own_tenant_to_work_they_start(
    world: World, seen: Seen, how: str
) -> None:
    @as_tenant(world.a)
    async def per_tenant_job() -> AsyncGenerator[set[str], None]:
        yield await _spawned(how, seen)

    async def main() -> tuple[set[str], set[str]]:
        with as_tenant(world.b):
            async for inside in per_tenant_job():
                return inside, await _spawned(how, seen)
        raise AssertionError("no step")

    assert asyncio.run(main()) == (world.projects[world.a], world.projects[world.b])


@pytest.mark.parametrize("how", SPAWNS)
def test_a_block_of_its_own_decides_for_work_started_inside_a_generators_block(
    world: World, seen: Seen, how: str
) -> None:
    def as_a() -> set[str]:
        with as_tenant(world.a):
            return seen()

    async def per_tenant_job() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.a):
            yield await _spawned(how, as_a)

    async def main() -> list[set[str]]:
        with as_tenant(world.b):
            return [names async for names in per_tenant_job()]

    assert asyncio.run(main()) == [world.projects[world.a]]


def test_a_thread_started_with_a_copy_inside_a_sync_generators_block_never_acts_for_the_caller(
    world: World, seen: Seen
) -> None:
    def job() -> Iterator[set[str]]:
        with as_tenant(world.a):
            with ThreadPoolExecutor(max_workers=1) as worker:
                yield worker.submit(contextvars.copy_context().run, seen).result()

    with as_tenant(world.b):
        with pytest.raises(AmbiguousTenantError):
            list(job())
        assert seen() == world.projects[world.b]


def test_an_async_generators_block_stays_its_own_when_another_task_resumes_it(world: World, seen: Seen) -> None:
    async def steps() -> AsyncGenerator[set[str], None]:
        with as_tenant(world.a):
            while True:
                yield seen()

    async def main() -> tuple[set[str], set[str], set[str]]:
        shared = steps()

        async def worker() -> set[str]:
            return await anext(shared)

        first = await asyncio.create_task(worker())  # the block is entered in the worker's context
        with as_tenant(world.b):
            second = await anext(shared)  # resumed here, where the block never was
            between = seen()
        await shared.aclose()
        return first, second, between

    a, b = world.projects[world.a], world.projects[world.b]
    assert asyncio.run(main()) == (a, a, b)
    assert not context_module._open


def test_a_generators_block_stays_its_own_when_another_thread_resumes_it(world: World, seen: Seen) -> None:
    def steps() -> Generator[set[str], None, None]:
        with as_tenant(world.a):
            while True:
                yield seen()

    shared = steps()
    with ThreadPoolExecutor(max_workers=1) as worker:
        first = worker.submit(next, shared).result()
    with as_tenant(world.b):
        second = next(shared)
        assert seen() == world.projects[world.b]
    shared.close()
    assert first == second == world.projects[world.a]
    assert not context_module._open
    assert seen() == set()


def test_a_generator_closed_elsewhere_leaves_nothing_ambiguous_to_the_next_task(world: World, seen: Seen) -> None:
    kept = _suspended_in_block(world.a, seen)
    next(kept)  # suspended in the block, in this thread's context
    closer = threading.Thread(target=kept.close)
    closer.start()
    closer.join()
    assert seen() == set()  # this thread's first look drops the ended block from its context

    async def task() -> int | None:
        return current_tenant_id()

    assert asyncio.run(task()) is None
