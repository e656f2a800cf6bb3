"""Starting a transaction and binding the tenant in one round trip.

Left to itself, psycopg starts a transaction by sending ``BEGIN`` and waiting
for the answer before it sends the first statement. Binding the tenant then
costs a round trip of its own. Here ``BEGIN`` (built from the connection's
isolation level, read-only and deferrable settings, as psycopg would) and the
binding statement go out together in one libpq pipeline, with one sync, and
are read back together: the transaction costs the round trips it would cost
without tenancy. The values stay bound parameters (a binding spelled as
``SET LOCAL`` statements, which take none, goes out as several statements in
the same sync). A statement of the
library's own whose result it reads itself (the request's token lookup) can
go out in the same sync, after the binding: that transaction then costs one
round trip fewer than it would without tenancy.

A connection about to serve another tenant than its last one first
discards what earlier transactions left in its session (temp tables,
holdable cursors, settings...): that statement goes out in the same sync,
ahead of ``BEGIN``, and is committed before it, so it takes effect
whatever becomes of the transaction, and still costs no round trip. Its
result is read back with the rest, before any statement of the caller's
goes out.

The exchange is written once, as a generator that yields what it waits for;
:func:`begin_with` drives it with ``selectors`` for psycopg's sync
connections, :func:`begin_with_async` with the event loop for its asyncio
ones. When neither applies (a transaction already open, a pipeline already in
use, autocommit, a libpq without pipeline mode) the caller falls back to an
ordinary execute, which is correct and one round trip dearer.
"""

from __future__ import annotations

import asyncio
import functools
import select
import selectors
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeGuard, cast

import psycopg
from psycopg import IsolationLevel, pq
from psycopg.errors import error_from_result

_IDLE = pq.TransactionStatus.IDLE
_OFF = pq.PipelineStatus.OFF
_FAILED = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED)
#: Sent before the reset, each a statement of its own: a statement's timeout is armed as it starts, so a
#: session-wide ``statement_timeout`` SQL set could otherwise cancel the reset partway (a ``DISCARD TEMP``
#: made slow by thousands of temp tables) and fail the next tenant's request. ``RESET ALL`` in the reset
#: gives the role's own values back.
_DISARM = (b"SET statement_timeout = 0", b"SET lock_timeout = 0")
_POLL_SECONDS = 1.0  # sync waits wake up this often, so signals are handled

#: A statement and its values, text format; None is SQL NULL.
Statement = tuple[bytes, Sequence[bytes | None]]


class Begun(NamedTuple):
    """What a transaction begun with :func:`begin_with` answered."""

    #: The last statement's result (``then``'s, when given).
    result: pq.abc.PGresult | None
    #: The reset's result, when there was one.
    reset: pq.abc.PGresult | None
    #: The binding's last statement's result (``statement``'s, or the last of ``also``).
    binding: pq.abc.PGresult | None = None


class _Outcome(NamedTuple):
    failure: pq.abc.PGresult | None  # the first one
    last: pq.abc.PGresult | None
    reset: pq.abc.PGresult | None  # the reset statement's result, failed or not
    binding: pq.abc.PGresult | None  # the result of first's last statement (also's last, if any)


#: What the exchange waits for: readable or writable (selectors' event bits).
_Wait = Generator[int, None, _Outcome]

Connection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]
#: Exactly psycopg's classes: a subclass may send a BEGIN of its own.
_PSYCOPG_CLASSES = (psycopg.Connection, psycopg.AsyncConnection)


def begin_command(raw: Connection) -> bytes:
    """The ``BEGIN`` psycopg would send for this connection's settings."""
    return _begin_command(raw.isolation_level, raw.read_only, raw.deferrable)


