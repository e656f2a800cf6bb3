"""The tutorial's blog (examples/tenant_blog, docs/tutorial.md) on a real PostgreSQL, as its own suite would test it.

Its own database, migrated with its own Alembic setup; the app as the
application role; isolation checked through the app and, as that same
unprivileged role, in the database itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, exc, text
from sqlalchemy.engine import URL
from werkzeug.test import TestResponse

from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from tenant_blog import create_app
from tenant_blog.models import Base

BLOG_ALEMBIC_INI = Path(__file__).parents[2] / "examples" / "tenant_blog" / "alembic.ini"
PASSWORD = "correct horse battery staple"


# tutorial: fixtures
@pytest.fixture(scope="module")
def blog_db(rls_postgres_url: URL, rls_break_database: Callable[[URL], None]) -> Iterator[TenancyDatabase]:
    """A fresh database on the plugin's server, upgraded to heads: the blog's revisions and the library's."""
    with tenancy_database(rls_postgres_url, alembic_config=Config(BLOG_ALEMBIC_INI)) as database:
        rls_break_database(database.superuser_url)  # under --rls-break=policy: its policies opened too
        yield database


@pytest.fixture(scope="module")
def blog_app(blog_db: TenancyDatabase) -> Iterator[Flask]:
    """The blog as the application role (subject to every policy); the bypass role for the CLI only."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": secrets.token_hex(16),
            "DATABASE_URL": blog_db.app_url,
            "RLS_TENANCY_BYPASS_DATABASE_URL": blog_db.bypass_url,
        }
    )
    yield app
    app.extensions["rls_tenancy"].dispose()  # every engine's pooled connections, before the database is dropped


@pytest.fixture()
def app_role_engine(blog_db: TenancyDatabase) -> Iterator[Engine]:
    """The application role's engine, outside the app: for asking the database itself."""
    engine = bind_engine(create_engine(blog_db.app_url))
    yield engine
    engine.dispose()


# tutorial: end fixtures


