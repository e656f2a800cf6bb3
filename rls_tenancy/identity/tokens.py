"""API tokens: random, shown once, stored as a hash, bound to one tenant.

A token reads ``rlst_<tenant id>_<43 random characters>``. Only its SHA-256
reaches the database, and only through the ``SECURITY DEFINER`` functions of
``sql/007_tokens.sql``: the application role can neither read the hashes nor
list another tenant's tokens. Issued under a :class:`~rls_tenancy.identity.token_key.TokenKey`,
a token carries a mark that the application checks before any lookup.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg.pq.abc import PGresult
from sqlalchemy import BigInteger, Connection, DateTime, Row, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import BYTEA
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.types import Text

from rls_tenancy.audit.events import Executor, log_event
from rls_tenancy.binding import grants
from rls_tenancy.binding.affinity import serving_user
from rls_tenancy.binding.engine import adopt_user, begin_bound_with
from rls_tenancy.catalog_types import TextArray
from rls_tenancy.context import as_tenant_for_call, require_tenant_id
from rls_tenancy.errors import AuthenticationError, ConfigurationError, UsageError
from rls_tenancy.identity import user_rows
from rls_tenancy.identity.token_key import TokenKey
from rls_tenancy.identity.user_rows import UserRow
from rls_tenancy.identity.users import check_scopes
from rls_tenancy.orm.models import storable

_TOKEN = re.compile(r"rlst_([1-9][0-9]{0,18})_([A-Za-z0-9_-]{43})\Z")
_BIGINT_MAX = 2**63 - 1
#: Longer than any token; longer input is refused before any parsing.
MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is the secret, shown once and stored nowhere."""

    id: int
    token: str


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token speaks for."""

    token_id: int
    tenant_id: int
    user_id: int | None
    scopes: frozenset[str]
    #: The user's row, where the lookup read it beside the token (:mod:`rls_tenancy.identity.user_rows`).
    user_row: UserRow | None = field(default=None, compare=False, repr=False)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def issue_token(
    executor: Executor,
    *,
    name: str,
    scopes: Iterable[str],
    user_id: int | None = None,
    expires_at: datetime | None = None,
    key: TokenKey | None = None,
) -> IssuedToken:
    """Issue a token for the tenant in context, optionally for one of its users.

    The database issues a token only for the user bound to the statement, so
    SQL cannot issue one that acts as somebody else; this binds ``user_id``
    for that statement, and the audit event names the user in context.

    ``key``: the application's first token key, which marks the token (the
    Flask extension's ``issue-token`` command passes it).
    """
    tenant_id = require_tenant_id()
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or not storable(name):
        raise UsageError("a token needs a name: text of 1 to 100 characters")
    if not isinstance(scopes, Iterable):
        raise UsageError(f"scopes must be a list of names like 'projects:write', got {scopes!r}")
    if user_id is not None and (
        not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= _BIGINT_MAX
    ):
        raise UsageError(f"user_id must be a user's id or None, got {user_id!r}")
    if expires_at is not None and (not isinstance(expires_at, datetime) or expires_at.tzinfo is None):
        raise UsageError("expires_at must be a timezone-aware datetime")
    if key is not None and not isinstance(key, TokenKey):
        raise UsageError("key must be a TokenKey")
    granted = check_scopes(scopes)
    secret = secrets.token_urlsafe(32) if key is None else key.secret(tenant_id)
    token = "rlst_" + str(tenant_id) + "_" + secret
    call = func.rls_tenancy.issue_token(
        literal(name, Text),
        literal(_hash(token), BYTEA),
        literal(granted, TextArray()),
        literal(user_id, BigInteger),
        literal(expires_at, DateTime(timezone=True)),
    )
    # The token acts for the user bound as it is issued (sql/007_tokens.sql):
    # bound for this one statement, the event below names who issued it.
    with as_tenant_for_call(tenant_id, user=user_id):
        # Signed, the database asks for the application's grant of the token's hash and scopes.
        connection = executor if isinstance(executor, Connection) else executor.connection()
        grants.add(connection, f"token|{tenant_id}|{_hash(token).hex()}|{grants.field(grants.names(granted))}")
        token_id = int(executor.execute(select(call)).scalar_one())
    log_event(
        executor,
        "token.issued",
        f"API token {token_id} ({name}) issued",
        data={"token_id": token_id, "name": name, "scopes": sorted(set(granted)), "for_user": user_id},
    )
    return IssuedToken(id=token_id, token=token)


def revoke_token(executor: Executor, token_id: int) -> bool:
    """Revoke one of the tenant's tokens; False when there is no such live token.

    A revocation cannot be undone, so a signed database revokes a token of
    another user than the one bound (or of no user) only with the
    application's grant, which this adds: SQL run for an intern cannot
    revoke the administrators' tokens. Who may revoke which token is the
    caller's to decide before calling this.
    """
    tenant_id = require_tenant_id()
    # Exactly an id: PostgreSQL would round 1.5 to token 2 and read "3" as token 3.
    if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 < token_id <= _BIGINT_MAX:
        raise UsageError(f"token_id must be a token's id, got {token_id!r}")
    connection = executor if isinstance(executor, Connection) else executor.connection()
    grants.add(connection, revoke_grant(tenant_id, token_id))
    revoked = bool(executor.execute(select(func.rls_tenancy.revoke_token(literal(token_id, BigInteger)))).scalar_one())
    if revoked:
        log_event(executor, "token.revoked", f"API token {token_id} revoked", data={"token_id": token_id})
    return revoked


def revoke_grant(tenant_id: int, token_id: int) -> str:
    """What a grant to revoke one token names, as ``rls_tenancy.revoke_token()`` asks for it."""
    return f"tokens.revoke|{tenant_id}|{token_id}|"


class ParsedToken(NamedTuple):
    """What a well-formed token says before any lookup: the tenant it claims, and the hash stored for it."""

    tenant_id: int
    digest: bytes


def parse_token(token: str, keys: Sequence[TokenKey] = (), *, accept_unmarked: bool = False) -> ParsedToken:
    """The tenant id and hash of a well-formed token; AuthenticationError otherwise.

    With ``keys``, the token must also carry the mark of one of them
    (reason ``"forged"`` when it does not), unless ``accept_unmarked``: then
    a token without the mark is looked up as before, for the time it takes
    to replace tokens issued before the keys.
    """
    if not isinstance(token, str):  # a caller's bug, not a client's malformed token
        raise UsageError(f"a token is text, got {type(token).__name__}")
    match = _TOKEN.match(token) if len(token) <= MAX_TOKEN_LENGTH else None
    if match is None or int(match.group(1)) > _BIGINT_MAX:
        raise AuthenticationError("malformed", "the bearer token is malformed")
    tenant_id = int(match.group(1))
    if keys and not accept_unmarked and not any(key.marked(tenant_id, match.group(2)) for key in keys):
        raise AuthenticationError(
            "forged", "the bearer token was not issued by this application", claimed_tenant=tenant_id
        )
    return ParsedToken(tenant_id, _hash(token))


def authenticate_token(
    executor: Executor, token: str, keys: Sequence[TokenKey] = (), *, accept_unmarked: bool = False
) -> TokenIdentity:
    """The identity behind ``token``, or AuthenticationError (forged, unknown, expired, revoked)."""
    return authenticate_parsed(executor, *parse_token(token, keys, accept_unmarked=accept_unmarked))


#: The lookup, built once: the tenant and hash are bound per call.
_FOUND = func.rls_tenancy.authenticate_token(
    bindparam("tenant_id", type_=BigInteger), bindparam("digest", type_=BYTEA)
).table_valued("token_id", "user_id", "scopes", "status")
_AUTHENTICATE = select(_FOUND)
#: The same, binding the token's user when it holds, in the database, which signs it for the transaction.
_BINDING = func.rls_tenancy.authenticate_token_binding(
    bindparam("tenant_id", type_=BigInteger), bindparam("digest", type_=BYTEA)
).table_valued("token_id", "user_id", "scopes", "status")
_AUTHENTICATE_BINDING_USER = select(_BINDING)


#: Hashes of tokens this process found revoked or expired, with which: neither
#: state ends (no call un-revokes a token or extends it), so they are refused
#: in memory after the first lookup. Bounded; cleared when full.
_ENDED: dict[bytes, str] = {}
#: How many tokens each memory holds at most.
_MEMORY = 10_000
_V = TypeVar("_V")


def refuse_ended(digest: bytes) -> None:
    """AuthenticationError for a token this process already found revoked or expired; nothing otherwise."""
    status = _ENDED.get(digest)
    if status is not None:
        raise AuthenticationError(status, f"the bearer token is {status}")


def remember_ended(digest: bytes, error: AuthenticationError) -> None:
    """Remember a lookup's answer that the token is revoked or expired, for :func:`refuse_ended`."""
    if error.reason in ("revoked", "expired"):
        _remember(_ENDED, digest, error.reason)


