"""``make demo`` end to end, against the test server."""

from __future__ import annotations

import pytest
from saas_demo import demo
from sqlalchemy.engine import URL


def test_demo_shows_two_isolated_tenants(
    rls_postgres_url: URL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", rls_postgres_url.render_as_string(hide_password=False))
    assert demo.main() == 0
    out = capsys.readouterr().out
    acme = out[out.index("Tenant acme") : out.index("Tenant globex")]
    globex = out[out.index("Tenant globex") : out.index("Acme tries")]
    assert "Website relaunch" in acme and "Secret lab" not in acme
    assert "Secret lab" in globex and "Website relaunch" not in globex
    assert "by id: 0 rows changed" in out
    assert "refused by PostgreSQL: new row violates row-level security policy" in out
    assert "refused before flush" in out
    assert "still 2 projects, its own" in out
    assert "raw SQL, SELECT count(*) FROM projects: 0" in out
    assert "sees 4 projects across 2 tenants" in out
