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
transaction's ``BEGIN`` in one libpq pipeline sync (:mod:`rls_tenancy.binding._begin`),
on sync and asyncio engines alike. Signed, it also reads back the
transaction's mark (its start and backend), which the transaction's grants
are made for (:func:`transaction_mark`).

An engine bound with ``set_local=True`` spells the same binding as ``SET
LOCAL`` statements, one per setting, because Citus forwards those to its
workers and not a ``set_config()`` call (docs/citus.md). ``SET`` takes no
bound parameters: the values are quoted literals in the statements' text
(the ids are integers, the proof digits, colons and hexadecimal), which
monitoring roles and the server's log then see. They still travel in
``BEGIN``'s sync, as three statements, or as one script where a statement
binds on its own.

The hook is a dialect event (``do_execute`` and its two siblings), not a
connection event: any connection event listener makes SQLAlchemy dispatch
every event of every statement and transaction, about 50 µs of CPU per
transaction. The first statement of each SQLAlchemy transaction binds; the
transaction object the binding was made for is kept with it, so a binding
never passes for a later transaction's.

A raw psycopg statement run first in a transaction SQLAlchemy began (a
``COPY`` on ``session.connection().connection.driver_connection``) binds it
the same way, in the round trip that statement would have begun it in: the
dialect's ``do_begin`` marks the connection, and the driver guard binds on
seeing the mark. SQLAlchemy's first statement then keeps that binding.

Changing the tenant in context while a transaction is open raises
:class:`~rls_tenancy.TenantChangedError` before the next statement runs,
rather than re-binding: objects already loaded into a Session belong to the
first tenant, and a silent switch would mix them with the second. Its
commit then rolls back and raises instead: the refused statement may have
been the one undoing part of it.

Nothing a tenant's transactions leave in the session (temp tables, holdable
cursors, ``LISTEN``, session settings, prepared statements, advisory locks,
sequence values) reaches another tenant's: before a connection serves
another tenant than its last one (no tenant included), or its first, the
binding discards that state in the same round trip
(``rls_tenancy.reset_session()``, sql/015_session_reset.sql). psycopg's own
prepared statements are kept while intact; if SQL deallocated or replaced
one, all go and psycopg forgets its names, so the driver never runs a
statement by a name that another tenant's SQL could have re-prepared. One DBAPI
connection serves one transaction at a time: pools that share one
(``StaticPool``, ``SingletonThreadPool``) are refused.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, SQLColumnExpression, event, func, literal, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import ExecutionContext, NestedTransaction, RootTransaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.util import await_only

from rls_tenancy.binding import _driver_guard
from rls_tenancy.binding import settings as _settings
from rls_tenancy.binding import signing as _signing
from rls_tenancy.binding._begin import Statement, begin_with, begin_with_async, can_begin_with
from rls_tenancy.binding.affinity import NEVER as _NEVER
from rls_tenancy.binding.affinity import SERVED as _SERVED
from rls_tenancy.binding.affinity import SERVED_USER as _SERVED_USER
from rls_tenancy.binding.affinity import prefer_last_tenant, served_user
from rls_tenancy.binding.anonymous import prepare_for
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.binding.role_checks import verify_app_role
from rls_tenancy.catalog_types import CatalogText
from rls_tenancy.context import Acting, Block, acting, block_of, require_tenant_id
from rls_tenancy.errors import ConfigurationError, TenancyError, TenantChangedError
from rls_tenancy.tenant_tables import compiled_mentions_tenant_table

if TYPE_CHECKING:  # importing it needs greenlet, an optional dependency
    from sqlalchemy.ext.asyncio import AsyncEngine

#: The setting the policies read, through ``rls_tenancy.current_tenant_id()``.
SETTING = _settings.TENANT
#: The setting the audit log reads, through ``rls_tenancy.current_user_id()``.
USER_SETTING = _settings.USER

# The proof beside the ids (:mod:`rls_tenancy.binding.context_key`): empty when the engine has no key.
_BOUND_SETTINGS = (_settings.TENANT, _settings.USER, _settings.PROOF)
_BIND = _settings.set_configs(_BOUND_SETTINGS, ("%s", "%s", "%s"))  # psycopg's placeholders
_BIND_WIRE = _settings.set_configs(_BOUND_SETTINGS, ("$1", "$2", "$3")).encode()  # libpq's, for the pipeline
# Signed, the binding answers its transaction's mark too (the grants of the transaction are made for it).
_MARKED = ", " + _settings.TRANSACTION_MARK
_BIND_MARKED, _BIND_MARKED_WIRE = _BIND + _MARKED, _BIND_WIRE + _MARKED.encode()
_MARK = ("SELECT " + _settings.TRANSACTION_MARK).encode()  # after SET LOCAL, which answers nothing
_REBIND_USER = _settings.set_configs(_BOUND_SETTINGS[1:], ("%s", "%s"))
#: On a bound engine's dialect, as its context key is: the binding is spelled as ``SET LOCAL`` statements.
_SET_LOCAL = "_rls_tenancy_set_local"
_local = True  # off only under --rls-break=binding: SET LOCAL then spells SET, as _BIND binds session-wide

