"""The same checks, cheaper: tenant policies without a function to inline, a lighter audit seal.

Runs again the scripts whose definitions changed (sql/003_tenants.sql,
004_isolation.sql, 009_audit.sql, 010_features.sql, 012_doctor.sql; all
idempotent), then sql/013_tenant_condition.sql, which rewrites the
tenant_isolation policies of existing tables. What is allowed and refused is
unchanged, and audit hashes are byte for byte the same, so the downgrade
changes nothing: the new definitions are as valid under rls_tenancy_0004.

Revision ID: rls_tenancy_0005
Revises: rls_tenancy_0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from rls_tenancy.install import install

revision = "rls_tenancy_0005"
down_revision = "rls_tenancy_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install(
        "003_tenants.sql",
        "004_isolation.sql",
        "009_audit.sql",
        "010_features.sql",
        "012_doctor.sql",
        "013_tenant_condition.sql",
    )


def downgrade() -> None:
    """Nothing to undo: see the module docs."""
