"""Per-transaction binding: the database sees the tenant in context.

Before the first statement of every transaction on a bound engine, the tenant
in context is set with ``set_config('app.current_tenant', $1, true)``, and
the user in context beside it as ``app.current_user_id`` (what the audit log
attributes events to). Both are
transaction-local (it ends with the transaction, so a pooled connection never
carries it into the next checkout, and PgBouncer transaction pooling stays
safe) and a bound parameter (the id never appears in query text that
``pg_stat_activity`` shows to other sessions). No tenant binds the empty
string, which the policies read as "no rows". A user changed mid-transaction
(the tenant staying the same) is bound again before the next statement.

The binding costs no round trip of its own: it goes out with the
transaction's ``BEGIN`` in one libpq pipeline sync (:mod:`rls_tenancy._begin`),
on sync and asyncio engines alike. It is done in ``before_cursor_execute``
rather than in the ``begin`` event, which SQLAlchemy runs before it has set up
its error handling: a failure there (a dropped connection, say) would leave
the Connection half-begun.

Changing the tenant in context while a transaction is open raises
:class:`~rls_tenancy.TenantChangedError` before the next statement runs,
rather than re-binding: objects already loaded into a Session belong to the
first tenant, and a silent switch would mix them with the second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg
from sqlalchemy import Connection, Engine, SQLColumnExpression, Text, event, func, literal, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.util import await_only

from rls_tenancy._begin import begin_with, begin_with_async, can_begin_with
from rls_tenancy._role_checks import verify_app_role
from rls_tenancy.context import acting
from rls_tenancy.errors import TenancyError, TenantChangedError, UsageError

if TYPE_CHECKING:  # importing it needs greenlet, an optional dependency
    from sqlalchemy.ext.asyncio import AsyncEngine

#: The setting the policies read, through ``rls_tenancy.current_tenant_id()``.
SETTING = "app.current_tenant"
#: The setting the audit log reads, through ``rls_tenancy.current_user_id()``.
USER_SETTING = "app.current_user_id"

_BIND_TEMPLATE = (
    "SELECT pg_catalog.set_config('app.current_tenant', {0}, true),"
    " pg_catalog.set_config('app.current_user_id', {1}, true)"
)
_BIND = _BIND_TEMPLATE.format("%s", "%s")  # psycopg's placeholders
_BIND_WIRE = _BIND_TEMPLATE.format("$1", "$2").encode()  # libpq's, for the pipeline
_REBIND_USER = "SELECT pg_catalog.set_config('app.current_user_id', %s, true)"
_BOUND = "rls_tenancy.bound_tenant"
_PENDING = object()  # a transaction has begun; no statement has run yet
_UNBOUND = object()  # no transaction seen beginning

_E = TypeVar("_E", Engine, "AsyncEngine")


def bind_engine(engine: _E, *, verify_role: bool = True) -> _E:
    """Bind the tenant in context to every transaction ``engine`` runs.

    With ``verify_role`` (the default), each new connection first checks that
    its login role cannot escape row level security, and raises
    :class:`~rls_tenancy.InsecureRoleError` if it can. Idempotent; returns
    ``engine``.
    """
    sync = cast(Engine, getattr(engine, "sync_engine", engine))
    if sync.dialect.name != "postgresql" or sync.dialect.driver != "psycopg":
        raise UsageError(
            f"rls_tenancy binds PostgreSQL engines using psycopg 3 "
            f"(postgresql+psycopg://...), not {sync.dialect.name}+{sync.dialect.driver}"
        )
    if not event.contains(sync, "begin", _mark_pending):
        for begins in ("begin", "begin_twophase"):
            event.listen(sync, begins, _mark_pending)
        for ends in ("commit", "rollback", "commit_twophase", "rollback_twophase"):
            event.listen(sync, ends, _forget)
        event.listen(sync, "before_cursor_execute", _bind_or_check)
        if verify_role:
            event.listen(sync, "connect", verify_app_role)
    return engine


def is_bound(engine: Engine) -> bool:
    """Whether :func:`bind_engine` was applied to ``engine``."""
    return event.contains(engine, "before_cursor_execute", _bind_or_check)


def user_setting_from(user_id: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """A column that binds ``user_id`` as the transaction's user, for :func:`adopt_user`.

    A statement that proves who the user is (a token lookup, say) can bind
    them in its own round trip instead of the one a rebinding would cost.
    """
    value = func.coalesce(sql_cast(user_id, Text), literal(""))
    return func.pg_catalog.set_config(literal(USER_SETTING), value, true())


def adopt_user(conn: Connection, user_id: int | None) -> None:
    """Record that a statement of ``conn``'s bound transaction bound ``user_id`` itself.

    Only after a statement with :func:`user_setting_from` has run for
    ``user_id``: the next statement's check then finds the binding matching
    a context acting for that user, and rebinds nothing.
    """
    bound = conn.info.get(_BOUND, _UNBOUND)
    if not isinstance(bound, tuple):
        raise UsageError("adopt_user() needs a transaction already bound to a tenant")
    conn.info[_BOUND] = (bound[0], user_id)


def _mark_pending(conn: Connection, *_: object) -> None:
    conn.info[_BOUND] = _PENDING


def _forget(conn: Connection, *_: object) -> None:
    # conn.info outlives the transaction (it belongs to the pooled
    # connection); a stale value must never pass for a binding. An
    # invalidated connection is discarded with its info.
    if not conn.invalidated:
        conn.info.pop(_BOUND, None)


def _bind_or_check(
    conn: Connection,
    _cursor: DBAPICursor,
    _statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    bound = conn.info.get(_BOUND, _UNBOUND)
    current = acting()
    if bound is _PENDING:
        _bind(conn, _BIND, current)
        conn.info[_BOUND] = current
    elif not isinstance(bound, tuple) or bound[0] != current[0]:
        raise TenantChangedError(
            f"this transaction is bound to tenant {_describe(bound)} but the tenant "
            f"in context is now {_describe(current)}; commit or roll back before "
            "switching tenants, or use a separate Session"
        )
    elif bound[1] != current[1]:
        _bind(conn, _REBIND_USER, current[1:])
        conn.info[_BOUND] = current


def _bind(conn: Connection, statement: str, ids: tuple[int | None, ...]) -> None:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    if getattr(raw, "autocommit", False):  # psycopg, and SQLAlchemy's asyncio adaptor of it
        if any(value is not None for value in ids):
            raise TenancyError(
                "an AUTOCOMMIT connection has no transaction to bind the tenant to; "
                "use a transactional isolation level on bound engines"
            )
        return
    values = tuple("" if value is None else str(value) for value in ids)
    driver = conn.connection.driver_connection
    if statement is _BIND and can_begin_with(driver):
        wire = [value.encode() for value in values]
        try:
            if isinstance(driver, psycopg.AsyncConnection):
                await_only(begin_with_async(driver, _BIND_WIRE, wire))
            else:
                begin_with(driver, _BIND_WIRE, wire)
        except psycopg.Error as error:
            raise _as_sqlalchemy_error(conn, error, statement, values) from error
        return
    cursor = raw.cursor()
    try:
        cursor.execute(statement, values)
    except psycopg.Error as error:
        raise _as_sqlalchemy_error(conn, error, statement, values) from error
    finally:
        cursor.close()


def _as_sqlalchemy_error(conn: Connection, error: psycopg.Error, statement: str, values: tuple[str, ...]) -> DBAPIError:
    """The error SQLAlchemy would raise, with a dead connection invalidated.

    SQLAlchemy 2.0 runs ``before_cursor_execute`` outside its own error
    handling, so this does what that handling would: invalidate the pooled
    connection when the server is gone, and wrap the driver's error.
    """
    disconnect = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None)  # type: ignore[arg-type]
    if disconnect:
        conn.invalidate(error)
    wrapped = DBAPIError.instance(
        statement, values, error, psycopg.Error, connection_invalidated=disconnect, dialect=conn.dialect
    )
    assert isinstance(wrapped, DBAPIError)  # always, for a driver error
    return wrapped


def _describe(bound: object) -> str:
    if not isinstance(bound, tuple):
        return "(unknown: this transaction was not seen beginning; was the engine bound mid-transaction?)"
    return "(none)" if bound[0] is None else str(bound[0])
