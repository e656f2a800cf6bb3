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
on sync and asyncio engines alike.

The hook is a dialect event (``do_execute`` and its two siblings), not a
connection event: any connection event listener makes SQLAlchemy dispatch
every event of every statement and transaction, about 50 µs of CPU per
transaction. The first statement of each SQLAlchemy transaction binds; the
transaction object the binding was made for is kept with it, so a binding
never passes for a later transaction's.

Changing the tenant in context while a transaction is open raises
:class:`~rls_tenancy.TenantChangedError` before the next statement runs,
rather than re-binding: objects already loaded into a Session belong to the
first tenant, and a silent switch would mix them with the second.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, SQLColumnExpression, Text, event, func, literal, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import ExecutionContext, RootTransaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.util import await_only

from rls_tenancy._begin import Statement, begin_with, begin_with_async, can_begin_with
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
    "SELECT pg_catalog.set_config('app.current_tenant', {0}, {local}),"
    " pg_catalog.set_config('app.current_user_id', {1}, {local})"
)
_BIND = _BIND_TEMPLATE.format("%s", "%s", local="true")  # psycopg's placeholders
_BIND_WIRE = _BIND_TEMPLATE.format("$1", "$2", local="true").encode()  # libpq's, for the pipeline
_REBIND_USER = "SELECT pg_catalog.set_config('app.current_user_id', %s, true)"
#: conn.info: (the transaction bound, tenant id, user id). A weak reference:
#: the info belongs to the pooled connection, and a strong one would keep a
#: Connection abandoned mid-request (and so its pooled connection) alive in
#: a reference cycle, instead of returning it to the pool when dropped.
_BOUND = "rls_tenancy.bound_tenant"
_Binding = tuple["weakref.ref[RootTransaction]", int | None, int | None]

_E = TypeVar("_E", Engine, "AsyncEngine")


def bind_engine(engine: _E, *, verify_role: bool = True) -> _E:
    """Bind the tenant in context to every transaction ``engine`` runs.

    The hook is on the engine's dialect, which engines derived with
    ``execution_options()`` share: they are bound too. With ``verify_role``
    (the default), each new connection first checks that its login role
    cannot escape row level security, and raises
    :class:`~rls_tenancy.InsecureRoleError` if it can. Idempotent; returns
    ``engine``.
    """
    sync = cast(Engine, getattr(engine, "sync_engine", engine))
    if sync.dialect.name != "postgresql" or sync.dialect.driver != "psycopg":
        raise UsageError(
            f"rls_tenancy binds PostgreSQL engines using psycopg 3 "
            f"(postgresql+psycopg://...), not {sync.dialect.name}+{sync.dialect.driver}"
        )
    if not is_bound(sync):
        # insert=True: bound before any other listener of the dialect sees the statement.
        event.listen(sync.dialect, "do_execute", _on_execute, insert=True)
        event.listen(sync.dialect, "do_executemany", _on_execute, insert=True)
        event.listen(sync.dialect, "do_execute_no_params", _on_execute_no_params, insert=True)
        if verify_role:
            event.listen(sync, "connect", verify_app_role)
    return engine


def is_bound(engine: Engine) -> bool:
    """Whether :func:`bind_engine` was applied to ``engine``."""
    return event.contains(engine.dialect, "do_execute", _on_execute)


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
    bound = _binding_of(conn.info, conn.get_transaction())
    if bound is None:
        raise UsageError("adopt_user() needs a transaction already bound to a tenant")
    conn.info[_BOUND] = (bound[0], bound[1], user_id)


def begin_bound_with(conn: Connection, statement: bytes, values: Sequence[bytes | None]) -> pq.abc.PGresult | None:
    """Run ``statement`` first in ``conn``'s transaction, in the round trip that begins and binds it.

    For a statement of the library's own whose result it reads itself (the
    request's token lookup): the transaction then costs one round trip
    fewer. ``statement`` uses libpq's ``$n`` placeholders, ``values`` text
    format. Returns its result, or None when the transaction cannot begin
    this way (it already ran a statement; autocommit; another driver; a
    libpq without pipeline mode): the caller then runs the statement as
    usual. A failure raises SQLAlchemy's wrapping of psycopg's error.
    """
    driver = conn.connection.driver_connection
    if not can_begin_with(driver):  # psycopg's own connection, idle, not in autocommit
        return None
    # What the statement's execution would have begun; a fresh one is never bound.
    transaction = conn.get_transaction() or conn.begin()
    if _binding_of(conn.info, transaction) is not None:
        return None
    current = acting()
    try:
        result = _send_binding(driver, current, then=(statement, values))
    except psycopg.Error as error:
        invalidated = bool(driver.closed)
        if invalidated:
            conn.invalidate(error)
        raise DBAPIError.instance(
            statement.decode(), None, error, psycopg.Error, connection_invalidated=invalidated
        ) from error
    conn.info[_BOUND] = (weakref.ref(transaction), *current)
    return result


