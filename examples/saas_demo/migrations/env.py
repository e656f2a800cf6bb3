"""The demo app's Alembic environment: what an adopting app adds is marked."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

import rls_tenancy.schema.alembic_ops  # noqa: F401  rls_tenancy: registers op.enable_tenant_isolation
from rls_tenancy.binding import database_url
from rls_tenancy.schema import app_branch
from rls_tenancy.schema.migration_data import watch_untenanted_writes
from saas_demo.models import Base

config = context.config


# rls_tenancy: `alembic revision` puts new revisions on our branch, not the library's.
BRANCH = app_branch("saas_demo")


def _run(connection: Connection) -> None:
    # rls_tenancy: warn about data migrations that silently change nothing under FORCE.
    watch_untenanted_writes(connection)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        transactional_ddl=True,
        process_revision_directives=BRANCH,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    if context.is_offline_mode():  # --sql: render for review, no database needed
        context.configure(
            dialect_name="postgresql",
            target_metadata=Base.metadata,
            literal_binds=True,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = database_url(context.get_x_argument(as_dictionary=True).get("url"))
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


main()