#: What a session keeps from one transaction to the next, discarded before a
#: connection serves another tenant: ``DISCARD ALL`` but its ``DISCARD
#: PLANS``, which would make every PL/pgSQL function plan again (measured:
#: +300 µs of CPU on the next audited event). ``RESET ALL`` also ends a
#: session-wide ``app.current_tenant``; role defaults for it are refused at
#: connect (:mod:`rls_tenancy.binding.role_checks`). In front of a bound
#: transaction's ``BEGIN`` the same is one call, :data:`_RESET_WIRE`, which
#: keeps psycopg's intact prepared statements.
#: random() seeded again with 52 bits of the server's strong random (gen_random_uuid()).
RESEED = (
    b"SELECT pg_catalog.setseed((('x' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()"
    b"::pg_catalog.text), 1, 13))::BIT(52)::BIGINT / 4503599627370496.0)::DOUBLE PRECISION)"
)
SESSION_RESET = (
    # First: a session-wide timeout the last client set could otherwise cancel
    # the reset partway (a DISCARD TEMP made slow by thousands of temp tables),
    # and the script, one implicit transaction, would undo all of it; PgBouncer
    # keeps its server connection all the same. RESET ALL at the end restores
    # the role's own timeouts.
    b"SET statement_timeout = 0",
    b"SET lock_timeout = 0",
    b"CLOSE ALL",
    b"UNLISTEN *",
    b"SELECT pg_catalog.pg_advisory_unlock_all()",
    b"DISCARD TEMP",
    b"DISCARD SEQUENCES",
    b"DEALLOCATE ALL",
    b"RESET ROLE",
    b"RESET ALL",
    # random()'s seed is the session's, and RESET ALL leaves it: a setseed() the last client ran would
    # make the next one's random() a sequence it knows. Seeded afresh from the server's strong random.
    RESEED,
)
#: The same as one script, for a round trip of its own (an autocommit
#: connection) and for PgBouncer's ``server_reset_query``.
SESSION_RESET_SCRIPT = b"; ".join(SESSION_RESET)
#: The reset sent in front of ``BEGIN``: its argument is the names of
#: psycopg's prepared statements; it answers false when psycopg must forget them.
_RESET_WIRE = b"SELECT rls_tenancy.reset_session($1)"


class _Binding(NamedTuple):
    """What conn.info records of the binding of one transaction.

    Weak references: the info belongs to the pooled connection, and a strong
    one would keep a Connection abandoned mid-request (and so its pooled
    connection) alive in a reference cycle, instead of returning it to the
    pool when dropped.
    """

    transaction: weakref.ref[RootTransaction]
    tenant: int | None
    user: int | None
    #: The savepoint the user was bound in, if any: a ROLLBACK TO it undoes that.
    savepoint: weakref.ref[NestedTransaction] | None = None
    #: The session was reset as this transaction began: no user's state is left in it.
    fresh: bool = False
    #: A statement of it was refused: its commit rolls back and raises, as PostgreSQL's after an error.
    refused: bool = False
    #: SQL ended it on the server (``COMMIT AND CHAIN``...): every later statement of it is refused.
    ended: bool = False
    #: Signed: the transaction's mark as the server answered the binding (``settings.TRANSACTION_MARK``).
    mark: str = ""


_BOUND = "rls_tenancy.bound_tenant"
#: SQLAlchemy began a transaction on the connection that nothing has bound yet: the bound engine's dialect.
_BEGUN = "rls_tenancy.begun"


class _RawTransaction:
    """What a binding made by a raw statement is for until SQLAlchemy's first statement adopts it."""

    is_active = True


_RAW = _RawTransaction()


def _raw_transaction() -> Any:
    return _RAW


#: A transaction switched users: the next one resets whoever it serves.
_MIXED = object()
_SHARING_POOLS = (StaticPool, SingletonThreadPool)
_resetting = True  # off only under --rls-break=binding

_E = TypeVar("_E", Engine, "AsyncEngine")


