"""Credentials checked inside the request's own transaction: one connection, no extra round trip, no leftovers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import sessionmaker

from rls_tenancy.errors import AuthenticationError
from rls_tenancy.flask import Tenancy, get_current_tenant, get_current_user, resolvers, state
from rls_tenancy.identity import tokens
from rls_tenancy.orm.models import TenancyBase
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.proxy import RoundTripProxy
from saas_demo.models import Base
from saas_demo.seed import Seeded
from tests.fix_flask import bearer

SETTINGS = text(
    "SELECT current_setting('app.current_tenant', true) AS tenant, current_setting('app.current_user_id', true) AS user"
)


@pytest.fixture()
def proxy(db: TenancyDatabase) -> Iterator[RoundTripProxy]:
    with RoundTripProxy(str(db.app_url.host), int(db.app_url.port or 5432)) as running:
        yield running


@pytest.fixture()
def engine(db: TenancyDatabase, proxy: RoundTripProxy) -> Iterator[Engine]:
    made = create_engine(db.app_url.set(host="127.0.0.1", port=proxy.port))
    yield made
    made.dispose()


def _app(engine: Engine) -> tuple[Flask, list[int]]:
    """An app whose 401 handler queries the request's session; and a count of pool checkouts."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine)
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))

    @app.get("/settings")
    def settings() -> ResponseReturnValue:
        tenant = get_current_tenant()
        user = get_current_user()
        row = state().session().execute(SETTINGS).one()
        return jsonify(
            slug=None if tenant is None else tenant.slug,
            user=None if user is None else user.id,
            bound_tenant=row.tenant,
            bound_user=row.user,
        )

    @app.errorhandler(AuthenticationError)
    def refused(error: AuthenticationError) -> ResponseReturnValue:
        # An app's own handler using the request's session: the claimed
        # tenant must not be what its transaction is bound to.
        row = state().session().execute(SETTINGS).one()
        return jsonify(reason=error.reason, bound_tenant=row.tenant or None, bound_user=row.user or None), 401

    return app, checkouts


def test_a_token_costs_one_connection_and_goes_out_with_the_begin(
    engine: Engine, proxy: RoundTripProxy, seeded: Seeded
) -> None:
    app, checkouts = _app(engine)
    client = app.test_client()
    client.get("/settings", headers=bearer(seeded.tokens["acme/ci"]))  # connect, verify the role
    checkouts.clear()
    proxy.reset()
    answer = client.get("/settings", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["slug"] == "acme"
    assert body["user"] is not None
    # The database binds exactly what the request acts for; the user was bound
    # by the token's own statement, not by a rebinding round trip.
    assert (body["bound_tenant"], body["bound_user"]) == (str(seeded.tenants["acme"]), str(body["user"]))
    assert len(checkouts) == 1
    # BEGIN + binding + the token (binding its user, reading the user's row), the tenant, the settings,
    # ROLLBACK: the lookup rides in the round trip that begins the transaction, and the user with it.
    assert proxy.round_trips == 4


def test_a_token_that_does_not_hold_leaves_nothing_bound_to_the_tenant_it_names(engine: Engine, seeded: Seeded) -> None:
    app, _ = _app(engine)
    forged = f"rlst_{seeded.tenants['globex']}_{secrets.token_urlsafe(32)}"
    answer = app.test_client().get("/settings", headers=bearer(forged))
    assert answer.status_code == 401
    assert answer.get_json() == {"reason": "unknown", "bound_tenant": None, "bound_user": None}


def test_a_vanished_cookie_user_leaves_nothing_bound_either(engine: Engine, seeded: Seeded) -> None:
    app, _ = _app(engine)
    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["rls_tenancy"] = {"tenant_id": seeded.tenants["globex"], "user_id": 2**62}
    answer = client.get("/settings")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["slug"], body["user"]) == (None, None)  # anonymous: the cookie was forgotten
    assert not body["bound_tenant"]
    assert not body["bound_user"]


