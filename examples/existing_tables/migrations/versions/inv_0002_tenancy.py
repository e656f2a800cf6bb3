"""Invoices become tenant tables: the rows already there go to one tenant, then isolation.

Revision ID: inv_0002
Revises: inv_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import rls_tenancy.schema.alembic_ops  # noqa: F401  registers op.enable_tenant_isolation & co.

revision = "inv_0002"
down_revision = "inv_0001"  # the app's existing head: app_branch("invoicing") continues it
branch_labels = ("invoicing",)
depends_on = "rls_tenancy_0001"  # the library's schema (rls_tenancy.tenants) exists first

TABLES = ("invoices", "invoice_lines")
BOUND_TENANT = sa.text("rls_tenancy.current_tenant_id()")  # TenantBoundMixin's server default

# 1. The tenant the existing rows belong to: created here, or an existing one chosen by its slug.
CREATE_TENANT = (
    "INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('legacy', 'Existing customer') ON CONFLICT (slug) DO NOTHING"
)
# 3. Backfill. Every statement is constant SQL: no value is spliced in. A child row takes its parent's tenant,
#    which stays right once the rows belong to several tenants.
BACKFILL = (
    "UPDATE invoices SET tenant_id = (SELECT id FROM rls_tenancy.tenants WHERE slug = 'legacy')",
    "UPDATE invoice_lines AS l SET tenant_id = i.tenant_id FROM invoices AS i WHERE i.id = l.invoice_id",
)
# 6. serial -> GENERATED ALWAYS AS IDENTITY, continuing where the serial's sequence was (or after the largest
#    id, should a row carry one the sequence never gave); the new sequence then takes the old one's name.
SERIAL_TO_IDENTITY = (
    "ALTER TABLE invoices ALTER COLUMN id DROP DEFAULT",
    "ALTER TABLE invoices ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME invoices_id_identity)",
    "SELECT setval('invoices_id_identity', "
    "greatest(nextval('invoices_id_seq'), (SELECT max(id) + 1 FROM invoices)), false)",
    "DROP SEQUENCE invoices_id_seq",
    "ALTER SEQUENCE invoices_id_identity RENAME TO invoices_id_seq",
    "ALTER TABLE invoice_lines ALTER COLUMN id DROP DEFAULT",
    "ALTER TABLE invoice_lines ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY "
    "(SEQUENCE NAME invoice_lines_id_identity)",
    "SELECT setval('invoice_lines_id_identity', "
    "greatest(nextval('invoice_lines_id_seq'), (SELECT max(id) + 1 FROM invoice_lines)), false)",
    "DROP SEQUENCE invoice_lines_id_seq",
    "ALTER SEQUENCE invoice_lines_id_identity RENAME TO invoice_lines_id_seq",
)


def upgrade() -> None:
    op.execute(CREATE_TENANT)  # 1
    for table in TABLES:  # 2. tenant_id, nullable while the rows have none
        op.add_column(table, sa.Column("tenant_id", sa.BigInteger, nullable=True))
    for statement in BACKFILL:  # 3
        op.execute(statement)
    for table in TABLES:  # 4. what TenantBoundMixin declares: NOT NULL, the bound tenant, a key, an index
        op.alter_column(table, "tenant_id", nullable=False, server_default=BOUND_TENANT)
        op.create_foreign_key(
            table + "_tenant_id_fkey", table, "tenants", ["tenant_id"], ["id"], referent_schema="rls_tenancy"
        )
        op.create_index("ix_" + table + "_tenant_id", table, ["tenant_id"])
    # 5. The primary keys lead with tenant_id. The old foreign key depends on invoices_pkey: it goes first.
    op.drop_constraint("invoice_lines_invoice_id_fkey", "invoice_lines", type_="foreignkey")
    for table in TABLES:
        op.drop_constraint(table + "_pkey", table, type_="primary")
        op.create_primary_key(table + "_pkey", table, ["tenant_id", "id"])
    for statement in SERIAL_TO_IDENTITY:  # 6
        op.execute(statement)
    # 7. The reference within one tenant: (tenant_id, invoice_id) -> invoices (tenant_id, id).
    op.add_tenant_foreign_key("invoice_lines", "invoice_id", "invoices", name="invoice_lines_invoice_id_fkey")
    for table in TABLES:  # 8. Row level security, last: the migration saw every row until here
        op.enable_tenant_isolation(table)


def downgrade() -> None:
    # The tables keep their rows, their identity ids and their owner (the library's owner role); the tenant stays.
    for table in reversed(TABLES):
        op.disable_tenant_isolation(table)
    op.drop_constraint("invoice_lines_invoice_id_fkey", "invoice_lines", type_="foreignkey")
    for table in TABLES:
        op.drop_constraint(table + "_pkey", table, type_="primary")
        op.create_primary_key(table + "_pkey", table, ["id"])
    op.create_foreign_key("invoice_lines_invoice_id_fkey", "invoice_lines", "invoices", ["invoice_id"], ["id"])
    for table in TABLES:
        op.drop_column(table, "tenant_id")  # its index and its key to rls_tenancy.tenants go with it
