"""Feature flag overrides.

Runs sql/010_features.sql verbatim; the downgrade runs
sql/uninstall_features.sql (every stored override is lost).

Revision ID: rls_tenancy_0003
Revises: rls_tenancy_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0003"
down_revision = "rls_tenancy_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("010_features.sql")


def downgrade() -> None:
    uninstall("uninstall_features.sql")
