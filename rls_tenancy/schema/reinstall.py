"""The library's install scripts run again at its head: what the doctor means by "install the library again".

``rls-tenancy migrate`` (and ``alembic upgrade heads``) does nothing once every
revision of the library has run, so a guard dropped, disabled or replaced by
hand since then stays so. The specification in ``sql/`` is idempotent (every
revision runs it again before its own delta), so running it again restores
each function, trigger, policy and grant it makes, and records the library's
definitions afresh, without touching a row of data, a key or the signed
context's state. It runs in one transaction, as a superuser.

The role names are the ones given, else the ``RLS_TENANCY_*_ROLE``
environment variables where any is set, else the names the database recorded
in ``rls_tenancy.roles`` at its installation (so a database installed with
its own names needs nothing repeated), else the defaults.
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

    Names other than those the database recorded are refused by the first
    script, never silently re-pointed.
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
    context = MigrationContext.configure(connection, opts={ROLES_ATTRIBUTE: _names(connection, roles)})
    with Operations.context(context):
        install_specification()


def reinstall_sql(output: TextIO, *, roles: RoleNames | None = None, url: str | URL | None = None) -> None:
    """Write the same scripts to ``output``, for a DBA to read and run with psql (``psql -1 -f``).

    With ``url`` (and no ``roles`` or environment names), the names are read
    from that database's record.
    """
    if roles is None and RoleNames.from_env_if_given() is None and url is not None:
        engine = create_engine(database_url(url), poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                roles = _names(connection, None)
        finally:
            engine.dispose()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": output, ROLES_ATTRIBUTE: roles or RoleNames.from_env()},
    )
    with Operations.context(context):
        install_specification()


def _names(connection: Connection, given: RoleNames | None) -> RoleNames:
    """The role names to install with: given, from the environment, as recorded, or the defaults."""
    chosen = given or RoleNames.from_env_if_given()
    if chosen is not None:
        return chosen
    if connection.execute(text("SELECT pg_catalog.to_regclass('rls_tenancy.roles') IS NULL")).scalar_one():
        return RoleNames()
    rows = connection.execute(_RECORDED).all()
    recorded = {str(purpose): (str(name), bool(exists)) for purpose, name, exists in rows}
    return _recorded(recorded)


_RECORDED = text(
    "SELECT r.purpose, r.role_name, EXISTS (SELECT FROM pg_catalog.pg_roles g WHERE g.rolname = r.role_name)"
    " FROM rls_tenancy.roles r"
)


def _recorded(recorded: dict[str, tuple[str, bool]]) -> RoleNames:
    if not recorded:
        return RoleNames()
    missing = sorted(name for name, exists in recorded.values() if not exists)
    if missing or set(recorded) != {"owner", "app", "bypass"}:
        raise UsageError(
            f"rls_tenancy.roles names roles that do not exist ({', '.join(missing) or 'incomplete'}): as a "
            "superuser, DELETE FROM rls_tenancy.roles, then run this again with RLS_TENANCY_OWNER_ROLE, "
            "RLS_TENANCY_APP_ROLE and RLS_TENANCY_BYPASS_ROLE set to the names the library was installed with"
        )
    return RoleNames(owner=recorded["owner"][0], app=recorded["app"][0], bypass=recorded["bypass"][0])
