"""The seed's spelling on Flask-SQLAlchemy: ``Project.query`` and ``tenant_unconstrained_unsafe()``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rls_tenancy import NoTenantError, TenantBoundMixin, as_tenant, bind_engine, scope_sessions
from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World


class Base(DeclarativeBase):
    pass


fsa = SQLAlchemy(model_class=Base)


class Project(TenantBoundMixin, fsa.Model):  # type: ignore[name-defined,misc]
    """The demo's projects table, mapped the Flask-SQLAlchemy way."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


@pytest.fixture(scope="module")
def app(db_url: str) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = db_url
    fsa.init_app(app)
    with app.app_context():
        bind_engine(fsa.engine)
        scope_sessions(fsa.session)
        yield app
        fsa.engine.dispose()


@pytest.fixture(scope="module")
def db_url(db: TenancyDatabase) -> str:
    return db.app_url.render_as_string(hide_password=False)


def test_model_query_is_scoped_and_the_escape_hatch_keeps_rls(app: Flask, world: World) -> None:
    for tenant in (world.a, world.b):
        with app.app_context(), as_tenant(tenant):
            assert {p.name for p in Project.query.all()} == world.projects[tenant]
            unconstrained = Project.query.tenant_unconstrained_unsafe().all()
            assert {p.name for p in unconstrained} == world.projects[tenant]
            assert set(fsa.session.scalars(select(Project.name))) == world.projects[tenant]


def test_model_query_without_tenant_raises(app: Flask) -> None:
    with app.app_context(), pytest.raises(NoTenantError):
        Project.query.all()


def test_new_rows_take_the_request_tenant(app: Flask, world: World) -> None:
    with app.app_context(), as_tenant(world.a):
        project = Project(name="via flask-sqlalchemy")
        fsa.session.add(project)
        fsa.session.commit()
        assert project.tenant_id == world.a
