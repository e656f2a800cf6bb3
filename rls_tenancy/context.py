"""The tenant in context, and the user: who the current code acts for.

Lives in a :class:`contextvars.ContextVar`, so every thread and every asyncio
task has its own. Nothing set means no tenant, and the database then shows
nothing (fail closed). The user, when there is one, belongs to the tenant and
is set and restored with it: entering another tenant never keeps a user.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import AsyncGeneratorType, CoroutineType, FrameType, GeneratorType
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from sqlalchemy.util import greenlet_spawn

from rls_tenancy.errors import AmbiguousTenantError, NoTenantError, UsageError

Acting = tuple[int | None, int | None]  # (tenant id, user id)


class _Entry(tuple[int | None, int | None]):
    """An :data:`Acting` as one block set it, told apart from equal ones by identity.

    ``hid`` is what it hid, restored when it ends; ``token`` is how
    :func:`leave_request_tenant` finds it. ``key`` is the entry as the block
    made it: itself, or the one a relinked copy stands for (see
    :func:`_leave`). ``key.owner``: the frame of the generator whose body
    entered the block, when iteration may suspend it at a ``yield`` (the
    block is then in effect only while that frame runs); ``None`` for a
    block in effect until it ends; ``_ENDED`` once it ended in a context it
    was not entered in (in effect nowhere). ``mixed``: it or an entry it
    hides is a generator's, so what is in effect depends on the stack.
    ``home``: the task (or thread) the generator's block was entered in.
    """

    hid: Acting
    token: Token[Acting]
    key: _Entry
    owner: FrameType | None
    mixed: bool
    home: object
    serial: int  # the block's, unique in the process: see block_of()


_acting: ContextVar[Acting] = ContextVar("rls_tenancy.acting", default=(None, None))

_GENERATOR = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
# Modules that run a generator up to its first yield as a context manager:
# the block it enters is the with-body's (or the test's), as it means to be.
_DRIVERS = frozenset({"contextlib", "_pytest.fixtures", "pytest_asyncio.plugin", "anyio.pytest_plugin"})
_ENDED = sys._getframe()  # a frame that never runs again (this module's body, once imported)
_SPAWN = greenlet_spawn.__code__  # SQLAlchemy's asyncio layer runs sync code in a greenlet from here
_OWN_CALLS = 3  # how far up the library's own blocks look for their owner: a hook, the extension, one more call

#: The open blocks of generators, by their generator's frame: what a
#: generator resumed by a task or thread whose context never held its block
#: finds. Looked at only while not empty.
_open: dict[int, tuple[FrameType, dict[int, _Entry]]] = {}


def _here() -> object:
    """The asyncio task running, or else the thread: whose context this is."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        task = None
    return threading.current_thread() if task is None else task


def _opened(entry: _Entry) -> None:
    owner = entry.owner
    if owner is not None:
        entry.home = _here()
        _open.setdefault(id(owner), (owner, {}))[1][id(entry)] = entry


def _closed(key: _Entry) -> None:
    owner = key.owner
    held = None if owner is None else _open.get(id(owner))
    if held is not None:
        held[1].pop(id(key), None)
        if not held[1]:
            _open.pop(id(owner), None)


def _owner(depth: int, calls: int | None = None) -> FrameType | None:
    """The generator frame whose body, ``depth`` calls up, enters or leaves a block; ``None`` outside one.

    The nearest generator frame on the stack, however many calls up (a
    ``with`` in the body, a context manager class's ``__enter__``, the
    helpers it calls, an ``ExitStack``), past the generators contextlib or
    pytest run as context managers. A block entered and left within a call
    below a generator is in effect all along, as that generator runs all
    along; one the body's helpers leave open across a ``yield`` stays the
    generator's. The library's own blocks, which never span a ``yield``,
    look through ``calls`` calls only: walking the whole stack costs about
    0.1 µs a frame.
    """
    frame: FrameType | None = sys._getframe(depth + 1)
    while frame is not None and calls != 0:
        if frame.f_code.co_flags & _GENERATOR:
            driver = frame.f_back
            while driver is not None and driver.f_code.co_flags & _GENERATOR:  # `yield from` delegation
                driver = driver.f_back
            if driver is None or driver.f_globals.get("__name__") not in _DRIVERS:
                return frame
            frame = driver
        elif calls is not None and frame.f_globals.get("__name__") != "contextlib":
            calls -= 1  # ExitStack enters and exits for its caller
        frame = frame.f_back
    return None