def bind_engine(
    engine: _E, *, verify_role: bool = True, context_key: ContextKey | str | None = None, set_local: bool = False
) -> _E:
    """Bind the tenant in context to every transaction ``engine`` runs.

    The hook is on the engine's dialect, which engines derived with
    ``execution_options()`` share: they are bound too. A plain ``QueuePool``
    (the default) then hands an idle connection back to the tenant it last
    served, when there is one (:mod:`rls_tenancy.binding.affinity`). With ``verify_role``
    (the default), each new connection first checks that its login role
    cannot escape row level security, and raises
    :class:`~rls_tenancy.InsecureRoleError` if it can. With ``context_key``
    (or ``RLS_TENANCY_CONTEXT_KEY`` in the environment), every binding
    carries a proof made with it, which a database requiring a signed
    context checks (:mod:`rls_tenancy.binding.context_key`); each new connection
    checks the key against the database's first, and raises
    :class:`~rls_tenancy.ContextKeyError` when it does not fit. With
    ``set_local``, the binding is spelled as ``SET LOCAL`` statements instead
    of ``set_config()`` calls, with the values as quoted literals, still in
    ``BEGIN``'s round trip: Citus (``citus.propagate_set_commands = 'local'``)
    forwards only those to the workers that hold the shards (docs/citus.md).
    An engine not yet connected gets SQLAlchemy's own hstore handling
    (``use_native_hstore=False``): the native one looks the type up by an
    unqualified name a tenant's temporary objects could answer.
    Idempotent; returns ``engine``. Binding again without ``context_key`` or
    ``set_local`` keeps what was given before, so bind an engine with
    ``set_local=True`` before handing it to the Flask extension.
    """
    sync = cast(Engine, getattr(engine, "sync_engine", engine))
    if sync.dialect.name != "postgresql" or sync.dialect.driver != "psycopg":
        raise ConfigurationError(
            f"rls_tenancy binds PostgreSQL engines using psycopg 3 "
            f"(postgresql+psycopg://...), not {sync.dialect.name}+{sync.dialect.driver}"
        )
    if isinstance(sync.pool, _SHARING_POOLS):
        raise ConfigurationError(
            f"{type(sync.pool).__name__} hands one DBAPI connection to several Connections at once, whose "
            "transactions then share one binding; give the engine a QueuePool (the default) or a NullPool"
        )
    prefer_last_tenant(sync.pool)
    key = _signing.configured_key(context_key)
    if key is not None:  # binding again without one keeps the key given before
        _signing.set_key(sync.dialect, key)
    if set_local:  # likewise
        setattr(sync.dialect, _SET_LOCAL, True)
    if not is_bound(sync):
        # insert=True: bound before any other listener of the dialect sees the statement.
        event.listen(sync.dialect, "do_execute", _on_execute, insert=True)
        event.listen(sync.dialect, "do_executemany", _on_execute, insert=True)
        event.listen(sync.dialect, "do_execute_no_params", _on_execute_no_params, insert=True)
        if verify_role:
            event.listen(sync, "connect", verify_app_role)
        event.listen(sync, "connect", _signing.check_key(sync.dialect))
        event.listen(sync, "connect", _guard_on_connect)  # its first cursors too, made before any binding
        # The dialect's first connect looks hstore up in pg_type, unqualified (psycopg's TypeInfo.fetch()),
        # and keeps the loaders it registers for the life of the engine. Behind a pooler that session may be
        # one another client used, where a temporary view named pg_type (and a temporary domain hstore)
        # answers first: one tenant's SQL made every text[] every tenant read load as hstore. No reset can
        # hold that lookup's session; SQLAlchemy's own hstore handling (non-native) needs no lookup. What
        # create_engine(..., use_native_hstore=False) sets, for an engine that has not connected yet.
        if sync.dialect.server_version_info is None:
            sync.dialect.use_native_hstore = sync.dialect._has_native_hstore = False  # type: ignore[attr-defined]
        _driver_guard.quiet_ping(sync.dialect)
        _driver_guard.savepoints_told_apart(sync.dialect)
        _track_transactions(sync.dialect)
    return engine


def is_bound(engine: Engine) -> bool:
    """Whether :func:`bind_engine` was applied to ``engine``."""
    return event.contains(engine.dialect, "do_execute", _on_execute)


def _spells_set_local(dialect: object) -> bool:
    return bool(getattr(dialect, _SET_LOCAL, False))


