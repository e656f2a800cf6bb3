"""Fixtures the audit tests share: users and events of ``world``'s two tenants, and a scratch database per test.

A test module's own fixture of the same name (``people`` in ``test_audit_python.py``) overrides these.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.audit.events import log_event
from rls_tenancy.testing.database import tenancy_database
from tests.audit.support import Logged, People, Scratch, add_user
from tests.conftest import World


@pytest.fixture()
def people(app_engine: Engine, world: World) -> People:
    return People(a_user=add_user(app_engine, world.a), b_user=add_user(app_engine, world.b))


@pytest.fixture()
def logged(app_engine: Engine, world: World, people: People) -> Logged:
    ids: dict[int, list[int]] = {}
    for tenant, user in ((world.a, people.a_user), (world.b, people.b_user)):
        with as_tenant(tenant, user=user), app_engine.begin() as conn:
            ids[tenant] = [log_event(conn, "test.logged", f"event {n} of {tenant}") for n in range(3)]
    return Logged(ids)


@pytest.fixture()
def scratch(rls_postgres_url: URL) -> Iterator[Scratch]:
    with tenancy_database(rls_postgres_url) as database:
        engines = (
            create_engine(database.superuser_url),
            bind_engine(create_engine(database.app_url)),
            create_engine(database.bypass_url),
        )
        try:
            yield Scratch(database, *engines)
        finally:
            for engine in engines:
                engine.dispose()
