"""``flask tenancy ...`` on the demo app and the test database: real effects, clean refusals.

Every refusal must be a one-line ``Error:`` message with exit code 1, never a
traceback: these commands are run by operators, not read by developers.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from rls_tenancy import as_tenant
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from tests.fix_flask import bearer

SlugAndId = tuple[str, int]  # a tenant made for one test

BYPASS_NEEDED = (
    "this command needs the bypass role: pass bypass_engine= to Tenancy or set RLS_TENANCY_BYPASS_DATABASE_URL"
)


def new_slug() -> str:
    return f"cli-{secrets.token_hex(3)}"


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["tenancy", *args])


def ok(app: Flask, *args: str) -> str:
    result = invoke(app, *args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(app: Flask, *args: str) -> str:
    """The message of a clean failure: exit code 1, ``Error: ...``, no traceback."""
    result = invoke(app, *args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output.removeprefix("Error: ").strip()


def create_tenant(app: Flask, name: str = "CLI tenant") -> SlugAndId:
    slug = new_slug()
    match = re.fullmatch(rf"created tenant {slug} \(id (\d+)\)\n", ok(app, "create-tenant", slug, name))
    assert match, "create-tenant should say which id it made"
    return slug, int(match[1])


def issue(app: Flask, slug: str, *options: str) -> tuple[int, str]:
    """The id and secret of a new token; the secret is printed once, on a line of its own."""
    output = ok(app, "issue-token", slug, *options)
    match = re.fullmatch(rf"token (\d+) for {slug} \(shown once, keep it secret\):\n(rlst_\d+_[\w-]{{43}})\n", output)
    assert match, output
    assert output.count(match[2]) == 1
    return int(match[1]), match[2]


@pytest.fixture()
def tenant(demo_app: Flask) -> SlugAndId:
    return create_tenant(demo_app)


def test_created_tenant_is_listed(demo_app: Flask) -> None:
    """list-tenants reads across tenants, so a new tenant must show up with its id and name."""
    slug, tenant_id = create_tenant(demo_app, "Initech Ltd")
    assert f"{tenant_id}\t{slug}\tInitech Ltd" in ok(demo_app, "list-tenants").splitlines()


def test_duplicate_and_invalid_slugs_are_refused_cleanly(demo_app: Flask, tenant: SlugAndId) -> None:
    """Slugs name tenants (and subdomains): a clash or a non-DNS label must not make a second tenant."""
    slug, _ = tenant
    message = refused(demo_app, "create-tenant", slug, "Impostor")
    assert message.startswith("refused by the database: duplicate key value") and "slug" in message
    message = refused(demo_app, "create-tenant", "Not A Slug", "Bad")
    assert message.startswith("tenant slug 'Not A Slug' must be 1-63 lower-case letters")
    listed = [line.split("\t") for line in ok(demo_app, "list-tenants").splitlines()]
    assert [name for _, s, name in listed if s == slug] == ["CLI tenant"]
    assert all(s != "Not A Slug" for _, s, _ in listed)


def test_user_gets_roles_and_language(demo_app: Flask, client: FlaskClient, tenant: SlugAndId) -> None:
    """create-user stores roles and language; a user token's scopes are its roles narrowed by the token."""
    slug, tenant_id = tenant
    output = ok(demo_app, "create-user", slug, "Dana@Example.com", "--role", "projects:read", "--role", "admin")
    assert re.fullmatch(rf"created user Dana@Example\.com \(id \d+\) in {slug}\n", output)
    ok(demo_app, "create-user", slug, "eve@example.com", "--role", "admin", "--language", "de")
    scopes = ("--scope", "projects:read", "--scope", "projects:write")
    _, token = issue(demo_app, slug, "--name", "ci", *scopes, "--user", "DANA@example.com")  # any case finds her
    assert token.startswith(f"rlst_{tenant_id}_")
    me = client.get("/api/me", headers=bearer(token)).json
    assert me is not None and me["tenant"]["slug"] == slug
    assert me["user"]["email"] == "Dana@Example.com" and me["user"]["roles"] == ["admin", "projects:read"]
    assert me["scopes"] == ["projects:read"] and me["language"] == "en"
    _, token = issue(demo_app, slug, "--name", "eve", "--scope", "admin", "--user", "eve@example.com")
    me = client.get("/api/me", headers=bearer(token)).json
    assert me is not None and me["language"] == "de" and me["scopes"] == ["admin"]


def test_email_is_unique_per_tenant_ignoring_case(demo_app: Flask, tenant: SlugAndId) -> None:
    """Two accounts differing only in case would split one person; other tenants must not be affected."""
    slug, _ = tenant
    ok(demo_app, "create-user", slug, "Frank@Example.com")
    message = refused(demo_app, "create-user", slug, "frank@example.COM")
    assert message.startswith("refused by the database: duplicate key value") and "users_tenant_email_key" in message
    other, _ = create_tenant(demo_app)
    assert ok(demo_app, "create-user", other, "frank@example.com").startswith("created user frank@example.com")


def test_create_user_refuses_unknown_tenant_and_bad_roles(demo_app: Flask, tenant: SlugAndId) -> None:
    """Typos must fail loudly and leave nothing behind, not create a half-configured user."""
    slug, _ = tenant
    missing = new_slug()
    assert refused(demo_app, "create-user", missing, "gus@example.com") == f"there is no tenant {missing!r}"
    message = refused(demo_app, "create-user", slug, "gus@example.com", "--role", "Admin")
    assert message.startswith("scopes must be lower-case names like 'projects:write'")
    assert "is not a language tag" in refused(demo_app, "create-user", slug, "gus@example.com", "--language", "EN")
    ok(demo_app, "create-user", slug, "gus@example.com")  # the refused attempts left no row


