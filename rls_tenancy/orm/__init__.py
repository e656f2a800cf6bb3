"""ORM scoping: the second wall, in front of row level security.

Models marked with :class:`TenantBoundMixin` get ``tenant_id``; sessions
given to :func:`scope_sessions` filter every statement on them by the
tenant in context and refuse to flush another tenant's objects. Keys
between tenant tables: :mod:`rls_tenancy.orm.tenant_keys`.
"""

from __future__ import annotations

from rls_tenancy.orm.mixin import TenantBoundMixin
from rls_tenancy.orm.models import TenancyBase, Tenant, tenant_id_for_slug
from rls_tenancy.orm.query import UNCONSTRAINED, TenantQuery
from rls_tenancy.orm.scoping import scope_sessions

__all__ = [
    "UNCONSTRAINED",
    "TenancyBase",
    "Tenant",
    "TenantBoundMixin",
    "TenantQuery",
    "scope_sessions",
    "tenant_id_for_slug",
]
