"""What a request costs the app's own process: CPU time per request, in process.

The end-to-end section measures throughput across processes, which on a
small shared machine drifts with everything else running. Here the demo app
and the baseline app (the same two as there) serve ``GET`` and ``POST
/api/projects`` through Flask's test client in one process, requests
interleaved one by one, and each request's CPU time on this thread
(``time.thread_time``) is taken: what the library adds in Python, without
the waits for PostgreSQL that both sides share. Reported: the medians, and
the median of the per-pair ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

from flask.testing import FlaskClient

from benchmarks.context import Context
from benchmarks.endpoints import prepare
from benchmarks.endpoints_baseline import create_baseline_app
from benchmarks.harness import Row, Section
from saas_demo.app import create_app

Request = Callable[[FlaskClient], None]


def run(ctx: Context) -> Section:
    requests = ctx.pick(20, 800, 3000)
    section = Section(
        "CPU per request, in process",
        __doc__.split("\n\n", 1)[1].replace("\n", " ").strip() + f" {requests} requests per app and method.",
    )
    with ctx.demo_database() as db:
        token = prepare(db).tokens["acme/ci"]
        tenancy = create_app(db.app_url, db.bypass_url)
        baseline = create_baseline_app(db.bypass_url)
        headers = {"Authorization": f"Bearer {token}"}

        def read(client: FlaskClient) -> None:
            _expect(client.get("/api/projects", headers=headers).status_code)

        def write(client: FlaskClient) -> None:
            _expect(client.post("/api/projects", headers=headers, json={"name": "cpu"}).status_code)

        try:
            for label, request in (("read: GET /api/projects", read), ("write: POST /api/projects", write)):
                base, rls, ratio = _interleaved(baseline.test_client(), tenancy.test_client(), request, requests)
                section.add(Row(f"{label}: CPU per request", base, rls, "µs", None, paired_ratio=ratio))
                ctx.log(f"{label}: CPU ratio {ratio:.2f}")
        finally:
            state = tenancy.extensions["rls_tenancy"]
            for engine in (state.engine, state.audit_engine, state.bypass.engine if state.bypass else None):
                if engine is not None:
                    engine.dispose()
            baseline.extensions["baseline_engine"].dispose()
    return section


def _interleaved(base: FlaskClient, rls: FlaskClient, request: Request, count: int) -> tuple[float, float, float]:
    for client in (base, rls):  # connections made, statements cached
        for _ in range(max(5, count // 20)):
            request(client)
    times: tuple[list[float], list[float]] = ([], [])
    gc.collect()
    gc.disable()
    try:
        for number in range(count):
            order = ((base, 0), (rls, 1)) if number % 2 == 0 else ((rls, 1), (base, 0))
            for client, which in order:
                start = time.thread_time()
                request(client)
                times[which].append((time.thread_time() - start) * 1e6)
    finally:
        gc.enable()
    ratios = [r / b for b, r in zip(times[0], times[1], strict=True) if b]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def _expect(status: int) -> None:
    if not 200 <= status < 300:
        raise RuntimeError(f"a benchmark request failed with {status}")
