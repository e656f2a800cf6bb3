"""Hostile and malformed request input: a 4xx every time, never a 500, never spliced into SQL.

Everything goes through the demo app and Flask's test client, as the app role,
against real PostgreSQL. Fuzzed writes land in a tenant of their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from rls_tenancy import Tenant, UnsafeBypass, as_tenant
from rls_tenancy.binding.engine import begin_bound_with
from rls_tenancy.identity import tokens
from rls_tenancy.identity.tokens import issue_token, revoke_token
from rls_tenancy.testing import TenancyDatabase
from saas_demo.app import create_app
from saas_demo.models import Project
from saas_demo.seed import Seeded
from tests.fix_flask import bearer
from tests.soak import FIGURES, SOAK, count

CHALLENGE = 'Bearer realm="api"'
SECRET = "A" * 43  # the shape of a token's random part
FUZZ = settings(max_examples=count(200, 2_500), deadline=None, database=None, derandomize=not SOAK)


@dataclass(frozen=True)
class Sandbox:
    """A fresh tenant with one project and tokens that are good, scopeless, expired and revoked."""

    project_id: int
    token: str
    scopeless: str
    expired: str
    revoked: str


@pytest.fixture(scope="module")
def sandbox(bypass: UnsafeBypass, app_engine: Engine) -> Sandbox:
    """Fuzzed writes land here, never in the seeded tenants other tests count on."""
    with bypass.session(reason="test setup: hostile input sandbox") as session:
        tenant = Tenant(slug=f"hostile-{secrets.token_hex(4)}", name="Hostile input")
        session.add(tenant)
        session.flush()
        tenant_id = tenant.id
    with as_tenant(tenant_id), Session(app_engine) as session, session.begin():
        project = Project(name="Target")
        session.add(project)
        session.flush()
        rw = ["projects:read", "projects:write"]
        good = issue_token(session, name="good", scopes=rw)
        scopeless = issue_token(session, name="scopeless", scopes=[])
        past = datetime.now(UTC) - timedelta(minutes=1)
        expired = issue_token(session, name="expired", scopes=rw, expires_at=past)
        revoked = issue_token(session, name="revoked", scopes=rw)
        assert revoke_token(session, revoked.id)
        return Sandbox(project.id, good.token, scopeless.token, expired.token, revoked.token)


@pytest.fixture(scope="module")
def subdomain_app(db: TenancyDatabase, seeded: Seeded) -> Iterator[Flask]:
    """The demo app that also takes the tenant from ``<slug>.example.test``."""
    config: dict[str, Any] = {
        "RLS_TENANCY_RESOLVERS": ["token", "session", "subdomain"],
        "RLS_TENANCY_SUBDOMAIN_OF": "example.test",
    }
    app = create_app(db.app_url, db.bypass_url, TESTING=True, SECRET_KEY="x", **config)
    yield app
    tenancy = app.extensions["rls_tenancy"]
    tenancy.engine.dispose()
    if tenancy.bypass is not None:
        tenancy.bypass.engine.dispose()


def assert_invalid_token(answer: TestResponse, message: str) -> None:
    """RFC 6750: 401, a Bearer challenge for realm "api" with error="invalid_token", and a JSON body."""
    assert answer.status_code == 401
    assert answer.json == {"error": "invalid_token", "message": message}
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith(CHALLENGE) and 'error="invalid_token"' in challenge


MALFORMED = "the bearer token is malformed"
BAD_HEADER = "the Authorization header is malformed"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer", MALFORMED),
        ("Bearer ", MALFORMED),
        ("bearer    ", MALFORMED),
        ("Bearer not-a-token", MALFORMED),
        ("Bearer rlst_1_" + SECRET[:-1], MALFORMED),  # one character short
        ("Bearer rlst_0_" + SECRET, MALFORMED),  # no tenant 0
        ("Bearer rlst_1_' OR 1=1 --", MALFORMED),
        ("Bearer rlst_1_" + SECRET + "'; DROP TABLE projects; --", MALFORMED),
        ("Bearer rlst_9223372036854775808_" + SECRET, MALFORMED),  # bigint max + 1
        ("Bearer rlst_99999999999999999999_" + SECRET, MALFORMED),  # twenty digits
        ("Bearer " + "A" * 10_000, BAD_HEADER),
        ("Bearer rlst_1_" + "\xe9" * 43, BAD_HEADER),  # latin-1
        ("Bearer \u20ac", BAD_HEADER),  # beyond latin-1
        ("Bearer rlst_1\t_" + SECRET, BAD_HEADER),
        ("Bearer rlst_1_" + SECRET[:-1] + "\x00", BAD_HEADER),
        ("Bearer \x1b[31m", BAD_HEADER),
        ("Basic \x7f", BAD_HEADER),  # checked before the scheme
        ("Bearer rlst_9223372036854775807_" + SECRET, "the bearer token is not known"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_bad_bearer_tokens_are_a_401_even_where_no_credentials_are_needed(
    demo_app: Flask, header: str, message: str
) -> None:
    """A request that names credentials and gets them wrong is refused, not served anonymously."""
    client = demo_app.test_client()
    for path in ("/api/plans", "/api/me", "/api/projects"):
        assert_invalid_token(client.get(path, headers={"Authorization": header}), message)


def test_unknown_expired_and_revoked_tokens_are_a_401(demo_app: Flask, seeded: Seeded, sandbox: Sandbox) -> None:
    """Each reason is told apart in the message, and a token only works with its own tenant's id."""
    client = demo_app.test_client()
    secret = seeded.tokens["acme/ci"].split("_", 2)[2]
    for token, message in (
        (f"rlst_{seeded.tenants['acme']}_{SECRET}", "the bearer token is not known"),
        (f"rlst_{seeded.tenants['globex']}_{secret}", "the bearer token is not known"),  # acme's, relabelled
        (sandbox.expired, "the bearer token is expired"),
        (sandbox.revoked, "the bearer token is revoked"),
    ):
        assert_invalid_token(client.get("/api/projects", headers=bearer(token)), message)
    assert client.get("/api/projects", headers=bearer(sandbox.token)).status_code == 200