_serials = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Block:
    """One ``as_tenant`` block (or one request), as who the work in it is when it acts for no user.

    Two such blocks may be two clients (two anonymous requests of a tenant),
    the transactions of one block are one client's: the session reset tells
    them apart by this. Never equal to a user id.
    """

    serial: int


def block_of(current: object) -> Block | None:
    """The block ``current`` (what :func:`acting` returned) was entered by; None outside any."""
    key = getattr(current, "key", None)
    return None if key is None else Block(key.serial)


def _enter(tenant_id: int | None, user_id: int | None, depth: int, calls: int | None = None) -> _Entry:
    """Put a new entry in effect for the code ``depth`` calls up."""
    entry = _Entry((tenant_id, user_id))
    entry.key = entry
    entry.serial = next(_serials)
    entry.hid = hid = _acting.get()
    entry.owner = _owner(depth + 1, calls)
    entry.mixed = entry.owner is not None or (isinstance(hid, _Entry) and hid.mixed)
    entry.token = _acting.set(entry)
    _opened(entry)
    return entry


def _effective() -> Acting:
    """What is in effect here, read once.

    A generator suspended at a ``yield`` inside ``with as_tenant(A)`` shares
    its caller's context, so its block's entry stays there while the caller
    runs on. The block is in effect only while the generator runs, and then
    over the blocks of the code that resumed it: the semantics PEP 568
    proposed. Among blocks in effect, the one whose generator is newest on
    the stack, then the newest entered. Without generators' blocks in the
    context, or open anywhere, the newest entry, at once.

    A generator resumed by another task or thread than the one its block was
    entered in finds the block (``_open``). A task or thread started with a
    copy of a context where a generator's block is suspended (its home's)
    cannot tell whether it was started inside the block or by the code
    iterating it between steps: :class:`AmbiguousTenantError`, unless a block
    of its own decides.
    """
    value = _acting.get()
    if not _open and not (isinstance(value, _Entry) and value.mixed):
        return value
    stack = _stack(sys._getframe())
    outside = len(stack)  # a block outside any generator is older than every running one
    best: Acting | None = None
    best_at = outside + 1
    for frame_id, (_frame, blocks) in list(_open.items()):
        at = stack.get(frame_id, -1)
        if 0 <= at < best_at:
            newest = list(blocks.values())
            if newest:
                best, best_at = newest[-1], at
    ambiguous: _Entry | None = None
    ended: list[_Entry] = []
    here: object = None
    while isinstance(value, _Entry):
        key = value.key
        owner = key.owner
        at = outside if owner is None else stack.get(id(owner), -1)  # -1: suspended, or _ENDED
        if 0 <= at < best_at:
            best, best_at = value, at
        elif at < 0:
            here = _here() if here is None else here
            if key.home is not here:
                if best is None and ambiguous is None:
                    ambiguous = key  # in effect here if this context was copied inside the block
            elif owner is _ENDED:
                ended.append(key)
        if not value.mixed:
            break
        value = value.hid
    for key in ended:  # ended elsewhere: out of its home context, so that nothing started here copies it
        _leave(lambda found, key=key: found.key is key)  # type: ignore[misc]
    if ambiguous is not None and best_at >= outside:  # nothing newer, nor a running generator's, decides
        raise AmbiguousTenantError(
            f"which tenant this code acts for is ambiguous: its task or thread was started with a copy of a "
            f"context holding a generator's `with as_tenant({ambiguous[0]})` block, either inside that block or by "
            "the code iterating the generator while it was suspended there, and the two cannot be told apart; "
            "enter `with as_tenant(...)` inside the coroutine or function started, or decorate the generator "
            "with `@as_tenant(...)` instead of a block around its yield, or close the generator first "
            "(contextlib.aclosing)"
        )
    return value if best is None else best


