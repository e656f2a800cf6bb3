"""A fresh database with the library schema installed, for one test session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import URL

from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.binding.context_key_cli import REQUIRE
from rls_tenancy.binding.signing import ENVIRONMENT, configured_key
from rls_tenancy.schema.migrate import upgrade
from rls_tenancy.schema.roles import RoleNames

#: Set (to anything but 0 or empty) to make every test database require a signed context.
SIGNED_ENVIRONMENT = "RLS_TENANCY_TEST_SIGNED"


@dataclass(frozen=True)
class TenancyDatabase:
    """Where a migrated test database is, and how each role logs in to it."""

    name: str
    roles: RoleNames
    superuser_url: URL
    app_url: URL
    bypass_url: URL


def _connect(url: URL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)


@contextmanager
def empty_database(server_url: URL, *, prefix: str = "rls_empty") -> Iterator[URL]:
    """A new, empty database on ``server_url`` (its URL), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with _connect(server_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server_url.set(database=name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def tenancy_database(
    server_url: URL,
    *,
    roles: RoleNames | None = None,
    alembic_config: Config | None = None,
    signed: bool | None = None,
) -> Iterator[TenancyDatabase]:
    """Create a database on ``server_url``, migrate it, and drop it afterwards.

    ``alembic_config`` is the application's Alembic config (with the library's
    revisions as a branch), upgraded to ``heads``; by default only the
    library schema is installed.

    By default the roles get names unique to this database (``rls_app_<hex>``
    ...), so concurrent test runs on one server do not meet; roles this
    function created are dropped with the database, others are left alone.

    ``signed`` (default: ``$RLS_TENANCY_TEST_SIGNED``) makes the database
    require a signed tenant context, with the key of
    ``$RLS_TENANCY_CONTEXT_KEY``, which is set to a fresh one when unset: every
    engine the process binds then signs with it.
    """
    suffix = secrets.token_hex(4)
    roles = roles or RoleNames(owner=f"rls_owner_{suffix}", app=f"rls_app_{suffix}", bypass=f"rls_admin_{suffix}")
    passwords = {roles.app: secrets.token_urlsafe(18), roles.bypass: secrets.token_urlsafe(18)}
    with _connect(server_url) as admin:
        existing = {row[0] for row in admin.execute("SELECT rolname FROM pg_catalog.pg_roles")}
        created = [role for role in (roles.owner, roles.app, roles.bypass) if role not in existing]
        try:
            with empty_database(server_url, prefix="rls_test") as database_url:
                upgrade(database_url, roles=roles, config=alembic_config)
                if signed if signed is not None else signing_requested():
                    require_signing(database_url)
                for role, password in passwords.items():
                    admin.execute(
                        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
                    )
                yield TenancyDatabase(
                    name=str(database_url.database),
                    roles=roles,
                    superuser_url=database_url,
                    app_url=database_url.set(username=roles.app, password=passwords[roles.app]),
                    bypass_url=database_url.set(username=roles.bypass, password=passwords[roles.bypass]),
                )
        finally:
            for role in created:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def signing_requested() -> bool:
    """Whether ``$RLS_TENANCY_TEST_SIGNED`` asks test databases to require a signed context."""
    return os.environ.get(SIGNED_ENVIRONMENT, "") not in ("", "0")


def require_signing(database_url: URL, key: ContextKey | None = None) -> None:
    """Install ``key`` and require a signed context: what ``rls-tenancy context-key install`` and ``require`` do.

    Without ``key``, the one of ``$RLS_TENANCY_CONTEXT_KEY``, which is set to
    a fresh one when unset.
    """
    if key is None:
        key = configured_key(None)
    if key is None:
        key = ContextKey.generate()
        os.environ[ENVIRONMENT] = str(key)
    with _connect(database_url) as conn:
        conn.execute("SELECT rls_tenancy.install_context_key(%s, %s)", (key.slot, key.key))
        conn.execute(REQUIRE)
