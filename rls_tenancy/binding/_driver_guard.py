"""The driver under a bound Connection is held to the binding too.

SQLAlchemy's statements pass the binding's check: a tenant changed inside a
transaction raises :class:`~rls_tenancy.TenantChangedError`. Code that takes
the psycopg connection itself (``conn.connection.driver_connection``) goes
past SQLAlchemy, and would run under the binding of the tenant the
transaction began with. On a bound connection psycopg makes its cursors from
subclasses that run the same check first, so such a statement (a ``COPY``,
say) raises instead. Only libpq itself (``pgconn``) is below it.

Rows fetched from a server-side cursor come from the server in the
transaction's binding too: its fetches are checked the same way, so a cursor
opened for one tenant and read on after the context changed raises instead of
handing that tenant's rows to another's code.

Work on the driver outside any binding (before SQLAlchemy's first statement
of a transaction, on ``engine.raw_connection()``) is bound to nobody, and
would still see what the last tenant's SQL left in the session (a
session-wide ``app.current_tenant``, a temp view named like a table): before
its first statement, a session that served another tenant (or user) than the
one in context is reset, as the binding does before it serves another
tenant, and that reset is committed. A transaction the driver begins with
``transaction()`` (as its block is entered) or ``tpc_begin()`` is checked
the same way, and so is ``notifies()``; the notifications psycopg reads as
the session is reset are the last client's, for no handler and no
``notifies()`` of the next. Behind a pooler, where another
client may have used the server session since and each transaction may run
on another, every such transaction begins with the reset inside it, and
work in autocommit outside one is refused. Cursors made from psycopg's
classes directly (``psycopg.Cursor(conn)``), rather than by
``conn.cursor()``, skip the connection's cursor factory, and with it this
guard, as ``pgconn`` does; so does a cursor factory assigned to the
connection after it was made (give it in ``connect_args`` instead, where
the guard wraps it).

The check costs about a microsecond per statement; SQLAlchemy's statements
pass it too, just after the binding's own.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

import psycopg

from rls_tenancy.context import acting
from rls_tenancy.errors import ConfigurationError, TenancyError, TenantChangedError

#: What a bound connection's open SQLAlchemy transaction is bound to, or :data:`UNBOUND`.
TenantOf = Callable[[], object]
UNBOUND = object()
#: What :data:`TenantOf` answers once SQL ended the bound transaction on the server.
ENDED = object()


class Hooks(NamedTuple):
    """What the binding tells the guard about one driver connection."""

    #: The tenant the SQLAlchemy transaction open on it is bound to, or :data:`UNBOUND`.
    tenant_of: TenantOf
    #: Whether its session may hold what another tenant's (or user's) transactions left than the context's.
    served: Callable[[], bool]
    #: Called as the reset starts: from then on the session counts as serving no tenant.
    resetting: Callable[[], None]
    #: The reset, one script.
    reset: bytes
    #: Called as a statement is refused: the transaction it was refused in may not commit; with
    #: True, SQL ended it on the server, and none of its later statements may run either.
    refused: Callable[[bool], None]
    #: Whether SQLAlchemy began a transaction on it that no statement has bound yet.
    begun: Callable[[], bool]
    #: Bind that transaction now, for the tenant in context (a sync connection's).
    bind: Callable[[], None]
    #: Whether a pooler stands between it and the server (PgBouncer in transaction mode): any
    #: client may have used the server session since, and each transaction may land on another.
    pooled: Callable[[], bool]
    #: Whether its engine signs the tenant context: the library's statements then run unprepared.
    signed: Callable[[], bool]


_hooks: weakref.WeakKeyDictionary[Any, Hooks] = weakref.WeakKeyDictionary()
_IDLE = psycopg.pq.TransactionStatus.IDLE
#: Set while SQLAlchemy pings a connection it is checking out (``pool_pre_ping``): its ``SELECT 1``
#: reads nothing, and the binding resets the session, if it must, in the round trip that begins
#: the transaction; a reset here would only run twice.
_PINGING: ContextVar[bool] = ContextVar("rls_tenancy_pinging", default=False)
#: Set while the guard's own reset runs: behind a pooler it begins the transaction it precedes.
_RESETTING: ContextVar[bool] = ContextVar("rls_tenancy_resetting", default=False)


#: Set while SQLAlchemy rolls back to one of its savepoints: a ``ROLLBACK`` that ends no transaction.
_TO_SAVEPOINT: ContextVar[bool] = ContextVar("rls_tenancy_to_savepoint", default=False)
#: Command tags of statements that end the server's transaction, ``AND CHAIN`` included (which
#: begins the next one at once, so the connection never looks idle).
_ENDING = frozenset({b"COMMIT", b"ROLLBACK", b"PREPARE TRANSACTION"})


def savepoints_told_apart(dialect: Any) -> None:
    """Let the guard tell SQLAlchemy's ``ROLLBACK TO SAVEPOINT`` from one that ends the transaction. Idempotent."""
    original = dialect.do_rollback_to_savepoint
    if getattr(original, "_rls_tenancy_told", False):
        return

    def do_rollback_to_savepoint(connection: Any, name: str) -> None:
        token = _TO_SAVEPOINT.set(True)
        try:
            original(connection, name)
        finally:
            _TO_SAVEPOINT.reset(token)

    do_rollback_to_savepoint._rls_tenancy_told = True  # type: ignore[attr-defined]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint


