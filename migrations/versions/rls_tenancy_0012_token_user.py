"""A token acts for the user bound when it is issued: issue_token() refuses any other.

Runs sql/018_token_user.sql, which replaces rls_tenancy.issue_token(): the
token's user must be the user bound to the transaction, so that SQL run for
one user cannot issue a token that acts as another. The library's
issue_token() binds the user it is given for that statement; deploy this
version with the migration (an older library would be refused when it
issues a token for a user other than the one bound). The downgrade runs
sql/007_tokens.sql again, which restores the definition before.

Revision ID: rls_tenancy_0012
Revises: rls_tenancy_0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from rls_tenancy.install import install

revision = "rls_tenancy_0012"
down_revision = "rls_tenancy_0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install("018_token_user.sql")


def downgrade() -> None:
    install("007_tokens.sql")
