"""Repeated rejections from one source: one event at once and a count per window, never a row each.

A junk token or a failed login is an audit event; an outsider sending them
by the thousand must not grow the append-only log by as many rows. Each
test speaks from an address of its own, so the windows of one test never
hold another's rejections.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, exc, func, select
from sqlalchemy.orm import Session

from rls_tenancy import AuditEvent
from rls_tenancy.audit.rejections import RejectionLog, rejection_log
from rls_tenancy.errors import UsageError
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from saas_demo.seed import PASSWORD, Seeded

JUNK = "Bearer rlst_{claimed}_" + "A" * 43  # well formed, matching no token


def _app(db: TenancyDatabase, **config: Any) -> Flask:
    return create_app(db.app_url, db.bypass_url, TESTING=True, SECRET_KEY="flood", **config)


def _dispose(app: Flask) -> None:
    tenancy = app.extensions["rls_tenancy"]
    tenancy.engine.dispose()
    tenancy.audit_engine.dispose()
    tenancy.bypass.engine.dispose()


@pytest.fixture(scope="module")
def flood_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    """The demo app with the default window (60 s)."""
    app = _app(db)
    yield app
    _dispose(app)


def _flush(app: Flask) -> None:
    rejection_log(app.extensions["rls_tenancy"].audit_engine).flush()


def _events(bypass_engine: Engine, ip: str) -> list[AuditEvent]:
    with Session(bypass_engine) as session:
        found = session.scalars(select(AuditEvent).where(func.host(AuditEvent.ip) == ip).order_by(AuditEvent.id))
        return list(found)


def _junk(app: Flask, ip: str, claimed: int) -> None:
    answer = app.test_client().get(
        "/api/me", headers={"Authorization": JUNK.format(claimed=claimed)}, environ_overrides={"REMOTE_ADDR": ip}
    )
    assert answer.status_code == 401


def test_a_flood_of_junk_tokens_from_one_source_is_one_event_and_one_count(
    flood_app: Flask, bypass_engine: Engine
) -> None:
    ip = "198.51.100.7"
    for claimed in range(1000, 1040):
        _junk(flood_app, ip, claimed)
    first = _events(bypass_engine, ip)
    assert [(e.action, e.tenant_id, e.data) for e in first] == [
        ("auth.token_rejected", None, {"reason": "unknown", "claimed_tenant": 1000, "window_seconds": 60.0})
    ]
    _flush(flood_app)
    written = _events(bypass_engine, ip)
    assert len(written) == 2
    count = written[1]
    assert (count.action, count.tenant_id) == ("auth.token_rejected", None)
    assert count.data is not None
    assert (count.data["reason"], count.data["repeated"], count.data["window_seconds"]) == ("unknown", 39, 60.0)
    assert count.data["samples"] == [{"reason": "unknown", "claimed_tenant": n} for n in range(1001, 1011)]
    assert str(count.message).startswith("39 more in 60 s: ")


def test_sources_are_counted_apart_and_an_ipv6_one_by_its_64(flood_app: Flask, bypass_engine: Engine) -> None:
    sent = {"198.51.100.8": 3, "198.51.100.9": 3, "2001:db8:1:2::1": 2, "2001:db8:1:2::ffff": 3, "2001:db8:1:3::1": 3}
    for ip, times in sent.items():
        for claimed in range(times):
            _junk(flood_app, ip, 2000 + claimed)
    _flush(flood_app)
    repeated = {ip: [e.data and e.data.get("repeated") for e in _events(bypass_engine, ip)] for ip in sent}
    assert repeated == {
        "198.51.100.8": [None, 2],
        "198.51.100.9": [None, 2],
        "2001:db8:1:2::1": [None, 4],  # its own second one, and the three of its /64 neighbour
        "2001:db8:1:2::ffff": [],
        "2001:db8:1:3::1": [None, 2],
    }


def test_each_reason_has_its_own_window(flood_app: Flask, bypass_engine: Engine) -> None:
    ip = "198.51.100.10"
    client = flood_app.test_client()
    for header in ("Bearer rlst_not-a-token", JUNK.format(claimed=7), "Bearer rlst_nope", JUNK.format(claimed=8)):
        answer = client.get("/api/me", headers={"Authorization": header}, environ_overrides={"REMOTE_ADDR": ip})
        assert answer.status_code == 401
    _flush(flood_app)
    found = [str((e.data or {}).get("reason")) for e in _events(bypass_engine, ip)]
    assert sorted(found) == ["malformed", "malformed", "unknown", "unknown"]  # a first and a count each


def test_failed_logins_at_a_tenant_are_one_event_and_one_count_in_its_chain(
    flood_app: Flask, bypass_engine: Engine, seeded: Seeded
) -> None:
    ip = "198.51.100.11"
    client = flood_app.test_client()
    for attempt in range(6):
        answer = client.post(
            "/api/login",
            json={"tenant": "acme", "email": "alice@acme.example", "password": f"{PASSWORD}-{attempt}"},
            environ_overrides={"REMOTE_ADDR": ip},
        )
        assert answer.status_code == 401
    _flush(flood_app)
    written = _events(bypass_engine, ip)
    assert [(e.action, e.tenant_id) for e in written] == [("auth.login_failed", seeded.tenants["acme"])] * 2
    assert written[1].data is not None and written[1].data["repeated"] == 5
    assert {sample["email"] for sample in written[1].data["samples"]} == {"alice@acme.example"}


def test_the_count_is_written_when_its_window_ends(db: TenancyDatabase, bypass_engine: Engine) -> None:
    app = _app(db, RLS_TENANCY_REJECTION_WINDOW=0.5)
    try:
        ip = "198.51.100.12"
        for claimed in range(3):
            _junk(app, ip, claimed + 1)
        deadline = time.monotonic() + 10
        while len(_events(bypass_engine, ip)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the count's timer writes it, no flush
        written = _events(bypass_engine, ip)
        assert [e.data and e.data.get("repeated") for e in written] == [None, 2]
    finally:
        _dispose(app)


def test_a_window_of_zero_writes_every_rejection(client_app_window_zero: Flask, bypass_engine: Engine) -> None:
    ip = "198.51.100.13"
    for claimed in range(3):
        _junk(client_app_window_zero, ip, claimed + 1)
    assert len(_events(bypass_engine, ip)) == 3


@pytest.fixture()
def client_app_window_zero(demo_app: Flask) -> Flask:
    """The suite's shared demo app, which writes each rejection (``RLS_TENANCY_REJECTION_WINDOW=0``)."""
    return demo_app


