"""The ``rls-tenancy`` command line on input it cannot use: one line saying so and exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from rls_tenancy.cli import main

NOT_URLS = ["notaurl", "::::", "postgresql://u@[::1/x"]
COMMANDS = [
    ["doctor"],
    ["migrate"],
    ["downgrade"],
    ["audit-verify"],
    ["audit-heads"],
    ["context-key", "status"],
]


@pytest.mark.parametrize("url", NOT_URLS)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_database_url_that_is_none_is_a_usage_error(
    command: list[str], url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main([*command, "--database-url", url]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "rls-tenancy: --database-url is not a database URL (postgresql://user:password@host:port/database)\n"
    )


def test_a_database_url_from_the_environment_is_checked_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret-password@[::1/x")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rls-tenancy: $DATABASE_URL is not a database URL") and "secret" not in err


def test_commands_without_a_database_ignore_a_bad_environment_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "notaurl")
    assert main(["context-key", "new"]) == 0
    assert main(["token-key", "new"]) == 0
    capsys.readouterr()


def test_anchors_that_are_not_utf8_are_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anchors = tmp_path / "heads.json"
    anchors.write_bytes(b"\xff\xfe")
    # The anchors are read before any connection: this port has no server.
    assert main(["audit-verify", "--database-url", "postgresql://x@127.0.0.1:1/d", "--anchors", str(anchors)]) == 2
    assert capsys.readouterr().err.startswith(f"rls-tenancy: cannot read the anchors from {anchors}: 'utf-8' codec")
