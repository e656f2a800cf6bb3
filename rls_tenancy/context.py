"""The tenant in context, and the user: who the current code acts for.

Lives in a :class:`contextvars.ContextVar`, so every thread and every asyncio
task has its own. Nothing set means no tenant, and the database then shows
nothing (fail closed). The user, when there is one, belongs to the tenant and
is set and restored with it: entering another tenant never keeps a user.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from rls_tenancy.errors import NoTenantError, UsageError

Acting = tuple[int | None, int | None]  # (tenant id, user id)
_acting: ContextVar[Acting] = ContextVar("rls_tenancy.acting", default=(None, None))


@runtime_checkable
class HasTenantId(Protocol):
    """Anything with an integer ``id``: a :class:`~rls_tenancy.Tenant` row."""

    @property
    def id(self) -> int: ...


TenantRef = int | HasTenantId
_F = TypeVar("_F", bound=Callable[..., Any])


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
    ``__enter__`` returns the tenant id. Also a decorator, for plain and
    ``async`` functions alike (each call runs as the tenant).
    """

    def __init__(self, tenant: TenantRef, *, user: TenantRef | None = None) -> None:
        self.tenant_id = _id_of(tenant)
        self.user_id = None if user is None else _id_of(user, "user")
        self._tokens: list[Token[Acting]] = []

    def __enter__(self) -> int:
        self._tokens.append(_acting.set((self.tenant_id, self.user_id)))
        return self.tenant_id

    def __exit__(self, *_exc: object) -> None:
        _acting.reset(self._tokens.pop())

    def __call__(self, function: _F) -> _F:
        tenant_id, user_id = self.tenant_id, self.user_id
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


def enter_request_tenant(tenant_id: int | None, user_id: int | None = None) -> Token[Acting]:
    """Set the tenant (and user) of a web request; ``None`` hides any outer one. See :func:`leave_request_tenant`."""
    if tenant_id is None:
        if user_id is not None:
            raise UsageError("a user is always a user of some tenant; give the tenant too")
        return _acting.set((None, None))
    return _acting.set((_id_of(tenant_id), None if user_id is None else _id_of(user_id, "user")))


def leave_request_tenant(token: Token[Acting]) -> None:
    """Restore what was in context before :func:`enter_request_tenant`."""
    _acting.reset(token)


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
