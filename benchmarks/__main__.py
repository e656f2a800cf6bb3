"""Run the benchmarks and write the report: ``python -m benchmarks --scale quick``."""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import psycopg
from psycopg import pq

from benchmarks import chart
from benchmarks.context import Context
from benchmarks.harness import Section, render
from rls_tenancy.identity import token_key
from rls_tenancy.identity.token_key import TokenKey
from rls_tenancy.testing.server import postgres_server

#: Section modules, in report order; each has ``run(ctx) -> Section``.
SECTIONS = (
    "queries",
    "growth",
    "round_trips",
    "endpoints",
    "request_cpu",
    "flags_audit",
    "flood",
    "audit_growth",
)
RESULTS = Path(__file__).parent / "RESULTS.md"
FINDINGS = Path(__file__).parent / "FINDINGS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--scale", choices=("smoke", "quick", "full"), default="quick")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"the Markdown report (default {RESULTS})")
    args = parser.parse_args(argv)
    started = time.monotonic()
    # Configured as the demo is: the tokens seeded and the apps served share a token key.
    os.environ.setdefault(token_key.ENVIRONMENT, str(TokenKey.generate()))
    sections: list[Section] = []
    with postgres_server() as server_url:
        ctx = Context(scale=args.scale, server_url=server_url, started=started)
        for name in args.only or SECTIONS:
            ctx.log(f"section {name}")
            module = importlib.import_module(f"benchmarks.{name}")
            sections.append(module.run(ctx))
        header = _header(ctx, args, time.monotonic() - started)
    report = render(sections, header)
    if FINDINGS.exists():  # what the numbers mean, and why a missed target is missed
        report += "\n" + FINDINGS.read_text()
    args.output.write_text(report + "\n")
    chart.write(args.output, args.output.with_suffix(".svg"))  # the docs' performance page shows it
    print(report)
    return 0


def _header(ctx: Context, args: argparse.Namespace, seconds: float) -> list[str]:
    with psycopg.connect(ctx.server_url.set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        server = conn.execute("SELECT version()").fetchone()
        settings = conn.execute(
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings"
            " WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'jit')"
        ).fetchone()
    command = "make bench-full" if ctx.scale == "full" else "make bench" if ctx.scale == "quick" else "make bench-smoke"
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("rls-tenancy", "SQLAlchemy", "psycopg", "Flask", "alembic")
    )
    return [
        "# Benchmark results",
        "",
        "Each row measures rls_tenancy beside a baseline run side by side in the same run "
        "(interleaved where timed), so the ratio is what carries between machines, not the times.",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- scale: {ctx.scale} ({seconds:.0f} s); reproduce with `{command}`"
        + (f" (`--only {' --only '.join(args.only)}`)" if args.only else ""),
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, {_memory()}, Python {platform.python_version()}",
        f"- PostgreSQL: {server[0] if server else '?'}; {settings[0] if settings else ''}",
        f"- packages: {packages}; libpq {pq.version()}",
    ]


def _memory() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return f"{kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM unknown"


if __name__ == "__main__":
    sys.exit(main())
