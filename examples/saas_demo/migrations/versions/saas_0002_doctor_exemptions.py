"""Tell the doctor why the demo's primary keys need no tenant_id (those two indexes only).

A primary key unique across tenants is an existence oracle only when a
client can choose the ids it writes; the demo's API never accepts an id on
insert (projects and tasks get theirs from a sequence), so the finding is
recorded as an exemption, with that reason, for DBAs to read.

Revision ID: saas_0002
Revises: saas_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "saas_0002"
down_revision = "saas_0001"
branch_labels = None
# The doctor's tables.
depends_on = "rls_tenancy_0001"

REASON = "ids come from a sequence; the API never accepts a client's id on insert"
EXEMPTIONS = sa.table(
    "doctor_exemptions",
    sa.column("object_name", sa.Text),
    sa.column("check_name", sa.Text),
    sa.column("reason", sa.Text),
    schema="rls_tenancy",
)


def upgrade() -> None:
    op.bulk_insert(
        EXEMPTIONS,
        [
            {"object_name": f"public.{index}", "check_name": "unique_without_tenant", "reason": REASON}
            for index in ("projects_pkey", "tasks_pkey")
        ],
    )


def downgrade() -> None:
    op.execute(
        EXEMPTIONS.delete().where(
            EXEMPTIONS.c.object_name.in_(["public.projects_pkey", "public.tasks_pkey"]),
            EXEMPTIONS.c.check_name == "unique_without_tenant",
        )
    )