def quiet_ping(dialect: Any) -> None:
    """Exempt ``dialect``'s ``do_ping`` from the reset before unbound work. Idempotent."""
    original = dialect.do_ping
    if getattr(original, "_rls_tenancy_quiet", False):
        return

    def do_ping(dbapi_connection: Any) -> bool:
        token = _PINGING.set(True)
        try:
            return bool(original(dbapi_connection))
        finally:
            _PINGING.reset(token)

    do_ping._rls_tenancy_quiet = True  # type: ignore[attr-defined]
    dialect.do_ping = do_ping


def guard(driver: Any, hooks: Hooks) -> None:
    """Make ``driver``'s cursors (a psycopg connection's) check the tenant before each statement.

    A transaction the driver began on its own is bound to nobody, and checks
    nothing; before the first statement of such work, a session that served
    a tenant is reset. Idempotent.
    """
    _hooks[driver] = hooks
    if not hasattr(driver, _STATEMENTS):
        setattr(driver, _STATEMENTS, 0)
    driver.cursor_factory = _guarded(driver.cursor_factory)
    driver.server_cursor_factory = _guarded(driver.server_cursor_factory)
    driver.transaction = _guarded_transactions(driver, driver.transaction)
    driver.tpc_begin = _guarded_tpc_begin(driver, driver.tpc_begin)
    driver.notifies = _guarded_notifies(driver, driver.notifies)


def is_guarded(driver: Any) -> bool:
    """Whether :func:`guard` was applied to ``driver``."""
    return driver in _hooks


#: On a guarded driver connection: how many statements its cursors have run (each passes :func:`_check`).
_STATEMENTS = "_rls_tenancy_statements"


def statements_run(driver: Any) -> int | None:
    """How many statements ``driver``'s cursors have run since it was guarded; None where it is not."""
    counted: int | None = getattr(driver, _STATEMENTS, None)
    return counted


#: What a statement needs before it runs, as :func:`_check` answers.
_RESET = 1  # unbound work on a session that served another tenant: reset it first
_BIND = 2  # the first statement of a transaction SQLAlchemy began: bind that transaction first


def _check(driver: Any) -> int:
    """Raise if the transaction is bound to another tenant; what the statement needs first (0: nothing)."""
    hooks = _hooks.get(driver)
    if hooks is None:
        return 0
    driver._rls_tenancy_statements += 1
    tenant = hooks.tenant_of()
    if tenant is UNBOUND:
        if driver.pgconn.transaction_status != _IDLE or _PINGING.get() or _RESETTING.get():
            return 0
        if hooks.begun() and not driver.autocommit:
            return _BIND
        return _RESET if hooks.served() else 0
    if tenant is ENDED or (driver.pgconn.transaction_status == _IDLE and not driver.autocommit):
        # The server's transaction ended under SQLAlchemy's (a COMMIT or ROLLBACK sent as SQL, AND
        # CHAIN included, or the driver's own commit()): its binding went with it, and the next
        # statement would run in a transaction bound to nothing, or to a tenant SQL set session-wide.
        hooks.refused(True)
        raise TenancyError(
            f"the transaction bound to {_tenant_of(tenant)} was ended on the server by a COMMIT or ROLLBACK "
            "that did not go through SQLAlchemy; end transactions with commit() or rollback() of the "
            "Connection or Session, then start the next one there"
        )
    if tenant != acting()[0]:
        hooks.refused(False)
        raise TenantChangedError(
            f"this connection's transaction is bound to tenant {'(none)' if tenant is None else tenant} "
            f"but the tenant in context is now {acting()[0] or '(none)'}; commit or roll back before "
            "switching tenants, also for statements sent through the driver"
        )
    return 0


