"""The tenant in context, and the user: who the current code acts for.

Lives in a :class:`contextvars.ContextVar`, so every thread and every asyncio
task has its own. Nothing set means no tenant, and the database then shows
nothing (fail closed). The user, when there is one, belongs to the tenant and
is set and restored with it: entering another tenant never keeps a user.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextvars import ContextVar, Token
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from rls_tenancy.errors import NoTenantError, UsageError

Acting = tuple[int | None, int | None]  # (tenant id, user id)


class _Entry(tuple[int | None, int | None]):
    """An :data:`Acting` as one entry set it, told apart from equal ones by identity.

    ``hid`` is what it hid, restored when it ends; ``token`` is how
    :func:`leave_request_tenant` finds it.
    """

    hid: Acting
    token: Token[Acting]


_acting: ContextVar[Acting] = ContextVar("rls_tenancy.acting", default=(None, None))


def _enter(tenant_id: int | None, user_id: int | None) -> _Entry:
    entry = _Entry((tenant_id, user_id))
    entry.hid = _acting.get()
    entry.token = _acting.set(entry)
    return entry


def _leave(mine: Callable[[_Entry], bool]) -> _Entry | None:
    """End the newest entry in effect in this context that ``mine`` accepts: restore what it hid.

    Not ``ContextVar.reset``: a generator suspended inside a block may end
    after it, in another thread or after the code around it moved on, and
    reset() then put back a stale tenant or raised ``ValueError``. Here an
    entry no longer in effect changes nothing, and entries above the one
    ending (generators suspended in blocks of their own) end with it.
    """
    walk = _acting.get()
    while isinstance(walk, _Entry):
        if mine(walk):
            _acting.set(walk.hid)
            return walk
        walk = walk.hid
    return None


@runtime_checkable
class HasTenantId(Protocol):
    """Anything with an integer ``id``: a :class:`~rls_tenancy.Tenant` row."""

    @property
    def id(self) -> int: ...


TenantRef = int | HasTenantId
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _id_of(thing: TenantRef, what: str = "tenant") -> int:
    value = thing if isinstance(thing, int) else getattr(thing, "id", None)
    # bool is an int; a True id is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "Tenant" if what == "tenant" else "User"
        raise UsageError(f"as_tenant() needs a {what} id (int) or a {kind} with an id, got {thing!r}")
    if not 0 < value < 2**63:
        raise UsageError(f"{what} ids are positive 64-bit integers, got {value}")
    return value


class as_tenant:  # noqa: N801 - used like a function: `with as_tenant(t):`
    """Act for ``tenant`` (and, optionally, one of its users) inside the block.

    Restores what was there on exit, on exceptions too, and nests. The user
    is what the database attributes the block's audit events to; without
    ``user`` the block acts for no user, whatever surrounded it.
    ``__enter__`` returns the tenant id. Also a decorator, for plain,
    ``async``, generator and async generator functions (each call, or each
    resumption of a generator's body, runs as the tenant). A block around a
    ``yield`` shows its tenant to the code iterating, between iterations, as
    ``contextlib.contextmanager`` needs: decorate a generator instead.
    """

    def __init__(self, tenant: TenantRef, *, user: TenantRef | None = None) -> None:
        self.tenant_id = _id_of(tenant)
        self.user_id = None if user is None else _id_of(user, "user")
        self._entries: list[_Entry] = []

    def __enter__(self) -> int:
        self._entries.append(_enter(self.tenant_id, self.user_id))
        return self.tenant_id

    def __exit__(self, *_exc: object) -> None:
        # Any of this instance's entries, by identity: one instance may be
        # entered in several threads at once, or by generators.
        ended = _leave(lambda found: any(found is mine for mine in self._entries))
        if ended is not None:
            self._entries = [mine for mine in self._entries if mine is not ended]

    def __call__(self, function: _F) -> _F:
        tenant_id, user_id = acting = (self.tenant_id, self.user_id)
        if inspect.isasyncgenfunction(function):
            return cast(_F, _async_generator_as(acting, function))
        if inspect.isgeneratorfunction(function):
            return cast(_F, _generator_as(acting, function))
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with as_tenant(tenant_id, user=user_id):
                    return await function(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with as_tenant(tenant_id, user=user_id):
                return function(*args, **kwargs)

        return cast(_F, run)


class _Body:
    """A decorated generator's own tenant, swapped in for each resumption of its body.

    The body keeps what it set between resumptions (a block of its own around
    a ``yield``), and the caller gets back exactly what it had before the
    value is handed to it: neither ever sees the other's tenant.
    """

    def __init__(self, acting: Acting) -> None:
        self.acting = acting

    def run(self, step: Callable[[], _T]) -> _T:
        caller = _acting.get()
        _acting.set(self.acting)
        try:
            return step()
        finally:
            self.acting = _acting.get()
            _acting.set(caller)

    async def run_async(self, step: Callable[[], Awaitable[_T]]) -> _T:
        caller = _acting.get()
        _acting.set(self.acting)
        try:
            return await step()
        finally:
            self.acting = _acting.get()
            _acting.set(caller)


def _generator_as(acting: Acting, function: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # `yield from`, spelled out so that each resumption runs as the tenant (PEP 380).
        body = _Body(acting)
        inner = function(*args, **kwargs)
        step: Callable[[], Any] = functools.partial(inner.send, None)
        while True:
            try:
                value = body.run(step)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield value
            except GeneratorExit:
                body.run(inner.close)
                raise
            except BaseException as error:
                step = functools.partial(inner.throw, error)
            else:
                step = functools.partial(inner.send, sent)

    return run_generator


def _async_generator_as(acting: Acting, function: Callable[..., AsyncGenerator[Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(function)
    async def run_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        body = _Body(acting)
        inner = function(*args, **kwargs)
        step: Callable[[], Awaitable[Any]] = functools.partial(inner.asend, None)
        while True:
            try:
                value = await body.run_async(step)
            except StopAsyncIteration:
                return
            try:
                sent = yield value
            except GeneratorExit:
                await body.run_async(inner.aclose)
                raise
            except BaseException as error:
                step = functools.partial(inner.athrow, error)
            else:
                step = functools.partial(inner.asend, sent)

    return run_async_generator


def enter_request_tenant(tenant_id: int | None, user_id: int | None = None) -> Token[Acting]:
    """Set the tenant (and user) of a web request; ``None`` hides any outer one. See :func:`leave_request_tenant`."""
    if tenant_id is None:
        if user_id is not None:
            raise UsageError("a user is always a user of some tenant; give the tenant too")
        return _enter(None, None).token
    return _enter(_id_of(tenant_id), None if user_id is None else _id_of(user_id, "user")).token


def leave_request_tenant(token: Token[Acting]) -> None:
    """Restore what was in context before :func:`enter_request_tenant`, if its entry is still in effect here.

    Never raises: it may run in another context than the entry (a teardown).
    """
    _leave(lambda found: found.token is token)


def acting() -> Acting:
    """(tenant id, user id) in context, read once: what every statement's binding check needs."""
    return _acting.get()


def current_tenant_id() -> int | None:
    """The tenant id in context, or ``None``."""
    return _acting.get()[0]


def current_user_id() -> int | None:
    """The user id in context, or ``None``."""
    return _acting.get()[1]


def require_tenant_id() -> int:
    """The tenant id in context; :class:`NoTenantError` when there is none."""
    tenant_id = _acting.get()[0]
    if tenant_id is None:
        raise NoTenantError("no tenant in context: act for one with `with as_tenant(tenant):`")
    return tenant_id
