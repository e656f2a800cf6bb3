"""The library's exceptions: one base, a few documented cases.

Catch :class:`TenancyError` to handle all of them. Each message says what
went wrong and how to fix it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm.exc import ObjectDeletedError


class TenancyError(Exception):
    """Base class of every error raised by rls_tenancy."""


class NoTenantError(TenancyError):
    """Tenant-bound data was used while no tenant is in context.

    Raised instead of silently returning nothing: without a tenant, the
    database shows no rows, which would hide the missing context.
    """


class TenantMismatchError(TenancyError):
    """An object belongs to a tenant other than the one in context."""


class ObjectNotVisibleError(TenantMismatchError, ObjectDeletedError):
    """A refresh found no row for an object, in a Session that acted for several tenants.

    The row may belong to another tenant the object was loaded for, or it
    was deleted since: the query cannot tell which without another round
    trip. Also SQLAlchemy's ``ObjectDeletedError``, so the handlers written
    for a deleted row keep catching it.
    """

    def __init__(self, state: Any, message: str) -> None:
        ObjectDeletedError.__init__(self, state, message)

    def __reduce__(self) -> Any:
        return self.__class__, (None, self.args[0])


class TenantChangedError(TenancyError):
    """The tenant in context changed while a transaction was open.

    The tenant is bound once per transaction; finish the transaction (commit
    or roll back) before switching tenants, or use a separate Session.
    """


class InsecureRoleError(TenancyError):
    """An engine logs in as a role that would make row level security inert.

    For example a superuser, a BYPASSRLS role, a member of one, or the owner
    of a protected table on the application engine; or, on the bypass engine,
    a role without BYPASSRLS.
    """


class ContextKeyError(TenancyError):
    """A bound engine's context key does not fit its database.

    The database requires a signed tenant context and the engine has no key,
    or the engine's key is not the one installed in its slot, or the
    database predates signing. Raised when a connection is made: without it,
    every query would see no rows.
    """


class UsageError(TenancyError, ValueError):
    """The library was called with an invalid argument or configuration."""


class AmbiguousTenantError(UsageError):
    """The code could act for a generator's tenant or for its caller's, and nothing tells which.

    Raised in a task or thread started with a copy of a context where a
    generator's ``with as_tenant()`` block is suspended at a ``yield``:
    started inside the block, it would act for the generator's tenant;
    started by the code iterating the generator, for its own. Enter
    ``with as_tenant(...)`` in the code started, or decorate the generator
    with ``@as_tenant(...)``.
    """


class ConfigurationError(UsageError):
    """The app's own set-up cannot keep tenants apart: its engine, its pool, how it calls the binding.

    A pool that hands one connection to two transactions, ``driver_connection()``
    on an engine that is not bound, an asyncio connection's ``copy()`` before
    its reset. The code's mistake whatever the client sent: in Flask a 500,
    its message only in the log.
    """


class AuthenticationError(TenancyError):
    """The request's credentials are missing, malformed, unknown, expired or revoked.

    ``reason`` is one of ``"missing"``, ``"malformed"``, ``"forged"`` (no
    mark of the application's token keys), ``"unknown"``, ``"expired"``,
    ``"revoked"``. In Flask: 401 with ``WWW-Authenticate``.
    ``claimed_tenant``: the tenant a well-formed token claims, unproven
    (a forged one's, for its audit event), else None.
    """

    def __init__(self, reason: str, message: str, *, claimed_tenant: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.claimed_tenant = claimed_tenant


class PermissionDeniedError(TenancyError):
    """The request is authenticated but lacks a scope. In Flask: 403."""

    def __init__(self, missing: frozenset[str]) -> None:
        super().__init__(f"this needs the scope(s) {', '.join(sorted(missing))}")
        self.missing = missing


class UnknownTenantError(TenancyError):
    """No tenant has the slug a request named (subdomain, login form). In Flask: 404."""


class InvalidRequestError(TenancyError):
    """A request's tenant-related input is malformed (a host, a slug). In Flask: 400."""


class UnknownFeatureError(UsageError):
    """No feature flag is declared with that key."""


class OverrideNotAllowedError(PermissionDeniedError):
    """The request may not set or clear this feature flag override. In Flask: 403."""

    def __init__(self, message: str, missing: frozenset[str] = frozenset({"admin"})) -> None:
        super().__init__(missing)
        self.args = (message,)
