"""The benchmarks run end to end at toy sizes; what they check beside time holds.

Nothing here asserts a time or a ratio of times: benchmarks measure speed,
tests do not. What is asserted are counts and facts the benchmarks report
along the way (round trips on the wire, index conditions in EXPLAIN, the RLS
queries returning exactly the baseline's rows).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from benchmarks.audit_parts import BATCHED, STEPS, find_pgbench
from benchmarks.reset_parts import VARIANTS as RESET_VARIANTS
from benchmarks.reset_requests import SIGNED_WAYS as SIGNED_REQUEST_WAYS
from benchmarks.reset_requests import WAYS as REQUEST_WAYS
from benchmarks.session_parts import VARIANTS
from benchmarks.shapes import SHAPES
from benchmarks.signed_context import POLICIES as SIGNED_POLICIES

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def report_path(rls_postgres_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    _run(rls_postgres_url, ["benchmarks", "--scale", "smoke", "--output", str(output)], timeout=240)
    return output


@pytest.fixture(scope="module")
def report(report_path: Path) -> str:
    return report_path.read_text()


def _run(server: URL, module_and_args: list[str], *, timeout: int) -> str:
    """``python -m <module_and_args>`` on ``server``, as ``make`` would run it; its output."""
    # Each section measures unsigned and signed itself: a signed suite's settings would merge the two.
    inherited = {k: v for k, v in os.environ.items() if k not in ("RLS_TENANCY_TEST_SIGNED", "RLS_TENANCY_CONTEXT_KEY")}
    env = {
        **inherited,
        "RLS_TENANCY_TEST_DATABASE_URL": server.render_as_string(hide_password=False),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", *module_and_args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _rows(report: str, section: str) -> list[list[str]]:
    body = report.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in body.splitlines() if line.startswith("| ")
    ][1:]


def test_every_section_reports_with_the_run_described(report: str) -> None:
    for title in (
        "Query overhead of RLS",
        "Growth",
        "Round trips per transaction",
        "End to end through Flask",
        "CPU per request, in process",
        "Feature flags",
        "The audit log under a flood of junk tokens",
        "The audit log under growth",
    ):
        assert f"## {title}" in report
    assert re.search(r"- PostgreSQL: PostgreSQL \d+", report)
    assert "reproduce with `make bench-smoke`" in report
    assert re.search(r"\*\*\d+ of \d+ targets met\.\*\*", report)


def test_the_chart_beside_the_report_draws_every_ratio_it_judged(report_path: Path) -> None:
    """The docs' performance chart: one bar per row judged on a ratio, a missed one in the other colour."""
    report = report_path.read_text()
    judged = re.findall(r"^\| [^\n]* \| ([0-9.]+) \| ratio (?:<=|>=|==) [0-9.]+ \| (yes|\*\*no\*\*) \|$", report, re.M)
    assert judged
    chart = report_path.with_suffix(".svg").read_text()
    assert chart.count("<rect x=") == len(judged)
    assert chart.count('fill="#d9822b"') == sum(met != "yes" for _, met in judged)
    for ratio, _ in judged:
        assert f">{float(ratio):.3f}</text>" in chart


def test_a_bound_transaction_adds_no_round_trip_on_the_wire(report: str) -> None:
    counted = {row[0]: row for row in _rows(report, "Round trips per transaction") if row[3] == "round trips"}
    for queries in ("1-query transaction", "5-query transaction", "1-query transaction through a Session"):
        assert counted[queries][1] == counted[queries][2]
        assert counted[queries][6] == "yes"
    for queries in ("1-query transaction", "1-query transaction, asyncio", "1-query transaction through a Session"):
        signed = counted[f"{queries}, signed context"]
        assert signed[1] == signed[2]
        assert signed[6] == "yes"


def test_a_flood_of_junk_tokens_writes_a_bounded_number_of_rows(report: str) -> None:
    rows = _rows(report, "The audit log under a flood of junk tokens")
    assert not [row[0] for row in rows if "FAILED" in " ".join(row)]
    written = next(row for row in rows if row[0].startswith("audit rows per reason"))
    assert written[6] == "yes", written


def test_every_copy_of_the_growing_audit_log_purges_the_same_events_and_stays_verifiable(report: str) -> None:
    rows = _rows(report, "The audit log under growth")
    purged = [row for row in rows if row[0].startswith("purge the oldest month, alone: wall time")]
    assert len(purged) == 2 and not [row[0] for row in purged if "NOT THE SAME" in row[0]], purged
    verified = next(row for row in rows if row[0].startswith("verify one chain after the purges"))
    assert "intact in all three copies" in verified[0], verified


