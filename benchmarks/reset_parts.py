"""What the session reset between tenants costs, taken apart: ``python -m benchmarks.reset_parts``.

Each variant sends what a bound transaction sends (``BEGIN``, the binding, a
``SELECT 1``, ``ROLLBACK``, one sync) with something in front of it, on a
connection of its own (the application role's, in a database with the
library installed), the variants taking turns. The connection that calls
``rls_tenancy.reset_session()`` (the shipped reset) has prepared three
statements through the protocol first, as psycopg would, and keeps them. Printed per transaction,
beside the variant with nothing in front: the CPU its PostgreSQL backend
spent (``/proc/<pid>/stat``) and this client's. CPU, not time: the machine
may be busy.
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import time
from collections.abc import Sequence

import psycopg
from psycopg import pq

from rls_tenancy.binding.engine import _RESET_WIRE, SESSION_RESET
from rls_tenancy.testing.database import tenancy_database
from rls_tenancy.testing.server import postgres_server

_BIND = (
    b"SELECT pg_catalog.set_config('app.current_tenant', $1, true),"
    b" pg_catalog.set_config('app.current_user_id', $2, true)"
)
_KEPT = (b"_pg3_0", b"_pg3_1", b"_pg3_2")
#: A statement and its values.
_Statement = tuple[bytes, "Sequence[bytes] | None"]
#: What goes in front of BEGIN; the reset's statements are committed by a COMMIT in the same sync.
VARIANTS: dict[str, Sequence[_Statement]] = {
    "nothing": (),
    "a COMMIT alone": ((b"COMMIT", None),),
    "the shipped reset (reset_session)": ((_RESET_WIRE, [b"{" + b",".join(_KEPT) + b"}"]), (b"COMMIT", None)),
    "its statements one by one": (*((statement, None) for statement in SESSION_RESET), (b"COMMIT", None)),
    "DISCARD TEMP, RESET ALL": ((b"DISCARD TEMP", None), (b"RESET ALL", None), (b"COMMIT", None)),
    "DISCARD ALL (in a sync of its own)": ((b"DISCARD ALL", None),),
}
_OWN_SYNC = {"DISCARD ALL (in a sync of its own)"}
_KEEPS = "the shipped reset (reset_session)"
_TICK = os.sysconf("SC_CLK_TCK")


def _transaction(conn: psycopg.Connection[object], front: Sequence[_Statement], own_sync: bool) -> None:
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    for statement, values in front:
        pgconn.send_query_params(statement, values)
    if own_sync:
        pgconn.pipeline_sync()
    for statement, values in ((b"BEGIN", None), (_BIND, [b"1", b""]), (b"SELECT 1", None), (b"ROLLBACK", None)):
        pgconn.send_query_params(statement, values)
    pgconn.pipeline_sync()
    while pgconn.flush():
        pass
    syncs = 2 if own_sync else 1
    with selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ)
        while syncs:
            pgconn.consume_input()
            while syncs and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    continue
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    syncs -= 1
                elif result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                    raise RuntimeError(result.error_message.decode())
            if syncs:
                selector.select()
    pgconn.exit_pipeline_mode()


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    with postgres_server() as url, tenancy_database(url) as db:
        dsn = db.app_url.set(drivername="postgresql").render_as_string(hide_password=False)
        conns = {name: psycopg.connect(dsn, autocommit=True) for name in VARIANTS}
        for kept in _KEPT:  # three names, as psycopg gives its statements; the text may repeat
            conns[_KEEPS].pgconn.prepare(kept, b"SELECT $1::int")
        spent: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        try:
            for _ in range(args.rounds):
                for name, front in VARIANTS.items():
                    conn, own_sync = conns[name], name in _OWN_SYNC
                    backend, client = _backend_cpu(conn.info.backend_pid), time.process_time()
                    for _ in range(args.transactions):
                        _transaction(conn, front, own_sync)
                    spent[name].append((_backend_cpu(conn.info.backend_pid) - backend, time.process_time() - client))
        finally:
            for conn in conns.values():
                conn.close()
    per = {
        name: [statistics.median(x[i] for x in v) / args.transactions * 1e6 for i in (0, 1)]
        for name, v in spent.items()
    }
    base = per["nothing"]
    print(f"{'in front of BEGIN':40} {'backend µs':>11} {'client µs':>10}")
    for name, (backend, client) in per.items():
        print(f"{name:40} {backend - base[0]:+11.1f} {client - base[1]:+10.1f}")


if __name__ == "__main__":
    main()
