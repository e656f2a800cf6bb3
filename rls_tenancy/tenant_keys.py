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

Alembic's autogenerate renders both as ordinary constraints. For tables
made elsewhere, ``op.add_tenant_foreign_key(...)`` (``rls_tenancy.alembic_ops``)
and the SQL function ``rls_tenancy.add_tenant_foreign_key(...)`` do the same.
"""

from __future__ import annotations

from sqlalchemy import ForeignKeyConstraint, UniqueConstraint


def tenant_key(table: str, column: str = "id", *, name: str | None = None) -> UniqueConstraint:
    """``UNIQUE (tenant_id, <column>)`` on ``table``: what a tenant foreign key points at."""
    return UniqueConstraint("tenant_id", column, name=name or f"{table}_tenant_id_{column}_key")


def tenant_foreign_key(
    column: str,
    referent: str,
    referent_column: str = "id",
    *,
    name: str | None = None,
    ondelete: str | None = None,
) -> ForeignKeyConstraint:
    """``FOREIGN KEY (tenant_id, <column>) REFERENCES <referent> (tenant_id, <referent_column>)``.

    ``referent`` is a table name (``"schema.table"`` for another schema);
    it needs :func:`tenant_key` on ``referent_column``.
    """
    return ForeignKeyConstraint(
        ["tenant_id", column],
        [f"{referent}.tenant_id", f"{referent}.{referent_column}"],
        name=name,
        ondelete=ondelete,
    )
