"""The tenant in context: who the current code acts for.

Lives in a :class:`contextvars.ContextVar`, so every thread and every asyncio
task has its own. Nothing set means no tenant, and the database then shows
nothing (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

from rls_tenancy.errors import NoTenantError, UsageError

_tenant_id: ContextVar[int | None] = ContextVar("rls_tenancy.tenant_id", default=None)


@runtime_checkable
class HasTenantId(Protocol):
    """Anything with an integer ``id``: a :class:`~rls_tenancy.Tenant` row."""

    @property
    def id(self) -> int: ...


TenantRef = int | HasTenantId


def _tenant_id_of(tenant: TenantRef) -> int:
    value = tenant if isinstance(tenant, int) else getattr(tenant, "id", None)
    # bool is an int; a True tenant id is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"as_tenant() needs a tenant id (int) or a Tenant with an id, got {tenant!r}")
    if value <= 0:
        raise UsageError(f"tenant ids are positive integers, got {value}")
    return value


@contextmanager
def as_tenant(tenant: TenantRef) -> Iterator[int]:
    """Act for ``tenant`` inside the block; restore what was there on exit.

    Nests, and restores the previous tenant (or none) on exceptions too.
    Usable as a decorator. Yields the tenant id.
    """
    tenant_id = _tenant_id_of(tenant)
    token = _tenant_id.set(tenant_id)
    try:
        yield tenant_id
    finally:
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