@functools.cache  # a few combinations at most; built once, not per transaction
def _begin_command(isolation_level: IsolationLevel | None, read_only: bool | None, deferrable: bool | None) -> bytes:
    parts = [b"BEGIN"]
    if isolation_level is not None:
        parts.append(b"ISOLATION LEVEL " + IsolationLevel(isolation_level).name.replace("_", " ").encode())
    if read_only is not None:
        parts.append(b"READ ONLY" if read_only else b"READ WRITE")
    if deferrable is not None:
        parts.append(b"DEFERRABLE" if deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


@functools.cache  # the libpq a process loaded does not change
def _pipeline_supported() -> bool:
    return psycopg.Pipeline.is_supported()


def can_begin_with(raw: object) -> TypeGuard[Connection]:
    """Whether ``raw``'s next transaction can begin with :func:`begin_with` (or its async twin)."""
    if type(raw) not in _PSYCOPG_CLASSES:
        return False
    conn = cast(Connection, raw)
    pgconn = conn.pgconn
    return (
        not conn.autocommit
        and pgconn.transaction_status == _IDLE
        and pgconn.pipeline_status == _OFF
        and _pipeline_supported()
    )


def begin_with(
    raw: psycopg.Connection[Any],
    statement: bytes,
    values: Sequence[bytes],
    then: Statement | None = None,
    reset: Statement | None = None,
    *,
    also: Sequence[Statement] = (),
) -> Begun:
    """Begin a transaction on ``raw`` and run ``statement`` (and ``then``) in the same round trip.

    Only when :func:`can_begin_with` says so. A ``reset`` statement runs
    first, outside the transaction; ``also`` runs right after ``statement``,
    before ``then``. A statement that fails raises the
    ``psycopg.Error`` psycopg would have raised; the ones after it do not
    run. A failure of the exchange itself (a lost connection, an interrupt
    mid-wait) or of the reset closes the connection, as its state is then
    unknown, so the pool discards it.
    """
    with raw.lock:
        exchange = _exchange(raw.pgconn, begin_command(raw), (statement, values), then, reset, also)
        try:
            events = next(exchange)
            while True:
                _wait(raw.pgconn, events)
                events = exchange.send(None)
        except StopIteration as done:
            outcome: _Outcome = done.value
        except BaseException:  # the protocol state is unknown: never reuse it
            raw.close()
            raise
    if _reset_failed(outcome):  # its session is not known to be clean: never reuse it
        raw.close()
    return _begun(raw, outcome)


async def begin_with_async(
    raw: psycopg.AsyncConnection[Any],
    statement: bytes,
    values: Sequence[bytes],
    then: Statement | None = None,
    reset: Statement | None = None,
    *,
    also: Sequence[Statement] = (),
) -> Begun:
    """:func:`begin_with` for psycopg's asyncio connections."""
    async with raw.lock:
        exchange = _exchange(raw.pgconn, begin_command(raw), (statement, values), then, reset, also)
        try:
            events = next(exchange)
            while True:
                await _wait_async(raw.pgconn, events)
                events = exchange.send(None)
        except StopIteration as done:
            outcome: _Outcome = done.value
        except BaseException:  # cancelled mid-wait, say: never reuse it
            raw.pgconn.finish()
            raise
    if _reset_failed(outcome):
        raw.pgconn.finish()
    return _begun(raw, outcome)


def _exchange(
    pgconn: pq.abc.PGconn,
    begin: bytes,
    first: Statement,
    then: Statement | None,
    reset: Statement | None,
    also: Sequence[Statement] = (),
) -> _Wait:
    """Send ``reset`` and its COMMIT, BEGIN, ``first``, ``also`` and ``then`` in one sync; read through it."""
    pgconn.enter_pipeline_mode()
    if reset is not None:
        for disarm in _DISARM:
            pgconn.send_query_params(disarm, None)
        pgconn.send_query_params(*reset)
        # The reset runs in an implicit transaction, which this commits: a
        # ROLLBACK of the transaction below cannot undo it. (A sync of its
        # own would do the same, but libpq flushes at each sync.)
        pgconn.send_query_params(b"COMMIT", None)
    pgconn.send_query_params(begin, None)
    pgconn.send_query_params(*first)
    for statement, values in also:
        pgconn.send_query_params(statement, values)
    if then:
        pgconn.send_query_params(*then)
    pgconn.pipeline_sync()
    while pgconn.flush():
        yield selectors.EVENT_WRITE
    failure = last = reset_result = binding = None
    index = 0  # of the statement whose results come next
    binding_index = (len(_DISARM) + 2 if reset is not None else 0) + 1 + len(also)  # after BEGIN
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                pgconn.exit_pipeline_mode()
                return _Outcome(failure, last, reset_result, binding)
            if failure is None and result.status in _FAILED:
                failure = result
            if reset is not None and index == len(_DISARM):
                reset_result = result
            elif reset is not None and index < len(_DISARM) and result.status in _FAILED:
                reset_result = result  # the reset did not run: its session is not known to be clean
            if index == binding_index:
                binding = result
            index += 1
            last = result
        yield selectors.EVENT_READ


def _reset_failed(outcome: _Outcome) -> bool:
    return outcome.reset is not None and outcome.reset.status in _FAILED


def _begun(raw: Connection, outcome: _Outcome) -> Begun:
    if outcome.failure is not None:
        failure = outcome.reset if _reset_failed(outcome) else outcome.failure
        raise error_from_result(failure, encoding=raw.info.encoding)  # type: ignore[arg-type]
    return Begun(outcome.last, outcome.reset, outcome.binding)


def _wait(pgconn: pq.abc.PGconn, events: int) -> None:
    if not hasattr(select, "poll"):  # Windows
        with selectors.DefaultSelector() as selector:
            selector.register(pgconn.socket, events)
            while not selector.select(_POLL_SECONDS):
                pass
        return
    poller = select.poll()  # no system call until polled: cheaper than a selector per wait
    poller.register(pgconn.socket, select.POLLIN if events == selectors.EVENT_READ else select.POLLOUT)
    while not poller.poll(_POLL_SECONDS * 1000):
        pass


async def _wait_async(pgconn: pq.abc.PGconn, events: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = pgconn.socket

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if events == selectors.EVENT_READ:
        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    else:
        loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            loop.remove_writer(fd)