def _unprepared(driver: Any, query: object) -> bool:
    """Whether ``query`` must not run as a prepared statement: a signed connection's, naming the library.

    Its session's statements stay between transactions of one user, and SQL
    run for that user may swap one under psycopg's name (``DEALLOCATE``,
    then ``PREPARE``): the swap would see what the next one carries (a
    password hash, a grant) and answer in its place (a user's roles). The
    library's statements name its schema or its grants; sent unprepared, a
    name SQL swapped is never used for them. Nor for SQLAlchemy's savepoints,
    which run between a grant and its write (``begin_nested()``): swapped,
    one would read the grant pending in the transaction. Unsigned, SQL may
    act as any user of its tenant anyway, and they prepare as any.
    """
    if not isinstance(query, str) or (
        "rls_tenancy." not in query and "app.grants" not in query and not query.startswith(_SAVEPOINTS)
    ):
        return False
    hooks = _hooks.get(driver)
    return hooks is not None and hooks.signed()


#: SQLAlchemy's savepoint statements (``ROLLBACK TO`` needs nothing: any rollback empties psycopg's cache).
_SAVEPOINTS = ("SAVEPOINT ", "RELEASE SAVEPOINT ")


@contextlib.contextmanager
def _not_preparing(driver: Any) -> Iterator[None]:
    """psycopg neither prepares nor uses a prepared statement meanwhile (``executemany`` has no ``prepare``)."""
    threshold = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = threshold


def _ran(cursor: Any) -> None:
    """Refuse, after it ran, a statement that ended its bound transaction on the server.

    ``COMMIT AND CHAIN`` and ``ROLLBACK AND CHAIN`` (or ``COMMIT; BEGIN``)
    end it and begin another at once: the next statement's check would find
    the connection in a transaction, and the work after them would run in
    one the binding never made (unsigned, under a tenant SQL set
    session-wide), and commit without the work they undid. Told by the
    statements' command tags, which ``ROLLBACK TO SAVEPOINT`` shares: that
    one passes when SQLAlchemy sends it.
    """
    for result in cursor._results:
        if result.command_status in _ENDING:
            break
    else:
        return
    hooks = _hooks.get(cursor.connection)
    if hooks is None or _TO_SAVEPOINT.get():
        return
    tenant = hooks.tenant_of()
    if tenant is UNBOUND:
        return
    hooks.refused(True)
    raise TenancyError(
        f"a statement ended the transaction bound to {_tenant_of(tenant)} on the server "
        f"({result.command_status.decode()}, AND CHAIN included), not through SQLAlchemy; end "
        "transactions with commit() or rollback() of the Connection or Session, and savepoints with "
        "begin_nested()"
    )


def _tenant_of(tenant: object) -> str:
    if tenant is ENDED:
        return "its tenant"
    return f"tenant {'(none)' if tenant is None else tenant}"


def _guarded_transactions(driver: Any, begin: Callable[..., Any]) -> Callable[..., Any]:
    """``driver.transaction()``, checked as a statement would be before the ``BEGIN`` it sends, as it is entered."""

    def transaction(*args: Any, **kwargs: Any) -> Any:
        return _CheckedTransaction(driver, begin, args, kwargs)

    return transaction


def _guarded_tpc_begin(driver: Any, begin: Callable[..., Any]) -> Callable[..., Any]:
    """``driver.tpc_begin(xid)``, checked as ``transaction()`` is: it sends its ``BEGIN`` past every cursor too."""
    if isinstance(driver, psycopg.AsyncConnection):

        async def tpc_begin_async(xid: Any) -> None:
            needs, inside = _before_begin(driver)
            if needs and not inside:
                await _prepare_async(driver, needs)
            await begin(xid)
            if inside:
                await _reset_inside_async(driver)

        return tpc_begin_async

    def tpc_begin(xid: Any) -> None:
        needs, inside = _before_begin(driver)
        if needs and not inside:
            _prepare(driver, needs)  # the reset committed first, on the same server session
        begin(xid)
        if inside:  # behind a pooler: inside the transaction it began
            _reset_inside(driver)

    return tpc_begin


