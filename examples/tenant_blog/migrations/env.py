"""The blog's Alembic environment: Alembic's template, plus what rls_tenancy asks for (marked)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

# tutorial: env
import rls_tenancy.schema.alembic_ops  # noqa: F401  rls_tenancy: registers op.enable_tenant_isolation & co.
from rls_tenancy.binding import database_url
from rls_tenancy.schema import app_branch
from tenant_blog.models import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # rls_tenancy: `alembic revision` puts new revisions on branch tenant_blog, never on the library's.
        process_revision_directives=app_branch("tenant_blog"),
    )
    with context.begin_transaction():
        context.run_migrations()


# tutorial: end env


def main() -> None:
    given = context.config.attributes.get("connection")  # rls_tenancy.schema.migrate.upgrade() passes one
    if isinstance(given, Connection):
        run(given)
        return
    if context.is_offline_mode():  # `alembic upgrade heads --sql`: the SQL for review, written without a database
        context.configure(dialect_name="postgresql", target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # -x url=... or $DATABASE_URL: a superuser, since the library's first revision creates its roles.
    engine = create_engine(database_url(context.get_x_argument(as_dictionary=True).get("url")), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


main()
