"""Engine binding: every transaction on a bound engine carries the tenant in context.

The layer between the tenant in context (:mod:`rls_tenancy.context`) and
the policies: ``bind_engine`` sets ``app.current_tenant`` and
``app.current_user_id`` for each transaction, signs them where a
:class:`ContextKey` is given, and resets a connection's session before it
serves another tenant.
"""

from __future__ import annotations

from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.binding.driver import driver_connection
from rls_tenancy.binding.engine import SETTING, USER_SETTING, bind_engine, is_bound
from rls_tenancy.binding.unavailable import unavailable_reason
from rls_tenancy.binding.urls import database_url

__all__ = [
    "SETTING",
    "USER_SETTING",
    "ContextKey",
    "bind_engine",
    "database_url",
    "driver_connection",
    "is_bound",
    "unavailable_reason",
]
