"""docs/adopting.md, "3c. An app with a users table of its own": the migration it shows, run on rows.

The page's two blocks (one tenant per organisation, then the users copied
into ``rls_tenancy.users``) run through Alembic's ``op`` on a fresh database
holding an app's organisations and users, as the superuser migrations run
as. Then the claims the page makes about the result: ids kept and the next
user's id past every id the app's sequence gave, roles from ``is_admin``,
werkzeug hashes accepted by ``authenticate_user`` and other hashes copied
as ``NULL`` (werkzeug raises on them), the app's table kept as a profile
through a tenant foreign key, emails the library refuses listed before the
copy, and a bound user id that is no library user's refused by the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

import rls_tenancy.schema.alembic_ops  # noqa: F401  op.add_tenant_foreign_key
from rls_tenancy import User, as_tenant, bind_engine, log_event, tenant_id_for_slug
from rls_tenancy.flask import Tenancy, authenticate_user
from rls_tenancy.testing import TenancyDatabase, tenancy_database

PAGE = (Path(__file__).parents[2] / "docs" / "adopting.md").read_text()
BCRYPT = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"

# The app before the library: its own tenants (organisations) and its own users, emails unique across them.
LEGACY = (
    "CREATE TABLE organisations (id serial PRIMARY KEY, name text NOT NULL UNIQUE)",
    "CREATE TABLE users (id serial PRIMARY KEY, organisation_id integer NOT NULL REFERENCES organisations (id),"
    " email text NOT NULL UNIQUE, password_hash text, is_admin boolean NOT NULL DEFAULT false)",
    "INSERT INTO organisations (name) VALUES ('Acme Ltd.'), ('Globex')",
)


def _block_after(heading: str) -> str:
    found = re.search(r"```python\n(.*?)```", PAGE.split(heading, 1)[1], re.S)
    assert found is not None, heading
    return found.group(1)


def _run_upgrade(connection: Connection, heading: str) -> None:
    namespace: dict[str, Any] = {"op": Operations(MigrationContext.configure(connection)), "sa": sa}
    exec(_block_after(heading), namespace)
    namespace["upgrade"]()


def _migrate(connection: Connection) -> None:
    _run_upgrade(connection, "**An app with a tenant table of its own**")
    _run_upgrade(connection, "## 3c. An app with a users table of its own")


def _add_users(connection: Connection, rows: list[tuple[int, str, str | None, bool]]) -> None:
    for organisation, email, password_hash, is_admin in rows:
        connection.execute(
            text("INSERT INTO users (organisation_id, email, password_hash, is_admin) VALUES (:o, :e, :h, :a)"),
            {"o": organisation, "e": email, "h": password_hash, "a": is_admin},
        )


@pytest.fixture(scope="module")
def adopted(rls_postgres_url: URL) -> Iterator[TenancyDatabase]:
    """A fresh database (signed when the run is) whose app's users were copied as the page says."""
    with tenancy_database(rls_postgres_url) as database:
        superuser = create_engine(database.superuser_url)
        try:
            with superuser.begin() as connection:
                for statement in LEGACY:
                    connection.execute(text(statement))
                _add_users(
                    connection,
                    [
                        (1, "alice@acme.example", generate_password_hash("alice-pw"), True),  # scrypt
                        (1, "bob@acme.example", generate_password_hash("bob-pw", method="pbkdf2:sha256"), False),
                        (2, "carol@globex.example", BCRYPT, False),  # bcrypt: werkzeug cannot check it
                        (2, "dave@globex.example", None, False),
                        (2, "eve@globex.example", None, False),
                    ],
                )
                connection.execute(text("DELETE FROM users WHERE id = 5"))  # the sequence gave 5; max(id) is 4
                _migrate(connection)
        finally:
            superuser.dispose()
        yield database


@pytest.fixture(scope="module")
def app_engine_of(adopted: TenancyDatabase) -> Iterator[Engine]:
    engine = bind_engine(create_engine(adopted.app_url))
    yield engine
    engine.dispose()


def _tenant(engine: Engine, slug: str) -> int:
    with Session(engine) as session:
        found = tenant_id_for_slug(session, slug)
    assert found is not None
    return found


def test_the_users_keep_their_ids_tenants_and_werkzeug_hashes(adopted: TenancyDatabase) -> None:
    superuser = create_engine(adopted.superuser_url)
    try:
        with superuser.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT u.id, t.slug, u.email, u.roles, u.password_hash IS NOT NULL FROM rls_tenancy.users AS u"
                    " JOIN rls_tenancy.tenants AS t ON t.id = u.tenant_id ORDER BY u.id"
                )
            ).all()
    finally:
        superuser.dispose()
    assert [tuple(row) for row in rows] == [
        (1, "acme-ltd", "alice@acme.example", ["admin"], True),
        (2, "acme-ltd", "bob@acme.example", [], True),
        (3, "globex", "carol@globex.example", [], False),  # bcrypt: copied as NULL
        (4, "globex", "dave@globex.example", [], False),
    ]


