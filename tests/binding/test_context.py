"""The tenant in context: nesting, restoring, threads, asyncio tasks, bad input."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rls_tenancy import NoTenantError, UsageError, as_tenant, current_tenant_id, require_tenant_id
from tests.conftest import run_in_threads


@dataclass
class FakeTenant:
    id: int


def test_nothing_in_context_by_default() -> None:
    assert current_tenant_id() is None
    with pytest.raises(NoTenantError, match="as_tenant"):
        require_tenant_id()


def test_nests_and_restores_exactly() -> None:
    with as_tenant(1) as outer:
        assert outer == 1
        with as_tenant(FakeTenant(2)) as inner:
            assert inner == 2 == current_tenant_id()
        assert current_tenant_id() == 1
    assert current_tenant_id() is None


def test_restores_on_exceptions() -> None:
    with as_tenant(7):
        with pytest.raises(RuntimeError), as_tenant(8):
            raise RuntimeError("boom")
        assert current_tenant_id() == 7
    assert current_tenant_id() is None


def test_works_as_a_decorator() -> None:
    @as_tenant(5)
    def job() -> int | None:
        return current_tenant_id()

    assert job() == 5
    assert current_tenant_id() is None


def test_threads_start_without_a_tenant_and_keep_their_own() -> None:
    seen: dict[str, int | None] = {}
    ready = threading.Barrier(2)

    def work(name: str, tenant: int) -> None:
        seen[f"{name}-start"] = current_tenant_id()
        with as_tenant(tenant):
            ready.wait()
            seen[name] = current_tenant_id()

    with as_tenant(99):
        run_in_threads(work, (("x", 1), ("y", 2)))
        assert current_tenant_id() == 99
    assert seen == {"x-start": None, "y-start": None, "x": 1, "y": 2}


def test_asyncio_tasks_keep_their_own() -> None:
    async def work(tenant: int) -> list[int | None]:
        seen = []
        with as_tenant(tenant):
            for _ in range(5):
                await asyncio.sleep(0)
                seen.append(current_tenant_id())
        return seen

    async def main() -> tuple[list[int | None], list[int | None], int | None]:
        a, b = await asyncio.gather(work(1), work(2))
        return a, b, current_tenant_id()

    assert asyncio.run(main()) == ([1] * 5, [2] * 5, None)


@pytest.mark.parametrize("bad", [0, -3, True, "1", 1.0, None, FakeTenant(0), object()])
def test_rejects_what_is_not_a_tenant(bad: object) -> None:
    with pytest.raises(UsageError):
        with as_tenant(bad):  # type: ignore[arg-type]
            pass
    assert current_tenant_id() is None


def test_decorates_async_functions_for_the_whole_call() -> None:
    @as_tenant(6)
    async def job() -> list[int | None]:
        seen = [current_tenant_id()]
        await asyncio.sleep(0)
        seen.append(current_tenant_id())
        return seen

    assert asyncio.run(job()) == [6, 6]
    assert current_tenant_id() is None


def test_a_plain_function_returning_deferred_work_is_refused_not_run_for_the_caller() -> None:
    """Behind a decorator of the app's that hides ``async def`` (or a function returning a generator), the body
    would run after the block, as whatever tenant the caller acts for."""

    def hides(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

        return wrapper

    seen: list[int | None] = []

    @as_tenant(6)
    @hides
    async def job() -> None:
        seen.append(current_tenant_id())

    def rows() -> Iterator[int | None]:
        yield current_tenant_id()

    async def arows() -> AsyncIterator[int | None]:
        yield current_tenant_id()

    with as_tenant(9), pytest.raises(UsageError, match="runs after the decorator's block"):
        asyncio.run(job())
    for deferred in (rows, arows):
        with as_tenant(9), pytest.raises(UsageError, match="plain function that returned"):
            as_tenant(6)(hides(deferred))()

    class Rows:  # a callable object: no __qualname__ of its own to name it by
        def __call__(self) -> Iterator[int | None]:
            return rows()

    with as_tenant(9), pytest.raises(UsageError, match="Rows object"):
        as_tenant(6)(Rows())()
    assert seen == []  # nothing ran as tenant 9


def test_one_decorated_function_in_many_threads() -> None:
    @as_tenant(3)
    def job(barrier: threading.Barrier) -> int | None:
        barrier.wait()
        return current_tenant_id()

    barrier = threading.Barrier(4)
    results: list[int | None] = []
    run_in_threads(lambda: results.append(job(barrier)), [()] * 4)
    assert results == [3, 3, 3, 3]