def user_setting_from(user_id: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    """A column that binds ``user_id`` as the transaction's user, for :func:`adopt_user`.

    A statement that proves who the user is (a token lookup, say) can bind
    them in its own round trip instead of the one a rebinding would cost.
    """
    value = func.coalesce(sql_cast(user_id, CatalogText()), literal(""))
    return func.pg_catalog.set_config(literal(USER_SETTING), value, true())


def adopt_user(conn: Connection, user_id: int | None) -> None:
    """Record that a statement of ``conn``'s bound transaction bound ``user_id`` itself.

    Only after a statement with :func:`user_setting_from` has run for
    ``user_id``: the next statement's check then finds the binding matching
    a context acting for that user, and rebinds nothing.
    """
    info = conn.info
    bound = _binding_of(info, conn.get_transaction())
    if bound is None:
        raise ConfigurationError("adopt_user() needs a transaction already bound to a tenant")
    current = acting()
    prepare_for(conn.connection.driver_connection, _signing.key_of(conn.dialect) is not None, bound.tenant, user_id)
    if not bound.fresh and _needs_reset(info, conn.dialect, bound.tenant, user_id, beginning=current):
        # The session was kept for another user (the guess of begin_bound_with
        # was wrong): reset now, inside the transaction, and bound again (RESET
        # ALL takes the binding too); a rollback would undo part of it, so the
        # next transaction resets again.
        _bind(conn, _BIND, (bound.tenant, user_id), reset=True)
        info[_SERVED] = _NEVER
    info[_SERVED_USER] = _served_as(user_id, current)
    info[_BOUND] = bound._replace(user=user_id, savepoint=_savepoint_of(conn))


def begin_bound_with(conn: Connection, statement: bytes, values: Sequence[bytes | None]) -> pq.abc.PGresult | None:
    """Run ``statement`` first in ``conn``'s transaction, in the round trip that begins and binds it.

    For a statement of the library's own whose result it reads itself (the
    request's token lookup): the transaction then costs one round trip
    fewer. ``statement`` uses libpq's ``$n`` placeholders, ``values`` text
    format. Returns its result, or None when the transaction cannot begin
    this way (it already ran a statement; autocommit; another driver; a
    libpq without pipeline mode): the caller then runs the statement as
    usual. A failure raises SQLAlchemy's wrapping of psycopg's error.

    Inside :func:`~rls_tenancy.binding.affinity.serving_user` (the user a token
    was last found to belong to, which ``statement`` binds itself), the
    session is reset only if it last served another user;
    :func:`adopt_user` then checks the guess.
    """
    driver = conn.connection.driver_connection
    if not can_begin_with(driver):  # psycopg's own connection, idle, not in autocommit
        return None
    # What the statement's execution would have begun; a fresh one is never bound.
    transaction = conn.get_transaction() or conn.begin()
    if _binding_of(conn.info, transaction) is not None:
        return None
    current = acting()
    _refuse_sharing(conn.info, transaction)
    reset = _needs_reset(conn.info, conn.dialect, current[0], served_user(current[1]), beginning=current)
    proof = _signing.proof(conn.dialect, conn.info, current)
    try:
        result, mark = _send_binding(
            driver,
            current,
            proof,
            conn.info if reset else None,
            then=(statement, values),
            set_local=_spells_set_local(conn.dialect),
        )
    except psycopg.Error as error:
        invalidated = bool(driver.closed)
        if invalidated:
            conn.invalidate(error)
        raise DBAPIError.instance(
            statement.decode(), None, error, psycopg.Error, connection_invalidated=invalidated
        ) from error
    conn.info[_SERVED] = current[0]
    if reset:
        conn.info[_SERVED_USER] = _served_as(current[1], current)
    conn.info[_BOUND] = _Binding(weakref.ref(transaction), *current, fresh=reset, mark=mark)
    return result


def _on_execute(_cursor: object, _statement: str, _parameters: object, context: ExecutionContext) -> None:
    _bind_or_check(context.root_connection, context)


def _on_execute_no_params(_cursor: object, _statement: str, context: ExecutionContext) -> None:
    _bind_or_check(context.root_connection, context)


def bind_transaction_now(conn: Connection) -> None:
    """Bind ``conn``'s open transaction now, as its first statement would (or check the binding it has)."""
    _bind_or_check(conn)


def transaction_mark(conn: Connection) -> str:
    """Signed: what tells ``conn``'s transaction apart, as its binding read it back; binds it first if need be.

    Its start to the microsecond, and its backend (``settings.TRANSACTION_MARK``):
    a grant made for it is worth nothing in any other transaction, whatever
    SQL copies. Binding first costs no round trip: the transaction's first
    statement would have bound it.
    """
    transaction = conn.get_transaction() or conn.begin()  # what the statement's execution would have begun
    bound = _binding_of(conn.info, transaction) or _adopt_raw_binding(conn.info, transaction)
    if bound is None:
        _bind_or_check(conn)
        bound = _binding_of(conn.info, transaction)
    if bound is None or not bound.mark:
        raise ConfigurationError("a grant is made in a transaction bound with a context key, on a bound engine")
    return bound.mark


def _bind_or_check(conn: Connection, context: ExecutionContext | None = None) -> None:
    try:
        info = conn.info
    except NotImplementedError:  # the dialect's first-connect checks: version, schema; no pool entry
        return
    current = acting()
    transaction = conn.get_transaction()
    bound = _binding_of(info, transaction) or _adopt_raw_binding(info, transaction)
    if current[0] is None and context is not None and (bound is None or bound.tenant is None):
        _refuse_tenantless(context)  # (a transaction bound to a tenant refuses it below, as a change of tenant)
    if bound is None:  # this transaction's first statement through SQLAlchemy
        _refuse_sharing(info, transaction)
        reset = _needs_reset(info, conn.dialect, current[0], served_user(current[1]), beginning=current)
        reset, mark = _bind(conn, _BIND, current, reset=reset)
        if transaction is not None:
            info[_BOUND] = _Binding(weakref.ref(transaction), *current, fresh=reset, mark=mark)
        return
    if bound.tenant != current[0]:
        _refused(info)
        raise TenantChangedError(
            f"this transaction is bound to tenant {_describe(bound.tenant)} but the tenant "
            f"in context is now {_describe(current[0])}; commit or roll back before "
            "switching tenants, or use a separate Session"
        )
    elif bound.user != current[1] or not _still_holds(bound.savepoint):
        if _needs_reset(info, conn.dialect, bound.tenant, current[1]):
            # Signed, a user is a boundary: what SQL left in the session before
            # (a temporary type that an unqualified cast resolves to, say) must
            # not run with the new user's proof. Reset inside the transaction,
            # as adopt_user() does. A rollback (to a savepoint too) may undo
            # part of it, so from now on every rebinding of this transaction,
            # and the next transaction, resets again (_NEVER).
            _bind(conn, _BIND, current, reset=True)
            info[_SERVED] = _NEVER
        else:
            _bind(conn, _REBIND_USER, current[1:], proof=_signing.proof(conn.dialect, info, current))
        info[_BOUND] = bound._replace(user=current[1], savepoint=_savepoint_of(conn))
        info[_SERVED_USER] = _MIXED


def _refuse_tenantless(context: ExecutionContext) -> None:
    """A statement naming a tenant table, with no tenant: :class:`NoTenantError`, not the policy's empty answer.

    Core statements through a Connection, as the ORM's through a scoped
    Session; raw SQL (``text()``, the driver) names no table SQLAlchemy
    knows, and gets what row level security answers: no rows.
    """
    compiled = context.compiled
    if isinstance(compiled, SQLCompiler) and compiled_mentions_tenant_table(compiled):  # not DDL's compiler
        require_tenant_id()


def _adopt_raw_binding(info: dict[Any, Any], transaction: RootTransaction | None) -> _Binding | None:
    """The binding a raw statement made first in ``transaction``, now its own; None if there is none."""
    bound: _Binding | None = info.get(_BOUND)
    if bound is None or bound.transaction is not _raw_transaction or transaction is None:
        return None
    bound = info[_BOUND] = bound._replace(transaction=weakref.ref(transaction))
    return bound


def _bind_raw_first(driver: Any, info: dict[Any, Any]) -> None:
    """Bind the transaction SQLAlchemy began, before a raw statement that would otherwise begin it unbound."""
    dialect = info.pop(_BEGUN)
    current = acting()
    reset = _needs_reset(info, dialect, current[0], served_user(current[1]), beginning=current)
    proof = _signing.proof(dialect, info, current)
    if not can_begin_with(driver):  # a libpq without pipeline mode: the rare path
        raise ConfigurationError(
            "a raw statement ran first in a transaction SQLAlchemy began, and this libpq cannot bind it "
            "in the same round trip: run a statement through SQLAlchemy first"
        )
    _, mark = _send_binding(driver, current, proof, info if reset else None, set_local=_spells_set_local(dialect))
    if reset:
        info[_SERVED], info[_SERVED_USER] = current[0], _served_as(current[1], current)
    info[_BOUND] = _Binding(_raw_transaction, *current, fresh=reset, mark=mark)  # type: ignore[arg-type]


def _bind(
    conn: Connection, statement: str, ids: tuple[int | None, ...], reset: bool = False, proof: str | None = None
) -> tuple[bool, str]:
    """Bind ``ids`` on ``conn``'s connection; whether the session was reset, and (signed) the transaction's mark."""
    pooled = conn.connection
    driver = pooled.driver_connection
    if proof is None:
        proof = _signing.proof(conn.dialect, pooled.info, ids)
    # The usual case first, doing no more than it needs: it runs for every
    # transaction. A driver error raised here is wrapped by SQLAlchemy's own
    # handling (the dialect event runs inside it), which invalidates a dead
    # connection.
    if statement is _BIND and can_begin_with(driver):  # not in autocommit, either
        _, mark = _send_binding(
            driver, ids, proof, pooled.info if reset else None, set_local=_spells_set_local(conn.dialect)
        )
        if reset:
            pooled.info[_SERVED] = ids[0]
            pooled.info[_SERVED_USER] = _served_as(ids[1], ids)
        return reset, mark
    # ids: (tenant, user), or (user,) to rebind the user of a transaction bound to its tenant
    prepare_for(driver, bool(proof), ids[0] if len(ids) > 1 else _bound_tenant(pooled.info), ids[-1])
    raw = pooled.dbapi_connection
    assert raw is not None
    if getattr(raw, "autocommit", False):  # psycopg, and SQLAlchemy's asyncio adaptor of it
        if any(value is not None for value in ids):
            raise TenancyError(
                "an AUTOCOMMIT connection has no transaction to bind the tenant to; "
                "use a transactional isolation level on bound engines"
            )
        if _pooled(pooled.info):
            # Each statement may run on a server session another client used since, and no reset can
            # precede it there: the next may land elsewhere. A temporary view named like a table, left
            # by any tenant's SQL, would answer it.
            raise ConfigurationError(
                "behind a pooler, work in autocommit cannot be preceded by the session reset: each statement "
                "may run on a server session another client used; run it in a transaction"
            )
        # A round trip of its own, there being no BEGIN to ride with: not for a block of no user alone.
        reset = reset and _needs_reset(pooled.info, conn.dialect, ids[0], ids[-1])
        if reset:
            _prepare_driver(driver, pooled.info)
            with _driver_guard.muted(driver):
                _execute(raw, SESSION_RESET_SCRIPT)
            pooled.info[_SERVED], pooled.info[_SERVED_USER] = None, _served_as(None, ids)
        return reset, ""
    if reset:
        # A transaction the driver began itself: reset inside it, which a
        # rollback would undo, so the next transaction resets again.
        _prepare_driver(driver, pooled.info)
        with _driver_guard.muted(driver):
            _execute(raw, SESSION_RESET_SCRIPT)
    values = (*_texts(ids), proof)
    marked = bool(proof) and statement is _BIND  # a transaction bound anew: its mark is read back
    if _spells_set_local(conn.dialect):  # one script, in the simple protocol: SET takes no parameters
        names = _BOUND_SETTINGS if statement is _BIND else _BOUND_SETTINGS[1:]
        script = _settings.set_locals(names, values, local=_local or statement is not _BIND)
        answer = _execute(raw, b"; ".join((*script, _MARK) if marked else script))
    else:
        answer = _execute(raw, _BIND_MARKED if marked else statement, values)
    return reset, str(answer[-1]) if marked and answer else ""


def _texts(ids: tuple[int | None, ...]) -> tuple[str, ...]:
    """The settings' text for ``ids``: no id is the empty string."""
    return tuple("" if value is None else str(value) for value in ids)


def _execute(raw: Any, statement: str | bytes, values: Sequence[str] | None = None) -> Any:
    """Run ``statement`` (a script, or one statement with ``values``); the first row of its last answer with one."""
    cursor = raw.cursor()
    try:
        cursor.execute(statement, values)
        row = None
        while True:
            if cursor.description is not None:
                row = cursor.fetchone()
            if not cursor.nextset():
                return row
    finally:
        cursor.close()


def _needs_reset(
    info: dict[Any, Any], dialect: Any, tenant: int | None, user: object, *, beginning: Acting | None = None
) -> bool:
    """Whether the session must be discarded before it serves ``tenant`` (and ``user``).

    It last served another tenant, or none yet; with a context key, also
    when it last served another user: signed, the user is a boundary SQL
    cannot cross, and what one user's SQL left in the session (a prepared
    statement of psycopg's swapped for its own, say) would otherwise run in
    the next user's transaction, with that user's proof. Work for no user
    is one client per block (``beginning``: what is in context as a
    transaction begins, :func:`~rls_tenancy.context.block_of`): two
    anonymous requests of a tenant may be two clients, and a temporary view
    one's SQL named like a table would answer the other's statements.
    Work for no user outside any block is a client of its own each time.
    Work in autocommit, and a transaction rebound to no user, take a
    session any work for no user left: a reset would cost a round trip
    (:mod:`~rls_tenancy.binding.anonymous`).

    Behind a pooler (PgBouncer in transaction mode: the server's backend is
    not the one the client connected to), every transaction begins with the
    reset: any client may have used the server session since, and the
    pooler's own reset, if it is configured at all, fails open (a session
    whose ``DISCARD TEMP`` runs out of locks is kept, with a temporary view
    named like a table in it). The library's reset failing fails the
    transaction instead.
    """
    if not _resetting:
        return False
    if beginning is not None and _pooled(info):
        return True
    if info.get(_SERVED, _NEVER) != tenant:
        return True
    if _signing.key_of(dialect) is None:
        return False
    served = info.get(_SERVED_USER, _NEVER)
    if user is not None:
        return bool(served != user)
    if beginning is None:
        return not (served is None or isinstance(served, Block))
    block = block_of(beginning)
    return block is None or bool(served != block)  # outside any block: whose work it is, nothing tells


def _served_as(user: object, current: object) -> object:
    """Whom a session reset for ``user`` serves: the user, or for no user the block in context."""
    return user if user is not None else block_of(current)


_refusals = False  # whether any statement was refused yet: until then a commit checks nothing


def _refused(info: dict[Any, Any], ended: bool = False) -> None:
    """Record that a statement of the open transaction was refused: its commit must not persist the rest.

    ``ended``: SQL ended the transaction on the server, and its later statements are refused too.
    """
    global _refusals
    bound: _Binding | None = info.get(_BOUND)
    if bound is not None:
        info[_BOUND] = bound._replace(refused=True, ended=ended or bound.ended)
        _refusals = True


def _track_transactions(dialect: Any) -> None:
    """Wrap the dialect's ``do_begin``, ``do_commit`` and ``do_rollback``, not connection events (above). Idempotent.

    ``do_begin`` marks the connection for the driver guard, which binds a raw
    statement run first. A transaction that had a statement refused is rolled
    back at its commit, which raises: the refused statement may have been the
    one meant to undo work (a ROLLBACK TO SAVEPOINT sent from another tenant's
    context), and committing the rest would persist what the code asked to
    undo. PostgreSQL does the same after an error.
    """
    begin, commit, rollback = dialect.do_begin, dialect.do_commit, dialect.do_rollback
    if getattr(commit, "_rls_tenancy_checked", False):
        return

    def do_begin(connection: Any) -> None:
        begin(connection)
        try:
            connection.info[_BEGUN] = dialect
        except NotImplementedError:  # the dialect's first-connect checks: no pool entry
            pass

    def do_commit(connection: Any) -> None:
        if _refusals and _refused_transaction(connection.info):
            dialect.do_rollback(connection)
            raise TenantChangedError(
                "a statement of this transaction was refused because the tenant in context changed; "
                "it was rolled back, not committed: commit or roll back before switching tenants"
            )
        _ended(connection.info)
        commit(connection)

    def do_rollback(connection: Any) -> None:
        try:
            _ended(connection.info)
        except NotImplementedError:
            pass
        rollback(connection)

    do_commit._rls_tenancy_checked = True  # type: ignore[attr-defined]
    dialect.do_begin, dialect.do_commit, dialect.do_rollback = do_begin, do_commit, do_rollback


def _ended(info: dict[Any, Any]) -> None:
    """SQLAlchemy ends its transaction: no mark of it is left, nor a raw statement's binding it never adopted."""
    info.pop(_BEGUN, None)
    bound: _Binding | None = info.get(_BOUND)
    if bound is not None and bound.transaction is _raw_transaction:
        del info[_BOUND]


def _refused_transaction(info: dict[Any, Any]) -> bool:
    bound: _Binding | None = info.get(_BOUND)
    if bound is None or not bound.refused:
        return False
    transaction = bound.transaction()
    return transaction is not None and bool(transaction.is_active)


def _refuse_sharing(info: dict[Any, Any], transaction: RootTransaction | None) -> None:
    """Refuse a transaction on a DBAPI connection that another open transaction is bound on."""
    bound: _Binding | None = info.get(_BOUND)
    other = None if bound is None else bound.transaction()
    if other is not None and other is not transaction and bool(other.is_active):
        raise ConfigurationError(
            "this DBAPI connection is in another Connection's open transaction (a pool that shares "
            "connections?): the two would share one binding; use a QueuePool or a NullPool"
        )


def _savepoint_of(conn: Connection) -> weakref.ref[NestedTransaction] | None:
    savepoint = conn.get_nested_transaction()
    return None if savepoint is None else weakref.ref(savepoint)


def _still_holds(savepoint: weakref.ref[NestedTransaction] | None) -> bool:
    """Whether a user bound in ``savepoint`` is still bound: not once it ended (a ROLLBACK TO undoes it)."""
    if savepoint is None:
        return True
    alive = savepoint()
    return alive is not None and bool(alive.is_active)


def _prepare_driver(driver: Any, info: dict[Any, Any]) -> None:
    """As :data:`SESSION_RESET` runs: the driver held to the binding, its prepared statements forgotten."""
    if isinstance(driver, psycopg.Connection | psycopg.AsyncConnection):
        _forget_prepared(driver)
        _guard(driver, info)


def _guard(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], info: dict[Any, Any]) -> None:
    """Hold ``driver`` to the binding, and reset its session before work on it that no binding covers.

    Once per connection (from its connect, or its first reset where it was
    opened before the engine was bound): its hooks read its pool record's
    info, which lives as long as it does.
    """
    if _driver_guard.is_guarded(driver):
        return
    _driver_guard.guard(
        driver,
        _driver_guard.Hooks(
            tenant_of=functools.partial(_open_binding_tenant, info),
            served=functools.partial(_served_another, info),
            resetting=functools.partial(_unbound_reset, driver, info),
            refused=functools.partial(_refused, info),
            reset=SESSION_RESET_SCRIPT,
            begun=functools.partial(dict.__contains__, info, _BEGUN),
            bind=functools.partial(_bind_raw_first, driver, info),
            pooled=functools.partial(_pooled, info),
            signed=functools.partial(_signs, info),
        ),
    )


