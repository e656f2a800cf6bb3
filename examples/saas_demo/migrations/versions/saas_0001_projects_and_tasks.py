"""Projects and tasks, isolated by tenant; plans, shared by all.

Revision ID: saas_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "saas_0001"
down_revision = None
branch_labels = ("saas_demo",)
# The library's schema (rls_tenancy.tenants, the isolation functions) first.
depends_on = "rls_tenancy_0001"

BOUND_TENANT = sa.text("rls_tenancy.current_tenant_id()")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False, unique=True),
    )
    op.share_table("plans")

    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.BigInteger,
            sa.ForeignKey("rls_tenancy.tenants.id"),
            nullable=False,
            server_default=BOUND_TENANT,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.UniqueConstraint("tenant_id", "id", name="projects_tenant_id_id_key"),
        sa.CheckConstraint("status IN ('active', 'archived', 'invisible')", name="projects_status_check"),
    )
    op.create_index("ix_projects_tenant_id", "projects", ["tenant_id"])
    op.enable_tenant_isolation("projects")

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.BigInteger,
            sa.ForeignKey("rls_tenancy.tenants.id"),
            nullable=False,
            server_default=BOUND_TENANT,
        ),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"], name="tasks_project_fkey"
        ),
    )
    op.create_index("ix_tasks_tenant_id", "tasks", ["tenant_id"])
    op.enable_tenant_isolation("tasks")


def downgrade() -> None:
    op.disable_tenant_isolation("tasks")
    op.drop_table("tasks")
    op.disable_tenant_isolation("projects")
    op.drop_table("projects")
    op.unshare_table("plans")
    op.drop_table("plans")
