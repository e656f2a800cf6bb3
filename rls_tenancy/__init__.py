"""rls_tenancy: tenant isolation for Flask and SQLAlchemy, enforced by PostgreSQL."""

from __future__ import annotations

from importlib.metadata import version

from rls_tenancy.audit import AuditEvent, log_event, log_security_event
from rls_tenancy.binding import SETTING, USER_SETTING, ContextKey, bind_engine, driver_connection, unavailable_reason
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.context import as_tenant, current_tenant_id, current_user_id, require_tenant_id
from rls_tenancy.errors import (
    AmbiguousTenantError,
    AuthenticationError,
    ConfigurationError,
    ContextKeyError,
    InsecureRoleError,
    InvalidRequestError,
    NoTenantError,
    ObjectNotVisibleError,
    OverrideNotAllowedError,
    PermissionDeniedError,
    TenancyError,
    TenantChangedError,
    TenantMismatchError,
    UnknownFeatureError,
    UnknownTenantError,
    UsageError,
)
from rls_tenancy.identity import TokenKey, User
from rls_tenancy.orm import UNCONSTRAINED, Tenant, TenantBoundMixin, TenantQuery, scope_sessions, tenant_id_for_slug
from rls_tenancy.schema import RoleNames

__version__ = version("rls-tenancy")

__all__ = [
    "SETTING",
    "UNCONSTRAINED",
    "USER_SETTING",
    "AuditEvent",
    "AmbiguousTenantError",
    "ConfigurationError",
    "AuthenticationError",
    "ContextKey",
    "ContextKeyError",
    "InsecureRoleError",
    "InvalidRequestError",
    "NoTenantError",
    "ObjectNotVisibleError",
    "OverrideNotAllowedError",
    "PermissionDeniedError",
    "RoleNames",
    "TenancyError",
    "Tenant",
    "TenantBoundMixin",
    "TenantChangedError",
    "TenantMismatchError",
    "TenantQuery",
    "TokenKey",
    "UnknownFeatureError",
    "UnknownTenantError",
    "UnsafeBypass",
    "UsageError",
    "User",
    "as_tenant",
    "bind_engine",
    "current_tenant_id",
    "current_user_id",
    "driver_connection",
    "log_event",
    "log_security_event",
    "require_tenant_id",
    "scope_sessions",
    "tenant_id_for_slug",
    "unavailable_reason",
]