def _signs(info: dict[Any, Any]) -> bool:
    """Whether the connection's engine signs, as its connect found (not known: taken as signing)."""
    return bool(info.get(_signing.SIGNED, True))


def _guard_on_connect(_dbapi: object, record: ConnectionPoolEntry) -> None:
    driver = record.driver_connection
    if _resetting and isinstance(driver, psycopg.Connection | psycopg.AsyncConnection):  # off with the binding
        _guard(driver, record.info)


def _served_another(info: dict[Any, Any]) -> bool:
    """Whether the session may hold what another tenant's (or user's) transactions left than the context's.

    Unbound work in the context of the tenant and user the session last
    served sees only what their own SQL left, as their next bound
    transaction would. (Without a context key a change of user alone resets
    here, where the binding would not: this path is rare.)
    """
    if not _resetting:
        return False
    if _pooled(info):  # any client may have used the server session since
        return True
    current = acting()
    served_as = _served_as(current[1], current)
    return bool(info.get(_SERVED, _NEVER) != current[0] or info.get(_SERVED_USER, _NEVER) != served_as)


def _unbound_reset(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], info: dict[Any, Any]) -> None:
    """The guard resets the session before unbound work: psycopg forgets its statements, the session no tenant."""
    _forget_prepared(driver)
    current = acting()  # the client whose work follows: whoever comes next after it is reset for
    info[_SERVED], info[_SERVED_USER] = current[0], _served_as(current[1], current)


