"""What the Flask audit tests share: the demo's users, request ids, and reading events back as the bypass role."""

from __future__ import annotations

import re
import secrets

from flask.testing import FlaskClient
from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from rls_tenancy import AuditEvent, as_tenant
from rls_tenancy.identity.users import User, email_matches
from saas_demo.seed import PASSWORD

ALICE = "alice@acme.example"  # acme: admin, projects:read, projects:write
HANK = "hank@globex.example"  # globex: projects:read, projects:write, no admin
LOCALHOST = "127.0.0.1"  # Flask's test client's remote address
GENERATED_ID = re.compile(r"[0-9a-f]{32}\Z")


def new_request_id() -> str:
    return f"test-{secrets.token_hex(8)}"


def events(bypass_engine: Engine, *where: ColumnElement[bool]) -> list[AuditEvent]:
    """Events matching ``where``, oldest first, read as the bypass role."""
    with Session(bypass_engine) as session:
        return list(session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id)))


def of_request(bypass_engine: Engine, request_id: str) -> list[AuditEvent]:
    return events(bypass_engine, AuditEvent.request_id == request_id)


def one_event(bypass_engine: Engine, request_id: str) -> AuditEvent:
    found = of_request(bypass_engine, request_id)
    assert len(found) == 1, [(e.action, e.data) for e in found]
    return found[0]


def user_id(app_engine: Engine, tenant_id: int, email: str) -> int:
    with as_tenant(tenant_id), Session(app_engine) as session:
        found = session.scalar(select(User.id).where(email_matches(email)))
    assert found is not None
    return found


def log_in(client: FlaskClient, tenant: str, email: str, request_id: str | None = None) -> None:
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    answer = client.post("/api/login", json={"tenant": tenant, "email": email, "password": PASSWORD}, headers=headers)
    assert answer.status_code == 200, answer.json


def with_id(request_id: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Request-ID": request_id}


def rendered(url: URL) -> str:
    return url.render_as_string(hide_password=False)
