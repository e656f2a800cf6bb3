"""The unsafe bypass: admin paths that see every tenant, each with a reason.

A separate engine logs in as the bypass role (``BYPASSRLS``). The application
role is never a member of it, so no SQL the application sends can reach it.
Entering the bypass requires a reason, which is logged (and, once the audit
log exists, written as an audit event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

from rls_tenancy.audit.events import log_event
from rls_tenancy.binding.role_checks import verify_bypass_role
from rls_tenancy.context import current_tenant_id, current_user_id
from rls_tenancy.errors import UsageError
from rls_tenancy.orm.models import storable
from rls_tenancy.orm.scoping import BYPASS_REASON

logger = logging.getLogger("rls_tenancy.bypass")

_MAX_REASON = 500


class UnsafeBypass:
    """Entry point to admin access across tenants, through the bypass engine.

    ``engine`` must log in as the bypass role; with ``verify_role`` each new
    connection checks that the role has ``BYPASSRLS`` and is not a superuser
    (least privilege), raising :class:`~rls_tenancy.InsecureRoleError`.
    """

    def __init__(self, engine: Engine, *, verify_role: bool = True) -> None:
        self.engine = engine
        if verify_role and not event.contains(engine, "connect", verify_bypass_role):
            event.listen(engine, "connect", verify_bypass_role)

    @contextmanager
    def session(self, reason: str, **session_options: Any) -> Iterator[Session]:
        """A Session that sees every tenant, in one transaction.

        Commits when the block ends, rolls back on an exception. The ORM
        tenant filter is off; new tenant-bound objects need an explicit
        ``tenant_id``.
        """
        reason = self._announce(reason)
        info = {**session_options.pop("info", {}), BYPASS_REASON: reason}
        with Session(self.engine, info=info, **session_options) as session, session.begin():
            yield session

    @contextmanager
    def connect(self, reason: str) -> Iterator[Connection]:
        """A Core connection that sees every tenant, in one transaction."""
        self._announce(reason)
        with self.engine.begin() as connection:
            yield connection

    def _announce(self, reason: object) -> str:
        if not isinstance(reason, str) or not reason.strip() or not storable(reason):
            raise UsageError("the unsafe bypass needs a reason: say why this path must see every tenant")
        if len(reason) > _MAX_REASON:
            raise UsageError(f"the bypass reason is limited to {_MAX_REASON} characters")
        logger.warning("unsafe bypass entered: %s", reason)
        context = {"tenant_in_context": current_tenant_id(), "user_in_context": current_user_id()}
        with self.engine.begin() as connection:
            log_event(connection, "bypass.used", reason, data=context)
        return reason