def _remember(memory: dict[bytes, _V], digest: bytes, value: _V) -> None:
    """Keep ``value`` for ``digest`` in one of this module's memories of tokens, cleared when full."""
    if len(memory) >= _MEMORY:
        memory.clear()
    memory[digest] = value


def authenticate_parsed(executor: Executor, tenant_id: int, digest: bytes) -> TokenIdentity:
    """:func:`authenticate_token` for a token already through :func:`parse_token`."""
    found = executor.execute(_AUTHENTICATE, {"tenant_id": tenant_id, "digest": digest}).one_or_none()
    return _identity(found, tenant_id)


#: The same lookup for libpq, sent with the transaction's BEGIN and binding
#: (:func:`~rls_tenancy.binding.engine.begin_bound_with`) and read here: the scopes
#: come as JSON text, which needs no array parser. Its types are named in
#: ``pg_catalog``: a temporary domain ``bytea`` or ``text`` would run on the
#: token's hash (rls_tenancy.identity._types).
#: The user's row comes with it (``authenticate_token_user()``): the request's
#: first get_current_user() then runs no statement.
_AUTHENTICATE_WIRE = (
    b"SELECT f.token_id, f.user_id, pg_catalog.array_to_json(f.scopes)::pg_catalog.text, f.status, "
    + user_rows.select_list("f")
    + b" FROM rls_tenancy.authenticate_token_user($1::pg_catalog.int8, $2::pg_catalog.bytea) AS f"
)


