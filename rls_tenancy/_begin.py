"""Starting a transaction and binding the tenant in one round trip.

Left to itself, psycopg starts a transaction by sending ``BEGIN`` and waiting
for the answer before it sends the first statement. Binding the tenant then
costs a round trip of its own. Here ``BEGIN`` (built from the connection's
isolation level, read-only and deferrable settings, as psycopg would) and the
binding statement go out together in one libpq pipeline, with one sync, and
are read back together: the transaction costs the round trips it would cost
without tenancy. The values stay bound parameters.

When that does not apply (an async connection, a transaction already open, a
pipeline already in use, a libpq without pipeline mode) the caller falls back
to an ordinary execute, which is correct and one round trip dearer.
"""

from __future__ import annotations

import selectors
from collections.abc import Sequence
from typing import Any, TypeGuard

import psycopg
from psycopg import IsolationLevel, pq
from psycopg.errors import error_from_result

_IDLE = pq.TransactionStatus.IDLE
_OFF = pq.PipelineStatus.OFF
_FAILED = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED)
_POLL_SECONDS = 1.0  # waits wake up this often, so signals are handled


def begin_command(raw: psycopg.Connection[Any]) -> bytes:
    """The ``BEGIN`` psycopg would send for this connection's settings."""
    parts = [b"BEGIN"]
    if raw.isolation_level is not None:
        parts.append(b"ISOLATION LEVEL " + IsolationLevel(raw.isolation_level).name.replace("_", " ").encode())
    if raw.read_only is not None:
        parts.append(b"READ ONLY" if raw.read_only else b"READ WRITE")
    if raw.deferrable is not None:
        parts.append(b"DEFERRABLE" if raw.deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def can_begin_with(raw: object) -> TypeGuard[psycopg.Connection[Any]]:
    """Whether :func:`begin_with` can start ``raw``'s next transaction."""
    return (
        type(raw) is psycopg.Connection  # not the async one, nor a subclass that may send its own BEGIN
        and not raw.autocommit
        and raw.pgconn.transaction_status == _IDLE
        and raw.pgconn.pipeline_status == _OFF
        and psycopg.Pipeline.is_supported()
    )


def begin_with(raw: psycopg.Connection[Any], statement: bytes, values: Sequence[bytes]) -> None:
    """Begin a transaction on ``raw`` and run ``statement`` in the same round trip.

    Only when :func:`can_begin_with` says so. A statement that fails raises
    the ``psycopg.Error`` psycopg would have raised. A failure of the
    exchange itself (a lost connection, an interrupt mid-wait) closes the
    connection, as its protocol state is then unknown, so the pool discards
    it.
    """
    pgconn = raw.pgconn
    with raw.lock:
        pgconn.enter_pipeline_mode()
        try:
            pgconn.send_query_params(begin_command(raw), None)
            pgconn.send_query_params(statement, values)
            pgconn.pipeline_sync()
            _flush(pgconn)
            failure = _read_through_sync(pgconn)
            pgconn.exit_pipeline_mode()
        except BaseException:  # the protocol state is unknown: never reuse it
            raw.close()
            raise
    if failure is not None:
        raise error_from_result(failure, encoding=raw.info.encoding)


def _flush(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        _wait(pgconn, selectors.EVENT_WRITE)


def _read_through_sync(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """Read every result up to the pipeline's sync; the first failure, if any."""
    failure = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:  # the end of one statement's results
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                return failure
            if failure is None and result.status in _FAILED:
                failure = result
        _wait(pgconn, selectors.EVENT_READ)


def _wait(pgconn: pq.abc.PGconn, events: int) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, events)
        while not selector.select(_POLL_SECONDS):
            pass
