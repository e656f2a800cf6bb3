"""The user read beside the request's credential is the user a load makes, and only the bound tenant's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, event, inspect, select, text, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from rls_tenancy import UnsafeBypass, as_tenant
from rls_tenancy.errors import ConfigurationError
from rls_tenancy.flask import Tenancy, get_current_scopes, get_current_user, state
from rls_tenancy.flask.state import request_state
from rls_tenancy.identity import user_rows
from rls_tenancy.identity.token_key import token_keys
from rls_tenancy.identity.tokens import authenticate_in_transaction, parse_token
from rls_tenancy.identity.users import User, grant_user_delete
from saas_demo.seed import PASSWORD, Seeded
from tests.fix_flask import bearer


def _digest(seeded: Seeded, name: str = "acme/ci") -> tuple[int, bytes]:
    return parse_token(seeded.tokens[name], token_keys(None), accept_unmarked=True)


def _loaded(app_engine: Engine, tenant: int, user_id: int) -> User:
    with as_tenant(tenant), Session(app_engine, expire_on_commit=False) as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


def test_the_user_read_beside_the_token_is_the_user_a_load_makes(app_engine: Engine, seeded: Seeded) -> None:
    tenant, digest = _digest(seeded)
    with Session(app_engine) as session:
        identity = authenticate_in_transaction(lambda: session.connection(), tenant, digest)
        assert identity.user_id is not None and identity.user_row is not None
        with as_tenant(tenant, user=identity.user_id):
            user = user_rows.adopt(session, identity.user_row)
            assert user is not None
            loaded = _loaded(app_engine, tenant, identity.user_id)
            assert {key: getattr(user, key) for key in user_rows.COLUMNS} == {
                key: getattr(loaded, key) for key in user_rows.COLUMNS
            }
            assert user.tenant_id == tenant and user.tenant.id == tenant  # the relationship loads as usual
            state = inspect(user)
            assert state.persistent and not state.modified and user not in session.dirty
            assert session.get(User, identity.user_id) is user  # the Session's own, by identity
            # What a load leaves unloaded stays so: the hash is read only through check_password().
            assert "password_hash" not in state.dict
            with pytest.raises(InvalidRequestError):
                _ = user.password_hash
            assert user.check_password(PASSWORD)
            assert not user.check_password(PASSWORD + "x")


def test_a_stored_value_is_taken_as_stored_not_as_a_validator_would_make_it(
    app_engine: Engine, seeded: Seeded, bypass: UnsafeBypass
) -> None:
    """Roles stored out of order (by SQL, or an older version) load as stored; a validator would sort them."""
    tenant, digest = _digest(seeded)
    with Session(app_engine) as session:
        user_id = authenticate_in_transaction(lambda: session.connection(), tenant, digest).user_id
    with bypass.connect(reason="test: roles out of order") as connection:
        stored = connection.execute(
            text("SELECT roles FROM rls_tenancy.users WHERE id = :id"), {"id": user_id}
        ).scalar_one()
        connection.execute(
            text("UPDATE rls_tenancy.users SET roles = :roles WHERE id = :id"),
            {"roles": sorted(stored, reverse=True), "id": user_id},
        )
        connection.commit()
    try:
        with Session(app_engine) as session:
            identity = authenticate_in_transaction(lambda: session.connection(), tenant, digest)
            assert identity.user_row is not None
            with as_tenant(tenant, user=user_id):
                user = user_rows.adopt(session, identity.user_row)
                assert user is not None
                assert user.roles == sorted(stored, reverse=True) == _loaded(app_engine, tenant, user.id).roles
                assert not inspect(user).modified  # and committing writes nothing
                session.commit()
    finally:
        with bypass.connect(reason="test: roles back") as connection:
            connection.execute(
                text("UPDATE rls_tenancy.users SET roles = :roles WHERE id = :id"), {"roles": stored, "id": user_id}
            )
            connection.commit()


@pytest.mark.rls_policy
def test_the_token_function_reads_no_user_outside_the_tenant_bound(app_engine: Engine, seeded: Seeded) -> None:
    """SQL holding acme's token, in a transaction bound to globex, gets the token's answer but not its user.

    The user is read as the caller, under row level security: a policy that
    let globex's transaction read acme's users would hand SQL the row.
    """
    tenant, digest = _digest(seeded)
    with as_tenant(seeded.tenants["globex"]), app_engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, user_id, id, email FROM rls_tenancy.authenticate_token_user(:tenant, :digest)"),
            {"tenant": tenant, "digest": digest},
        ).one()
    assert row.status == "ok" and row.user_id is not None  # the token's own answer, as authenticate_token()'s
    assert (row.id, row.email) == (None, None)


def test_a_request_takes_the_user_its_credential_read_and_runs_no_statement_for_it(
    app_engine: Engine, seeded: Seeded
) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=app_engine)
    statements: list[str] = []

    def listener(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    @app.get("/me")
    def me() -> ResponseReturnValue:
        event.listen(app_engine, "before_cursor_execute", listener)
        try:
            user = get_current_user()
            assert user is not None
            same = state().session().get(User, user.id) is user
            return jsonify(id=user.id, email=user.email, roles=user.roles, same=same)
        finally:
            event.remove(app_engine, "before_cursor_execute", listener)

    answer = app.test_client().get("/me", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 200
    body = answer.get_json()
    loaded = _loaded(app_engine, seeded.tenants["acme"], body["id"])
    assert (body["email"], body["roles"], body["same"]) == (loaded.email, loaded.roles, True)
    assert statements == []


def test_a_database_without_the_lookup_function_is_told_to_upgrade(
    app_engine: Engine, seeded: Seeded, superuser_engine: Engine
) -> None:
    """New code on a database not yet migrated: a ConfigurationError that says what to run, not a bare SQL error."""
    tenant, digest = _digest(seeded)
    rename = "ALTER FUNCTION rls_tenancy.{}(bigint, bytea) RENAME TO {}"
    with superuser_engine.begin() as connection:
        connection.execute(text(rename.format("authenticate_token_user", "authenticate_token_user_gone")))
    try:
        with Session(app_engine) as session:
            with pytest.raises(ConfigurationError, match="upgrade it to the library's head"):
                authenticate_in_transaction(lambda: session.connection(), tenant, digest)
    finally:
        with superuser_engine.begin() as connection:
            connection.execute(text(rename.format("authenticate_token_user_gone", "authenticate_token_user")))


def _current_user_after(app_engine: Engine, seeded: Seeded, before: Callable[[Session, int], object]) -> Any:
    """``before(request Session, user id)`` in the request's transaction, then what get_current_user() says."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True)
    Tenancy(app, engine=app_engine)

    @app.get("/me")
    def me() -> ResponseReturnValue:
        resolution = request_state().resolution
        assert resolution is not None and resolution.user_id is not None and resolution.user_row is not None
        before(state().session(), resolution.user_id)
        user = get_current_user()
        scopes = sorted(get_current_scopes())
        return jsonify(
            id=None if user is None else user.id, language=None if user is None else user.language, scopes=scopes
        )

    answer = app.test_client().get("/me", headers=bearer(seeded.tokens["acme/ci"]))
    assert answer.status_code == 200
    return answer.get_json()


