"""The driver under a bound Connection is held to the binding too.

SQLAlchemy's statements pass the binding's check: a tenant changed inside a
transaction raises :class:`~rls_tenancy.TenantChangedError`. Code that takes
the psycopg connection itself (``conn.connection.driver_connection``) goes
past SQLAlchemy, and would run under the binding of the tenant the
transaction began with. On a bound connection psycopg makes its cursors from
subclasses that run the same check first, so such a statement (a ``COPY``,
say) raises instead. Only libpq itself (``pgconn``) is below it.

The check costs about a microsecond per statement; SQLAlchemy's statements
pass it too, just after the binding's own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import psycopg

from rls_tenancy.context import acting
from rls_tenancy.errors import TenantChangedError

#: What a bound connection's open SQLAlchemy transaction is bound to, or :data:`UNBOUND`.
TenantOf = Callable[[], object]
UNBOUND = object()
_tenant_of: weakref.WeakKeyDictionary[Any, TenantOf] = weakref.WeakKeyDictionary()


def guard(driver: Any, tenant_of: TenantOf) -> None:
    """Make ``driver``'s cursors (a psycopg connection's) check the tenant before each statement.

    ``tenant_of`` says which tenant the transaction open on it is bound to,
    as the binding knows it: a transaction the driver began on its own is
    bound to nobody, and checks nothing. Idempotent.
    """
    _tenant_of[driver] = tenant_of
    driver.cursor_factory = _guarded(driver.cursor_factory)
    driver.server_cursor_factory = _guarded(driver.server_cursor_factory)


def _check(driver: Any) -> None:
    tenant_of = _tenant_of.get(driver)
    tenant = UNBOUND if tenant_of is None else tenant_of()
    if tenant is not UNBOUND and tenant != acting()[0]:
        raise TenantChangedError(
            f"this connection's transaction is bound to tenant {'(none)' if tenant is None else tenant} "
            f"but the tenant in context is now {acting()[0] or '(none)'}; commit or roll back before "
            "switching tenants, also for statements sent through the driver"
        )


#: One subclass per cursor class, however many connections use it.
_subclasses: dict[type[Any], type[Any]] = {}


def _guarded(cursor_class: type[Any]) -> type[Any]:
    if getattr(cursor_class, "_rls_tenancy_guarded", False):
        return cursor_class
    found = _subclasses.get(cursor_class)
    if found is None:
        is_async = issubclass(cursor_class, psycopg.AsyncCursor | psycopg.AsyncServerCursor)
        mixin = _AsyncGuard if is_async else _Guard
        found = _subclasses[cursor_class] = type(cursor_class.__name__, (mixin, cursor_class), {})
    return found


class _Checked:
    """What sync and asyncio cursors share: ``copy`` and ``stream`` return before they send anything."""

    _rls_tenancy_guarded = True
    connection: Any

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return super().copy(*args, **kwargs)  # type: ignore[misc]

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return super().stream(*args, **kwargs)  # type: ignore[misc]


class _Guard(_Checked):
    """Mixed in before a sync cursor class."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return super().execute(*args, **kwargs)  # type: ignore[misc]

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return super().executemany(*args, **kwargs)  # type: ignore[misc]


class _AsyncGuard(_Checked):
    """Mixed in before an asyncio cursor class."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return await super().execute(*args, **kwargs)  # type: ignore[misc]

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        _check(self.connection)
        return await super().executemany(*args, **kwargs)  # type: ignore[misc]
