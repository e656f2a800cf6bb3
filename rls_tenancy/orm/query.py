"""The seed's legacy spelling of the unsafe escape hatch.

``Project.query.tenant_unconstrained_unsafe()`` (Flask-SQLAlchemy) or
``session.query(Project).tenant_unconstrained_unsafe()`` lifts the ORM
tenant filter. It never lifts row level security: the database still shows
only the bound tenant's rows. For 2.0-style statements use the execution
option of the same name.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Self, TypeVar

from sqlalchemy.orm import Query

#: Execution option that lifts the ORM tenant filter (not RLS), e.g.
#: ``select(Project).execution_options(tenant_unconstrained_unsafe=True)``.
UNCONSTRAINED = "tenant_unconstrained_unsafe"

_T = TypeVar("_T")


class TenantQuery(Query[_T]):
    """A :class:`~sqlalchemy.orm.Query` with the seed's escape hatch."""

    def tenant_unconstrained_unsafe(self) -> Self:
        """This query without the ORM tenant filter; RLS still applies."""
        return self.execution_options(**{UNCONSTRAINED: True})


@cache  # one class per base: Model.query asks on every access
def tenant_query_class(base: type[Query[Any]]) -> type[TenantQuery[Any]]:
    """``base`` with the escape hatch: a session's own ``query_cls`` (Flask-SQLAlchemy's) keeps its methods."""
    if issubclass(base, TenantQuery):
        return base
    return type(f"Tenant{base.__name__}", (TenantQuery, base), {"__module__": __name__})