def _guarded_notifies(driver: Any, listen: Callable[..., Any]) -> Callable[..., Any]:
    """``driver.notifies()``: on a session to reset, the reset first, and the notifications read before it go."""
    if isinstance(driver, psycopg.AsyncConnection):

        async def notifies_async(*args: Any, **kwargs: Any) -> Any:
            needs = _needs_before_begin(driver)
            if needs:
                await _prepare_async(driver, needs)
            async for notification in listen(*args, **kwargs):
                yield notification

        return notifies_async

    def notifies(*args: Any, **kwargs: Any) -> Any:
        needs = _needs_before_begin(driver)  # as iteration starts, as psycopg's generator starts its work
        if needs:
            _prepare(driver, needs)
        yield from listen(*args, **kwargs)

    return notifies


def _needs_before_begin(driver: Any) -> int:
    """What a transaction the driver is about to begin needs first, as its first statement would."""
    if driver.pgconn.transaction_status != _IDLE or driver not in _hooks:
        return 0
    return _check(driver)


def _before_begin(driver: Any) -> tuple[int, bool]:
    """:func:`_needs_before_begin`, and whether its reset goes inside the transaction (behind a pooler)."""
    needs = _needs_before_begin(driver)
    return needs, needs == _RESET and _hooks[driver].pooled()


class _CheckedTransaction:
    """A driver transaction whose reset (or binding) goes first, or behind a pooler inside it, as it is entered.

    psycopg's ``transaction()`` sends nothing until its block is entered:
    checked when it was called, a block entered after another client used
    the session would run unchecked.
    """

    def __init__(self, driver: Any, begin: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self._driver, self._begin, self._args, self._kwargs = driver, begin, args, kwargs
        self._inner: Any = None

    def __enter__(self) -> Any:
        needs, inside = _before_begin(self._driver)  # none for a savepoint in a transaction already checked
        if needs and not inside:
            _prepare(self._driver, needs)  # the reset committed first, on the same server session
        self._inner = self._begin(*self._args, **self._kwargs)
        begun = self._inner.__enter__()
        if inside:  # behind a pooler: in the transaction it began
            try:
                _run_reset(self._driver, commit=False)
            except BaseException as error:
                self._inner.__exit__(type(error), error, error.__traceback__)  # its rollback, then no more of it
                self._driver.close()
                raise
        return begun

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)

    async def __aenter__(self) -> Any:
        needs, inside = _before_begin(self._driver)
        if needs and not inside:
            await _prepare_async(self._driver, needs)
        self._inner = self._begin(*self._args, **self._kwargs)
        begun = await self._inner.__aenter__()
        if inside:
            try:
                await _run_reset_async(self._driver, commit=False)
            except BaseException as error:
                await self._inner.__aexit__(type(error), error, error.__traceback__)
                await self._driver.close()
                raise
        return begun

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


def _run_reset(driver: psycopg.Connection[Any], commit: bool) -> None:
    """The reset script on ``driver``, muted; from its start the session counts as serving no one else."""
    hooks = _hooks[driver]
    hooks.resetting()  # first: the reset's own statement passes the check
    token = _RESETTING.set(True)
    try:
        with muted(driver):
            driver.execute(hooks.reset, prepare=False)
            if commit:
                driver.commit()
    finally:
        _RESETTING.reset(token)


def _reset_inside(driver: psycopg.Connection[Any]) -> None:
    """The reset as the first statement of the transaction just begun; a connection it fails on is closed."""
    try:
        _run_reset(driver, commit=False)
    except BaseException:
        driver.close()
        raise


@contextlib.contextmanager
def muted(driver: Any) -> Iterator[None]:
    """While the session is reset: notifications psycopg reads then are the last client's, for nobody.

    ``UNLISTEN *`` stops new ones; those already on the socket are read as
    the reset's own results come in, which would call the handlers the
    next client added and fill the backlog ``notifies()`` hands it. Both
    are psycopg's private attributes; without them, nothing is done.
    """
    handlers = getattr(driver, "_notify_handlers", None)
    if handlers is not None:
        driver._notify_handlers = []
    try:
        yield
    finally:
        if handlers is not None:
            driver._notify_handlers = handlers
        backlog = getattr(driver, "_notifies_backlog", None)
        if backlog:
            backlog.clear()