def test_the_flask_rows_are_measured_signed_too_and_every_request_answers(report: str) -> None:
    rows = _rows(report, "End to end through Flask")
    signed = [row for row in rows if "signed context" in row[0]]
    assert len(signed) == 8  # GET and POST, 1 and 16 clients, throughput and p99
    assert not [row[0] for row in rows if "FAILED" in " ".join(row)]


def test_every_rls_query_returns_the_baselines_rows_through_a_tenant_index(report: str) -> None:
    rows = _rows(report, "Query overhead of RLS")
    shapes = [row for row in rows if row[3] == "ms" and row[5] != "(for comparison)"]
    assert len(shapes) == len(SHAPES)
    assert any("partitioned" in row[0] for row in shapes)  # a partitioned tenant table, pruned like the rest
    assert not [row[0] for row in shapes if "wrong:" in row[0]]
    explain = next(row for row in rows if row[0].startswith("shapes whose RLS query"))
    assert explain[2] == str(len(SHAPES)) and explain[6] == "yes"


def test_the_orm_transaction_taken_apart_counts_the_same_round_trips_in_every_variant(rls_postgres_url: URL) -> None:
    """``python -m benchmarks.session_parts`` at toy size: binding and scoping add no round trip in any combination."""
    printed = _run(rls_postgres_url, ["benchmarks.session_parts", "--transactions", "3", "--runs", "1"], timeout=120)
    for variant in VARIANTS:
        counted = re.search(r"round trips +" + re.escape(variant.name) + r" +([\d.]+)", printed)
        assert counted is not None, printed
        assert float(counted.group(1)) == 3
    assert "run 1: 3 transactions per variant" in printed


def test_the_session_reset_taken_apart_runs_every_variant(rls_postgres_url: URL) -> None:
    """``python -m benchmarks.reset_parts`` at toy size: each variant's statements run (their cost is not judged)."""
    printed = _run(rls_postgres_url, ["benchmarks.reset_parts", "--transactions", "3", "--rounds", "1"], timeout=120)
    for name in RESET_VARIANTS:
        assert re.search(re.escape(name) + r" +[+-][\d.]+ +[+-][\d.]+", printed), printed


def test_the_anonymous_reset_runs_every_way(rls_postgres_url: URL) -> None:
    """``python -m benchmarks.anonymous_reset`` at toy size: each way runs its transactions (cost not judged)."""
    printed = _run(
        rls_postgres_url, ["benchmarks.anonymous_reset", "--transactions", "3", "--rounds", "1"], timeout=120
    )
    for way in ("for no user, a reset each", "for no user, the rule off", "for a user"):
        assert re.search(re.escape(way) + r" +\d+ µs per transaction", printed), printed


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_the_reset_per_request_runs_every_way(rls_postgres_url: URL, signed: bool) -> None:
    """``python -m benchmarks.reset_requests`` at toy size: every way serves its requests (their cost is not judged)."""
    arguments = ["benchmarks.reset_requests", "--requests", "3", "--rounds", "1", *(["--signed"] if signed else [])]
    printed = _run(rls_postgres_url, arguments, timeout=180)
    for method in ("GET",) if signed else ("GET", "POST"):
        ways = printed.split(f"{method} /api/projects", 1)[1]
        for name in SIGNED_REQUEST_WAYS if signed else REQUEST_WAYS:
            assert re.search(re.escape(name) + r" +\d+ +\d+", ways), printed


def test_the_signed_context_prototype_runs_every_verifier(rls_postgres_url: URL) -> None:
    """``python -m benchmarks.signed_context`` at toy size: each verifier lets a proof in, a forged one not."""
    printed = _run(rls_postgres_url, ["benchmarks.signed_context", "--loops", "3", "--samples", "1"], timeout=180)
    for name in SIGNED_POLICIES:
        assert re.search(re.escape(name) + r" +[\d.]+ \( *[+-][\d.]+\)", printed), printed


def test_the_audit_seal_taken_apart_runs_every_step(rls_postgres_url: URL) -> None:
    """``python -m benchmarks.audit_parts`` at toy size: each step installs and runs (its rate is not judged)."""
    if find_pgbench() is None:
        pytest.skip("*** pgbench is not installed (PostgreSQL's client tools): audit_parts is not run ***")
    printed = _run(
        rls_postgres_url, ["benchmarks.audit_parts", "--rounds", "1", "--seconds", "1", "--clients", "2"], timeout=120
    )
    for step in [*STEPS, BATCHED]:
        share = re.search(re.escape(step) + r" +([\d.]+) of the plain rate", printed)
        assert share is not None, printed
        assert float(share.group(1)) > 0
    # The alternative is measured sealing what the shipped seal would: the library's verifier agrees.
    assert "chains sealed in batches: 0 broken, 0 events left unsealed;" in printed, printed
