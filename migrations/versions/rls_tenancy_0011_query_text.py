"""Another session's query text: taken back from PUBLIC, and the doctor reports it coming back.

Runs sql/017_query_text.sql, which revokes pg_stat_get_activity() and
pg_stat_get_backend_activity() from PUBLIC in this database (granted to
pg_read_all_stats): the application role no longer reads the statements of
other tenants' requests in pg_stat_activity. Then sql/012_doctor.sql again,
whose findings() now reports those functions if the application role gets
them back, and its membership of pg_read_all_stats. The downgrade runs
sql/uninstall_query_text.sql (PostgreSQL's defaults again); the doctor's
new checks stay, as they read the catalogs only.

Revision ID: rls_tenancy_0011
Revises: rls_tenancy_0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from rls_tenancy.install import install, uninstall

revision = "rls_tenancy_0011"
down_revision = "rls_tenancy_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("012_doctor.sql", "017_query_text.sql")


def downgrade() -> None:
    uninstall("uninstall_query_text.sql")