def _on_execute(_cursor: object, _statement: str, _parameters: object, context: ExecutionContext) -> None:
    _bind_or_check(context.root_connection)


def _on_execute_no_params(_cursor: object, _statement: str, context: ExecutionContext) -> None:
    _bind_or_check(context.root_connection)


def _bind_or_check(conn: Connection) -> None:
    try:
        info = conn.info
    except NotImplementedError:  # the dialect's first-connect checks: version, schema; no pool entry
        return
    current = acting()
    transaction = conn.get_transaction()
    bound = _binding_of(info, transaction)
    if bound is None:  # this transaction's first statement
        _bind(conn, _BIND, current)
        if transaction is not None:
            info[_BOUND] = (weakref.ref(transaction), *current)
    elif bound[1] != current[0]:
        raise TenantChangedError(
            f"this transaction is bound to tenant {_describe(bound[1])} but the tenant "
            f"in context is now {_describe(current[0])}; commit or roll back before "
            "switching tenants, or use a separate Session"
        )
    elif bound[2] != current[1]:
        _bind(conn, _REBIND_USER, current[1:])
        info[_BOUND] = (bound[0], *current)


def _bind(conn: Connection, statement: str, ids: tuple[int | None, ...]) -> None:
    pooled = conn.connection
    driver = pooled.driver_connection
    # The usual case first, doing no more than it needs: it runs for every
    # transaction. A driver error raised here is wrapped by SQLAlchemy's own
    # handling (the dialect event runs inside it), which invalidates a dead
    # connection.
    if statement is _BIND and can_begin_with(driver):  # not in autocommit, either
        _send_binding(driver, ids)
        return
    raw = pooled.dbapi_connection
    assert raw is not None
    if getattr(raw, "autocommit", False):  # psycopg, and SQLAlchemy's asyncio adaptor of it
        if any(value is not None for value in ids):
            raise TenancyError(
                "an AUTOCOMMIT connection has no transaction to bind the tenant to; "
                "use a transactional isolation level on bound engines"
            )
        return
    values = tuple("" if value is None else str(value) for value in ids)
    cursor = raw.cursor()
    try:
        cursor.execute(statement, values)
    finally:
        cursor.close()


def _binding_of(info: dict[Any, Any], transaction: RootTransaction | None) -> _Binding | None:
    """The binding made for ``transaction``, if any.

    The pooled connection's info may still hold an earlier transaction's
    binding: it never passes for this one's.
    """
    bound: _Binding | None = info.get(_BOUND)
    if bound is None or transaction is None or bound[0]() is not transaction:
        return None
    return bound


def _send_binding(
    driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
    ids: tuple[int | None, ...],
    then: Statement | None = None,
) -> pq.abc.PGresult | None:
    """``BEGIN`` and the binding of ``ids`` (and ``then``) in one round trip, on either kind of driver."""
    wire = [("" if value is None else str(value)).encode() for value in ids]
    if isinstance(driver, psycopg.AsyncConnection):
        return await_only(begin_with_async(driver, _BIND_WIRE, wire, then))
    return begin_with(driver, _BIND_WIRE, wire, then)


def _bind_session_wide(session_wide: bool) -> None:
    """Bind for the rest of the session instead of the transaction, or (False) again not.

    The peers' classic leak, planted on purpose by ``--rls-break=binding``
    (:mod:`rls_tenancy.testing`) so the tests guarding this layer can show
    they fail without it. Never call it outside a test run.
    """
    global _BIND, _BIND_WIRE
    local = "false" if session_wide else "true"
    _BIND = _BIND_TEMPLATE.format("%s", "%s", local=local)
    _BIND_WIRE = _BIND_TEMPLATE.format("$1", "$2", local=local).encode()


def _describe(tenant: int | None) -> str:
    return "(none)" if tenant is None else str(tenant)
