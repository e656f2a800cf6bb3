"""A cheaper audit seal with identical hashes.

Runs sql/013_audit_seal.sql verbatim; the downgrade runs sql/009_audit.sql
again (its hash function and trigger) and sql/uninstall_audit_seal.sql.

Revision ID: rls_tenancy_0005
Revises: rls_tenancy_0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0005"
down_revision = "rls_tenancy_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("013_audit_seal.sql")


def downgrade() -> None:
    install("009_audit.sql")
    uninstall("uninstall_audit_seal.sql")
