"""Flask integration: tenant, user, scopes and language from each request.

By job: :mod:`.extension` (``Tenancy`` and its options), :mod:`.state`
(what it keeps per app and request), :mod:`.lifecycle` (the request's own
context, resolution first, teardown last), :mod:`.resolvers` (where the
tenant comes from), :mod:`.current` (the request's tenant, user, scopes,
language), :mod:`.auth` (login and logout), :mod:`.errors` (JSON answers),
:mod:`.features` (flags in views), :mod:`.streaming` (streamed bodies),
:mod:`.cli` (``flask tenancy``).
"""

from __future__ import annotations

from rls_tenancy.flask.audit import log, log_security_event
from rls_tenancy.flask.auth import authenticate_user, login, logout
from rls_tenancy.flask.converters import CONVERTERS, Int4Converter, Int8Converter
from rls_tenancy.flask.current import (
    get_current_language,
    get_current_scopes,
    get_current_tenant,
    get_current_user,
    require_scopes,
)
from rls_tenancy.flask.extension import Tenancy
from rls_tenancy.flask.features import clear_feature_override, feature_enabled, set_feature_override
from rls_tenancy.flask.resolvers import Resolution, Resolver, session_resolver, subdomain_resolver, token_resolver
from rls_tenancy.flask.state import TenancyState, state
from rls_tenancy.flask.streaming import stream_with_tenant
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
    "clear_feature_override",
    "feature_enabled",
    "get_current_language",
    "get_current_scopes",
    "get_current_tenant",
    "get_current_user",
    "log",
    "log_security_event",
    "login",
    "logout",
    "require_scopes",
    "session_resolver",
    "set_feature_override",
    "state",
    "stream_with_tenant",
    "subdomain_resolver",
    "token_resolver",
]
