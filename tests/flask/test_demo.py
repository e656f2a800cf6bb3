"""``make demo`` end to end: seeding, the isolation summary, serving, and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from saas_demo import demo

ROOT = Path(__file__).parents[2]


def test_demo_shows_two_isolated_tenants(
    rls_postgres_url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", rls_postgres_url.render_as_string(hide_password=False))
    key_before = os.environ.get("RLS_TENANCY_CONTEXT_KEY")
    assert demo.main(["--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "acme sees: Website relaunch, Billing\n" in out
    assert "globex sees: Secret lab, Payroll\n" in out
    assert re.search(r"acme asks for globex's project #\d+: 404 no such project", out)
    assert "acme batch-updates all of globex's project ids: updated []" in out
    assert "sets app.current_tenant to globex: sees 0 projects" in out
    assert os.environ.get("RLS_TENANCY_CONTEXT_KEY") == key_before  # the demo's key stays the demo's


def _databases(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


def test_demo_serves_and_stops_cleanly_on_ctrl_c(rls_postgres_url: URL) -> None:
    before = _databases(rls_postgres_url)
    env = {
        **os.environ,
        "DATABASE_URL": rls_postgres_url.render_as_string(hide_password=False),
        "DEMO_PORT": "0",
        "PYTHONPATH": str(ROOT / "examples"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "saas_demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner = _read_banner(process)
        base = re.search(r"Serving on (http://\S+) ", banner)
        token = re.search(r"Bearer (rlst_\S+)' \S+/api/projects/\d+ +# globex's: 404", banner)
        assert base and token, banner
        headers = {"Authorization": f"Bearer {token[1]}"}
        with urllib.request.urlopen(urllib.request.Request(f"{base[1]}/api/projects", headers=headers)) as answer:
            assert b"Website relaunch" in answer.read()
        # The line asking in French says why it gets German: hank's own language wins.
        french = re.search(r"Bearer (rlst_\S+)' -H 'Accept-Language: fr' \S+/api/me +# de: hank's own language", banner)
        assert french, banner
        asked = {"Authorization": f"Bearer {french[1]}", "Accept-Language": "fr"}
        with urllib.request.urlopen(urllib.request.Request(f"{base[1]}/api/me", headers=asked)) as answer:
            assert json.load(answer)["language"] == "de"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out
    assert "Stopping: dropping the demo database." in out
    assert "Traceback" not in out
    assert _databases(rls_postgres_url) == before


def _read_banner(process: subprocess.Popen[str]) -> str:
    """Everything up to the blank line after the curl lines."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines.append(process.stdout.readline())
        if lines[-1] == "" or (lines[-1] == "\n" and any(line.startswith("Serving on") for line in lines[:-2])):
            break
    return "".join(lines)
