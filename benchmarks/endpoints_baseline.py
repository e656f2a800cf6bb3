"""The baseline for the end-to-end benchmark: plain Flask + SQLAlchemy, no tenancy.

It does what the demo app does for ``GET /api/projects`` and ``POST
/api/projects`` by the same means (the ORM, the same token function, the
same user load, an event row written in the same transaction) except
isolation: it logs in as a role that RLS does not apply to and writes
``tenant_id`` into every query itself. What is left between the two is what
the library costs: binding, policies, ORM scoping, the request context, and
the audit log's hash chain on writes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import ARRAY, BigInteger, DateTime, Integer, String, Text, create_engine, func, literal, select
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

_TOKEN = re.compile(r"\Arlst_([1-9][0-9]{0,18})_[A-Za-z0-9_-]{43}\Z")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="active")


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"schema": "rls_tenancy"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    language: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """A plain event row: what the demo's audit log records, without the chain."""

    __tablename__ = "bench_plain_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def create_baseline_app(database_url: str | URL) -> Flask:
    app = Flask("baseline")
    engine = create_engine(database_url, pool_size=10, max_overflow=20)
    sessions = scoped_session(sessionmaker(engine))
    app.extensions["baseline_engine"] = engine  # for whoever serves it in process to dispose of

    def identity(scope: str) -> tuple[int, int | None, Session]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        match = _TOKEN.match(token)
        if match is None:
            abort(401)
        tenant = int(match.group(1))
        session = sessions()
        found = session.execute(
            select(
                func.rls_tenancy.authenticate_token(
                    literal(tenant, BigInteger), literal(hashlib.sha256(token.encode()).digest(), BYTEA)
                ).table_valued("token_id", "user_id", "scopes", "status")
            )
        ).one_or_none()
        if found is None or found.status != "ok":
            abort(401)
        if scope not in found.scopes:
            abort(403)
        user = None
        if found.user_id is not None:
            user = session.scalars(select(User).where(User.id == found.user_id, User.tenant_id == tenant)).one()
        return tenant, None if user is None else user.id, session

    @app.get("/api/projects")
    def list_projects() -> ResponseReturnValue:
        tenant, _user, session = identity("projects:read")
        query = select(Project).where(Project.tenant_id == tenant, Project.status != "invisible").order_by(Project.id)
        return jsonify(projects=[_project(p) for p in session.scalars(query)])

    @app.post("/api/projects")
    def create_project() -> ResponseReturnValue:
        tenant, user, session = identity("projects:write")
        body = request.get_json()
        project = Project(tenant_id=tenant, name=str(body["name"]), status="active")
        session.add(project)
        session.flush()
        data = {"project_id": project.id, "name": project.name}
        session.add(Event(tenant_id=tenant, user_id=user, action="project.created", message="created", data=data))
        created = _project(project)  # before the commit, as the demo does: no second transaction
        session.commit()
        return jsonify(created), 201

    @app.teardown_request
    def end(_error: BaseException | None) -> None:
        sessions.remove()

    return app


def _project(project: Project) -> dict[str, Any]:
    return {"id": project.id, "name": project.name, "status": project.status}