@dataclass
class Blog:
    """One tenant's blog, at ``<slug>.localhost``, through a test client of its own (its own cookies)."""

    slug: str
    client: FlaskClient

    @property
    def host(self) -> str:
        return f"{self.slug}.localhost"

    def get(self, path: str) -> TestResponse:
        return self.client.get(path, base_url=f"http://{self.host}")

    def post(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.client.post(path, base_url=f"http://{self.host}", json=json, **kwargs)

    def register_and_log_in(self, email: str) -> int:
        registered = self.post("/auth/register", {"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.json
        logged_in = self.post("/auth/login", {"email": email, "password": PASSWORD})
        assert logged_in.status_code == 200, logged_in.json
        user_id: int = registered.json["id"]  # type: ignore[index]
        return user_id

    def write(self, title: str, body: str = "") -> dict[str, Any]:
        created = self.post("/create", {"title": title, "body": body})
        assert created.status_code == 201, created.json
        post: dict[str, Any] = created.json  # type: ignore[assignment]
        return post

    def titles(self) -> list[str]:
        index = self.get("/")
        assert index.status_code == 200, index.json
        return [post["title"] for post in index.json["posts"]]  # type: ignore[index]


# tutorial: create-tenant
def create_tenant(app: Flask, slug: str) -> Blog:
    """``flask tenancy create-tenant``, as an operator would run it (through the bypass role, audited)."""
    result = app.test_cli_runner().invoke(args=["tenancy", "create-tenant", slug, f"Tenant {slug}"])
    assert result.exit_code == 0, result.output
    return Blog(slug, app.test_client())


# tutorial: end create-tenant


@pytest.fixture(scope="module")
def acme(blog_app: Flask) -> Blog:
    blog = create_tenant(blog_app, f"acme-{secrets.token_hex(3)}")
    blog.register_and_log_in("alice@example.com")
    return blog


@pytest.fixture(scope="module")
def globex(blog_app: Flask) -> Blog:
    blog = create_tenant(blog_app, f"globex-{secrets.token_hex(3)}")
    # The same email as acme's user: an email is unique within its tenant only, so signing up tells nothing.
    blog.register_and_log_in("alice@example.com")
    return blog


def test_the_migration_isolates_posts_and_matches_the_model(blog_db: TenancyDatabase) -> None:
    superuser = create_engine(blog_db.superuser_url)
    try:
        with superuser.connect() as conn:
            # tutorial: dba
            coverage = conn.execute(
                text(
                    "SELECT rls_enabled, rls_forced, policies, tenant_policies, owner, app_truncate "
                    "FROM rls_tenancy.coverage WHERE table_name = :table"
                ),
                {"table": "public.posts"},
            ).one()
            policy = conn.execute(
                text("SELECT cmd, qual, with_check FROM pg_policies WHERE tablename = :table"), {"table": "posts"}
            ).one()
            # tutorial: end dba
            assert tuple(coverage) == (True, True, 1, "tenant_isolation", blog_db.roles.owner, False)
            assert policy.cmd == "ALL" and policy.qual == policy.with_check
            assert "current_setting('app.current_tenant'" in policy.qual
            # OVERRIDING SYSTEM VALUE needs INSERT on id, which the migration grants to no one but the owner.
            assert not conn.scalar(
                text("SELECT has_column_privilege(:role, 'public.posts', 'id', 'INSERT')"), {"role": blog_db.roles.app}
            )
            only_posts = {"include_name": lambda name, type_, parents: type_ != "table" or name == "posts"}
            context = MigrationContext.configure(
                conn, opts={**only_posts, "compare_server_default": True, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        superuser.dispose()


def test_the_doctor_finds_nothing_wrong_with_posts(blog_db: TenancyDatabase) -> None:
    # tutorial: doctor
    bypass = create_engine(blog_db.bypass_url)  # findings() is granted to the bypass role
    try:
        with bypass.connect() as conn:
            findings = conn.execute(
                text(
                    "SELECT severity, check_name, object_name FROM rls_tenancy.findings() "
                    "WHERE object_name LIKE :posts AND severity <> 'info'"
                ),
                {"posts": "public.posts%"},
            ).all()
    finally:
        bypass.dispose()
    assert findings == []
    # tutorial: end doctor


def test_each_tenant_reads_and_writes_its_own_blog(acme: Blog, globex: Blog) -> None:
    mine = acme.write("Hello from acme", "first post")
    theirs = globex.write("Hello from globex")
    assert mine["author"] == theirs["author"] == "alice@example.com"
    assert mine["author_id"] != theirs["author_id"]  # two users, one email, two tenants

    assert "Hello from acme" in acme.titles() and "Hello from globex" not in acme.titles()
    assert "Hello from globex" in globex.titles() and "Hello from acme" not in globex.titles()

    edited = acme.post(f"/{mine['id']}/update", {"title": "Hello again", "body": "edited"})
    assert edited.status_code == 200
    assert edited.json == {**mine, "title": "Hello again", "body": "edited"}
    assert acme.get(f"/{mine['id']}/update").json == edited.json
    assert acme.post(f"/{mine['id']}/delete").json == {"deleted": mine["id"]}
    assert acme.get(f"/{mine['id']}/update").status_code == 404
    assert "Hello again" not in acme.titles()


def test_another_tenants_post_is_not_there_for_the_app(acme: Blog, globex: Blog) -> None:
    theirs = globex.write("Globex only", "secret plans")
    missing = acme.get("/2147483647/update")
    assert missing.status_code == 404
    for attempt in (
        acme.get(f"/{theirs['id']}/update"),
        acme.post(f"/{theirs['id']}/update", {"title": "Taken over by acme"}),
        acme.post(f"/{theirs['id']}/delete"),
    ):
        assert attempt.status_code == 404  # the same answer as an id nobody has
        assert attempt.json == {**missing.json, "message": f"Post id {theirs['id']} doesn't exist."}  # type: ignore[dict-item]
    assert globex.get(f"/{theirs['id']}/update").json == theirs  # untouched, and still there for globex
    assert "Globex only" not in acme.titles()


def test_a_login_works_only_on_its_own_tenants_host(acme: Blog, globex: Blog) -> None:
    cookie = acme.client.get_cookie("session", domain=acme.host)
    assert cookie is not None
    stranger = Blog(globex.slug, acme.client.application.test_client())
    stranger.client.set_cookie("session", cookie.value, domain=globex.host)  # acme's login, sent to globex's host
    refused = stranger.post("/create", {"title": "Cross-posted"})
    assert refused.status_code == 401
    assert refused.json["error"] == "invalid_token"  # type: ignore[index]
    assert "Cross-posted" not in globex.titles()


def test_only_the_author_may_change_a_post(acme: Blog) -> None:
    post = acme.write("Alice's")
    colleague = Blog(acme.slug, acme.client.application.test_client())
    colleague.register_and_log_in(f"bob-{secrets.token_hex(3)}@example.com")
    assert "Alice's" in colleague.titles()
    assert colleague.post(f"/{post['id']}/update", {"title": "Bob's now"}).status_code == 403
    assert colleague.post(f"/{post['id']}/delete").status_code == 403
    assert acme.get(f"/{post['id']}/update").json == post


def test_logged_out_is_read_only(acme: Blog) -> None:
    visitor = Blog(acme.slug, acme.client.application.test_client())
    assert visitor.get("/").status_code == 200  # flaskr's index is public, to the host's tenant
    assert visitor.post("/create", {"title": "Anonymous"}).status_code == 401
    email = f"carol-{secrets.token_hex(3)}@example.com"
    visitor.register_and_log_in(email)
    assert visitor.post("/auth/logout").status_code == 200
    assert visitor.post("/create", {"title": "After logout"}).status_code == 401


# tutorial: database
@pytest.mark.rls_policy  # plain SQL as the app role: only the policy stands in the way
def test_the_database_hides_other_tenants_posts_from_the_app_role(
    acme: Blog, globex: Blog, app_role_engine: Engine
) -> None:
    theirs = [globex.write(f"Globex post {n}")["id"] for n in range(3)]
    acme_id, globex_id = (tenant_id(app_role_engine, blog.slug) for blog in (acme, globex))
    naming_theirs = {"ids": theirs, "tenant": globex_id}
    with app_role_engine.connect() as conn:  # the application role: no superuser, no BYPASSRLS, owns nothing
        assert not conn.scalar(text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"))
    with as_tenant(acme_id), app_role_engine.begin() as conn:  # plain SQL, no ORM filter: only the policy
        assert conn.execute(text("SELECT id FROM posts WHERE id = ANY(:ids)"), naming_theirs).all() == []
        assert conn.execute(text("SELECT id FROM posts WHERE tenant_id = :tenant"), naming_theirs).all() == []
        assert conn.execute(text("UPDATE posts SET title = 'mine' WHERE id = ANY(:ids)"), naming_theirs).rowcount == 0
        assert conn.execute(text("DELETE FROM posts WHERE id = ANY(:ids)"), naming_theirs).rowcount == 0
    with as_tenant(globex_id), app_role_engine.begin() as conn:  # the same query for globex: all there
        rows = conn.execute(text("SELECT id, title FROM posts WHERE id = ANY(:ids) ORDER BY id"), naming_theirs)
        assert [tuple(row) for row in rows] == [(i, f"Globex post {n}") for n, i in enumerate(sorted(theirs))]


@pytest.mark.rls_policy
def test_the_database_refuses_a_row_for_another_tenant(acme: Blog, globex: Blog, app_role_engine: Engine) -> None:
    acme_id, globex_id = (tenant_id(app_role_engine, blog.slug) for blog in (acme, globex))
    author = globex.write("Globex author's")["author_id"]
    insert = text("INSERT INTO posts (tenant_id, author_id, title, body) VALUES (:tenant, :author, 'planted', '')")
    with pytest.raises(exc.ProgrammingError, match="row-level security"), as_tenant(acme_id):
        with app_role_engine.begin() as conn:
            conn.execute(insert, {"tenant": globex_id, "author": author})
    # No tenant bound: no rows, no writes.
    with pytest.raises(exc.ProgrammingError, match="row-level security"), app_role_engine.begin() as conn:
        conn.execute(insert, {"tenant": globex_id, "author": author})
    assert "planted" not in globex.titles()


# tutorial: end database


def tenant_id(engine: Engine, slug: str) -> int:
    """A tenant's id by its slug, as the app role may ask (``rls_tenancy.tenant_id_for_slug``)."""
    with engine.connect() as conn:
        found = conn.scalar(text("SELECT rls_tenancy.tenant_id_for_slug(:slug)"), {"slug": slug})
    assert isinstance(found, int)
    return found


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/create", None, 400),  # no JSON at all
        ("/create", ["a list"], 400),
        ("/create", {"body": "no title"}, 400),
        ("/create", {"title": "   "}, 400),
        ("/create", {"title": 42}, 400),
        ("/create", {"title": "ok", "body": {"not": "text"}}, 400),
        ("/create", {"title": "NUL \x00 inside"}, 400),  # psycopg refuses it: the extension's 400
        ("/create", {"title": "lone surrogate \ud800"}, 400),  # valid JSON, no UTF-8 for it
        ("/2147483648/update", {"title": "beyond integer"}, 404),  # int4: no route, never the database
        ("/0/delete", None, 404),
        ("/auth/register", {"email": "not an email", "password": "x"}, 400),  # User's validator: UsageError
        ("/auth/register", {"email": "alice@example.com", "password": "x"}, 409),  # taken in this tenant
        ("/auth/register", {"email": "x" * 300 + "@example.com", "password": "x"}, 400),
        ("/auth/login", {"email": "alice@example.com", "password": "wrong"}, 401),
        ("/auth/login", {"email": "nobody@example.com", "password": PASSWORD}, 401),
        ("/auth/login", {"email": "alice@example.com"}, 400),
    ],
)
def test_bad_input_is_a_4xx_answer_never_a_500(acme: Blog, path: str, body: object, status: int) -> None:
    answer = (
        acme.post(path, body) if body is not None else acme.post(path, data="title=form", content_type="text/plain")
    )
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.is_json and isinstance(answer.json["message"], str)  # type: ignore[index]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", 404),  # no tenant's blog: the app says where blogs are
        ("no-such-tenant.localhost", 404),  # the extension: unknown_tenant
        ("-bad-.localhost", 400),  # not a slug: invalid_request
    ],
)
def test_a_host_that_names_no_blog_is_a_4xx(blog_app: Flask, host: str, status: int) -> None:
    answer = blog_app.test_client().get("/", headers={"Host": host})
    assert answer.status_code == status and answer.is_json
