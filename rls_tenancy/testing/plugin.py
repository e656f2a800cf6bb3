"""pytest fixtures for a real PostgreSQL; see :mod:`rls_tenancy.testing`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from sqlalchemy.engine import URL

from rls_tenancy.testing.database import TenancyDatabase, tenancy_database
from rls_tenancy.testing.server import postgres_server


@pytest.fixture(scope="session")
def rls_postgres_url() -> Iterator[URL]:
    """Superuser URL of the session's PostgreSQL server."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def rls_alembic_config() -> Config | None:
    """Override to return your app's Alembic config; ``rls_database`` upgrades it to heads."""
    return None


@pytest.fixture(scope="session")
def rls_database(rls_postgres_url: URL, rls_alembic_config: Config | None) -> Iterator[TenancyDatabase]:
    """A fresh, migrated database with the owner, app and bypass roles."""
    with tenancy_database(rls_postgres_url, alembic_config=rls_alembic_config) as database:
        yield database
