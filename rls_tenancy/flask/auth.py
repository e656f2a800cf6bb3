"""Logging users in and out with the signed session cookie, and checking a password the same way whatever fails.

Every login, failed login and logout is a security event of the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, session
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rls_tenancy.audit.events import log_security_event
from rls_tenancy.audit.rejections import rejection_log
from rls_tenancy.context import as_tenant_for_call
from rls_tenancy.flask.resolvers import SESSION_KEY, is_row_id
from rls_tenancy.flask.state import rejection_window, state
from rls_tenancy.identity.users import (
    EMAIL_PATTERN,
    User,
    check_password_of_nobody,
    email_matches,
    load_password_hash,
)
from rls_tenancy.orm.models import SLUG_PATTERN, storable, tenant_id_for_slug


def login(user: User) -> None:
    """Remember ``user`` in the signed session; later requests act as them. Audited (``auth.login``)."""
    session[SESSION_KEY] = {"tenant_id": user.tenant_id, "user_id": user.id}
    log_security_event(state().audit_engine, "auth.login", user.email, tenant_id=user.tenant_id, user_id=user.id)


def logout() -> None:
    """Forget the session's user. Audited (``auth.logout``) for that user when there was one.

    The event names the user the cookie held, whatever else the request
    carried (a bearer token wins the request's identity, not the logout's).
    A user or tenant deleted meanwhile is named in the event's data instead,
    in the chain without a tenant.
    """
    stored = session.pop(SESSION_KEY, None)
    if not isinstance(stored, dict):
        return
    tenant_id, user_id = stored.get("tenant_id"), stored.get("user_id")
    if not (is_row_id(tenant_id) and is_row_id(user_id)):
        return
    engine = state().audit_engine
    try:
        log_security_event(engine, "auth.logout", tenant_id=tenant_id, user_id=user_id)
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != "42501":  # not "no such user of that tenant"
            raise
        log_security_event(engine, "auth.logout", tenant_id=None, data={"tenant_id": tenant_id, "user_id": user_id})


def authenticate_user(tenant_slug: str, email: str, password: str) -> User | None:
    """The user of tenant ``tenant_slug`` with this email and password, or None.

    For login forms. It does the same password-hashing work when the tenant
    or the user does not exist, so the answer time says little about which of
    the three was wrong. The user comes back detached from any Session, its
    columns loaded (``login(user)`` needs no more); load relationships anew.
    Every failure is an ``auth.login_failed`` audit event: of the tenant
    when it exists, else of the chain without a tenant.
    """
    if not (
        isinstance(tenant_slug, str)
        and SLUG_PATTERN.match(tenant_slug)
        and isinstance(email, str)
        and len(email) <= 254
        and EMAIL_PATTERN.match(email)
        and storable(email)
        and isinstance(password, str)
        and storable(password)
    ):
        check_password_of_nobody(password)
        _login_failed(None, "malformed")
        return None
    # A Session of its own, so the request's Session and its transaction are left alone.
    with Session(state().engine) as sessions:
        tenant_id = tenant_id_for_slug(sessions, tenant_slug)
        sessions.rollback()
        if tenant_id is None:
            check_password_of_nobody(password)
            _login_failed(None, "unknown_tenant", tenant=tenant_slug)
            return None
        with as_tenant_for_call(tenant_id):
            user = sessions.scalars(select(User).where(email_matches(email))).first()
            if user is None:
                check_password_of_nobody(password)
                _login_failed(tenant_id, "unknown_user", email=email)
                return None
            load_password_hash(sessions, user)  # in the tenant's transaction (signed: with the application's grant)
            sessions.expunge(user)  # stays readable after the transaction ends
            sessions.rollback()
    if not user.check_password(password):
        _login_failed(tenant_id, "wrong_password", email=email, user_id=user.id)
        return None
    return user


def _login_failed(tenant_id: int | None, reason: str, **data: Any) -> None:
    rejection_log(state().audit_engine).record(
        "auth.login_failed",
        reason.replace("_", " "),
        tenant_id=tenant_id,
        reason=reason,
        data={"reason": reason, **data},
        window=rejection_window(current_app.config),
    )