@dataclass(frozen=True)
class _Found:
    token_id: int
    user_id: int | None
    scopes: list[str]
    status: str


def authenticate_in_transaction(connect: Callable[[], Connection], tenant_id: int, digest: bytes) -> TokenIdentity:
    """:func:`authenticate_parsed` as the first statement of a transaction it binds for the token.

    ``connect`` gives the connection; it is called as the claimed tenant, so
    a bound engine's pool prefers one that last served that tenant.

    The transaction is bound to the tenant the token names, and the same
    statement binds the token's user once the hash matches: a request then
    looks its token up in its own transaction, at no connection of its own,
    and in the round trip that begins it (one round trip fewer than the
    same transaction without tenancy). Until the token holds, that tenant
    is only a claim: when this raises, the caller must roll the transaction
    back before anything else runs in it.
    """
    # The user this token was found to act for before (a token's user never
    # changes): a session that last served that user needs no reset.
    with as_tenant_for_call(tenant_id), serving_user(_USERS.get(digest, _UNKNOWN)):
        connection = connect()
        wire = [str(tenant_id).encode(), b"\\x" + digest.hex().encode()]
        result = _begin_with_lookup(connection, wire)
        if result is None:  # the transaction had begun, or cannot begin that way
            found = connection.execute(_AUTHENTICATE_BINDING_USER, {"tenant_id": tenant_id, "digest": digest})
            identity = _identity(found.one_or_none(), tenant_id)
        else:
            identity = _identity(_read(result), tenant_id, user_rows.read(result, 4, connection))
        _remember(_USERS, digest, identity.user_id)
        adopt_user(connection, identity.user_id)
    return identity


def _begin_with_lookup(connection: Connection, wire: list[bytes]) -> PGresult | None:
    """:data:`_AUTHENTICATE_WIRE` in the round trip that begins the transaction; a database too old for it says so."""
    try:
        return begin_bound_with(connection, _AUTHENTICATE_WIRE, wire)
    except ProgrammingError as error:
        if isinstance(error.orig, psycopg.errors.UndefinedFunction) and "authenticate_token_user" in str(error.orig):
            raise ConfigurationError(
                "this database has no rls_tenancy.authenticate_token_user(), which the token lookup calls: "
                "upgrade it to the library's head (rls-tenancy migrate, or alembic upgrade heads)"
            ) from error
        raise


#: The user each token this process authenticated acts for, by hash (a guess
#: :func:`~rls_tenancy.binding.engine.adopt_user` checks; bounded, cleared when full).
_USERS: dict[bytes, int | None] = {}
_UNKNOWN = object()


def _read(result: PGresult) -> _Found | None:
    """The lookup's row from its text-format result."""
    if result.ntuples == 0:
        return None
    token_id, user_id, scopes, status = (result.get_value(0, column) for column in range(4))
    assert token_id is not None and scopes is not None and status is not None
    return _Found(int(token_id), None if user_id is None else int(user_id), json.loads(scopes), status.decode())


def _identity(found: _Found | Row[Any] | None, tenant_id: int, user_row: UserRow | None = None) -> TokenIdentity:
    if found is None:
        raise AuthenticationError("unknown", "the bearer token is not known")
    if found.status != "ok":
        raise AuthenticationError(found.status, f"the bearer token is {found.status}")
    user_id = None if found.user_id is None else int(found.user_id)
    return TokenIdentity(
        token_id=int(found.token_id),
        tenant_id=tenant_id,
        user_id=user_id,
        scopes=frozenset(found.scopes),
        user_row=user_row if user_row is not None and user_row.id == user_id else None,
    )
