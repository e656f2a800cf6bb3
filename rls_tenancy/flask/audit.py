"""Audit events from Flask views, stamped with the request's client address and id.

``log()`` writes in the request's transaction, so the event commits with
the view's work (and is gone if the view rolls back). An event the view left
in a transaction it neither committed nor rolled back (a ``log()`` after the
view's last commit) is rolled back when the request's Session closes: the
extension then logs a warning on the ``rls_tenancy.audit`` logger naming its
action, unless the request failed (an exception, a 4xx or 5xx answer). ``log_security_event()``
commits at once in a transaction of its own, for what must be recorded even
when the request fails. Tenant and user are the request's; the extension
sets the client address (``request.remote_addr``: put werkzeug's
``ProxyFix`` in front when behind a proxy) and the request id
(``X-Request-ID`` when the client sends a well-formed one, a new one
otherwise, echoed in the response).
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context

from rls_tenancy.audit import events as audit
from rls_tenancy.flask.state import request_state, state


def log(action: str, message: str | None = None, **data: Any) -> int:
    """The seed's ``log(action, message, **data)``: an event in the request's transaction; its id."""
    session = state().session()
    event_id = audit.log_event(session, action, message, data=data or None)
    transaction = session.get_transaction()
    if transaction is not None and has_request_context():  # remembered for the request's end: see end_request
        request_state().logged.append((transaction, action))
    return event_id


def log_security_event(action: str, message: str | None = None, **data: Any) -> int:
    """An event committed at once, whatever becomes of the request; its id."""
    return audit.log_security_event(state().audit_engine, action, message, data=data or None)