@pytest.mark.parametrize(
    "template",
    ["Basic dXNlcjpwYXNz", "Digest username=x", "Token {token}", "Bearerx {token}", "Bearer:{token}"],
    ids=repr,
)
def test_other_schemes_are_left_alone_so_the_request_is_anonymous(
    demo_app: Flask, seeded: Seeded, template: str
) -> None:
    """Only Bearer is the token resolver's business; a valid token under another scheme is ignored."""
    client = demo_app.test_client()
    header = {"Authorization": template.format(token=seeded.tokens["acme/ci"])}
    refused = client.get("/api/projects", headers=header)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert refused.json == {"error": "unauthorized", "message": "this needs credentials: a bearer token or a login"}
    me = client.get("/api/me", headers=header).json
    assert me is not None and me["tenant"] is None and me["scopes"] == ["anonymous"]


def test_a_missing_scope_is_a_403(demo_app: Flask, sandbox: Sandbox) -> None:
    """A token without scopes authenticates, then is refused by every guarded view."""
    client = demo_app.test_client()
    answer = client.get("/api/projects", headers=bearer(sandbox.scopeless))
    assert answer.status_code == 403
    assert answer.json == {
        "error": "insufficient_scope",
        "message": "this needs the scope(s) projects:read",
        "required": ["projects:read"],
    }
    assert answer.headers["WWW-Authenticate"] == f'{CHALLENGE}, error="insufficient_scope", scope="projects:read"'


