"""docs/adopting.md, section 5: a job's Sessions come from the sessions the app scoped, not ``Session(engine)``.

The Flask extension scopes the sessionmaker it was given (or made), whose
Sessions are of a class of its own: a plain ``Session`` on the same bound
engine has no ORM filter. Row level security still isolates it, but without
a tenant it reads nothing instead of raising ``NoTenantError``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from rls_tenancy import TenantQuery, as_tenant
from rls_tenancy.errors import NoTenantError
from rls_tenancy.flask import Tenancy
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from saas_demo.seed import Seeded


@pytest.fixture(scope="module")
def app(db: TenancyDatabase) -> Iterator[Flask]:
    app = Flask(__name__)
    engine = create_engine(db.app_url)
    sessions = scoped_session(sessionmaker(engine, query_cls=TenantQuery))
    Tenancy(app, engine=engine, session=sessions)
    yield app
    app.extensions["rls_tenancy"].dispose()


def test_a_job_uses_the_session_factory_the_extension_scoped(app: Flask, seeded: Seeded) -> None:
    state = app.extensions["rls_tenancy"]
    factory = state.sessions.session_factory  # what init_app(session=...) was given, unwrapped
    with factory() as session, pytest.raises(NoTenantError):  # no tenant: the ORM filter says so
        session.scalars(select(Project)).all()
    with as_tenant(seeded.tenants["acme"]), factory() as session:
        assert {p.tenant_id for p in session.scalars(select(Project))} == {seeded.tenants["acme"]}


def test_a_plain_session_on_the_same_engine_has_no_orm_filter(app: Flask, seeded: Seeded) -> None:
    engine = app.extensions["rls_tenancy"].engine
    with Session(engine) as session, pytest.raises(NoTenantError):  # no tenant: the bound engine refuses
        session.scalars(select(Project)).all()
    with as_tenant(seeded.tenants["acme"]), Session(engine) as session:  # bound: still the tenant's rows only
        assert {p.tenant_id for p in session.scalars(select(Project))} == {seeded.tenants["acme"]}