def _user_id(superuser_engine: Engine, email: str) -> int:
    with superuser_engine.connect() as conn:
        found: int = conn.scalar(text("SELECT id FROM rls_tenancy.users WHERE email = :email"), {"email": email})
        return found


def test_a_cookie_user_costs_one_connection_and_goes_out_with_the_begin(
    engine: Engine, proxy: RoundTripProxy, seeded: Seeded, superuser_engine: Engine
) -> None:
    app, checkouts = _app(engine)
    client = app.test_client()
    alice = _user_id(superuser_engine, "alice@acme.example")
    with client.session_transaction() as cookie:
        cookie["rls_tenancy"] = {"tenant_id": seeded.tenants["acme"], "user_id": alice}
    client.get("/settings")  # connect, verify the role
    checkouts.clear()
    proxy.reset()
    answer = client.get("/settings")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["slug"], body["user"]) == ("acme", alice)
    assert (body["bound_tenant"], body["bound_user"]) == (str(seeded.tenants["acme"]), str(alice))
    assert len(checkouts) == 1
    # BEGIN + binding + the user's check (binding them, reading their row), the tenant, the settings, ROLLBACK.
    assert proxy.round_trips == 4


@pytest.mark.rls_policy
def test_a_cookie_naming_another_tenants_user_acts_for_nobody(
    engine: Engine, seeded: Seeded, superuser_engine: Engine
) -> None:
    """The check finds a user only in the tenant the cookie names: row level security on users, not a WHERE."""
    app, _ = _app(engine)
    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["rls_tenancy"] = {
            "tenant_id": seeded.tenants["globex"],
            "user_id": _user_id(superuser_engine, "alice@acme.example"),
        }
    answer = client.get("/settings")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["slug"], body["user"]) == (None, None)
    assert not body["bound_tenant"]
    assert not body["bound_user"]


@pytest.mark.parametrize("credential", ["token", "cookie"])
def test_without_a_begin_to_ride_with_the_check_is_an_ordinary_statement(
    engine: Engine,
    proxy: RoundTripProxy,
    seeded: Seeded,
    superuser_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    credential: str,
) -> None:
    """Where the BEGIN cannot carry the check (another driver, say), it costs its own round trip and holds the same."""
    for module in (tokens, resolvers):
        monkeypatch.setattr(module, "begin_bound_with", lambda *_: None)
    app, _ = _app(engine)
    client = app.test_client()
    alice = _user_id(superuser_engine, "alice@acme.example")
    headers = bearer(seeded.tokens["acme/ci"]) if credential == "token" else {}
    with client.session_transaction() as cookie:
        cookie["rls_tenancy"] = {"tenant_id": seeded.tenants["acme"], "user_id": alice}
    client.get("/settings", headers=headers)  # connect, verify the role
    proxy.reset()
    body = client.get("/settings", headers=headers).get_json()
    assert body["slug"] == "acme"
    assert (body["bound_tenant"], body["bound_user"]) == (str(seeded.tenants["acme"]), str(body["user"]))
    assert credential == "token" or body["user"] == alice
    assert proxy.round_trips == 6
    with client.session_transaction() as cookie:
        cookie["rls_tenancy"] = {"tenant_id": seeded.tenants["globex"], "user_id": alice}
    forged = bearer(f"rlst_{seeded.tenants['globex']}_{secrets.token_urlsafe(32)}") if credential == "token" else {}
    refused = client.get("/settings", headers=forged)
    assert refused.status_code == (401 if credential == "token" else 200)
    body = refused.get_json()
    assert not body["bound_tenant"] and not body["bound_user"]
    assert body.get("user") is None


