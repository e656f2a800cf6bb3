"""A tenant id that names no tenant: reads are empty, writes are refused, and one query tells.

Binding costs no round trip, so nothing checks the id as a transaction
begins (docs/errors.md, "A tenant that does not exist"). These tests pin what
happens instead, and the check an app makes where its ids come from outside
the database.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import Tenant, as_tenant
from saas_demo.models import Project
from tests.conftest import World

MISSING = 2**62 + 987_654_321  # no test makes that many tenants


def test_a_missing_tenant_reads_as_an_empty_one(scoped_factory: sessionmaker[Session]) -> None:
    with as_tenant(MISSING), scoped_factory() as session:
        assert session.scalars(select(Project)).all() == []


def test_a_write_for_a_missing_tenant_is_refused_by_its_foreign_key(scoped_factory: sessionmaker[Session]) -> None:
    with as_tenant(MISSING), scoped_factory() as session:
        session.add(Project(name="orphan"))
        with pytest.raises(IntegrityError) as refused:
            session.flush()
    assert getattr(refused.value.orig, "sqlstate", None) == "23503"  # foreign_key_violation


def test_the_tenant_row_is_visible_to_its_own_tenant_only_so_one_query_tells(app_engine: Engine, world: World) -> None:
    with as_tenant(MISSING), Session(app_engine) as session:
        assert session.get(Tenant, MISSING) is None
    with as_tenant(world.a), Session(app_engine) as session:
        found = session.get(Tenant, world.a)
        assert found is not None and found.id == world.a
        assert session.get(Tenant, world.b) is None  # another tenant's row: as missing as no row