def test_another_tenants_ids_are_indistinguishable_from_missing_ones(demo_app: Flask, seeded: Seeded) -> None:
    """Probing globex's ids with acme's token, by GET and PATCH, learns nothing and changes nothing."""
    client = demo_app.test_client()
    acme, globex = bearer(seeded.tokens["acme/ci"]), bearer(seeded.tokens["globex/ci"])
    before = {pid: client.get(f"/api/projects/{pid}", headers=globex).json for pid in seeded.projects["globex"]}
    missing = client.get("/api/projects/2147483647", headers=acme)
    missing_patch = client.patch("/api/projects/2147483647", headers=acme, json={"name": "mine"})
    assert missing.status_code == missing_patch.status_code == 404
    for pid in seeded.projects["globex"]:
        probe = client.get(f"/api/projects/{pid}", headers=acme)
        patch = client.patch(f"/api/projects/{pid}", headers=acme, json={"name": "mine", "status": "archived"})
        assert (probe.status_code, probe.json) == (404, missing.json)
        assert (patch.status_code, patch.json) == (404, missing_patch.json)
    after = {pid: client.get(f"/api/projects/{pid}", headers=globex).json for pid in seeded.projects["globex"]}
    assert after == before and all(project is not None for project in after.values())


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/projects", {"name": "nul\x00byte"}, "bad_request"),
        ("/api/projects", {"name": "lone \ud800 surrogate"}, "bad_request"),
        ("/api/projects/batch-update", {"ids": [], "name": "nul\x00byte"}, "bad_request"),  # ids: the sandbox's
        ("/api/login", {"tenant": "acme", "email": "alice\x00@acme.example", "password": "x"}, "invalid_credentials"),
        ("/api/login", {"tenant": "acme", "email": "\ud800@acme.example", "password": "x"}, "invalid_credentials"),
        ("/api/login", {"tenant": "acme", "email": "alice@acme.example", "password": "\ud800"}, "invalid_credentials"),
        ("/api/login", {"tenant": "no such slug", "email": "x", "password": "\udfff"}, "invalid_credentials"),
    ],
    ids=lambda value: repr(value)[:60],
)
def test_text_postgresql_cannot_store_is_a_4xx(
    demo_app: Flask, sandbox: Sandbox, path: str, body: dict[str, Any], error: str
) -> None:
    """NUL and lone surrogates are valid JSON escapes, but PostgreSQL and the password hasher take neither."""
    body = {**body, "ids": [sandbox.project_id]} if "ids" in body else body
    answer = demo_app.test_client().post(path, headers=bearer(sandbox.token), json=body)
    assert (answer.status_code, answer.json and answer.json["error"]) == (400 if path != "/api/login" else 401, error)


