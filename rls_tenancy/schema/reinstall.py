"""The library's install scripts run again at its head: what the doctor means by "install the library again".

``rls-tenancy migrate`` (and ``alembic upgrade heads``) does nothing once every
revision of the library has run, so a guard dropped, disabled or replaced by
hand since then stays so. The specification in ``sql/`` is idempotent (every
revision runs it again before its own delta), so running it again restores
each function, trigger, policy and grant it makes, and records the library's
definitions afresh, without touching a row of data, a key or the signed
context's state. It runs in one transaction, as a superuser.
"""

from __future__ import annotations

from typing import TextIO

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Connection, create_engine, pool, text

from rls_tenancy.binding.urls import database_url
from rls_tenancy.errors import UsageError
from rls_tenancy.schema.install import ROLES_ATTRIBUTE, install_specification
from rls_tenancy.schema.roles import RoleNames


def reinstall(url: str | URL | None = None, *, roles: RoleNames | None = None) -> None:
    """Run the specification again on the database at ``url`` (default ``$DATABASE_URL``), in one transaction.

    ``roles`` default to the ``RLS_TENANCY_*_ROLE`` environment variables, as
    for ``migrate``; names other than those the database recorded are refused
    by the first script, never silently re-pointed.
    """
    engine = create_engine(database_url(url), poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            reinstall_on(connection, roles=roles)
    finally:
        engine.dispose()


def reinstall_on(connection: Connection, *, roles: RoleNames | None = None) -> None:
    """:func:`reinstall` inside the caller's transaction (which commits or rolls it back)."""
    if connection.execute(text("SELECT pg_catalog.to_regnamespace('rls_tenancy') IS NULL")).scalar_one():
        raise UsageError(
            "the library is not installed in this database: install it first "
            "(rls-tenancy migrate, or alembic upgrade heads with the library's branch)"
        )
    context = MigrationContext.configure(connection, opts={ROLES_ATTRIBUTE: roles or RoleNames.from_env()})
    with Operations.context(context):
        install_specification()


def reinstall_sql(output: TextIO, *, roles: RoleNames | None = None) -> None:
    """Write the same scripts to ``output``, for a DBA to read and run with psql (``psql -1 -f``)."""
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": output, ROLES_ATTRIBUTE: roles or RoleNames.from_env()},
    )
    with Operations.context(context):
        install_specification()
