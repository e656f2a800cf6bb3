"""Running the shipped SQL from Alembic migrations, verbatim.

The scripts in ``sql/`` are the single source of truth: migrations execute
them unchanged (online through the driver's simple query protocol; offline
copied into the ``--sql`` output), after setting the role-name settings the
scripts read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op
from psycopg import sql
from sqlalchemy import text as sa_text

from rls_tenancy.schema._resources import UNINSTALL_SCRIPT, install_scripts, sql_script
from rls_tenancy.schema.roles import RoleNames

#: ``Config.attributes`` key through which a program passes :class:`RoleNames`.
ROLES_ATTRIBUTE = "rls_tenancy.roles"


def role_names() -> RoleNames:
    """Role names for this run: from the Alembic config or the context's options, else the environment."""
    context = op.get_context()
    given = context.config
    names = given.attributes.get(ROLES_ATTRIBUTE) if given is not None else context.opts.get(ROLES_ATTRIBUTE)
    return names if isinstance(names, RoleNames) else RoleNames.from_env()


def execute_script(text: str) -> None:
    """Run one multi-statement script exactly as written."""
    context = op.get_context()
    if context.as_sql:
        context.impl.static_output(text.rstrip() + "\n")
    else:
        op.get_bind().exec_driver_sql(text, execution_options={"no_parameters": True})


def install_specification() -> None:
    """Run the whole specification: every install script of ``sql/``, in order (idempotent).

    The library's first revision does this, and so does every later one
    before its own delta script (``sql/deltas/<revision>.sql``): the
    specification says what the schema is, a delta only what re-running it
    cannot do.
    """
    install(*install_scripts())


def install(*scripts: str) -> None:
    """Run ``scripts`` from ``sql/`` (idempotent), after setting the role names."""
    settings = sql.SQL("\n").join(
        sql.SQL("SELECT pg_catalog.set_config({}, {}, true);").format(sql.Literal(key), sql.Literal(value))
        for key, value in role_names().settings().items()
    )
    execute_script(settings.as_string(None))
    with _catalog_search_path():
        for name in scripts:
            execute_script(sql_script(name))


def uninstall(script: str = UNINSTALL_SCRIPT) -> None:
    """Run a downgrade script; the default removes the library schema (refusing while tables are isolated)."""
    with _catalog_search_path():
        execute_script(sql_script(script))


@contextmanager
def _catalog_search_path() -> Iterator[None]:
    """Run the scripts (as a superuser) with nothing but pg_catalog to resolve names in.

    The scripts qualify their calls already; this is the second belt. The
    migration's own search_path is restored afterwards. Offline (``--sql``)
    output relies on the qualified calls alone.
    """
    if op.get_context().as_sql:
        yield
        return
    bind = op.get_bind()
    previous = bind.exec_driver_sql("SELECT pg_catalog.current_setting('search_path')").scalar()
    bind.exec_driver_sql("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
    yield
    bind.execute(sa_text("SELECT pg_catalog.set_config('search_path', :path, true)"), {"path": previous})