@pytest.mark.parametrize(
    ("host", "status", "slug"),
    [
        ("acme.example.test", 200, "acme"),
        ("ACME.Example.TEST", 200, "acme"),  # host names are case-insensitive
        ("acme.example.test:8080", 200, "acme"),
        ("acme.example.test.", 200, "acme"),  # the fully qualified form
        ("acme.example.test:x", 400, "invalid_request"),  # a port that is not one
        ("example.test", 200, None),  # not a subdomain: anonymous
        ("nobody-here.example.test", 404, "unknown_tenant"),
        (".example.test", 400, "invalid_request"),
        ("a..b.example.test", 400, "invalid_request"),
        ("a.b.example.test", 400, "invalid_request"),
        ("-acme.example.test", 400, "invalid_request"),
        ("a" * 64 + ".example.test", 400, "invalid_request"),  # a DNS label is at most 63
        ("a" * 250 + ".example.test", 400, "invalid_request"),  # a host name is at most 253
        # The README promises 400 for a malformed host. Werkzeug (>= 3.1.8) gives request.host == ""
        # for hosts with invalid characters, so the resolver never sees these: served anonymously.
        ("a_b.example.test", 400, "invalid_request"),
        ("x' or 1=1--.example.test", 400, "invalid_request"),
        ("caf\xe9.example.test", 400, "invalid_request"),
        ("\u20ac.example.test", 400, "invalid_request"),
        ("acme\x00.example.test", 400, "invalid_request"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_the_subdomain_names_a_tenant_or_is_refused(
    subdomain_app: Flask, host: str, status: int, slug: str | None
) -> None:
    """A subdomain that exists acts for its tenant, anonymously; anything else is a JSON 4xx."""
    answer = subdomain_app.test_client().get("/api/me", headers={"Host": host})
    assert answer.status_code == status, answer.json
    body = answer.json
    assert body is not None
    if status == 200:
        assert body["scopes"] == ["anonymous"] and body["user"] is None
        assert (body["tenant"] and body["tenant"]["slug"]) == slug
    else:
        assert body["error"] == slug


def test_hostile_values_travel_only_as_bound_parameters(
    demo_app: Flask, subdomain_app: Flask, seeded: Seeded, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every value a request carries to the database is a parameter; none is ever statement text."""
    marker, tenant_marker = f"zq{secrets.token_hex(6)}", 8_675_309_000_000 + secrets.randbelow(10**6)
    sql_like = f"{marker}'); DROP TABLE projects; --"
    statements: list[str] = []
    parameters: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)
        parameters.append(repr(params))

    def folded(conn: Any, statement: bytes, values: Any) -> Any:
        # The token lookup goes out with the transaction's BEGIN, past SQLAlchemy's events.
        statements.append(statement.decode())
        parameters.append(repr(values))
        return begin_bound_with(conn, statement, values)

    monkeypatch.setattr(tokens, "begin_bound_with", folded)
    engines = [app.extensions["rls_tenancy"].engine for app in (demo_app, subdomain_app)]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        client, sub = demo_app.test_client(), subdomain_app.test_client()
        token = bearer(sandbox.token)
        answers = [
            client.get("/api/me", headers={"Authorization": f"Bearer rlst_{tenant_marker}_{SECRET}"}),
            client.get("/api/me", headers={"Authorization": f"Bearer {sql_like}"}),
            client.post("/api/projects", headers=token, json={"name": sql_like}),
            client.patch(f"/api/projects/{sandbox.project_id}", headers=token, json={"name": sql_like}),
            client.get(f"/api/projects?status={sql_like}", headers=token),
            client.post("/api/login", json={"tenant": marker, "email": "a@b.test", "password": "x"}),
            client.post("/api/login", json={"tenant": "acme", "email": f"{sql_like}@b.test", "password": "x"}),
            sub.get("/api/me", headers={"Host": f"{marker}.example.test"}),
        ]
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    assert [a.status_code for a in answers] == [401, 401, 201, 200, 400, 401, 401, 404]
    for value in (marker, str(tenant_marker)):
        assert any(value in p for p in parameters), f"{value} never reached the database: the test proves nothing"
        assert not [s for s in statements if value in s]


HEADER_TEXT = st.text(st.characters(exclude_characters="\r\n"), max_size=200)  # HTTP cannot carry CR/LF
AUTHORIZATION = st.one_of(
    HEADER_TEXT,
    HEADER_TEXT.map(lambda s: "Bearer " + s),
    st.from_regex(r"\A[Bb]earer {1,3}rlst_-?[0-9]{0,22}_[A-Za-z0-9_'=-]{0,50}\Z"),
    st.integers(0, 12_000).map(lambda n: "Bearer rlst_1_" + "A" * n),
)


@pytest.mark.soak
@FUZZ
@given(header=AUTHORIZATION)
def test_no_authorization_header_gets_in_or_causes_a_500(demo_app: Flask, header: str) -> None:
    """Whatever the header says, guarded views answer 401 with a challenge and public ones stay anonymous."""
    client = demo_app.test_client()
    FIGURES.add("requests", 2)
    refused = client.get("/api/projects", headers={"Authorization": header})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith(CHALLENGE)
    assert refused.json is not None and refused.json["error"] in {"unauthorized", "invalid_token"}
    me = client.get("/api/me", headers={"Authorization": header})
    assert me.status_code in {200, 401}
    assert me.status_code == 401 or (me.json is not None and me.json["tenant"] is None)


HOSTILE_TEXT = st.text(st.sampled_from("\x00\ud800\udfff\u20ac\xe9'\";-\\ %_aA1"), min_size=1, max_size=20)
TEXT = st.one_of(st.text(max_size=110), HOSTILE_TEXT)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.soak
@FUZZ
@given(text=TEXT, where=st.integers(0, 5))
def test_no_text_in_a_well_formed_request_causes_a_500(
    demo_app: Flask, sandbox: Sandbox, text: str, where: int
) -> None:
    """Any string, including NUL and lone surrogates (both valid JSON escapes), in each field a view reads."""
    project = sandbox.project_id
    method, path, body = [
        ("POST", "/api/projects", {"name": text}),
        ("PATCH", f"/api/projects/{project}", {"name": text}),
        ("POST", "/api/projects/batch-update", {"ids": [project], "name": text}),
        ("POST", "/api/login", {"tenant": "acme", "email": text + "@acme.example", "password": text}),
        ("POST", "/api/login", {"tenant": text, "email": "alice@acme.example", "password": "x"}),
        ("GET", "/api/projects?status=" + quote(text, errors="surrogatepass"), None),  # as raw bytes
    ][where]
    answer = demo_app.test_client().open(path, method=method, headers=bearer(sandbox.token), json=body)
    FIGURES.add("requests")
    assert answer.status_code < 500, (answer.status_code, answer.json)


@pytest.mark.soak
@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PATCH"]),
    path=st.sampled_from(["/api/projects", "/api/projects/{project}", "/api/projects/batch-update", "/api/login"])
    | st.text(max_size=40).map("/api/projects/{}".format),
    body=JSON | st.binary(max_size=100),
)
def test_no_json_body_or_path_causes_a_500(
    demo_app: Flask, sandbox: Sandbox, method: str, path: str, body: Any
) -> None:
    """Arbitrary JSON, bytes claiming to be JSON, and odd project ids: always below 500."""
    path = path.replace("{project}", str(sandbox.project_id))
    sent: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    answer = demo_app.test_client().open(
        path, method=method, headers=bearer(sandbox.token), content_type="application/json", **sent
    )
    FIGURES.add("requests")
    assert answer.status_code < 500, (answer.status_code, answer.json)


def test_credentials_must_belong_to_the_hosts_tenant(subdomain_app: Flask, seeded: Seeded) -> None:
    client = subdomain_app.test_client()
    acme = bearer(seeded.tokens["acme/ci"])
    own = client.get("/api/projects", headers={**acme, "Host": "acme.example.test"})
    assert own.status_code == 200
    elsewhere = client.get("/api/projects", headers={**acme, "Host": "globex.example.test"})
    assert_invalid_token(elsewhere, "these credentials belong to another tenant than this host")
    anonymous = client.get("/api/projects", headers={"Host": "globex.example.test"})
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == CHALLENGE


# Everything a client controls at once: headers, cookies, path ids and body.
IDS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "2147483648", "9223372036854775808", "1e3", "0x10", "١٢", "½", " 1", "1 "]),
    st.text(max_size=30),
)
LANGUAGE = st.one_of(
    st.sampled_from(["de", "fr;q=0.9, en;q=0.8", "*", "xx-YY", "en;q=2", "de;q=abc", ";;;,,,"]), HEADER_TEXT
)
HOST = st.one_of(
    st.just("localhost"),  # no tenant from the host: the credentials decide
    st.sampled_from(["acme.example.test", "globex.example.test", "example.test", ".example.test", "a..example.test"]),
    st.from_regex(r"\A[a-z0-9-]{0,70}\.example\.test(:[0-9]{1,6})?\Z"),
    HEADER_TEXT,
)
DEEP = st.integers(1, 2_000).map(lambda depth: b"[" * depth + b"]" * depth)
HUGE = st.integers(1_000, 70_000).map(lambda size: {"name": "x" * size})
CANARIES = ("Secret lab", "Payroll", "Website relaunch", "Billing", "hank@globex", "alice@acme")


@pytest.mark.soak
@settings(max_examples=count(300, 10_000), deadline=None, database=None, derandomize=not SOAK)
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
    path=st.sampled_from(["/api/projects/{}", "/api/projects", "/api/me", "/api/features", "/api/audit"]),
    project=st.one_of(st.just("own"), IDS),
    host=HOST,
    language=LANGUAGE,
    cookie=HEADER_TEXT,
    authorization=st.one_of(st.just("good"), AUTHORIZATION),
    body=st.one_of(JSON, DEEP, HUGE, st.binary(max_size=200)),
)
def test_no_hostile_request_causes_a_500_or_shows_a_foreign_row(
    subdomain_app: Flask,
    sandbox: Sandbox,
    method: str,
    path: str,
    project: str,
    host: str,
    language: str,
    cookie: str,
    authorization: str,
    body: Any,
) -> None:
    """The sandbox tenant's credentials (or fuzzed ones) and every other input fuzzed: below 500, nothing foreign."""
    headers = {
        "Host": host,
        "Accept-Language": language,
        "Cookie": cookie,
        "Authorization": f"Bearer {sandbox.token}" if authorization == "good" else authorization,
    }
    sent: dict[str, Any] = (
        {"data": body, "content_type": "application/json"} if isinstance(body, bytes) else {"json": body}
    )
    project = str(sandbox.project_id) if project == "own" else project
    url = path.format(quote(project, safe="", errors="surrogatepass")) if "{}" in path else path
    answer = subdomain_app.test_client().open(url, method=method, headers=headers, **sent)
    FIGURES.add("requests")
    assert answer.status_code < 500, (answer.status_code, answer.get_data(as_text=True)[:300])
    shown = answer.get_data(as_text=True)
    leaked = [canary for canary in CANARIES if canary in shown]
    if leaked:
        FIGURES.add("leaks found")
    assert not leaked
