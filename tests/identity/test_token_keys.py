"""Token keys: a made-up token is refused in memory, before any lookup, and a real one still works.

With ``RLS_TENANCY_TOKEN_KEYS`` set, every token the app issues carries a
mark of one key, and a well-formed token without it is refused as
``forged`` without a pooled connection being checked out: a flood of them
costs what a flood of malformed ones costs. The same tokens on an app
without keys are looked up, which is the control that shows each test can
fail. Each test speaks from an address of its own, so rejection windows
never mix.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from rls_tenancy import AuditEvent, TokenKey, as_tenant
from rls_tenancy.audit.rejections import rejection_log
from rls_tenancy.cli import main as cli_main
from rls_tenancy.errors import AuthenticationError, UsageError
from rls_tenancy.identity.token_key import ENVIRONMENT, token_keys
from rls_tenancy.identity.tokens import authenticate_token, issue_token, revoke_token
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from saas_demo.seed import Seeded
from tests.fix_flask import bearer

KEY = TokenKey.generate()
NEW_KEY = TokenKey.generate()


def _app(db: TenancyDatabase, **config: Any) -> Flask:
    return create_app(db.app_url, db.bypass_url, TESTING=True, SECRET_KEY="token keys", **config)


def _dispose(app: Flask) -> None:
    tenancy = app.extensions["rls_tenancy"]
    for engine in (tenancy.engine, tenancy.audit_engine, tenancy.bypass.engine):
        engine.dispose()


@contextmanager
def _served(db: TenancyDatabase, **config: Any) -> Iterator[Flask]:
    app = _app(db, **config)
    try:
        yield app
    finally:
        _dispose(app)


@pytest.fixture(scope="module")
def keyed_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    with _served(db, RLS_TENANCY_TOKEN_KEYS=str(KEY)) as app:
        yield app


@pytest.fixture(scope="module")
def unkeyed_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    with _served(db, RLS_TENANCY_TOKEN_KEYS="") as app:
        yield app


def _issue(app_engine: Engine, tenant_id: int, key: TokenKey | None) -> str:
    with as_tenant(tenant_id), Session(app_engine) as session, session.begin():
        return issue_token(session, name="keyed", scopes=["projects:read"], key=key).token


@contextmanager
def _checkouts(app: Flask) -> Iterator[list[object]]:
    """Every connection the app's engine hands out meanwhile: a lookup needs one."""
    engine = app.extensions["rls_tenancy"].engine
    taken: list[object] = []

    def checkout(*_args: object) -> None:
        taken.append(_args[0])

    event.listen(engine, "checkout", checkout)
    try:
        yield taken
    finally:
        event.remove(engine, "checkout", checkout)


def _me(app: Flask, token: str, ip: str) -> tuple[int, dict[str, Any]]:
    answer = app.test_client().get("/api/me", headers=bearer(token), environ_overrides={"REMOTE_ADDR": ip})
    body = answer.get_json()
    assert isinstance(body, dict)
    return answer.status_code, body


def _made_up(tenant_id: int) -> str:
    return f"rlst_{tenant_id}_" + base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "forged",
    [
        lambda marked, acme, globex: _made_up(acme),
        # A real token's secret under another tenant's id carries no mark for it.
        lambda marked, acme, globex: marked.replace(f"rlst_{acme}_", f"rlst_{globex}_", 1),
    ],
    ids=["made up", "a real secret under another tenant"],
)
def test_a_marked_token_works_and_one_without_the_mark_is_refused_without_a_lookup(
    keyed_app: Flask, unkeyed_app: Flask, app_engine: Engine, seeded: Seeded, forged: Callable[[str, int, int], str]
) -> None:
    acme, globex = seeded.tenants["acme"], seeded.tenants["globex"]
    marked = _issue(app_engine, acme, KEY)
    status, body = _me(keyed_app, marked, "198.51.100.40")
    assert (status, body["tenant"]["id"]) == (200, acme)
    token = forged(marked, acme, globex)
    with _checkouts(keyed_app) as taken:
        status, body = _me(keyed_app, token, "198.51.100.40")
    assert (status, body["error"], taken) == (401, "invalid_token", [])
    assert body["message"] == "the bearer token was not issued by this application"
    with _checkouts(unkeyed_app) as taken:  # the control: without keys, the same token is looked up
        status, body = _me(unkeyed_app, token, "198.51.100.40")
    assert (status, body["message"], len(taken)) == (401, "the bearer token is not known", 1)


def test_a_token_issued_without_the_key_is_refused_unless_unmarked_tokens_are_accepted(
    db: TenancyDatabase, keyed_app: Flask, app_engine: Engine, seeded: Seeded
) -> None:
    acme = seeded.tenants["acme"]
    unmarked = _issue(app_engine, acme, None)
    status, body = _me(keyed_app, unmarked, "198.51.100.42")
    assert (status, body["message"]) == (401, "the bearer token was not issued by this application")
    with _served(db, RLS_TENANCY_TOKEN_KEYS=str(KEY), RLS_TENANCY_ACCEPT_UNMARKED_TOKENS=True) as moving:
        status, body = _me(moving, unmarked, "198.51.100.42")
        assert (status, body["tenant"]["id"]) == (200, acme)
        status, body = _me(moving, _made_up(acme), "198.51.100.42")
        assert (status, body["message"]) == (401, "the bearer token is not known")


