"""The doctor's reach: role chains, predefined roles, the owner's escape, its own inputs, rules, foreign tables.

Runs sql/012_doctor.sql again: ``findings()`` with the checks added in this
version (and ``is_tenant_conjunction()``, ``policy_is_tenant_keyed()``,
which judge per-command and narrowing policies). It reads the catalogs and
changes nothing else, so the downgrade leaves it in place: the checks of
the version before are a subset, and nothing depends on their absence.

Revision ID: rls_tenancy_0010
Revises: rls_tenancy_0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from rls_tenancy.install import install

revision = "rls_tenancy_0010"
down_revision = "rls_tenancy_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("012_doctor.sql")


def downgrade() -> None:
    """Nothing to undo: the doctor only reads the catalogs (see the module docs)."""