def test_a_user_changed_in_the_request_before_it_is_read_is_read_as_changed(app_engine: Engine, seeded: Seeded) -> None:
    """The check's row stands for a load only while nothing ran after it: here a Core UPDATE did."""

    def change(session: Session, user_id: int) -> None:
        session.execute(update(User).where(User.id == user_id).values(language="fr"))

    assert _current_user_after(app_engine, seeded, change)["language"] == "fr"  # the request rolls it back


def test_a_user_deleted_in_the_request_before_it_is_read_is_nobody(app_engine: Engine, seeded: Seeded) -> None:
    def delete(session: Session, user_id: int) -> None:
        grant_user_delete(session.connection(), user_id)  # signed, the application's consent (a no-op else)
        session.execute(delete_user.where(User.id == user_id))

    delete_user = sql_delete(User)
    body = _current_user_after(app_engine, seeded, delete)  # the request rolls the delete back
    assert (body["id"], body["scopes"]) == (None, ["anonymous"])


def test_a_user_changed_and_committed_before_it_is_read_is_read_as_changed(
    app_engine: Engine, seeded: Seeded, bypass: UnsafeBypass
) -> None:
    """The check's transaction ended: its row is not what a load in the next one reads."""
    original: dict[str, object] = {}

    def change(session: Session, user_id: int) -> None:
        original["id"] = user_id
        original["language"] = session.execute(select(User.language).where(User.id == user_id)).scalar_one()
        session.execute(update(User).where(User.id == user_id).values(language="de"))
        session.commit()

    try:
        assert _current_user_after(app_engine, seeded, change)["language"] == "de"
    finally:
        with bypass.connect(reason="test: language back") as connection:
            connection.execute(text("UPDATE rls_tenancy.users SET language = :language WHERE id = :id"), original)
            connection.commit()
