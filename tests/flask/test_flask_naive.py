"""Views written naively, as the README shows them: hostile input is a 400 or 404 JSON answer, never a 500.

The app is a plain one (``engine=``, ``session=``), its views take request
values straight into queries and models. Each hostile request must leave
nothing written, checked as the tenant under row level security.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask, abort, request
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, exc, func, insert, select, text, update
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.pool import StaticPool
from werkzeug.test import TestResponse

from rls_tenancy import (
    AmbiguousTenantError,
    ConfigurationError,
    TenancyError,
    Tenant,
    TenantQuery,
    UnsafeBypass,
    User,
    as_tenant,
    bind_engine,
)
from rls_tenancy.flask import Resolution, Tenancy, require_scopes
from rls_tenancy.identity.tokens import issue_token
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project
from tests.fix_flask import bearer

INT4_MAX = 2**31 - 1
#: Refusals the database raises after the view wrote a row: each must leave nothing written.
RAISING = {
    "raise-exception": "DO $$BEGIN RAISE EXCEPTION 'budget of 1234 exceeded'; END$$",
    "insufficient-privilege": "DO $$BEGIN RAISE EXCEPTION 'tenant 99 says no' USING ERRCODE = '42501'; END$$",
    "internal-error": "DO $$BEGIN RAISE EXCEPTION 'broken' USING ERRCODE = 'XX000'; END$$",
    "not-supported": "DO $$BEGIN RAISE EXCEPTION 'unsupported' USING ERRCODE = '0A000'; END$$",
}
#: 5 KB of JSON nested beyond Python's recursion limit.
DEEP_JSON = b"[" * 2500 + b"]" * 2500


@dataclass(frozen=True)
class Naive:
    client: FlaskClient
    tenant_id: int
    project_id: int
    token: str


def _naive_app(engine: Engine) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="naive")
    sessions = scoped_session(sessionmaker(engine, query_cls=TenantQuery))
    Tenancy().init_app(app, engine=engine, session=sessions)

    @app.get("/projects/<int:project_id>")
    def get_project(project_id: int) -> dict[str, object]:
        project = sessions.get(Project, project_id)
        if project is None:
            abort(404)
        return {"id": project.id, "name": project.name}

    @app.get("/bounded/<int4:project_id>")
    def get_bounded(project_id: int) -> dict[str, object]:
        return get_project(project_id)

    @app.post("/projects")
    @require_scopes("projects:write")
    def create_project() -> tuple[dict[str, object], int]:
        project = Project(name=request.json["name"])
        sessions.add(project)
        sessions.flush()
        answer = {"id": project.id, "name": project.name}
        sessions.commit()
        return answer, 201

    @app.post("/import")
    @require_scopes("projects:write")
    def import_project() -> tuple[dict[str, object], int]:
        # A Core insert with the tenant taken from the body: row level security checks it.
        sessions.execute(insert(Project).values(tenant_id=request.json["tenant_id"], name="Imported"))
        sessions.commit()
        return {"imported": True}, 201

    @app.post("/rename")
    @require_scopes("projects:write")
    def rename_projects() -> dict[str, object]:
        # ORM bulk UPDATE by primary key, the ids straight from the body: no loader criteria reach it.
        rows = [{"tenant_id": request.json["tenant_id"], "id": i, "name": "Renamed"} for i in request.json["ids"]]
        sessions.execute(update(Project), rows)
        sessions.commit()
        return {"renamed": len(rows)}

    @app.post("/raise/<case>")
    @require_scopes("projects:write")
    def write_then_raise(case: str) -> dict[str, object]:
        sessions.add(Project(name="Written before the error"))
        sessions.flush()
        if case == "failed-transaction":  # an error swallowed: the transaction can run nothing more
            try:
                sessions.execute(text("SELECT 1 / 0"))
            except exc.DataError:
                pass
            sessions.execute(text("SELECT 1"))
        elif case == "pending-rollback":  # a failed flush swallowed: the Session needs a rollback first
            try:
                sessions.add(Project(name=None))
                sessions.flush()
            except exc.IntegrityError:
                pass
            sessions.execute(text("SELECT 1"))
        else:
            sessions.execute(text(RAISING[case]))
        sessions.commit()
        return {"raised": False}

    @app.get("/ambiguous/<int:other>")
    @require_scopes("projects:write")
    def ambiguous(other: int) -> dict[str, object]:
        # A thread started while a generator's block for another tenant is suspended at its yield.
        def generator() -> Generator[int]:
            with as_tenant(other):
                yield 1
                yield 2

        suspended = generator()
        next(suspended)
        try:

            def names() -> list[str]:
                with Session(engine) as session:
                    return [project.name for project in session.scalars(select(Project))]

            return {"names": asyncio.run(asyncio.to_thread(names))}
        finally:
            suspended.close()

    @app.get("/shared-pool")
    @require_scopes("projects:write")
    def shared_pool() -> dict[str, object]:
        # A pool that hands one DBAPI connection to two open transactions, as a custom pool might.
        shared = bind_engine(create_engine(engine.url))
        shared.pool = StaticPool(shared.pool._creator)
        try:
            with shared.connect() as first, shared.connect() as second:
                first.execute(select(Project.id)).all()
                return {"ids": list(second.execute(select(Project.id)).scalars())}
        finally:
            shared.dispose()

    @app.get("/autocommit")
    @require_scopes("projects:write")
    def autocommit() -> dict[str, object]:
        with Session(engine.execution_options(isolation_level="AUTOCOMMIT")) as session:
            return {"names": [project.name for project in session.scalars(select(Project))]}

    @app.post("/silent")
    def silent_json() -> dict[str, object]:
        return {"body": request.get_json(silent=True) is not None}

    @app.post("/recurse")
    def recurse() -> dict[str, object]:
        def deeper(n: int) -> int:
            return deeper(n + 1)

        return {"depth": deeper(0)}

    @app.post("/register")
    @require_scopes("admin")
    def register() -> tuple[dict[str, object], int]:
        user = User(email=request.json["email"], roles=[])
        sessions.add(user)
        sessions.commit()
        return {"registered": True}, 201

    return app


@pytest.fixture(scope="module")
def naive(db: TenancyDatabase, bypass: UnsafeBypass) -> Iterator[Naive]:
    engine = create_engine(db.app_url)
    with bypass.session(reason="test setup: a naive app's tenant") as session:
        tenant = Tenant(slug=f"naive-{secrets.token_hex(4)}", name="Naive")
        session.add(tenant)
        session.flush()
        tenant_id = tenant.id
    app = _naive_app(engine)  # binds the engine
    with as_tenant(tenant_id), Session(engine) as session, session.begin():
        project = Project(name="Kept")
        session.add(project)
        session.flush()
        token = issue_token(session, name="naive", scopes=["admin", "projects:write"]).token
        project_id = project.id
    yield Naive(app.test_client(), tenant_id, project_id, token)
    tenancy = app.extensions["rls_tenancy"]
    tenancy.audit_engine.dispose()
    engine.dispose()


def _rows(naive: Naive, db: TenancyDatabase) -> tuple[int, int]:
    """How many projects and users the naive tenant has, as the app role."""
    engine = bind_engine(create_engine(db.app_url))
    try:
        with as_tenant(naive.tenant_id), Session(engine) as session:
            projects = session.scalar(select(func.count()).select_from(Project))
            users = session.scalar(select(func.count()).select_from(User))
            assert projects, "the tenant's own project is visible: the count is not vacuous"
            return int(projects), int(users or 0)
    finally:
        engine.dispose()


def _invalid(response: TestResponse) -> str:
    """The message of a 400 ``invalid_request`` JSON answer."""
    assert response.status_code == 400, response.data[:300]
    body = response.json
    assert isinstance(body, dict) and body["error"] == "invalid_request", body
    return str(body["message"])


def test_a_naive_view_still_finds_its_own_row(naive: Naive) -> None:
    response = naive.client.get(f"/projects/{naive.project_id}", headers=bearer(naive.token))
    assert response.status_code == 200 and response.json == {"id": naive.project_id, "name": "Kept"}
    assert naive.client.get(f"/bounded/{naive.project_id}", headers=bearer(naive.token)).status_code == 200


@pytest.mark.parametrize("project_id", [INT4_MAX + 1, 2**63, 10**30])
def test_an_id_beyond_the_columns_range_is_a_400_not_a_500(naive: Naive, project_id: int) -> None:
    response = naive.client.get(f"/projects/{project_id}", headers=bearer(naive.token))
    message = _invalid(response)
    assert "out of range" in message and "SELECT" not in message  # the condition, not the statement


@pytest.mark.parametrize("project_id", [INT4_MAX + 1, 2**63])
def test_the_int4_converter_matches_only_what_the_column_holds(naive: Naive, project_id: int) -> None:
    assert naive.client.get(f"/bounded/{project_id}", headers=bearer(naive.token)).status_code == 404
    assert naive.client.get(f"/bounded/{INT4_MAX}", headers=bearer(naive.token)).status_code == 404  # no such row


@pytest.mark.parametrize(
    ("name", "says"),
    [("NUL \x00 inside", "NUL"), ("lone \ud800 surrogate", "surrogate"), ("x" * 101, "string data right truncation")],
    ids=["nul", "surrogate", "too-long"],
)
def test_text_the_database_cannot_store_is_a_400_and_nothing_is_written(
    naive: Naive, db: TenancyDatabase, name: str, says: str
) -> None:
    before = _rows(naive, db)
    response = naive.client.post("/projects", json={"name": name}, headers=bearer(naive.token))
    assert says in _invalid(response)
    assert _rows(naive, db) == before


def test_an_invalid_email_at_registration_is_a_400_and_nothing_is_written(naive: Naive, db: TenancyDatabase) -> None:
    before = _rows(naive, db)
    response = naive.client.post("/register", json={"email": "not an email"}, headers=bearer(naive.token))
    assert "email" in _invalid(response)
    assert _rows(naive, db) == before
    ok = naive.client.post(
        "/register", json={"email": f"{secrets.token_hex(3)}@naive.example"}, headers=bearer(naive.token)
    )
    assert ok.status_code == 201 and _rows(naive, db) == (before[0], before[1] + 1)


def test_a_duplicate_is_a_409_naming_the_constraint_and_nothing_is_written(naive: Naive, db: TenancyDatabase) -> None:
    email = f"{secrets.token_hex(3)}@naive.example"
    assert naive.client.post("/register", json={"email": email}, headers=bearer(naive.token)).status_code == 201
    before = _rows(naive, db)
    response = naive.client.post("/register", json={"email": email.upper()}, headers=bearer(naive.token))
    assert response.status_code == 409, response.data[:300]
    body = response.json
    assert isinstance(body, dict) and body["error"] == "conflict", body
    assert "unique violation (users_tenant_email_key)" in body["message"]
    assert email.split("@")[0] not in body["message"].lower()  # the condition, never the stored value
    assert _rows(naive, db) == before


def test_a_bulk_update_naming_another_tenants_row_is_a_409_and_nothing_is_written(
    naive: Naive, bypass: UnsafeBypass
) -> None:
    """Row level security hides the row, SQLAlchemy counts one row short: the client's mistake, not a 500."""
    with bypass.session(reason="test setup: another tenant's project") as session:
        tenant = Tenant(slug=f"other-{secrets.token_hex(4)}", name="Other")
        session.add(tenant)
        session.flush()
        other = Project(tenant_id=tenant.id, name="Theirs")
        session.add(other)
        session.flush()
        theirs = (other.tenant_id, other.id, other.name)
    for tenant_id in (naive.tenant_id, theirs[0]):
        body = {"tenant_id": tenant_id, "ids": [naive.project_id, theirs[1]]}
        response = naive.client.post("/rename", json=body, headers=bearer(naive.token))
        assert response.status_code == 409, response.data[:300]
        assert response.json is not None and response.json["error"] == "conflict"
    ok = naive.client.post(
        "/rename", json={"tenant_id": naive.tenant_id, "ids": [naive.project_id]}, headers=bearer(naive.token)
    )
    assert ok.status_code == 200 and ok.json == {"renamed": 1}
    with bypass.session(reason="test: nothing written to it") as session:
        assert session.get(Project, theirs[1]).name == theirs[2]  # type: ignore[union-attr]


