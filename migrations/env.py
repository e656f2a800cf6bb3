"""Alembic environment that installs the rls_tenancy library schema.

Standalone: ``DATABASE_URL=postgresql://... alembic upgrade head`` (or ``-x url=...``)
(or ``rls-tenancy migrate``). It keeps its own version table,
``alembic_version_rls_tenancy``, so it never collides with an application's.

Inside an application's own Alembic setup the versions directory is used as a
branch (``rls_tenancy@head``) and this file is not involved.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

import rls_tenancy.schema.alembic_ops  # noqa: F401  (registers op.enable_tenant_isolation)
from rls_tenancy.binding.urls import database_url
from rls_tenancy.schema.migration_data import watch_untenanted_writes

VERSION_TABLE = "alembic_version_rls_tenancy"
config = context.config


def _run(connection: Connection) -> None:
    watch_untenanted_writes(connection)
    context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    if context.is_offline_mode():  # --sql: render for review, no database needed
        context.configure(
            dialect_name="postgresql", literal_binds=True, version_table=VERSION_TABLE, transactional_ddl=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = database_url(
        context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    )
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


main()
