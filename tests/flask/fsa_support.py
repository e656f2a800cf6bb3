"""The demo's projects table mapped the Flask-SQLAlchemy way, for the tests of that integration."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rls_tenancy import TenantBoundMixin


class Base(DeclarativeBase):
    pass


fsa = SQLAlchemy(model_class=Base)


class Project(TenantBoundMixin, fsa.Model):  # type: ignore[name-defined,misc]
    """``Project.query`` as in the seed; ``fsa.session`` as an app's ``db.session``."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