def test_a_missing_value_is_a_400_and_nothing_is_written(naive: Naive, db: TenancyDatabase) -> None:
    before = _rows(naive, db)
    response = naive.client.post("/projects", json={"name": None}, headers=bearer(naive.token))
    assert "not null violation" in _invalid(response)
    assert _rows(naive, db) == before


def test_the_apps_own_handler_for_those_errors_wins(db: TenancyDatabase) -> None:
    from sqlalchemy import exc

    app = Flask(__name__)
    app.register_error_handler(exc.DataError, lambda error: ({"mine": True}, 422))
    engine = create_engine(db.app_url)
    try:
        Tenancy().init_app(app, engine=engine)
        assert app.error_handler_spec[None][None][exc.DataError].__name__ == "<lambda>"
    finally:
        app.extensions["rls_tenancy"].audit_engine.dispose()
        engine.dispose()


@pytest.fixture()
def in_production(naive: Naive) -> Iterator[Naive]:
    """The naive app answering a 500 as in production, where Flask does not raise it to the test client."""
    app = naive.client.application
    app.testing = False
    yield naive
    app.testing = True


def _other_tenant(bypass: UnsafeBypass) -> int:
    with bypass.session(reason="test setup: a tenant to write into") as session:
        tenant = Tenant(slug=f"victim-{secrets.token_hex(4)}", name="Victim")
        session.add(tenant)
        session.flush()
        return tenant.id


