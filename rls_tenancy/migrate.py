"""Installing the library schema from Python, and using it as a branch.

Standalone::

    from rls_tenancy.migrate import upgrade
    upgrade("postgresql://dba@host/app")

Inside an application's Alembic setup, add :func:`versions_path` to
``version_locations`` and run ``alembic upgrade heads``; the library's
revisions carry the branch label ``rls_tenancy``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, create_engine, pool

from rls_tenancy._resources import data_dir
from rls_tenancy.install import ROLES_ATTRIBUTE
from rls_tenancy.roles import RoleNames
from rls_tenancy.urls import database_url


def versions_path() -> Path:
    """The directory of the library's Alembic revisions (for ``version_locations``)."""
    return data_dir("migrations") / "versions"


def alembic_config() -> Config:
    """An Alembic config for the library's own (standalone) environment."""
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def _run(url: str | URL | None, roles: RoleNames | None, action: str, revision: str) -> None:
    config = alembic_config()
    if roles is not None:
        config.attributes[ROLES_ATTRIBUTE] = roles
    engine = create_engine(database_url(url), poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def upgrade(url: str | URL | None = None, *, roles: RoleNames | None = None, revision: str = "head") -> None:
    """Install or upgrade the library schema at ``url`` (default ``$DATABASE_URL``).

    Connect as a superuser: the first revision creates the roles. Role names
    default to ``roles`` or the ``RLS_TENANCY_*_ROLE`` environment variables.
    """
    _run(url, roles, "upgrade", revision)


def downgrade(url: str | URL | None = None, *, roles: RoleNames | None = None, revision: str = "base") -> None:
    """Downgrade the library schema; ``base`` removes it (roles stay)."""
    _run(url, roles, "downgrade", revision)