def test_a_session_bound_per_model_still_checks_tokens_in_its_transaction(engine: Engine, seeded: Seeded) -> None:
    """A sessionmaker with ``binds`` only (no default bind) gets the lookup on the extension's engine."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine, session=sessionmaker(binds={TenancyBase: engine, Base: engine}))

    @app.get("/tenant")
    def tenant() -> ResponseReturnValue:
        found = get_current_tenant()
        return jsonify(slug=None if found is None else found.slug)

    answer = app.test_client().get("/tenant", headers=bearer(seeded.tokens["globex/ci"]))
    assert (answer.status_code, answer.get_json()) == (200, {"slug": "globex"})


@pytest.mark.parametrize("credential", ["token", "cookie"])
def test_a_session_that_never_begins_by_itself_gets_the_check_on_a_connection_of_its_own(
    engine: Engine, seeded: Seeded, superuser_engine: Engine, credential: str
) -> None:
    """``autobegin=False``: views begin their own transactions, so the check cannot be the first statement of one."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine, session=sessionmaker(engine, autobegin=False))

    @app.get("/settings")
    def settings() -> ResponseReturnValue:
        session = state().session()
        assert not session.in_transaction()
        with session.begin():  # where the library's helpers load what they read, too
            row = session.execute(SETTINGS).one()
            user = get_current_user()
            user_id = None if user is None else user.id
        return jsonify(user=user_id, bound_tenant=row.tenant, bound_user=row.user)

    client = app.test_client()
    alice = _user_id(superuser_engine, "alice@acme.example")
    headers = bearer(seeded.tokens["acme/ci"]) if credential == "token" else {}
    if credential == "cookie":
        with client.session_transaction() as cookie:
            cookie["rls_tenancy"] = {"tenant_id": seeded.tenants["acme"], "user_id": alice}
    answer = client.get("/settings", headers=headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["user"] is not None and (credential == "token" or body["user"] == alice)
    assert (body["bound_tenant"], body["bound_user"]) == (str(seeded.tenants["acme"]), str(body["user"]))
    with client.session_transaction() as cookie:
        cookie.clear()
    unknown = bearer(f"rlst_{seeded.tenants['acme']}_{secrets.token_urlsafe(32)}")
    assert client.get("/settings", headers=unknown).status_code == 401


def test_a_view_that_chooses_its_isolation_level_commits_the_checks_transaction_first(
    engine: Engine, seeded: Seeded
) -> None:
    """The documented way out of the check's transaction: the next one is bound to the request again."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=engine)

    @app.get("/serializable")
    def serializable() -> ResponseReturnValue:
        session = state().session()
        assert session.in_transaction()  # the token's check began it
        session.commit()
        with session.begin():
            session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
            row = session.execute(SETTINGS).one()
            level = session.execute(text("SHOW transaction_isolation")).scalar_one()
            user = get_current_user()
            user_id = None if user is None else user.id
        return jsonify(level=level, user=user_id, bound_tenant=row.tenant, bound_user=row.user)

    answer = app.test_client().get("/serializable", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["level"] == "serializable"
    assert (body["bound_tenant"], body["bound_user"]) == (str(seeded.tenants["acme"]), str(body["user"]))


def test_a_users_token_requests_still_use_prepared_statements(engine: Engine, seeded: Seeded) -> None:
    """The token's transaction begins for no user and binds the token's: signed, the statements after it are
    prepared as any user's are (only transactions acting for no user go without)."""
    app, _ = _app(engine)

    @app.get("/prepared")
    def prepared() -> ResponseReturnValue:
        session = state().session()
        session.execute(SETTINGS).one()
        query = text("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql")
        answer = jsonify(user=get_current_user() is not None, prepared=session.execute(query).scalar_one())
        session.commit()  # psycopg forgets its statements at a rollback
        return answer

    client = app.test_client()
    answers = [client.get("/prepared", headers=bearer(seeded.tokens["acme/ci"])).get_json() for _ in range(8)]
    assert all(answer["user"] for answer in answers)
    assert answers[-1]["prepared"] > 0
