"""The security audit log: events written only through ``log_event``, chained per tenant.

:func:`log_event` and :func:`log_security_event` write; :mod:`.chain`
verifies, anchors and purges; :mod:`.rejections` keeps repeated
rejections to one event and a count.
"""

from __future__ import annotations

from rls_tenancy.audit.events import (
    ACTION_PATTERN,
    MAX_PAGE,
    AuditEvent,
    event_origin,
    log_event,
    log_security_event,
    read_events,
)

__all__ = ["ACTION_PATTERN", "MAX_PAGE", "AuditEvent", "event_origin", "log_event", "log_security_event", "read_events"]
