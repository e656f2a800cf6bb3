"""The session reset between tenants, as one function that keeps the driver's intact statements.

Runs sql/015_session_reset.sql: ``rls_tenancy.reset_session(keep)``, which
the binding calls in front of ``BEGIN`` when a connection is about to serve
another tenant. The downgrade drops it (sql/uninstall_session_reset.sql);
engines of this version then fail to reset, and so to begin, on it.

Revision ID: rls_tenancy_0008
Revises: rls_tenancy_0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0008"
down_revision = "rls_tenancy_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("015_session_reset.sql")


def downgrade() -> None:
    uninstall("uninstall_session_reset.sql")
