"""Tenant-consistent keys: a reference from one tenant's row can only reach the same tenant's rows.

Foreign key checks ignore row level security, so a plain ``project_id``
reference would let tenant A's task point at tenant B's project (and the
error for a wrong id would tell that it exists). Referencing
``(tenant_id, id)`` instead makes the database itself refuse a
cross-tenant reference: there is no ``(A, b's id)`` row to point at.

    class Project(TenantBoundMixin, Base):
        __tablename__ = "projects"
        __table_args__ = (tenant_key("projects"),)           # UNIQUE (tenant_id, id)

    class Task(TenantBoundMixin, Base):
        __tablename__ = "tasks"
        __table_args__ = (tenant_foreign_key("project_id", "projects"),)
        project_id: Mapped[int]

The library's own ``rls_tenancy.users`` is a referent like any other
(``tenant_foreign_key("author_id", User)``, or ``"rls_tenancy.users"``):
its table lives in the library's ``MetaData``, so the constraint points at
its columns instead of at a name the application's ``MetaData`` cannot
resolve. Alembic's autogenerate renders both as ordinary constraints. For tables
made elsewhere, ``op.add_tenant_foreign_key(...)`` (``rls_tenancy.schema.alembic_ops``)
and the SQL function ``rls_tenancy.add_tenant_foreign_key(...)`` do the same.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ForeignKeyConstraint, Table, UniqueConstraint

import rls_tenancy.identity.users  # noqa: F401  (puts rls_tenancy.identity.users in the library's MetaData)
from rls_tenancy.errors import UsageError
from rls_tenancy.orm.models import TenancyBase


def tenant_key(table: str, column: str = "id", *, name: str | None = None) -> UniqueConstraint:
    """``UNIQUE (tenant_id, <column>)`` on ``table``: what a tenant foreign key points at."""
    return UniqueConstraint("tenant_id", column, name=name or f"{table}_tenant_id_{column}_key")


def tenant_foreign_key(
    column: str,
    referent: str | Table | type[Any],
    referent_column: str = "id",
    *,
    name: str | None = None,
    ondelete: str | None = None,
) -> ForeignKeyConstraint:
    """``FOREIGN KEY (tenant_id, <column>) REFERENCES <referent> (tenant_id, <referent_column>)``.

    ``referent`` is a table name (``"schema.table"`` for another schema), a
    ``Table`` or a mapped class; it needs :func:`tenant_key` on
    ``referent_column`` (``rls_tenancy.users`` has it on ``id``).
    """
    table = _table(referent)
    if table is None:
        names = [f"{referent}.tenant_id", f"{referent}.{referent_column}"]
        return ForeignKeyConstraint(["tenant_id", column], names, name=name, ondelete=ondelete)
    missing = [c for c in ("tenant_id", referent_column) if c not in table.c]
    if missing:
        raise UsageError(
            f"{table.fullname} has no column {missing[0]}: a tenant foreign key points at a tenant-bound "
            "table's (tenant_id, id); reference rls_tenancy.tenants with ForeignKey(Tenant.id), as "
            "TenantBoundMixin's tenant_id does"
        )
    columns: list[Column[Any]] = [table.c.tenant_id, table.c[referent_column]]
    return ForeignKeyConstraint(["tenant_id", column], columns, name=name, ondelete=ondelete)


def _table(referent: str | Table | type[Any]) -> Table | None:
    """The ``Table`` behind ``referent``, or ``None`` for a name the application's ``MetaData`` resolves."""
    if isinstance(referent, Table):
        return referent
    if isinstance(referent, str):
        return TenancyBase.metadata.tables.get(referent)
    table = getattr(referent, "__table__", None)
    if not isinstance(table, Table):
        raise UsageError(f"a tenant foreign key references a table name, a Table or a mapped class, not {referent!r}")
    return table
