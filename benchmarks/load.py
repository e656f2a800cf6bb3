"""Serving an app in a process of its own, and loading it from another.

Both apps run under the same server (werkzeug's threaded server, keep-alive)
in separate processes, so neither shares an interpreter or a GIL with the
other or with the client; the client is a third process of keep-alive
``http.client`` threads. :func:`run_load` loads one app with any number of
clients; :func:`run_alternating` is one client taking turns between two apps,
request by request, so that whatever slows the machine slows both alike.
"""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from rls_tenancy.binding import engine as binding

_SPAWN = multiprocessing.get_context("spawn")


class _KeepAlive(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


#: Set (to anything) to measure what the session reset between tenants costs:
#: the served apps then skip it, as they did before it existed.
NO_RESET = "RLS_TENANCY_BENCH_NO_RESET"


def _serve(
    factory: Callable[..., Flask], args: tuple[Any, ...], environment: dict[str, str], ready: Connection
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(environment)
    if os.environ.get(NO_RESET):
        binding._resetting = False  # a measurement only: never outside a benchmark
    app = factory(*args)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_KeepAlive)
    ready.send(server.server_port)
    server.serve_forever()


class Served:
    """An app served in a child process; ``port`` once it is listening."""

    def __init__(self, factory: Callable[..., Flask], *args: Any, environment: dict[str, str] | None = None) -> None:
        """``environment``: variables set in the server process before ``factory`` runs."""
        receiving, sending = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(target=_serve, args=(factory, args, environment or {}, sending), daemon=True)
        self.process.start()
        if not receiving.poll(60):
            self.stop()
            raise RuntimeError("the app did not start serving")
        self.port: int = receiving.recv()

    def peak_rss_kib(self) -> int:
        """The server process's peak resident memory so far (VmHWM)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


@dataclass(frozen=True)
class Load:
    """What one load run did: requests answered 2xx per second, their latencies, and failures."""

    throughput: float
    latencies: list[float]
    failures: int
    first_failure: str


def run_load(
    port: int, method: str, path: str, tokens: list[str], clients: int, seconds: float, *, expected: int = 0
) -> Load:
    """``clients`` keep-alive clients for ``seconds``, in a process of their own.

    A token ``""`` sends no ``Authorization``; ``expected`` is the status an
    answer must have to count (0: any 2xx).
    """
    receiving, sending = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(target=_load, args=(port, method, path, tokens, clients, seconds, expected, sending))
    process.start()
    result: Load = receiving.recv()
    process.join(30)
    return result


def run_alternating(
    ports: tuple[int, int],
    method: str,
    path: str,
    tokens: list[str],
    seconds: float,
    *,
    second_tokens: list[str] | None = None,
    expected: int = 0,
) -> tuple[Load, Load]:
    """One keep-alive client per app, taking turns for ``seconds``, in a process of its own.

    Only one request is in flight at any time, as with one client of one
    app; each app's throughput is its requests over the time they took.
    ``second_tokens`` (default: ``tokens``) are the second port's; tokens
    and ``expected`` as for :func:`run_load`.
    """
    both = (tokens, tokens if second_tokens is None else second_tokens)
    receiving, sending = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(target=_alternate, args=(ports, method, path, both, seconds, expected, sending))
    process.start()
    result: tuple[Load, Load] = receiving.recv()
    process.join(30)
    return result


def _alternate(
    ports: tuple[int, int],
    method: str,
    path: str,
    tokens: tuple[list[str], list[str]],
    seconds: float,
    expected: int,
    out: Connection,
) -> None:
    rng = random.Random(0)
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port in ports]
    latencies: tuple[list[float], list[float]] = ([], [])
    failures: tuple[list[str], list[str]] = ([], [])
    deadline = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < deadline:
        for which in (0, 1) if turn % 2 == 0 else (1, 0):  # ABBA: neither always goes first
            took, failure = _request(conns[which], method, path, rng.choice(tokens[which]), f"load {turn}", expected)
            if failure:
                failures[which].append(failure)
            else:
                latencies[which].append(took)
        turn += 1
    for conn in conns:
        conn.close()
    loads = tuple(
        Load(len(took) / sum(took) if took else 0.0, took, len(failed), failed[0] if failed else "")
        for took, failed in zip(latencies, failures, strict=True)
    )
    out.send(loads)


def _load(
    port: int, method: str, path: str, tokens: list[str], clients: int, seconds: float, expected: int, out: Connection
) -> None:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.perf_counter() < deadline:
            took, failure = _request(conn, method, path, rng.choice(tokens), f"load {seed}", expected)
            if failure:
                with lock:
                    failures.append(failure)
            else:
                mine.append(took)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    out.send(Load(len(latencies) / elapsed, latencies, len(failures), failures[0] if failures else ""))


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, name: str, expected: int = 0
) -> tuple[float, str]:
    """One request as ``token`` (a POST creates ``name``): its seconds, or why it failed."""
    body = json.dumps({"name": name}) if method == "POST" else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    answer.read()
    took = time.perf_counter() - sent
    ok = answer.status == expected if expected else 200 <= answer.status < 300
    return (took, "") if ok else (took, f"{answer.status} {answer.reason}")
