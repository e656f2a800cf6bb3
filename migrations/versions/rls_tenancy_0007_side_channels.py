"""Side channels: PUBLIC's signalling and large-object functions taken back, and the doctor reports the rest.

Runs sql/014_side_channels.sql, which revokes from PUBLIC, in this database,
pg_cancel_backend(), pg_terminate_backend() (kept for pg_signal_backend) and
the functions that create large objects; and sql/012_doctor.sql again
(idempotent), whose findings() now also reports indexes that do not lead
with tenant_id, the app role's TEMPORARY privilege, role and database
defaults that apply to it, exclusion constraints across tenants, and those
functions if they come back. The downgrade runs
sql/uninstall_side_channels.sql (PostgreSQL's defaults again); the doctor's
new checks stay, as they are as valid under rls_tenancy_0006.

Revision ID: rls_tenancy_0007
Revises: rls_tenancy_0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0007"
down_revision = "rls_tenancy_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("012_doctor.sql", "014_side_channels.sql")


def downgrade() -> None:
    uninstall("uninstall_side_channels.sql")
