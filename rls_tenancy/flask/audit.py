"""Audit events from Flask views, stamped with the request's client address and id.

``log()`` writes in the request's transaction, so the event commits with
the view's work (and is gone if the view rolls back). ``log_security_event()``
commits at once in a transaction of its own, for what must be recorded even
when the request fails. Tenant and user are the request's; the extension
sets the client address (``request.remote_addr``: put werkzeug's
``ProxyFix`` in front when behind a proxy) and the request id
(``X-Request-ID`` when the client sends a well-formed one, a new one
otherwise, echoed in the response).
"""

from __future__ import annotations

from typing import Any

from rls_tenancy.audit import events as audit
from rls_tenancy.flask.state import state


def log(action: str, message: str | None = None, **data: Any) -> int:
    """The seed's ``log(action, message, **data)``: an event in the request's transaction; its id."""
    return audit.log_event(state().session(), action, message, data=data or None)


def log_security_event(action: str, message: str | None = None, **data: Any) -> int:
    """An event committed at once, whatever becomes of the request; its id."""
    return audit.log_security_event(state().audit_engine, action, message, data=data or None)
