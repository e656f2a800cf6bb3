"""The bound user and the security audit log.

Runs sql/008_current_user.sql and sql/009_audit.sql verbatim; the downgrade
runs sql/uninstall_audit.sql (every audit event is lost).

Revision ID: rls_tenancy_0002
Revises: rls_tenancy_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0002"
down_revision = "rls_tenancy_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("008_current_user.sql", "009_audit.sql")


def downgrade() -> None:
    uninstall("uninstall_audit.sql")