def test_rotation_accepts_every_listed_key_and_marks_new_tokens_with_the_first(
    db: TenancyDatabase, app_engine: Engine, seeded: Seeded
) -> None:
    acme = seeded.tenants["acme"]
    old = _issue(app_engine, acme, KEY)
    with _served(db, RLS_TENANCY_TOKEN_KEYS=f"{NEW_KEY},{KEY}") as rotating:
        printed = rotating.test_cli_runner().invoke(args=["tenancy", "issue-token", "acme", "--name", "rotated"])
        assert printed.exit_code == 0, printed.output
        new = printed.output.splitlines()[-1]
        secret = new.removeprefix(f"rlst_{acme}_")
        assert NEW_KEY.marked(acme, secret) and not KEY.marked(acme, secret)
        for token in (old, new):
            status, body = _me(rotating, token, "198.51.100.43")
            assert (status, body["tenant"]["id"]) == (200, acme)
    with _served(db, RLS_TENANCY_TOKEN_KEYS=[str(NEW_KEY)]) as retired:
        assert _me(retired, new, "198.51.100.43")[0] == 200
        status, body = _me(retired, old, "198.51.100.43")
        assert (status, body["message"]) == (401, "the bearer token was not issued by this application")


def _events(bypass_engine: Engine, ip: str) -> list[AuditEvent]:
    with Session(bypass_engine) as session:
        return list(session.scalars(select(AuditEvent).where(func.host(AuditEvent.ip) == ip).order_by(AuditEvent.id)))


def test_a_flood_of_made_up_tokens_is_audited_with_its_claims_in_two_rows(
    keyed_app: Flask, bypass_engine: Engine
) -> None:
    ip = "198.51.100.44"
    for claimed in range(3000, 3030):
        assert _me(keyed_app, _made_up(claimed), ip)[0] == 401
    first = _events(bypass_engine, ip)
    assert [(e.action, e.tenant_id, e.data) for e in first] == [
        ("auth.token_rejected", None, {"reason": "forged", "claimed_tenant": 3000, "window_seconds": 60.0})
    ]
    rejection_log(keyed_app.extensions["rls_tenancy"].audit_engine).flush()
    written = _events(bypass_engine, ip)
    assert len(written) == 2 and written[1].data is not None
    assert (written[1].data["reason"], written[1].data["repeated"]) == ("forged", 29)


def test_the_python_api_checks_the_mark_before_the_lookup(app_engine: Engine, seeded: Seeded) -> None:
    acme = seeded.tenants["acme"]
    marked = _issue(app_engine, acme, KEY)
    with app_engine.connect() as connection:
        assert authenticate_token(connection, marked, [KEY]).tenant_id == acme
        with pytest.raises(AuthenticationError) as refused:
            authenticate_token(connection, marked, [NEW_KEY])
        assert refused.value.reason == "forged"
        assert authenticate_token(connection, marked, [NEW_KEY], accept_unmarked=True).tenant_id == acme
        with pytest.raises(AuthenticationError) as unknown:
            authenticate_token(connection, _made_up(acme))
        assert unknown.value.reason == "unknown"


@pytest.mark.parametrize(
    "configured",
    ["abc", "00" * 31, f"{KEY},{KEY}", ["zz" * 32]],
    ids=["short", "31-bytes", "twice", "not-hex"],
)
def test_a_bad_key_configuration_fails_when_the_app_starts(db: TenancyDatabase, configured: object) -> None:
    with pytest.raises(UsageError, match="token key"):
        _app(db, RLS_TENANCY_TOKEN_KEYS=configured)


def test_keys_come_from_the_environment_when_the_configuration_names_none(
    db: TenancyDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENVIRONMENT, f" {NEW_KEY} , {KEY} ")
    assert token_keys(None) == (NEW_KEY, KEY)
    with _served(db) as app:
        assert app.extensions["rls_tenancy"].token_keys == (NEW_KEY, KEY)
    monkeypatch.delenv(ENVIRONMENT)
    assert token_keys(None) == ()


def test_the_cli_makes_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["token-key", "new"]) == 0
    printed = capsys.readouterr().out.strip()
    assert str(TokenKey.parse(printed)) == printed and len(printed) == 64


def test_a_token_found_revoked_is_refused_in_memory_after(
    keyed_app: Flask, app_engine: Engine, seeded: Seeded, bypass_engine: Engine
) -> None:
    """Revoked (or expired) stays so: a replayed revoked token costs one lookup per process, not one a request."""
    acme = seeded.tenants["acme"]
    with as_tenant(acme), Session(app_engine) as session, session.begin():
        issued = issue_token(session, name="to revoke", scopes=["projects:read"], key=KEY)
        assert revoke_token(session, issued.id)
    ip = "198.51.100.45"
    taken_each: list[int] = []
    for _ in range(3):
        with _checkouts(keyed_app) as taken:
            status, body = _me(keyed_app, issued.token, ip)
        assert (status, body["message"]) == (401, "the bearer token is revoked")
        taken_each.append(len(taken))
    assert taken_each == [1, 0, 0]
    rejection_log(keyed_app.extensions["rls_tenancy"].audit_engine).flush()
    counted = _events(bypass_engine, ip)  # every refusal still counted, in the tenant's chain
    assert [(e.tenant_id, (e.data or {}).get("repeated")) for e in counted] == [(acme, None), (acme, 2)]