async def _run_reset_async(driver: psycopg.AsyncConnection[Any], commit: bool) -> None:
    hooks = _hooks[driver]
    hooks.resetting()
    token = _RESETTING.set(True)
    try:
        with muted(driver):
            await driver.execute(hooks.reset, prepare=False)
            if commit:
                await driver.commit()
    finally:
        _RESETTING.reset(token)


async def _reset_inside_async(driver: psycopg.AsyncConnection[Any]) -> None:
    try:
        await _run_reset_async(driver, commit=False)
    except BaseException:
        await driver.close()
        raise


def _prepare(driver: psycopg.Connection[Any], needs: int) -> None:
    """Do what :func:`_check` said a sync connection's statement needs first."""
    if needs == _BIND:
        _hooks[driver].bind()
    elif needs:
        _reset(driver)


async def _prepare_async(driver: psycopg.AsyncConnection[Any], needs: int) -> None:
    if needs == _BIND:
        _refuse_async_binding()
    elif needs:
        await _reset_async(driver)


def _refuse_async_binding() -> None:
    raise ConfigurationError(
        "a raw asyncio statement would run first in a transaction SQLAlchemy began, bound to no tenant: "
        "run a statement through SQLAlchemy first (await conn.execute(...)), which binds the transaction"
    )


def _reset(driver: psycopg.Connection[Any]) -> None:
    """The session reset, committed, before unbound work; a connection it fails on is closed, never reused.

    Behind a pooler, in the work's own transaction instead (the next
    transaction may run on another server session), and refused in
    autocommit, where each statement may.
    """
    pooled = _refuse_pooled_autocommit(driver, _hooks[driver])
    try:
        _run_reset(driver, commit=not driver.autocommit and not pooled)
    except BaseException:
        driver.close()
        raise


def _refuse_pooled_autocommit(driver: Any, hooks: Hooks) -> bool:
    """Whether ``driver`` is behind a pooler; raises for work in autocommit there, which no reset can precede."""
    pooled = hooks.pooled()
    if pooled and driver.autocommit:
        raise ConfigurationError(
            "behind a pooler, driver work in autocommit outside a transaction SQLAlchemy began cannot be "
            "preceded by the session reset: each statement may run on a server session another client used; "
            "run it in a transaction (autocommit off), or through SQLAlchemy"
        )
    return pooled


async def _reset_async(driver: psycopg.AsyncConnection[Any]) -> None:
    pooled = _refuse_pooled_autocommit(driver, _hooks[driver])
    try:
        await _run_reset_async(driver, commit=not driver.autocommit and not pooled)
    except BaseException:
        await driver.close()
        raise


#: One subclass per cursor class, however many connections use it.
_subclasses: dict[type[Any], type[Any]] = {}


def _guarded(cursor_class: type[Any]) -> type[Any]:
    if getattr(cursor_class, "_rls_tenancy_guarded", False):
        return cursor_class
    found = _subclasses.get(cursor_class)
    if found is None:
        is_async = issubclass(cursor_class, psycopg.AsyncCursor | psycopg.AsyncServerCursor)
        server = issubclass(cursor_class, psycopg.ServerCursor | psycopg.AsyncServerCursor)
        mixin = (_AsyncServerGuard if server else _AsyncGuard) if is_async else (_ServerGuard if server else _Guard)
        found = _subclasses[cursor_class] = type(cursor_class.__name__, (mixin, cursor_class), {})
    return found


class _Checked:
    """What sync and asyncio cursors share: ``copy`` and ``stream`` return before they send anything."""

    _rls_tenancy_guarded = True
    #: Whether its ``execute`` takes ``prepare`` (a server-side cursor's declares, and refuses it).
    _prepares = True
    connection: Any

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        self._before_statement()
        return super().copy(*args, **kwargs)  # type: ignore[misc]

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self._before_statement()
        return super().stream(*args, **kwargs)  # type: ignore[misc]

    def _before_statement(self) -> None:
        needs = _check(self.connection)
        if needs and isinstance(self.connection, psycopg.AsyncConnection):
            if needs == _BIND:
                _refuse_async_binding()
            raise ConfigurationError(
                "this asyncio connection last served a tenant and must be reset before work bound to "
                "nobody: run a statement with execute() first, or the work through SQLAlchemy"
            )
        _prepare(self.connection, needs)


