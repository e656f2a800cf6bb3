"""Install rls_tenancy: the whole specification in sql/, from roles to the signed context.

Runs every install script of sql/ (sql/001_roles.sql onwards, in order)
verbatim: see those files. They are the idempotent specification of the
current schema.

The rule for every later revision: its upgrade runs the specification again
(``install_specification()``), then a delta script of its own,
``sql/deltas/<revision>.sql``, for what re-running a specification cannot do
(dropping what is gone, moving data), never edited once released. So a
revision always does what it did when it was written, and a database at any
revision ends at the same schema as a fresh one.

Revision ID: rls_tenancy_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from rls_tenancy.schema.install import install, install_specification, uninstall

revision = "rls_tenancy_0001"
down_revision = None
branch_labels = ("rls_tenancy",)
depends_on = None


def upgrade() -> None:
    install_specification()


def downgrade() -> None:
    # Each part's uninstall script, last installed first; the signed context's
    # leaves the unsigned definitions it replaced, which the doctor's script
    # then refers to, until the doctor's own goes.
    uninstall("uninstall_library_definitions.sql")
    uninstall("uninstall_query_text.sql")
    uninstall("uninstall_signed_context.sql")
    install("004_isolation.sql", "012_doctor.sql")
    uninstall("uninstall_session_reset.sql")
    uninstall("uninstall_side_channels.sql")
    uninstall("uninstall_doctor.sql")
    uninstall("uninstall_features.sql")
    uninstall("uninstall_audit.sql")
    uninstall()
