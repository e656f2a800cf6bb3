"""Users: each belongs to one tenant (``rls_tenancy.users``, ``sql/006_users.sql``)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Identity,
    Text,
    event,
    func,
    inspect,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, validates
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.security import check_password_hash, generate_password_hash

from rls_tenancy.binding import grants
from rls_tenancy.binding.engine import is_bound
from rls_tenancy.binding.signing import key_of
from rls_tenancy.catalog_types import TextArray
from rls_tenancy.context import require_tenant_id
from rls_tenancy.errors import UsageError
from rls_tenancy.orm.mixin import TenantBoundMixin
from rls_tenancy.orm.models import TenancyBase, storable

_log = logging.getLogger(__name__)

#: A role or scope name; the same rule as ``rls_tenancy.valid_scopes()``.
SCOPE_PATTERN = re.compile(r"[a-z][a-z0-9_:.-]{0,63}\Z")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*\Z")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\Z")


@functools.cache
def _dummy_hash() -> str:
    """Checked against when there is no such user, so a login takes as long either way.

    Made on first use, not at import: a scrypt hash takes 32 MiB and tens of milliseconds.
    """
    return generate_password_hash("not a real password")


def check_scopes(scopes: Iterable[object]) -> list[str]:
    """``scopes`` as a sorted list of valid names, or :class:`UsageError`."""
    items = [] if isinstance(scopes, str) else list(scopes)
    names = [s for s in items if isinstance(s, str) and SCOPE_PATTERN.match(s)]
    if isinstance(scopes, str) or len(names) != len(items):
        raise UsageError(f"scopes must be lower-case names like 'projects:write', got {scopes!r}")
    if len(set(names)) > 64:
        raise UsageError("at most 64 scopes")
    return sorted(set(names))


class User(TenantBoundMixin, TenancyBase):
    """A user of one tenant; ``roles`` are what :func:`~rls_tenancy.flask.require_scopes` checks."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    # Its parameters cast as pg_catalog.text[]: no temporary domain runs on a user's roles as they are written.
    roles: Mapped[list[str]] = mapped_column(TextArray(), default=list)
    language: Mapped[str | None] = mapped_column(Text)
    # Never loaded with the row: read through check_password() (signed, the column is closed to the app role).
    password_hash: Mapped[str | None] = mapped_column(Text, deferred=True, deferred_raiseload=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @validates("email")
    def _check_email(self, _key: str, email: str) -> str:
        valid = isinstance(email, str) and 3 <= len(email) <= 254 and EMAIL_PATTERN.match(email)
        if not valid or not storable(email):
            raise UsageError(f"{email!r} is not an email address")
        return email

    @validates("roles")
    def _check_roles(self, _key: str, roles: list[str]) -> list[str]:
        return check_scopes(roles)

    @validates("language")
    def _check_language(self, _key: str, language: str | None) -> str | None:
        if language is not None and not (isinstance(language, str) and LANGUAGE_PATTERN.match(language)):
            raise UsageError(f"{language!r} is not a language tag like 'en' or 'pt-BR'")
        return language

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password`` (werkzeug's default method)."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Whether ``password`` matches; always False for users without one.

        Reads the hash through ``rls_tenancy.password_hash_of()`` in the
        user's Session (in the tenant's context), unless it is loaded already
        (:func:`load_password_hash`, :meth:`set_password`).
        """
        state = inspect(self)
        if "password_hash" in state.dict or state.key is None:
            hashed = state.dict.get("password_hash")
        elif state.session is not None:
            hashed = load_password_hash(state.session, self)
        else:
            raise UsageError(
                "check_password() reads the user's hash in its Session: call it there, in the tenant's context, "
                "or load_password_hash() before the user leaves its Session"
            )
        if hashed is None or not isinstance(password, str) or not storable(password):
            check_password_of_nobody(password)
            return False
        try:
            return check_password_hash(hashed, password)
        except ValueError:  # a format werkzeug cannot check (bcrypt, argon2, ...): a refusal, never a 500
            _log.warning("user %s has a password hash werkzeug cannot check; the login is refused", self.id)
            check_password_of_nobody(password)
            return False

    def __repr__(self) -> str:
        return f"<User {self.email!r} tenant={self.tenant_id}>"


def load_password_hash(session: Session, user: User) -> str | None:
    """Read ``user``'s password hash into it, in the tenant in context; one statement.

    Signed, the application role cannot read the column, and
    ``rls_tenancy.password_hash_of()`` answers only with the application's
    grant for this user: SQL run for a user cannot read its tenant's hashes.
    An unbound engine (the bypass role's) reads the column. With an
    ``AsyncSession``: ``await session.run_sync(lambda s: load_password_hash(s, user))``.
    """
    connection = session.connection(bind_arguments={"mapper": _MAPPER})
    if is_bound(connection.engine):
        given = grants.make(connection, f"password.read|{require_tenant_id()}|{user.id}")
        call = func.rls_tenancy.password_hash_of(literal(user.id, BigInteger), literal(given, Text))
        hashed: str | None = connection.execute(select(call)).scalar()
    else:  # the bypass role (an admin path), which reads every column as it is
        hashed = connection.execute(select(User.password_hash).where(User.id == user.id)).scalar()
    set_committed_value(user, "password_hash", hashed)
    return hashed


#: What acting as a user rests on: written only with the application's grant in a signed context.
CREDENTIALS = ("email", "roles", "password_hash")
_MAPPER = inspect(User)


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: For :func:`grant_user_write` of an update: a value the update leaves as it is.
UNCHANGED: Final = _Unchanged()
_KEPT = "="  # what a grant names for it, as the trigger does


def grant_user_write(
    connection: Connection,
    *,
    user_id: int | None = None,
    email: str | _Unchanged = UNCHANGED,
    roles: Iterable[str] | _Unchanged = UNCHANGED,
    password_hash: str | None | _Unchanged = UNCHANGED,
) -> None:
    """Let this transaction write one user of the tenant in context with exactly these values.

    A signed database (sql/016_signed_context.sql) writes a user's email,
    roles and password hash only with the application's grant, so that SQL
    run for a user cannot make it an administrator or take over another
    user. ``user_id`` ``None``: a new user (``INSERT``: ``email`` needed,
    no roles and no password unless given); else an ``UPDATE`` of that
    user, naming the new values of what it changes (the rest
    :data:`UNCHANGED`). The :class:`User` model's flushes add their own;
    Core statements writing those columns of ``rls_tenancy.users`` call
    this first. Without a context key it sends nothing.
    """
    if user_id is None and isinstance(email, _Unchanged):
        raise UsageError("a new user's grant names its email")
    values = {"email": email, "roles": roles, "password_hash": password_hash}
    fields = _fields(values if user_id is not None else {**_NEW_USER, **_given(values)})
    grants.add(connection, _user_write(require_tenant_id(), user_id, fields))


def grant_user_delete(connection: Connection, user_id: int) -> None:
    """Let this transaction delete one user of the tenant in context (its tokens go with it).

    A signed database deletes a user only with the application's grant, so
    that SQL run for one user cannot delete the tenant's administrators.
    ``session.delete(user)`` adds its own; a Core ``DELETE`` of users calls
    this first, once per user. Without a context key it sends nothing.
    """
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise UsageError(f"grant_user_delete() takes a user id, not {user_id!r}")
    grants.add(connection, _user_delete(require_tenant_id(), user_id))


def _user_delete(tenant_id: int, user_id: int) -> str:
    return f"users.delete|{tenant_id}|{user_id}|"


def _user_write(tenant_id: int, user_id: int | None, fields: tuple[str, str, str]) -> str:
    operation = "insert" if user_id is None else "update"
    return f"users.{operation}|{tenant_id}|{'' if user_id is None else user_id}|" + "".join(fields)


#: What a new user holds where nothing was given (the columns' defaults).
_NEW_USER: dict[str, object] = {"email": None, "roles": [], "password_hash": None}


def _given(values: Mapping[str, object]) -> dict[str, object]:
    return {name: value for name, value in values.items() if not isinstance(value, _Unchanged)}


def _fields(values: Mapping[str, object]) -> tuple[str, str, str]:
    """A grant's fields for ``values`` by credential: each value as the trigger writes it, ``=`` where absent."""
    email, roles, password_hash = (_field(name, values.get(name, UNCHANGED)) for name in CREDENTIALS)
    return email, roles, password_hash


def _field(name: str, value: object) -> str:
    if isinstance(value, _Unchanged):
        return _KEPT
    if name == "roles":
        return grants.field(grants.names(cast(Iterable[str], value or [])))
    return grants.field(cast(str | None, value))


def _changed_fields(user: User) -> tuple[str, str, str] | None:
    """The update's fields of a grant: each changed value, ``=`` for the rest; None when none changed."""
    changed = {}
    for name, attribute in ((name, inspect(user).attrs[name]) for name in CREDENTIALS):
        history = attribute.history
        if history.added and not (history.deleted and history.deleted[0] == history.added[0]):
            changed[name] = history.added[0]
    return _fields(changed) if changed else None


@event.listens_for(Session, "before_flush")
def _grant_user_writes(session: Session, _context: Any, _instances: Any) -> None:
    """The grants a flush of new, changed and deleted :class:`User` rows needs when signed: one statement."""
    writes: list[tuple[User, int | None, tuple[str, str, str]]] = [
        (user, None, _fields({**_NEW_USER, **inspect(user).dict})) for user in session.new if isinstance(user, User)
    ]
    for user in session.dirty:
        changed = _changed_fields(user) if isinstance(user, User) else None
        if changed is not None:
            writes.append((user, user.id, changed))
    deleted = [user for user in session.deleted if isinstance(user, User)]
    if not writes and not deleted:
        return
    connection = session.connection(bind_arguments={"mapper": _MAPPER})
    if key_of(connection.dialect) is None:
        return
    whats = [
        _user_write(require_tenant_id() if user.tenant_id is None else user.tenant_id, user_id, fields)
        for user, user_id, fields in writes
    ]
    whats += [_user_delete(user.tenant_id, user.id) for user in deleted]
    grants.add(connection, *whats)


@event.listens_for(Session, "do_orm_execute")
def _grant_bulk_user_writes(state: ORMExecuteState) -> None:
    """The grants of ORM bulk statements on users (``session.execute(insert(User), [rows])``, by-key updates).

    One statement for them all, in a signed database only; a bulk row
    names its values as the statement writes them.
    """
    rows = state.parameters
    if not (state.is_insert or state.is_update) or not isinstance(rows, list) or state.bind_mapper is not _MAPPER:
        return
    connection = state.session.connection(bind_arguments={"mapper": _MAPPER})
    if key_of(connection.dialect) is None:
        return
    tenant = require_tenant_id()
    if state.is_insert:
        whats = [_user_write(tenant, None, _fields({**_NEW_USER, **row})) for row in rows]
    else:  # a by-id update names what it changes; a row naming no credential needs no grant
        whats = [_user_write(tenant, row["id"], _fields(row)) for row in rows if set(row) & set(CREDENTIALS)]
    grants.add(connection, *whats)


def email_matches(email: str) -> ColumnElement[bool]:
    """``lower(users.email) = lower(:email)``, both lowered by PostgreSQL.

    The same function the unique index uses, so whatever it calls the same
    address is the same address here too (Python's ``str.lower`` and the
    database's differ beyond ASCII under some collations).
    """
    return func.lower(User.email) == func.lower(literal(email, Text))


def check_password_of_nobody(password: object) -> None:
    """Spend the time a password check takes, for logins naming no user."""
    check_password_hash(_dummy_hash(), password if isinstance(password, str) and storable(password) else "unusable")