class _Guard(_Checked):
    """Mixed in before a sync cursor class."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        needs = _check(self.connection)
        if needs:
            _prepare(self.connection, needs)
        if args and self._prepares and _unprepared(self.connection, args[0]):
            kwargs["prepare"] = False
        result = super().execute(*args, **kwargs)  # type: ignore[misc]
        _ran(self)
        return result

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        needs = _check(self.connection)
        if needs:
            _prepare(self.connection, needs)
        if args and _unprepared(self.connection, args[0]):
            with _not_preparing(self.connection):
                result = super().executemany(*args, **kwargs)  # type: ignore[misc]
        else:
            result = super().executemany(*args, **kwargs)  # type: ignore[misc]
        _ran(self)
        return result


class _AsyncGuard(_Checked):
    """Mixed in before an asyncio cursor class."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await _prepare_async(self.connection, _check(self.connection))
        if args and self._prepares and _unprepared(self.connection, args[0]):
            kwargs["prepare"] = False
        result = await super().execute(*args, **kwargs)  # type: ignore[misc]
        _ran(self)
        return result

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        await _prepare_async(self.connection, _check(self.connection))
        if args and _unprepared(self.connection, args[0]):
            with _not_preparing(self.connection):
                result = await super().executemany(*args, **kwargs)  # type: ignore[misc]
        else:
            result = await super().executemany(*args, **kwargs)  # type: ignore[misc]
        _ran(self)
        return result


class _ServerGuard(_Guard):
    """A server-side cursor's fetches read rows from the server in the transaction's binding: checked too.

    Refused, the cursor is closed: its rows are not for the context any more.
    """

    _prepares = False

    def _before_fetch(self) -> None:
        try:
            _refuse_fetch_elsewhere(self.connection, _check(self.connection))
        except TenancyError:
            self.close()  # type: ignore[attr-defined]
            raise

    def fetchone(self) -> Any:
        self._before_fetch()
        return super().fetchone()  # type: ignore[misc]

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        self._before_fetch()
        return super().fetchmany(*args, **kwargs)  # type: ignore[misc]

    def fetchall(self) -> Any:
        self._before_fetch()
        return super().fetchall()  # type: ignore[misc]

    def __next__(self) -> Any:  # psycopg's cursors are their own iterators
        self._before_fetch()
        return super().__next__()  # type: ignore[misc]


class _AsyncServerGuard(_AsyncGuard):
    _prepares = False

    async def _before_fetch(self) -> None:
        try:
            _refuse_fetch_elsewhere(self.connection, _check(self.connection))
        except TenancyError:
            await self.close()  # type: ignore[attr-defined]
            raise

    async def fetchone(self) -> Any:
        await self._before_fetch()
        return await super().fetchone()  # type: ignore[misc]

    async def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        await self._before_fetch()
        return await super().fetchmany(*args, **kwargs)  # type: ignore[misc]

    async def fetchall(self) -> Any:
        await self._before_fetch()
        return await super().fetchall()  # type: ignore[misc]

    async def __anext__(self) -> Any:
        await self._before_fetch()
        return await super().__anext__()  # type: ignore[misc]


def _refuse_fetch_elsewhere(driver: Any, needs: int) -> None:
    """A fetch that would begin a transaction on a session to reset: a holdable cursor read after its commit.

    The reset would close the cursor, and without it the fetch would run on
    a session another client may have used since (behind a pooler, any
    server session), reading what that client left there. So would the
    first fetch of a transaction SQLAlchemy began, which nothing has bound:
    the cursor's rows are another client's.
    """
    if needs == _RESET or (needs == _BIND and _hooks[driver].served()):
        raise TenancyError(
            "a server-side cursor was fetched outside the transaction that declared it, on a session that "
            "may hold what another client left (or, behind a pooler, another server session): fetch a "
            "holdable cursor in the transaction that declared it, or before the connection serves anyone else"
        )
