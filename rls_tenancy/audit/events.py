"""The security audit log: write events, read a tenant's events.

Events go into the database only through ``rls_tenancy.log_event()`` (see
``sql/009_audit.sql``), which stamps them with the tenant and user bound to
the transaction: this module supplies what happened, never who. Arguments
are checked here first, with the same rules as the SQL, so a bad event is a
:class:`~rls_tenancy.UsageError` before it reaches the database.

:func:`log_event` writes in the caller's transaction: the event commits, or
rolls back, with the work it describes. :func:`log_security_event` writes in
a transaction of its own, for events that must outlive a failed request
(a rejected login, a denied scope).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Connection, DateTime, Engine, Identity, Text, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import BYTEA, INET, JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from rls_tenancy.binding.engine import is_bound
from rls_tenancy.catalog_types import CatalogJsonb
from rls_tenancy.context import (
    current_tenant_id,
    current_user_id,
    enter_request_tenant,
    leave_request_tenant,
    require_tenant_id,
)
from rls_tenancy.errors import UsageError
from rls_tenancy.orm.models import TenancyBase, storable

#: 1 to 64 characters: lower-case letters, digits, ``_ . : -``, starting with a letter.
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_.:-]{0,63}\Z")
MAX_MESSAGE = 4000
#: Size of ``data`` as JSON text, in bytes.
MAX_DATA_BYTES = 16384
#: 1 to 128 printable ASCII characters, no spaces.
REQUEST_ID_PATTERN = re.compile(r"[!-~]{1,128}\Z")
MAX_PAGE = 200

#: Where an event can be written: a Core connection or an ORM session, in its transaction.
Executor = Connection | Session


class AuditEvent(TenancyBase):
    """One row of ``rls_tenancy.audit_log``; read-only (the table refuses changes)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    db_role: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(INET)
    request_id: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[bytes | None] = mapped_column(BYTEA)
    hash: Mapped[bytes | None] = mapped_column(BYTEA)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (hashes in hex)."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "db_role": self.db_role,
            "action": self.action,
            "message": self.message,
            "ip": None if self.ip is None else str(self.ip),
            "request_id": self.request_id,
            "data": self.data,
            "created_at": self.created_at.isoformat(),
            "seq": self.seq,
            "hash": None if self.hash is None else self.hash.hex(),
        }

    def __repr__(self) -> str:
        return f"<AuditEvent id={self.id!r} tenant_id={self.tenant_id!r} action={self.action!r}>"


@dataclass(frozen=True)
class Origin:
    """Where the events of the current code come from: a client address, a request id."""

    ip: str | None = None
    request_id: str | None = None


_NO_ORIGIN = Origin()
_origin: ContextVar[Origin | None] = ContextVar("rls_tenancy.audit_origin", default=None)


@contextmanager
def event_origin(ip: str | None = None, request_id: str | None = None) -> Iterator[Origin]:
    """Stamp events logged inside the block with ``ip`` and ``request_id`` (unless given)."""
    origin = Origin(_check_ip(ip), _check_request_id(request_id))
    token = _origin.set(origin)
    try:
        yield origin
    finally:
        _origin.reset(token)


def set_event_origin(ip: str | None, request_id: str | None) -> Origin:
    """Like :func:`event_origin`, for code that owns its context (a web request's)."""
    origin = Origin(_check_ip(ip), _check_request_id(request_id))
    _origin.set(origin)
    return origin


def current_origin() -> Origin:
    """The origin in context (empty outside :func:`event_origin` and requests)."""
    return _origin.get() or _NO_ORIGIN


def log_event(
    executor: Executor,
    action: str,
    message: str | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    ip: str | None = None,
    request_id: str | None = None,
) -> int:
    """Write an event in ``executor``'s transaction; returns its id.

    Tenant and user are the ones bound to the transaction (none: an event of
    the no-tenant chain). ``ip`` and ``request_id`` default to the origin in
    context.
    """
    origin = current_origin()
    values = {
        "action": _check_action(action),
        "message": _check_message(message),
        "data": _encode_data(data),
        "ip": _check_ip(ip) or origin.ip,
        "request_id": _check_request_id(request_id) or origin.request_id,
    }
    event_id: int = executor.execute(_LOG_EVENT, values).scalar_one()
    return event_id


#: Built once (an event costs one cached statement and its values); ``data``
#: goes as the JSON text _encode_data checked, cast by the server.
_LOG_EVENT = select(
    func.rls_tenancy.log_event(
        bindparam("action", type_=Text),
        bindparam("message", type_=Text),
        cast(bindparam("data", type_=Text), CatalogJsonb()),
        bindparam("ip", type_=INET),
        bindparam("request_id", type_=Text),
    )
)


class _InContext(enum.Enum):
    IN_CONTEXT = "in context"


#: Default of :func:`log_security_event`'s ``tenant_id`` and ``user_id``.
IN_CONTEXT = _InContext.IN_CONTEXT


