"""Flask integration: tenant, user, scopes and language from each request."""

from __future__ import annotations

from rls_tenancy.flask.audit import log, log_security_event
from rls_tenancy.flask.converters import CONVERTERS, Int4Converter, Int8Converter
from rls_tenancy.flask.current import (
    authenticate_user,
    get_current_language,
    get_current_scopes,
    get_current_tenant,
    get_current_user,
    login,
    logout,
    require_scopes,
)
from rls_tenancy.flask.extension import Tenancy
from rls_tenancy.flask.resolvers import Resolution, Resolver
from rls_tenancy.flask.state import TenancyState, state
from rls_tenancy.identity.users import User

__all__ = [
    "CONVERTERS",
    "Int4Converter",
    "Int8Converter",
    "Resolution",
    "Resolver",
    "Tenancy",
    "TenancyState",
    "User",
    "authenticate_user",
    "get_current_language",
    "get_current_scopes",
    "get_current_tenant",
    "get_current_user",
    "log",
    "log_security_event",
    "login",
    "logout",
    "require_scopes",
    "state",
]
