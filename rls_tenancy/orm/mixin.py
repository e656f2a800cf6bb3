"""``TenantBoundMixin``: marks a model as belonging to one tenant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from rls_tenancy.orm.models import Tenant
from rls_tenancy.orm.query import TenantQuery, tenant_query_class

# The same default enable_tenant_isolation() installs: the bound tenant.
_BOUND_TENANT = text("rls_tenancy.current_tenant_id()")


class _QueryClass:
    """A model's ``query_class``: :class:`TenantQuery` over the query class its other bases give.

    Flask-SQLAlchemy's ``db.Model`` gives its own (``paginate()``,
    ``get_or_404()``...), which a plain ``TenantQuery`` ahead of it in the
    bases would hide from ``Model.query``.
    """

    def __get__(self, _instance: object, owner: type) -> type[TenantQuery[Any]]:
        for base in owner.__mro__:
            found = base.__dict__.get("query_class")
            if found is not None and found is not self:
                return tenant_query_class(found)
        return TenantQuery


class TenantBoundMixin:
    """Adds ``tenant_id`` and ``tenant`` to a model and puts it under scoping.

    The table still needs ``op.enable_tenant_isolation()`` in a migration:
    that is what makes PostgreSQL enforce the isolation. The ORM filter this
    mixin enables (see :func:`rls_tenancy.scope_sessions`) is a second wall.
    """

    #: Used by Flask-SQLAlchemy's ``Model.query``; harmless elsewhere.
    query_class = _QueryClass()

    @declared_attr
    def tenant_id(cls) -> Mapped[int]:
        return mapped_column(
            BigInteger,
            ForeignKey(Tenant.id),
            nullable=False,
            index=True,
            server_default=_BOUND_TENANT,
        )

    @declared_attr
    def tenant(cls) -> Mapped[Tenant]:
        # View-only: tenant_id is the single source of a row's tenant.
        return relationship(Tenant, viewonly=True)
