"""A signed tenant context: key slots, the proof's check, and the switch that requires it.

Runs sql/016_signed_context.sql, after sql/007_tokens.sql and
sql/012_doctor.sql again (``authenticate_token()`` signs its own lookup,
``is_tenant_condition()`` knows the signed condition). Nothing changes behaviour until
``rls_tenancy.require_signed_context(true)``. The downgrade stops requiring
it, removes what the script installed and restores ``tenant_condition()``
(sql/004_isolation.sql) and the doctor's stub of ``signing_findings()``
(sql/012_doctor.sql).

Revision ID: rls_tenancy_0009
Revises: rls_tenancy_0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0009"
down_revision = "rls_tenancy_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("007_tokens.sql", "012_doctor.sql", "016_signed_context.sql")


def downgrade() -> None:
    uninstall("uninstall_signed_context.sql")
    install("004_isolation.sql", "012_doctor.sql")
