"""Tenant-consistent foreign keys, the coverage report and the doctor's findings.

Runs sql/011_tenant_keys.sql and sql/012_doctor.sql verbatim; the downgrade
runs sql/uninstall_doctor.sql.

Revision ID: rls_tenancy_0004
Revises: rls_tenancy_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0004"
down_revision = "rls_tenancy_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("011_tenant_keys.sql", "012_doctor.sql")


def downgrade() -> None:
    uninstall("uninstall_doctor.sql")
