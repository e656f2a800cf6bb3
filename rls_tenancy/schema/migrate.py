"""Running migrations from Python: the library's own, or an app's with the library as a branch.

Standalone::

    from rls_tenancy.schema.migrate import upgrade
    upgrade("postgresql://dba@host/app")

Inside an application's Alembic setup, list ``rls_tenancy:migrations/versions``
in ``version_locations`` (or :func:`versions_path`) and run
``alembic upgrade heads``; the library's revisions carry the branch label
``rls_tenancy``. :func:`upgrade` runs such a config too, passing the role names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, create_engine, pool

from rls_tenancy.binding.urls import database_url
from rls_tenancy.schema._resources import data_dir
from rls_tenancy.schema.install import ROLES_ATTRIBUTE
from rls_tenancy.schema.roles import RoleNames


def versions_path() -> Path:
    """The directory of the library's Alembic revisions (for ``version_locations``)."""
    return data_dir("migrations") / "versions"


def alembic_config() -> Config:
    """An Alembic config for the library's own (standalone) environment."""
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def _run(url: str | URL | None, roles: RoleNames | None, config: Config | None, action: str, revision: str) -> None:
    config = config or alembic_config()
    if roles is not None:
        config.attributes[ROLES_ATTRIBUTE] = roles
    target = database_url(url)
    # For env.py files from Alembic's template, which read sqlalchemy.url
    # (configparser needs % doubled); env.py files that take
    # config.attributes["connection"] run in this function's transaction.
    config.set_main_option("sqlalchemy.url", target.render_as_string(hide_password=False).replace("%", "%%"))
    engine = create_engine(target, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection, _library_loggers_kept():
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        config.attributes.pop("connection", None)
        engine.dispose()


@contextmanager
def _library_loggers_kept() -> Iterator[None]:
    """The library's loggers as they were, after an ``env.py`` from Alembic's template ran.

    Its ``fileConfig()`` disables every logger made before it: an app that
    migrates at start-up would lose the unsafe bypass's warnings for good.
    """
    manager = logging.Logger.manager
    loggers = [
        logger
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and (name == "rls_tenancy" or name.startswith("rls_tenancy."))
    ]
    disabled = [logger.disabled for logger in loggers]
    try:
        yield
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was


def upgrade(
    url: str | URL | None = None,
    *,
    roles: RoleNames | None = None,
    config: Config | None = None,
    revision: str = "heads",
) -> None:
    """Upgrade the database at ``url`` (default ``$DATABASE_URL``), in one transaction.

    ``config`` is an application's Alembic config (default: the library's
    own). Connect as a superuser: the first library revision creates the
    roles, named by ``roles`` or the ``RLS_TENANCY_*_ROLE`` environment
    variables. The config's ``env.py`` may take ``config.attributes["connection"]``
    (as the library's and the demo's do) or read ``sqlalchemy.url`` (as
    Alembic's template does).
    """
    _run(url, roles, config, "upgrade", revision)


def downgrade(
    url: str | URL | None = None,
    *,
    roles: RoleNames | None = None,
    config: Config | None = None,
    revision: str = "base",
) -> None:
    """Downgrade; ``base`` removes the library schema (roles stay)."""
    _run(url, roles, config, "downgrade", revision)