def _stack(frame: FrameType) -> dict[int, int]:
    """The frames of the code running here, by id, each with its depth (0 the newest).

    One stack across SQLAlchemy's asyncio greenlets, as the code would have
    without them: the sync work an ``AsyncConnection`` or ``AsyncSession``
    runs in a greenlet goes on, past its bottom, into the coroutine awaiting
    it; a driver call that coroutine awaits for the greenlet has the
    greenlet's frames below it. Otherwise a generator's block around such a
    call looked suspended on one side and bound another tenant.
    """
    stack: dict[int, int] = {}
    _walk(frame, stack)
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:
        current = greenlet.getcurrent()
        while getattr(current, "__sqlalchemy_greenlet_provider__", False) and current.parent is not None:
            current = current.parent  # suspended in greenlet_spawn(), waiting for this one
            _walk(current.gr_frame, stack)
    return stack


def _walk(frame: FrameType | None, stack: dict[int, int]) -> None:
    while frame is not None:
        stack[id(frame)] = len(stack)
        if frame.f_code is _SPAWN:  # awaiting a driver call for a greenlet suspended in await_()
            for value in list(frame.f_locals.values()):
                if getattr(value, "__sqlalchemy_greenlet_provider__", False) and value.gr_frame is not None:
                    _walk(value.gr_frame, stack)
        frame = frame.f_back


def _leave(mine: Callable[[_Entry], bool]) -> _Entry | None:
    """End the newest block in this context that ``mine`` accepts: restore what it hid; its entry's key.

    Not ``ContextVar.reset``: a generator suspended inside a block may end
    after it, in another thread or after the code around it moved on, and
    reset() then put back a stale tenant or raised ``ValueError``. Here a
    block no longer in this context changes nothing, and the blocks above
    the one ending are relinked over what it hid: the blocks of generators
    suspended in them (which resume in them) and, when a generator's block
    ends, the blocks its caller entered since. Other blocks above a plain
    one (never left) end with it.
    """
    walk = _acting.get()
    above: list[_Entry] = []
    while isinstance(walk, _Entry):
        if mine(walk):
            _closed(walk.key)
            ending_generators = walk.key.owner is not None
            rest = walk.hid
            for kept in reversed(above):
                if _generators(kept) or (ending_generators and kept.key.owner is None):
                    rest = _relinked(kept, rest)
            _acting.set(rest)
            return walk.key
        above.append(walk)
        walk = walk.hid
    return None


def _generators(entry: _Entry) -> bool:
    return entry.key.owner is not None and entry.key.owner is not _ENDED


def _relinked(entry: _Entry, hid: Acting) -> _Entry:
    """A copy of ``entry`` over ``hid``: what stands for its block in this context from now on."""
    copy = _Entry(entry)
    copy.key, copy.hid, copy.token, copy.owner = entry.key, hid, entry.token, None
    copy.mixed = entry.key.owner is not None or (isinstance(hid, _Entry) and hid.mixed)
    return copy


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


#: What a plain function may return whose body runs later, after a decorator's block.
_DEFERRED = (CoroutineType, GeneratorType, AsyncGeneratorType)