def test_a_write_row_level_security_refuses_is_a_403_json_and_nothing_is_written(
    naive: Naive, db: TenancyDatabase, bypass: UnsafeBypass
) -> None:
    victim = _other_tenant(bypass)
    before = _rows(naive, db)
    response = naive.client.post("/import", json={"tenant_id": victim}, headers=bearer(naive.token))
    assert response.status_code == 403, response.data[:300]
    assert response.json == {
        "error": "forbidden",
        "message": "the database refuses this request: its access rules forbid it",
    }
    assert _rows(naive, db) == before
    with bypass.session(reason="test check: nothing written into the other tenant") as session:
        assert not session.scalar(select(func.count()).select_from(Project).where(Project.tenant_id == victim))


def test_a_library_or_app_function_raising_42501_is_a_403_without_its_message(
    naive: Naive, db: TenancyDatabase
) -> None:
    before = _rows(naive, db)
    response = naive.client.post("/raise/insufficient-privilege", headers=bearer(naive.token))
    assert response.status_code == 403 and response.json is not None
    assert response.json["error"] == "forbidden" and "99" not in response.json["message"]
    assert _rows(naive, db) == before


def test_an_exception_an_app_trigger_raises_is_a_400_without_its_message(naive: Naive, db: TenancyDatabase) -> None:
    before = _rows(naive, db)
    message = _invalid(naive.client.post("/raise/raise-exception", headers=bearer(naive.token)))
    assert "database function" in message and "1234" not in message
    assert _rows(naive, db) == before