class _PreparedCache(NamedTuple):
    """psycopg's cache of prepared statements: its names, its counts, the deallocations it has yet to send."""

    names: dict[Any, bytes]
    counts: dict[Any, int]
    to_flush: Any  # a deque


def _prepared_cache(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> _PreparedCache | None:
    """psycopg's cache of prepared statements, if its internals are what this expects.

    psycopg has no public call to read or clear it; where its internals
    differ, the caller turns its automatic preparation off instead, which is
    always safe. (Off for good, it would cost the statements psycopg
    prepares: measured, 110 to 180 µs of PostgreSQL's CPU per one-query
    transaction that a plain app's reuse of a prepared statement saves.)
    """
    manager = getattr(driver, "_prepared", None)
    parts: list[Any] = [getattr(manager, name, None) for name in ("_names", "_counts", "_to_flush")]
    if all(callable(getattr(part, "clear", None)) for part in parts):
        return _PreparedCache(*parts)
    driver.prepare_threshold = None
    return None


def _forget_prepared(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Empty psycopg's cache of prepared statements, as its own ``clear()`` does, minus its DEALLOCATE ALL.

    Its rollback clears the cache and sends a DEALLOCATE ALL of its own, a
    round trip, which the reset has already done.
    """
    cache = _prepared_cache(driver)
    if cache is not None:
        for part in cache:
            part.clear()


def _kept_statements(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bytes:
    """The names of psycopg's prepared statements, a ``text[]`` literal: the reset keeps them while intact."""
    cache = _prepared_cache(driver)
    names = () if cache is None else cache.names.values()
    return b"{" + b",".join(_array_element(name) for name in names) + b"}"


def _array_element(name: bytes) -> bytes:
    """``name`` quoted as an element of an array literal (psycopg's names need no quotes, but may one day)."""
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _after_reset(driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], kept: bool) -> None:
    """psycopg's cache made to match what the reset left: its statements, or (not ``kept``) none.

    The reset deallocated whatever psycopg had yet to deallocate itself.
    """
    if not kept:
        _forget_prepared(driver)
        return
    cache = _prepared_cache(driver)
    if cache is not None:
        cache.to_flush.clear()


def _pooled(info: dict[Any, Any]) -> bool:
    """Whether a pooler stands between the connection and the server: its backend is not the client's."""
    return info.get(_signing.PINNED) == 0


def _bound_tenant(info: dict[Any, Any]) -> int | None:
    """The tenant the connection's transaction is bound to (rebinding its user keeps it)."""
    bound: _Binding | None = info.get(_BOUND)
    return None if bound is None else bound.tenant


#: What :func:`transaction_tenant` answers for a transaction nothing has bound (yet).
NOT_BOUND = _driver_guard.UNBOUND


def behind_pooler(conn: Connection) -> bool:
    """Whether ``conn`` reaches the server through a pooler (PgBouncer in transaction mode), as its connect found."""
    return _pooled(conn.info)


def statements_run(driver: object) -> int | None:
    """How many statements a bound engine's driver connection has run through its cursors; None if not one's.

    What the library read below the cursors (in the round trip that began
    the transaction) is still what a statement would read while this has
    not moved.
    """
    return _driver_guard.statements_run(driver)


def transaction_tenant(conn: Connection) -> object:
    """The tenant ``conn``'s open transaction is bound to (None: to no tenant).

    :data:`NOT_BOUND` before its first statement (nothing bound, nothing
    run), or where no binding covers it.
    """
    return _open_binding_tenant(conn.info)


def _open_binding_tenant(info: dict[Any, Any]) -> object:
    """The tenant of the binding of the SQLAlchemy transaction open on this connection, if one is."""
    bound: _Binding | None = info.get(_BOUND)
    transaction = None if bound is None else bound.transaction()
    if transaction is None or not transaction.is_active:
        return _driver_guard.UNBOUND
    return _driver_guard.ENDED if bound.ended else bound.tenant  # type: ignore[union-attr]


def _binding_of(info: dict[Any, Any], transaction: RootTransaction | None) -> _Binding | None:
    """The binding made for ``transaction``, if any.

    The pooled connection's info may still hold an earlier transaction's
    binding: it never passes for this one's.
    """
    bound: _Binding | None = info.get(_BOUND)
    if bound is None or transaction is None or bound.transaction() is not transaction:
        return None
    return bound


def _send_binding(
    driver: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
    ids: tuple[int | None, ...],
    proof: str,
    reset_for: dict[Any, Any] | None = None,
    then: Statement | None = None,
    set_local: bool = False,
) -> tuple[pq.abc.PGresult | None, str]:
    """``BEGIN`` and the binding of ``ids`` and ``proof`` (and ``then``) in one round trip, on either kind of driver.

    With ``reset_for`` (the pooled connection's info), the session's state
    is discarded first, in the same round trip. With ``set_local``, the
    binding is three ``SET LOCAL`` statements in that round trip. Returns
    the last statement's result and, signed (a ``proof``), the transaction's
    mark, read back from the binding.
    """
    prepare_for(driver, bool(proof), ids[0], ids[1])
    texts = (*_texts(ids), proof)
    statement, wire = _BIND_MARKED_WIRE if proof else _BIND_WIRE, [text.encode() for text in texts]
    also: list[Statement] = []
    if set_local:  # no parameters: each value a literal of its own statement
        statement, *rest = _settings.set_locals(_BOUND_SETTINGS, texts, local=_local)
        wire, also = [], [(each, ()) for each in (*rest, *((_MARK,) if proof else ()))]
    reset: Statement | None = None
    if reset_for is not None:
        _guard(driver, reset_for)
        reset = (_RESET_WIRE, [_kept_statements(driver)])
    try:
        with _driver_guard.muted(driver) if reset is not None else contextlib.nullcontext():
            if isinstance(driver, psycopg.AsyncConnection):
                begun = await_only(begin_with_async(driver, statement, wire, then, reset, also=also))
            else:
                begun = begin_with(driver, statement, wire, then, reset, also=also)
    except psycopg.errors.UndefinedFunction as error:
        if reset is None or "reset_session" not in str(error):
            raise
        # The same class, so SQLAlchemy wraps it and discards the connection (the exchange closed it).
        raise psycopg.errors.UndefinedFunction(
            "this database has no rls_tenancy.reset_session(), which bound engines call between "
            "tenants: upgrade it to the library's head (rls-tenancy migrate, or alembic upgrade heads)"
        ) from error
    if begun.reset is not None:
        _after_reset(driver, begun.reset.get_value(0, 0) == b"t")
    marked = begun.binding if proof else None
    mark = None if marked is None else marked.get_value(0, marked.nfields - 1)
    return begun.result, "" if mark is None else mark.decode()


def _bind_session_wide(session_wide: bool) -> None:
    """Bind for the rest of the session instead of the transaction, and reset no session, or (False) again not.

    A ``set_local`` engine then spells ``SET`` where it spelled ``SET LOCAL``.

    The peers' classic leaks, planted on purpose by ``--rls-break=binding``
    (:mod:`rls_tenancy.testing`) so the tests guarding this layer can show
    they fail without it. Never call it outside a test run.
    """
    global _BIND, _BIND_WIRE, _BIND_MARKED, _BIND_MARKED_WIRE, _local, _resetting
    _resetting = _local = not session_wide
    _BIND = _settings.set_configs(_BOUND_SETTINGS, ("%s", "%s", "%s"), local=not session_wide)
    _BIND_WIRE = _settings.set_configs(_BOUND_SETTINGS, ("$1", "$2", "$3"), local=not session_wide).encode()
    _BIND_MARKED, _BIND_MARKED_WIRE = _BIND + _MARKED, _BIND_WIRE + _MARKED.encode()


def _describe(tenant: int | None) -> str:
    return "(none)" if tenant is None else str(tenant)
