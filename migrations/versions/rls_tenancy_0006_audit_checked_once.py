"""The audit log checks an event once and seals it in one statement.

Runs sql/009_audit.sql again (idempotent). What an event may hold was checked
three times: by log_event(), by four CHECK constraints on the INSERT, and by
the same constraints again on the seal's UPDATE. It is now checked once, by
the INSERT trigger audit_log_stamp, with log_event's errors (SQLSTATE 22023),
for every INSERT, the owner's own included; the four constraints are dropped.
The seal is one statement, and a new trigger, audit_log_content_fixed,
refuses any UPDATE naming a column other than the chain fields, so the seal
no longer evaluates a comparison of every column. Hashes are byte for byte
the same.

The downgrade puts the four constraints back (events written since satisfy
them: the trigger checks the same). The functions and triggers stay as they
are: they allow and refuse what rls_tenancy_0005's did.

Revision ID: rls_tenancy_0006
Revises: rls_tenancy_0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

from rls_tenancy.install import install

revision = "rls_tenancy_0006"
down_revision = "rls_tenancy_0005"
branch_labels = None
depends_on = None

#: The constraints rls_tenancy_0005 had, by name.
CHECKS = {
    "audit_log_action_format": "action ~ '^[a-z][a-z0-9_.:-]{0,63}$'",
    "audit_log_message_length": "pg_catalog.length(message) <= 4000",
    "audit_log_data_object": "pg_catalog.jsonb_typeof(data) = 'object'",
    "audit_log_request_id_format": "request_id ~ '^[!-~]{1,128}$'",
}


def upgrade() -> None:
    install("009_audit.sql")
    for name in CHECKS:  # absent when rls_tenancy_0002 ran today's 009_audit.sql
        op.drop_constraint(name, "audit_log", schema="rls_tenancy", if_exists=True)


def downgrade() -> None:
    for name, condition in CHECKS.items():
        op.create_check_constraint(name, "audit_log", condition, schema="rls_tenancy")