@pytest.mark.parametrize("case", ["internal-error", "not-supported", "failed-transaction", "pending-rollback"])
def test_a_database_failure_that_is_a_bug_is_a_500_in_json_and_nothing_is_written(
    in_production: Naive, db: TenancyDatabase, case: str
) -> None:
    before = _rows(in_production, db)
    response = in_production.client.post(f"/raise/{case}", headers=bearer(in_production.token))
    assert response.status_code == 500 and response.json == {
        "error": "internal_error",
        "message": "the server failed to handle this request",
    }
    assert _rows(in_production, db) == before


def test_an_ambiguous_tenant_is_a_500_that_names_no_tenant(in_production: Naive, bypass: UnsafeBypass) -> None:
    """A programming error, not the client's: the body tells nothing of it (its message names the other tenant)."""
    other = _other_tenant(bypass)
    response = in_production.client.get(f"/ambiguous/{other}", headers=bearer(in_production.token))
    assert response.status_code == 500 and response.json == {
        "error": "internal_error",
        "message": "the server failed to handle this request",
    }


def test_in_testing_an_ambiguous_tenant_is_raised_to_the_test_client(naive: Naive, bypass: UnsafeBypass) -> None:
    with pytest.raises(AmbiguousTenantError):
        naive.client.get(f"/ambiguous/{_other_tenant(bypass)}", headers=bearer(naive.token))


def test_a_pool_sharing_one_connection_is_a_500_not_the_clients_400(in_production: Naive) -> None:
    """The app's set-up, whatever the request: a ConfigurationError, answered as a bug is."""
    response = in_production.client.get("/shared-pool", headers=bearer(in_production.token))
    assert response.status_code == 500 and response.json == {
        "error": "internal_error",
        "message": "the server failed to handle this request",
    }


