"""Flask fixtures: the demo app on the test database, seeded once, and its clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from rls_tenancy import UnsafeBypass
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from saas_demo.seed import Seeded, seed


@pytest.fixture(scope="session")
def seeded(db: TenancyDatabase, app_engine: Engine, bypass: UnsafeBypass) -> Seeded:
    """The demo's two tenants (acme, globex), their users, projects and tokens."""
    return seed(app_engine, bypass)


@pytest.fixture(scope="session")
def demo_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    # Every rejection an event of its own: tests look at each one (tests/audit/test_rejections.py counts repeats).
    app = create_app(db.app_url, db.bypass_url, TESTING=True, SECRET_KEY="test secret", RLS_TENANCY_REJECTION_WINDOW=0)
    yield app
    app.extensions["rls_tenancy"].dispose()


@pytest.fixture()
def client(demo_app: Flask) -> FlaskClient:
    return demo_app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