class as_tenant:  # noqa: N801 - used like a function: `with as_tenant(t):`
    """Act for ``tenant`` (and, optionally, one of its users) inside the block.

    Restores what was there on exit, on exceptions too, and nests. The user
    is what the database attributes the block's audit events to; without
    ``user`` the block acts for no user, whatever surrounded it.
    ``__enter__`` returns the tenant id. Also a decorator, for plain,
    ``async``, generator and async generator functions (each call, or each
    resumption of a generator's body, runs as the tenant); a plain function
    that returns a coroutine or generator (an ``async def`` behind another
    decorator) raises :class:`UsageError`, as its body would run after the
    block. A block around a
    ``yield`` in a generator stays the generator's: the code iterating does
    not see it between iterations. Generators run as context managers
    (``contextlib``, pytest fixtures) show it to the block they wrap.
    """

    def __init__(self, tenant: TenantRef, *, user: TenantRef | None = None) -> None:
        self.tenant_id = _id_of(tenant)
        self.user_id = None if user is None else _id_of(user, "user")
        self._entries: list[_Entry] = []

    def __enter__(self) -> int:
        self._entries.append(_enter(self.tenant_id, self.user_id, 1))
        return self.tenant_id

    def __exit__(self, *_exc: object) -> None:
        # Any of this instance's entries, by identity: one instance may be
        # entered in several threads at once, or by generators.
        ended = _leave(lambda found: any(found.key is mine for mine in self._entries))
        if ended is not None:
            self._entries = [mine for mine in self._entries if mine is not ended]
        elif self._entries:
            # Ended in a context it was never entered in (a generator closed
            # by another thread or task, or by the garbage collector): the
            # entry left behind in its own context must never act again.
            owner = _owner(1)
            for mine in self._entries:
                if owner is not None and mine.owner is owner:
                    _closed(mine)
                    mine.owner = _ENDED
            self._entries = [mine for mine in self._entries if mine.owner is not _ENDED]

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
                result = function(*args, **kwargs)
            if isinstance(result, _DEFERRED):  # its work runs after the block: under the caller's tenant
                if not isinstance(result, AsyncGeneratorType):  # never started, it needs no aclose()
                    result.close()  # not "never awaited"
                name = getattr(function, "__qualname__", None) or repr(function)
                raise UsageError(
                    f"@as_tenant({tenant_id}) decorates {name}, a plain function that returned a "
                    f"{type(result).__name__}, whose work runs after the decorator's block ended: decorate the "
                    "async def or generator function itself (under any decorator of yours, or one that keeps "
                    "inspect's marks), or enter `with as_tenant(...)` where the result is awaited or iterated"
                )
            return result

        return cast(_F, run)


class as_tenant_for_call(as_tenant):  # noqa: N801
    """:class:`as_tenant` for the library's own blocks, which never span a caller's ``yield``.

    Its owner is looked for through a few calls only (see :func:`_owner`):
    per request, the whole stack's walk would cost a few microseconds each.
    """

    def __enter__(self) -> int:
        self._entries.append(_enter(self.tenant_id, self.user_id, 1, _OWN_CALLS))
        return self.tenant_id


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


def _own_block(acting: Acting) -> _Entry:
    """``acting`` as a block of its own: each call of a decorated generator may serve another client."""
    entry = _Entry(acting)
    entry.key = entry
    entry.hid = (None, None)
    entry.token = cast(Token[Acting], None)  # no request's: leave_request_tenant never finds it
    entry.owner = None
    entry.mixed = False
    entry.home = None
    entry.serial = next(_serials)
    return entry


def _generator_as(acting: Acting, function: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # `yield from`, spelled out so that each resumption runs as the tenant (PEP 380).
        body = _Body(_own_block(acting))
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
        body = _Body(_own_block(acting))
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
        return _enter(None, None, 1, _OWN_CALLS).token
    return _enter(_id_of(tenant_id), None if user_id is None else _id_of(user_id, "user"), 1, _OWN_CALLS).token


def leave_request_tenant(token: Token[Acting]) -> None:
    """Restore what was in context before :func:`enter_request_tenant`, if its entry is still in effect here.

    Never raises: it may run in another context than the entry (a teardown).
    """
    _leave(lambda found: found.token is token)


def acting() -> Acting:
    """(tenant id, user id) in context, read once: what every statement's binding check needs."""
    return _effective()


def current_tenant_id() -> int | None:
    """The tenant id in context, or ``None``."""
    return _effective()[0]


def current_user_id() -> int | None:
    """The user id in context, or ``None``."""
    return _effective()[1]


def require_tenant_id() -> int:
    """The tenant id in context; :class:`NoTenantError` when there is none."""
    tenant_id = _effective()[0]
    if tenant_id is None:
        raise NoTenantError("no tenant in context: act for one with `with as_tenant(tenant):`")
    return tenant_id
