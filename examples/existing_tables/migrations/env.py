"""The invoicing app's Alembic environment: what rls_tenancy asks for, and where the URL comes from."""

from __future__ import annotations

from alembic import context
from existing_tables.models import Base  # your models' Base
from sqlalchemy import Connection, create_engine, pool

import rls_tenancy.schema.alembic_ops  # noqa: F401  registers op.enable_tenant_isolation & co.
from rls_tenancy.binding import database_url
from rls_tenancy.schema import app_branch

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        process_revision_directives=app_branch("invoicing"),  # new revisions on your branch
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # 1. A connection handed over (the pytest plugin, rls_tenancy.schema.migrate.upgrade()) comes first:
    #    no environment variable may send that migration to another database.
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run(given)
        return
    # 2. `alembic -x url=...`, else 3. $DATABASE_URL (database_url() makes either a psycopg 3 URL).
    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = create_engine(database_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    # `alembic upgrade heads --sql`: the SQL for review, written without a database.
    context.configure(dialect_name="postgresql", target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