def test_token_without_user_gets_exactly_its_scopes(demo_app: Flask, client: FlaskClient, tenant: SlugAndId) -> None:
    """A machine token acts for nobody, so its own scopes are all it has."""
    slug, _ = tenant
    _, token = issue(demo_app, slug, "--name", "robot", "--scope", "reports:export", "--scope", "projects:read")
    me = client.get("/api/me", headers=bearer(token)).json
    assert me is not None and me["tenant"]["slug"] == slug and me["user"] is None
    assert me["scopes"] == ["projects:read", "reports:export"]


def test_issue_token_refuses_unknown_user_and_tenant(demo_app: Flask, tenant: SlugAndId) -> None:
    """A token for a mistyped user must not be issued as a user-less (unnarrowed) token instead."""
    slug, _ = tenant
    message = refused(demo_app, "issue-token", slug, "--name", "x", "--user", "nobody@example.com")
    assert message == f"{slug} has no user 'nobody@example.com'"
    missing = new_slug()
    assert refused(demo_app, "issue-token", missing, "--name", "x") == f"there is no tenant {missing!r}"


def test_expiring_token_is_valid_now(demo_app: Flask, client: FlaskClient, tenant: SlugAndId) -> None:
    """--expires-in-days sets an expiry in the future, not one that already passed."""
    slug, tenant_id = tenant
    token_id, token = issue(demo_app, slug, "--name", "temp", "--scope", "projects:read", "--expires-in-days", "2")
    answer = client.get("/api/me", headers=bearer(token))
    assert answer.status_code == 200 and answer.json is not None and answer.json["tenant"]["slug"] == slug
    with as_tenant(tenant_id), demo_app.extensions["rls_tenancy"].engine.connect() as conn:
        expires = conn.execute(text("SELECT expires_at FROM rls_tenancy.api_tokens WHERE id = :id"), {"id": token_id})
        left = expires.scalar_one() - datetime.now(UTC)
    assert timedelta(days=2) - timedelta(minutes=5) < left <= timedelta(days=2)
    assert invoke(demo_app, "issue-token", slug, "--name", "x", "--expires-in-days", "0").exit_code == 2


def test_revoked_token_is_refused(demo_app: Flask, client: FlaskClient, tenant: SlugAndId) -> None:
    """Revocation must take effect at once, and a second revocation must say there was nothing left."""
    slug, _ = tenant
    token_id, token = issue(demo_app, slug, "--name", "leaked", "--scope", "projects:read")
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
    assert ok(demo_app, "revoke-token", slug, str(token_id)) == f"revoked token {token_id}\n"
    answer = client.get("/api/me", headers=bearer(token))
    assert answer.status_code == 401 and answer.json is not None and answer.json["error"] == "invalid_token"
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert refused(demo_app, "revoke-token", slug, str(token_id)) == f"{slug} has no live token {token_id}"


def test_cannot_revoke_another_tenants_token(demo_app: Flask, client: FlaskClient, tenant: SlugAndId) -> None:
    """Token ids are guessable; RLS must keep one tenant's admin from revoking another's tokens."""
    slug, _ = tenant
    other, _ = create_tenant(demo_app)
    token_id, token = issue(demo_app, other, "--name", "theirs", "--scope", "projects:read")
    assert refused(demo_app, "revoke-token", slug, str(token_id)) == f"{slug} has no live token {token_id}"
    answer = client.get("/api/me", headers=bearer(token))
    assert answer.status_code == 200 and answer.json is not None and answer.json["tenant"]["slug"] == other


def test_undecodable_arguments_are_refused_cleanly(demo_app: Flask, tenant: SlugAndId) -> None:
    """Non-UTF-8 bytes in argv arrive as lone surrogates (PEP 383): PostgreSQL cannot store them, say so."""
    slug, _ = tenant
    refused(demo_app, "create-tenant", new_slug(), "M\udcfcller GmbH")
    refused(demo_app, "create-user", slug, "m\udcfcller@example.com")


@pytest.fixture()
def app_without_bypass(db: TenancyDatabase) -> Iterator[Flask]:
    app = create_app(db.app_url, None, TESTING=True, SECRET_KEY="x")
    yield app
    app.extensions["rls_tenancy"].engine.dispose()


def test_tenant_commands_say_how_to_configure_the_bypass(app_without_bypass: Flask, demo_app: Flask) -> None:
    """Without a bypass engine the cross-tenant commands must explain the fix, not fail obscurely."""
    slug = new_slug()
    assert refused(app_without_bypass, "create-tenant", slug, "Nope") == BYPASS_NEEDED
    assert refused(app_without_bypass, "list-tenants") == BYPASS_NEEDED
    assert all(line.split("\t")[1] != slug for line in ok(demo_app, "list-tenants").splitlines())


def test_create_tenant_logs_the_bypass(demo_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Every use of the unsafe bypass must leave a warning that names what it was for."""
    with caplog.at_level(logging.WARNING, logger="rls_tenancy.bypass"):
        slug, _ = create_tenant(demo_app)
    logged = [r for r in caplog.records if r.name == "rls_tenancy.bypass" and r.levelno == logging.WARNING]
    assert any(slug in r.getMessage() for r in logged), [r.getMessage() for r in logged]
