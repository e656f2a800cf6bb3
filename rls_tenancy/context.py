"""The tenant in context: who the current code acts for.

Lives in a :class:`contextvars.ContextVar`, so every thread and every asyncio
task has its own. Nothing set means no tenant, and the database then shows
nothing (fail closed).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from rls_tenancy.errors import NoTenantError, UsageError

_tenant_id: ContextVar[int | None] = ContextVar("rls_tenancy.tenant_id", default=None)


@runtime_checkable
class HasTenantId(Protocol):
    """Anything with an integer ``id``: a :class:`~rls_tenancy.Tenant` row."""

    @property
    def id(self) -> int: ...


TenantRef = int | HasTenantId
_F = TypeVar("_F", bound=Callable[..., Any])


def _tenant_id_of(tenant: TenantRef) -> int:
    value = tenant if isinstance(tenant, int) else getattr(tenant, "id", None)
    # bool is an int; a True tenant id is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"as_tenant() needs a tenant id (int) or a Tenant with an id, got {tenant!r}")
    if value <= 0:
        raise UsageError(f"tenant ids are positive integers, got {value}")
    return value


class as_tenant:  # noqa: N801 - used like a function: `with as_tenant(t):`
    """Act for ``tenant`` inside the block; restore what was there on exit.

    Nests, and restores the previous tenant (or none) on exceptions too.
    ``__enter__`` returns the tenant id. Also a decorator, for plain and
    ``async`` functions alike (each call runs as the tenant).
    """

    def __init__(self, tenant: TenantRef) -> None:
        self.tenant_id = _tenant_id_of(tenant)
        self._tokens: list[Token[int | None]] = []

    def __enter__(self) -> int:
        self._tokens.append(_tenant_id.set(self.tenant_id))
        return self.tenant_id

    def __exit__(self, *_exc: object) -> None:
        _tenant_id.reset(self._tokens.pop())

    def __call__(self, function: _F) -> _F:
        tenant_id = self.tenant_id
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with as_tenant(tenant_id):
                    return await function(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with as_tenant(tenant_id):
                return function(*args, **kwargs)

        return cast(_F, run)


def enter_request_tenant(tenant_id: int | None) -> Token[int | None]:
    """Set the tenant of a web request (``None`` too, hiding any outer one); see :func:`leave_request_tenant`."""
    return _tenant_id.set(None if tenant_id is None else _tenant_id_of(tenant_id))


def leave_request_tenant(token: Token[int | None]) -> None:
    """Restore what was in context before :func:`enter_request_tenant`."""
    _tenant_id.reset(token)


def current_tenant_id() -> int | None:
    """The tenant id in context, or ``None``."""
    return _tenant_id.get()


def require_tenant_id() -> int:
    """The tenant id in context; :class:`NoTenantError` when there is none."""
    tenant_id = _tenant_id.get()
    if tenant_id is None:
        raise NoTenantError("no tenant in context: act for one with `with as_tenant(tenant):`")
    return tenant_id
