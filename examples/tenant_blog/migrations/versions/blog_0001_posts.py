"""posts, isolated by tenant

Written by `alembic revision --autogenerate -m posts --rev-id blog_0001`,
unchanged.

Revision ID: blog_0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "blog_0001"
down_revision = None
branch_labels = ("tenant_blog",)  # app_branch("tenant_blog") starts the blog's own branch here
depends_on = "rls_tenancy_0001"  # the library's schema (tenants, users, the isolation functions) first


# tutorial: upgrade
def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger(), server_default=sa.text("rls_tenancy.current_tenant_id()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "author_id"],
            ["rls_tenancy.users.tenant_id", "rls_tenancy.users.id"],
            name="posts_author_fkey",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["rls_tenancy.tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="posts_pkey"),
    )
    op.create_index(op.f("ix_posts_tenant_id"), "posts", ["tenant_id"], unique=False)
    op.enable_tenant_isolation("posts")  # written by autogenerate: FORCE row level security, the policy, grants


def downgrade() -> None:
    op.disable_tenant_isolation("posts")  # also revokes the app role's access
    op.drop_index(op.f("ix_posts_tenant_id"), table_name="posts")
    op.drop_table("posts")


# tutorial: end upgrade
