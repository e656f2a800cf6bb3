"""Install rls_tenancy: roles, schema, tenants, isolation and sharing functions, users, API tokens.

Runs sql/001_roles.sql .. sql/007_tokens.sql verbatim; see those files.

Revision ID: rls_tenancy_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0001"
down_revision = None
branch_labels = ("rls_tenancy",)
depends_on = None


def upgrade() -> None:
    install(
        "001_roles.sql",
        "002_context.sql",
        "003_tenants.sql",
        "004_isolation.sql",
        "005_shared.sql",
        "006_users.sql",
        "007_tokens.sql",
    )


def downgrade() -> None:
    uninstall()