def test_in_testing_a_configuration_error_is_raised_to_the_test_client(naive: Naive) -> None:
    with pytest.raises(ConfigurationError, match="open transaction"):
        naive.client.get("/shared-pool", headers=bearer(naive.token))


def test_an_autocommit_engine_is_a_500_and_its_refusal_is_documented(naive: Naive) -> None:
    """A programming error: a 500, and docs/errors.md quotes the refusal that a log shows."""
    with pytest.raises(TenancyError) as raised:
        naive.client.get("/autocommit", headers=bearer(naive.token))
    assert type(raised.value) is TenancyError
    page = " ".join((Path(__file__).parents[2] / "docs" / "errors.md").read_text().split())
    assert str(raised.value) in page
    naive.client.application.testing = False
    try:
        response = naive.client.get("/autocommit", headers=bearer(naive.token))
    finally:
        naive.client.application.testing = True
    assert response.status_code == 500 and response.json is not None and response.json["error"] == "internal_error"


def test_in_testing_a_database_bug_is_raised_to_the_test_client(naive: Naive) -> None:
    with pytest.raises(exc.InternalError):
        naive.client.post("/raise/internal-error", headers=bearer(naive.token))


@pytest.mark.parametrize("path", ["/projects", "/silent"])
def test_json_nested_too_deeply_to_parse_is_a_400(naive: Naive, db: TenancyDatabase, path: str) -> None:
    before = _rows(naive, db)
    headers = {**bearer(naive.token), "Content-Type": "application/json"}
    assert _invalid(naive.client.post(path, data=DEEP_JSON, headers=headers)) == "the JSON body is nested too deeply"
    assert _rows(naive, db) == before


def test_a_recursion_error_of_the_apps_own_stays_a_500(in_production: Naive) -> None:
    response = in_production.client.post("/recurse", json={})
    assert response.status_code == 500 and not response.is_json  # not the client's: Flask's own page, as before


def test_the_apps_broader_handler_answers_the_database_failures_that_are_bugs(db: TenancyDatabase) -> None:
    app = Flask(__name__)
    engine = create_engine(db.app_url)
    try:
        Tenancy().init_app(app, engine=engine)
        app.register_error_handler(Exception, lambda error: ({"mine": type(error).__name__}, 500))

        @app.get("/broken")
        def broken() -> dict[str, object]:
            app.extensions["rls_tenancy"].session().execute(text(RAISING["internal-error"]))
            return {}

        @app.get("/denied")
        def denied() -> dict[str, object]:
            app.extensions["rls_tenancy"].session().execute(text(RAISING["insufficient-privilege"]))
            return {}

        client = app.test_client()
        assert client.get("/broken").json == {"mine": "InternalError"}
        assert client.get("/denied").status_code == 403
    finally:
        app.extensions["rls_tenancy"].audit_engine.dispose()
        engine.dispose()


def test_a_resolver_naming_no_tenant_reads_empty_and_its_write_is_a_400(db: TenancyDatabase) -> None:
    """An app's own resolver is trusted with the id: the database finds no rows and refuses writes by foreign key."""
    missing = 2**62 + 123_456_789
    app = Flask(__name__)
    engine = create_engine(db.app_url)
    sessions = scoped_session(sessionmaker(engine, query_cls=TenantQuery))
    try:
        Tenancy().init_app(app, engine=engine, session=sessions, resolvers=[lambda _request: Resolution(missing)])

        @app.get("/projects")
        def listed() -> dict[str, object]:
            return {"projects": [project.name for project in sessions.scalars(select(Project))]}

        @app.post("/projects")
        def create() -> dict[str, object]:
            sessions.add(Project(name="orphan"))
            sessions.commit()
            return {"created": True}

        client = app.test_client()
        assert client.get("/projects").json == {"projects": []}
        response = client.post("/projects")
        assert response.status_code == 400 and response.json == {
            "error": "invalid_request",
            "message": "the database refuses a row of this request: foreign key violation (projects_tenant_id_fkey)",
        }
    finally:
        app.extensions["rls_tenancy"].audit_engine.dispose()
        engine.dispose()