def log_security_event(
    engine: Engine,
    action: str,
    message: str | None = None,
    *,
    tenant_id: int | None | _InContext = IN_CONTEXT,
    user_id: int | None | _InContext = IN_CONTEXT,
    data: Mapping[str, Any] | None = None,
    ip: str | None = None,
    request_id: str | None = None,
) -> int:
    """Write an event in a transaction of its own, committed before returning.

    For events that must survive whatever happens to the caller's
    transaction. The event belongs to the tenant and user in context, or to
    ``tenant_id`` and ``user_id`` when given (a user given without a tenant,
    or a tenant given without a user, means none). ``engine`` must be bound
    (:func:`~rls_tenancy.bind_engine`) to write for a tenant; an unbound
    engine (the bypass engine) writes events without a tenant.
    """
    if tenant_id is IN_CONTEXT:
        tenant_id = current_tenant_id()
        user_id = current_user_id() if user_id is IN_CONTEXT else user_id
    elif user_id is IN_CONTEXT:
        user_id = None  # the context's user is not necessarily the given tenant's
    if tenant_id is not None and not is_bound(engine):
        raise UsageError("log_security_event() for a tenant needs a bound engine (bind_engine); this one is not")
    token = enter_request_tenant(tenant_id, user_id if tenant_id is not None else None)
    try:
        with engine.begin() as connection:
            return log_event(connection, action, message, data=data, ip=ip, request_id=request_id)
    finally:
        leave_request_tenant(token)


def read_events(
    session: Session,
    *,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """The tenant in context's events, newest first: one page of at most ``limit``.

    ``before_id`` pages on (pass the last id of the previous page); ``since``
    is inclusive, ``until`` exclusive, both timezone-aware.
    """
    tenant_id = require_tenant_id()
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be 1 to {MAX_PAGE}")
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if action is not None:
        query = query.where(AuditEvent.action == _check_action(action))
    for bound in (since, until):
        if bound is not None and (not isinstance(bound, datetime) or bound.tzinfo is None):
            raise UsageError("since and until must be timezone-aware datetimes")
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    if before_id is not None:
        if not isinstance(before_id, int) or isinstance(before_id, bool) or not 0 < before_id < 2**63:
            raise UsageError("before_id must be an event id")
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))


def _check_action(action: object) -> str:
    if not isinstance(action, str) or not ACTION_PATTERN.match(action):
        raise UsageError(
            f"invalid audit action {action!r}: 1 to 64 characters, lower-case letters, digits, "
            "'_', '.', ':' or '-', starting with a letter"
        )
    return action


def _check_message(message: object) -> str | None:
    if message is None:
        return None
    if not isinstance(message, str) or not storable(message):
        raise UsageError("an audit message is text (valid Unicode, no NUL characters)")
    if len(message) > MAX_MESSAGE:
        raise UsageError(f"an audit message is at most {MAX_MESSAGE} characters, not {len(message)}")
    return message


def _plain(value: object) -> str:
    """Values app data commonly holds that JSON has no type for, as text: times in ISO 8601, ids, exact decimals."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: A NUL as JSON escapes it: ``\u0000`` after an even number of backslashes (``\\u0000`` is the text "\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

#: json.dumps() with options builds an encoder per call; this one is built once.
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, default=_plain)


def _encode_data(data: Mapping[str, Any] | None) -> str | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise UsageError("audit data is a mapping of names to JSON values")
    try:
        text = _JSON.encode(dict(data))
    except (TypeError, ValueError) as error:
        raise UsageError(f"audit data must be JSON: {error}") from None
    except RecursionError:
        raise UsageError("audit data is nested too deeply") from None
    if _NUL_ESCAPE.search(text) or not storable(text):
        raise UsageError("audit data cannot hold NUL characters or unpaired surrogates")
    # jsonb's text form is near this size; the database checks the exact one.
    if len(text.encode("utf-8")) > MAX_DATA_BYTES:
        raise UsageError(f"audit data is at most {MAX_DATA_BYTES} bytes as JSON")
    return text


def _check_ip(ip: object) -> str | None:
    if ip is None:
        return None
    try:
        return normal_ip(ip if isinstance(ip, str) else str(ip))
    except ValueError:
        raise UsageError(f"{ip!r} is not an IP address") from None


@functools.lru_cache(maxsize=1024)
def normal_ip(text: str) -> str:
    """``text`` as PostgreSQL's inet will store it, or ValueError; cached, as clients come back."""
    # inet has no IPv6 zone ("fe80::1%eth0"); the address is what matters.
    return str(ipaddress.ip_address(text)).partition("%")[0]


def _check_request_id(request_id: object) -> str | None:
    if request_id is None:
        return None
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        raise UsageError("a request id is 1 to 128 printable ASCII characters without spaces")
    return request_id