@pytest.mark.parametrize("window", ["60", -1, 86_401, True, None])
def test_a_window_that_is_not_seconds_is_refused_at_init(db: TenancyDatabase, window: object) -> None:
    with pytest.raises(UsageError, match="RLS_TENANCY_REJECTION_WINDOW"):
        _app(db, RLS_TENANCY_REJECTION_WINDOW=window)


def test_dispose_writes_the_counts_still_held(db: TenancyDatabase, bypass_engine: Engine) -> None:
    """A test's teardown disposes the app before its database goes: the counts go out then, not a minute later."""
    app = _app(db)  # the default window, 60 s
    ip = "198.51.100.14"
    try:
        for claimed in range(3):
            _junk(app, ip, claimed + 1)
    finally:
        app.extensions["rls_tenancy"].dispose()
    written = _events(bypass_engine, ip)
    assert [e.data and e.data.get("repeated") for e in written] == [None, 2]


def test_a_count_the_timer_cannot_write_is_logged_not_raised_in_its_thread(
    db: TenancyDatabase, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its database gone (dropped under a test, or down): before, the timer's thread died with the error."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hooked: raised.append(hooked.exc_value))
    gone = create_engine(db.app_url.set(database="rls_no_such_database"))
    log = RejectionLog(gone)
    try:
        with caplog.at_level(logging.WARNING, logger="rls_tenancy.audit.rejections"):
            with pytest.raises(exc.OperationalError):  # the first of a window is written at once, as a request would
                log.record("auth.token_rejected", "junk", tenant_id=None, reason="forged", data={}, window=0.2)
            log.record("auth.token_rejected", "junk", tenant_id=None, reason="forged", data={}, window=0.2)
            deadline = time.monotonic() + 10
            while "rejection counts not written" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        gone.dispose()
    assert raised == []
    assert "('auth.token_rejected', None, 'forged', 1)" in caplog.text