def test_the_next_user_takes_an_id_past_every_one_the_app_gave(adopted: TenancyDatabase, app_engine_of: Engine) -> None:
    with as_tenant(_tenant(app_engine_of, "acme-ltd")), Session(app_engine_of) as session:
        user = User(email="erin@acme.example")  # as the app role: in a signed database, with the grant
        session.add(user)
        session.commit()
        assert user.id == 6  # users_id_seq gave 1 to 5, and user 5 was deleted


def test_authenticate_user_takes_the_copied_werkzeug_hashes(adopted: TenancyDatabase, app_engine_of: Engine) -> None:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test")
    Tenancy(app, engine=app_engine_of)
    with app.test_request_context():
        alice = authenticate_user("acme-ltd", "alice@acme.example", "alice-pw")
        assert alice is not None and (alice.id, alice.roles) == (1, ["admin"])
        bob = authenticate_user("acme-ltd", "bob@acme.example", "bob-pw")
        assert bob is not None and bob.id == 2
        assert authenticate_user("acme-ltd", "bob@acme.example", "wrong") is None
        assert authenticate_user("globex", "bob@acme.example", "bob-pw") is None  # the tenant is part of the login
        assert authenticate_user("globex", "carol@globex.example", "anything") is None  # no hash: no password login


def test_a_hash_werkzeug_cannot_check_refuses_the_login(
    adopted: TenancyDatabase, app_engine_of: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Why the page copies other formats as NULL: such a user cannot log in (before: a ValueError, a 500)."""
    superuser = create_engine(adopted.superuser_url)
    try:
        with superuser.begin() as connection:
            connection.execute(text("UPDATE rls_tenancy.users SET password_hash = :h WHERE id = 3"), {"h": BCRYPT})
        app = Flask(__name__)
        app.config.update(TESTING=True, SECRET_KEY="test")
        Tenancy(app, engine=app_engine_of)
        with app.test_request_context():
            assert authenticate_user("globex", "carol@globex.example", "anything") is None
        assert "password hash werkzeug cannot check" in caplog.text
    finally:
        with superuser.begin() as connection:
            connection.execute(text("UPDATE rls_tenancy.users SET password_hash = NULL WHERE id = 3"))
        superuser.dispose()


def test_the_app_table_kept_as_a_profile_names_a_user_of_its_own_tenant(adopted: TenancyDatabase) -> None:
    """What the page says about keeping the app's users table: steps 2 to 5, then a tenant key to the user."""
    superuser = create_engine(adopted.superuser_url)
    try:
        with superuser.connect() as connection:
            op: Any = Operations(MigrationContext.configure(connection))  # with the library's operations
            for column in ("email", "password_hash", "is_admin"):
                op.drop_column("users", column)
            op.execute("ALTER TABLE users ALTER COLUMN id DROP DEFAULT")
            op.add_column("users", sa.Column("tenant_id", sa.BigInteger, nullable=True))
            op.execute(
                "UPDATE users AS u SET tenant_id = o.tenant_id FROM organisations AS o WHERE o.id = u.organisation_id"
            )
            op.alter_column("users", "tenant_id", nullable=False)
            op.drop_constraint("users_pkey", "users", type_="primary")
            op.create_primary_key("users_pkey", "users", ["tenant_id", "id"])
            op.add_tenant_foreign_key("users", "id", "users", referent_schema="rls_tenancy")
            acme = connection.scalar(text("SELECT id FROM rls_tenancy.tenants WHERE slug = 'acme-ltd'"))
            with pytest.raises(IntegrityError, match="foreign key"), connection.begin_nested():
                # user 3 is Globex's: Acme's profile cannot name it
                connection.execute(
                    text("INSERT INTO users (id, tenant_id, organisation_id) VALUES (3, :t, 1)"), {"t": acme}
                )
            connection.rollback()
    finally:
        superuser.dispose()


def test_emails_the_library_refuses_are_listed_before_the_copy(rls_postgres_url: URL) -> None:
    with tenancy_database(rls_postgres_url, signed=False) as database:
        superuser = create_engine(database.superuser_url)
        try:
            with superuser.connect() as connection:
                for statement in LEGACY:
                    connection.execute(text(statement))
                _add_users(
                    connection,
                    [
                        (1, "admin", None, True),  # no "@"
                        (1, "ok@acme.example", None, False),
                        (1, "Bob@acme.example", None, False),  # unique to the app, not to the library (case)
                        (1, "bob@acme.example", None, False),
                        (2, "bob@ACME.example", None, False),  # another tenant: fine
                    ],
                )
                with pytest.raises(DBAPIError, match=r"fix the emails of users \{1,3,4\} first"):
                    _migrate(connection)
                connection.rollback()
        finally:
            superuser.dispose()


def test_a_bound_user_id_of_no_library_user_is_refused_by_the_audit_log(app_engine_of: Engine) -> None:
    """Why a resolver of your own must not put your own user ids in Resolution.user_id."""
    acme = _tenant(app_engine_of, "acme-ltd")
    with as_tenant(acme, user=1), app_engine_of.begin() as connection:
        log_event(connection, "test.event", "a library user: written")
    with (
        pytest.raises(DBAPIError, match="is not a user of tenant"),
        as_tenant(acme, user=999),
        app_engine_of.begin() as connection,
    ):
        log_event(connection, "test.event", "no library user: refused")
