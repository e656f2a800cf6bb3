"""The demo's keys lead with tenant_id, and its ids are generated always.

A primary key on id alone is unique across tenants: inserting another
tenant's id failed with "duplicate key", which told that it exists, and when
the planner was steered onto it (settings any role may SET), EXPLAIN ANALYZE
counted other tenants' rows in an id range ("Rows Removed by Filter"). With
PRIMARY KEY (tenant_id, id) no index spans tenants, so neither remains
(tests/isolation/test_side_channels.py, tests/isolation/test_leak_matrix.py), and the doctor's
exemptions for the old keys (saas_0002, saas_0003) go.

Ids stay unique across tenants in fact, without an index that says so to
every tenant: they come from identity columns, GENERATED ALWAYS, continuing
after the serial sequences they replace, and neither the app role nor the
bypass role may write the column (enable_tenant_isolation, run again here,
grants INSERT on the other columns only), so OVERRIDING SYSTEM VALUE, which
GENERATED ALWAYS lets any inserter use, is refused too; UPDATE can set an
id only to DEFAULT, a fresh value. A column added to these tables later is
insertable once op.enable_tenant_isolation runs again.

UNIQUE (tenant_id, id) duplicated the new primary key: tasks_project_fkey
points at the primary key instead. ix_<table>_tenant_id, a prefix of the
key, stays: TenantBoundMixin declares it, and autogenerate would add it back.

Revision ID: saas_0004
Revises: saas_0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "saas_0004"
down_revision = "saas_0003"
branch_labels = None
depends_on = None

EXEMPTIONS = sa.table(
    "doctor_exemptions",
    sa.column("object_name", sa.Text),
    sa.column("check_name", sa.Text),
    sa.column("reason", sa.Text),
    schema="rls_tenancy",
)
# What saas_0002 and saas_0003 recorded, put back on downgrade.
OLD_EXEMPTIONS = {
    "unique_without_tenant": "ids come from a sequence; the API never accepts a client's id on insert",
    "index_not_leading_with_tenant": (
        "ids come from a sequence every tenant draws from: the gaps in a tenant's own ids already tell how many "
        "rows the others added; EXPLAIN ANALYZE over an id range adds how many of them still exist"
    ),
}
KEYS = [("projects", "projects_pkey"), ("tasks", "tasks_pkey")]
INDEXES = ["public.projects_pkey", "public.tasks_pkey"]

# Each table's serial becomes an identity that continues where the sequence would have (or after the largest
# id, should a row carry one the sequence never gave). Under FORCE ROW LEVEL SECURITY a migrator that is not a
# superuser sees no rows; the sequence still knows every id it gave.
SERIAL_TO_IDENTITY = """
DO $do$
DECLARE
    target text;
    serial text;
    next_id bigint;
BEGIN
    FOREACH target IN ARRAY ARRAY['public.projects', 'public.tasks'] LOOP
        serial := pg_catalog.pg_get_serial_sequence(target, 'id');
        EXECUTE pg_catalog.format(
            'SELECT greatest((SELECT last_value + is_called::int FROM %s), (SELECT max(id) + 1 FROM %s))',
            serial, target)
            INTO next_id;
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN id DROP DEFAULT', target);
        EXECUTE pg_catalog.format('DROP SEQUENCE %s', serial);
        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH %s)', target, next_id);
    END LOOP;
END
$do$
"""

IDENTITY_TO_SERIAL = """
DO $do$
DECLARE
    target text;
    identity text;
    serial text;
    next_id bigint;
BEGIN
    FOREACH target IN ARRAY ARRAY['public.projects', 'public.tasks'] LOOP
        identity := pg_catalog.pg_get_serial_sequence(target, 'id');
        serial := target || '_id_seq';
        EXECUTE pg_catalog.format(
            'SELECT greatest((SELECT last_value + is_called::int FROM %s), (SELECT max(id) + 1 FROM %s))',
            identity, target)
            INTO next_id;
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN id DROP IDENTITY', target);
        EXECUTE pg_catalog.format('CREATE SEQUENCE %s AS integer START WITH %s', serial, next_id);
        EXECUTE pg_catalog.format('ALTER SEQUENCE %s OWNER TO %I', serial, rls_tenancy.role_name('owner'));
        EXECUTE pg_catalog.format('ALTER SEQUENCE %s OWNED BY %s.id', serial, target);
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN id SET DEFAULT nextval(%L::regclass)', target, serial);
        PERFORM rls_tenancy.grant_sequence_usage(target::regclass, rls_tenancy.role_name('app'),
                                                 rls_tenancy.role_name('bypass'));
    END LOOP;
END
$do$
"""


# INSERT on every column but id, for the app and bypass roles (a table-wide REVOKE takes column grants too).
def upgrade() -> None:
    op.drop_constraint("tasks_project_fkey", "tasks", type_="foreignkey")
    for table, key in KEYS:
        op.drop_constraint(key, table, type_="primary")
        op.create_primary_key(key, table, ["tenant_id", "id"])
    op.drop_constraint("projects_tenant_id_id_key", "projects", type_="unique")
    op.create_foreign_key("tasks_project_fkey", "tasks", "projects", ["tenant_id", "project_id"], ["tenant_id", "id"])
    op.execute(SERIAL_TO_IDENTITY)
    for table, _key in KEYS:  # again: now INSERT on every column but the generated-always id
        op.enable_tenant_isolation(table)
    op.execute(EXEMPTIONS.delete().where(EXEMPTIONS.c.object_name.in_(INDEXES)))


def downgrade() -> None:
    op.bulk_insert(
        EXEMPTIONS,
        [
            {"object_name": index, "check_name": check, "reason": reason}
            for check, reason in OLD_EXEMPTIONS.items()
            for index in INDEXES
        ],
    )
    op.execute(IDENTITY_TO_SERIAL)
    for table, _key in KEYS:  # again: INSERT on the table, its ids serial once more
        op.enable_tenant_isolation(table)
    op.drop_constraint("tasks_project_fkey", "tasks", type_="foreignkey")
    op.create_unique_constraint("projects_tenant_id_id_key", "projects", ["tenant_id", "id"])
    for table, key in KEYS:
        op.drop_constraint(key, table, type_="primary")
        op.create_primary_key(key, table, ["id"])
    op.create_foreign_key("tasks_project_fkey", "tasks", "projects", ["tenant_id", "project_id"], ["tenant_id", "id"])
