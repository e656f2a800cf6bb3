"""What the session reset costs a Flask request: ``python -m benchmarks.reset_requests``.

The demo app serves ``GET`` and ``POST /api/projects`` through Flask's test
client in this process, two tenants taking turns request by request. Five
ways, in blocks that take turns:

- ``baseline app``: the end-to-end section's plain app (no row level
  security, explicit ``WHERE tenant_id``, a plain event row per write);
- ``same tenant``: one tenant only, no connection ever changes tenant;
- ``pooled``: the demo's pool (a bound engine's ``QueuePool`` hands a
  connection back to the tenant it last served);
- ``one connection``: a pool of one, so every request changes its
  connection's tenant and pays the reset;
- ``one connection, no reset``: the same with the reset turned off, as
  before it existed (a measurement only: it lets sessions leak).

``--signed``: the database requires a signed tenant context and the apps
sign, and, for ``GET`` only, one tenant's two tokens take turns instead, its
user's and its token of no user: signed, a connection is reset between
users too (``one user`` serves the first token only).

Printed per request: this thread's CPU and the CPU of the PostgreSQL
backends of the apps' roles (``/proc/<pid>/schedstat``), medians over the
blocks. CPU, not time:
the machine may be busy.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import URL

from benchmarks.context import Context
from benchmarks.endpoints import prepare
from benchmarks.endpoints_baseline import create_baseline_app
from rls_tenancy import ContextKey
from rls_tenancy.binding import engine as binding
from rls_tenancy.testing.database import require_signing
from rls_tenancy.testing.server import postgres_server
from saas_demo.app import create_app

_ONE = {"pool_size": 1, "max_overflow": 0}
_TENANTS = ("acme/ci", "globex/ci")
_USERS = ("acme/ci", "acme/dashboard")  # alice's token, and the tenant's token of no user
#: name: (engine options, the tokens taking turns, reset on); None: the baseline app
WAYS: dict[str, tuple[dict[str, Any] | None, tuple[str, ...], bool]] = {
    "baseline app": (None, _TENANTS, True),
    "same tenant": ({}, _TENANTS[:1], True),
    "pooled": ({}, _TENANTS, True),
    "one connection": (_ONE, _TENANTS, True),
    "one connection, no reset": (_ONE, _TENANTS, False),
}
SIGNED_WAYS: dict[str, tuple[dict[str, Any] | None, tuple[str, ...], bool]] = {
    "baseline app": (None, _USERS, True),
    "one user": ({}, _USERS[:1], True),
    "two users of one tenant, pooled": ({}, _USERS, True),
    "two users of one tenant, one connection": (_ONE, _USERS, True),
    "two users, one connection, no reset": (_ONE, _USERS, False),
}


def _backends_ns(postmaster: int | None, roles: Sequence[str]) -> int:
    """CPU time of ``postmaster``'s backends logged in as one of ``roles``, in ns (0 for a server elsewhere).

    By role, so that autovacuum and the server's other processes, busy with
    what the writes leave behind, do not count.
    """
    total = 0
    if postmaster is None:
        return 0
    titles = tuple(f"postgres: {role} ".encode() for role in roles)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent != postmaster:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if not cmdline.read().startswith(titles):
                    continue
            with open(f"/proc/{pid}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except (OSError, ValueError):
            continue
    return total


def _postmaster(url: URL) -> int | None:
    """The server's main process, if it runs on this machine."""
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        try:
            with open(f"/proc/{conn.info.backend_pid}/stat") as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # a server in a container or elsewhere: its CPU is not counted
            return None


def _request(method: str, tokens: Sequence[str]) -> Callable[[FlaskClient, int], None]:
    def run(client: FlaskClient, number: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[number % len(tokens)]}"}
        if method == "GET":
            response = client.get("/api/projects", headers=headers)
        else:
            response = client.post("/api/projects", headers=headers, json={"name": "reset"})
        if response.status_code >= 300:
            raise RuntimeError(f"a benchmark request failed with {response.status_code}")

    return run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="per block")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--signed", action="store_true", help="a signed context; two users of one tenant")
    args = parser.parse_args(argv)
    ways = SIGNED_WAYS if args.signed else WAYS
    with postgres_server() as url, Context("quick", url, time.monotonic()).demo_database() as db, ExitStack() as stack:
        postmaster = _postmaster(url)
        roles = [str(db.app_url.username), str(db.bypass_url.username)]
        tokens = prepare(db).tokens
        config: dict[str, Any] = {}
        if args.signed:
            key = ContextKey.generate()
            require_signing(db.superuser_url, key)
            config["RLS_TENANCY_CONTEXT_KEY"] = str(key)
        apps: dict[str, Flask] = {}
        for name, (options, _, _) in ways.items():
            if options is None:
                apps[name] = create_baseline_app(db.bypass_url)
                stack.callback(apps[name].extensions["baseline_engine"].dispose)
            else:
                apps[name] = create_app(db.app_url, db.bypass_url, engine_options=options, **config)
                stack.callback(apps[name].extensions["rls_tenancy"].engine.dispose)
        for method in ("GET",) if args.signed else ("GET", "POST"):
            spent: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, (_, turns, reset) in ways.items():
                    request = _request(method, [tokens[turn] for turn in turns])
                    client = apps[name].test_client()
                    binding._resetting = reset  # a measurement only: never outside a benchmark
                    try:
                        for number in range(50):  # connections made, statements prepared
                            request(client, number)
                        gc.collect()
                        gc.disable()
                        cpu, backends = time.thread_time_ns(), _backends_ns(postmaster, roles)
                        for number in range(args.requests):
                            request(client, number)
                        cpu, backends = time.thread_time_ns() - cpu, _backends_ns(postmaster, roles) - backends
                    finally:
                        gc.enable()
                        binding._resetting = True
                    spent[name].append((cpu / args.requests / 1e3, backends / args.requests / 1e3))
            print(f"{method} /api/projects, µs per request  {'this thread':>12} {'backends':>9}")
            for name, blocks in spent.items():
                client_us = statistics.median(block[0] for block in blocks)
                backend_us = statistics.median(block[1] for block in blocks)
                print(f"  {name:38} {client_us:12.0f} {backend_us:9.0f}")


if __name__ == "__main__":
    main()
