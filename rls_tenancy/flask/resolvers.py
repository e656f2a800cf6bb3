"""Where a request's tenant comes from: a bearer token, the session, the host.

A resolver is a callable taking the request and returning a
:class:`Resolution` or ``None`` (not its kind of request). The extension tries
the configured resolvers in order; the first answer wins. An answer that is
wrong (a malformed or revoked token, an unknown subdomain) raises instead of
falling through: the request said who it was, and that was not true.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeGuard, TypeVar

from flask import Request
from flask import session as cookie
from sqlalchemy import Engine, exc, select
from sqlalchemy.orm import Session

from rls_tenancy.audit.rejections import WINDOW, RejectionLog, rejection_log
from rls_tenancy.binding.engine import begin_bound_with, behind_pooler
from rls_tenancy.context import as_tenant_for_call
from rls_tenancy.errors import AuthenticationError, InvalidRequestError, UnknownTenantError
from rls_tenancy.identity import user_rows
from rls_tenancy.identity.token_key import TokenKey
from rls_tenancy.identity.tokens import (
    MAX_TOKEN_LENGTH,
    TokenIdentity,
    authenticate_in_transaction,
    authenticate_parsed,
    parse_token,
    refuse_ended,
    remember_ended,
)
from rls_tenancy.identity.user_rows import UserRow
from rls_tenancy.identity.users import User
from rls_tenancy.orm.models import SLUG_PATTERN, tenant_id_for_slug

#: The key under which :func:`~rls_tenancy.flask.login` keeps the user in the session.
SESSION_KEY = "rls_tenancy"
_MAX_AUTHORIZATION = MAX_TOKEN_LENGTH + len("Bearer ")
_MAX_HOST = 253
_T = TypeVar("_T")


@dataclass(frozen=True)
class Resolution:
    """Who a request acts for. ``token_scopes`` is None when no token limits the scopes."""

    tenant_id: int
    user_id: int | None = None
    token_scopes: frozenset[str] | None = None
    source: str = "custom"
    #: The user's row, where the credential's check read it (the request's user then costs no statement).
    user_row: UserRow | None = field(default=None, compare=False, repr=False)


Resolver = Callable[[Request], Resolution | None]


def token_resolver(
    engine: Engine,
    *,
    audit_engine: Engine | None = None,
    session: Callable[[], Session] | None = None,
    rejection_window: float = WINDOW,
    token_keys: Sequence[TokenKey] = (),
    accept_unmarked: bool = False,
) -> Resolver:
    """``Authorization: Bearer rlst_...``; other schemes are left to others.

    Every rejected token is a ``auth.token_rejected`` audit event: of the
    token's tenant when the token is real but expired or revoked, else of
    the chain without a tenant (the tenant a forged token names is only a
    claim, kept in the event's data). Events go through ``audit_engine``
    (default: ``engine``). Repeated rejections from one source are one event
    and a count per ``rejection_window`` seconds (:mod:`rls_tenancy.audit.rejections`;
    0 writes each).

    ``session`` gives the request's Session (the extension passes it): the
    lookup is then the first statement of the request's own transaction
    (:func:`~rls_tenancy.identity.tokens.authenticate_in_transaction`), which costs
    the request no connection of its own and rides in the round trip that
    begins its transaction; a token that does
    not hold rolls that transaction back. Without it, or when that Session
    is already in a transaction, the lookup runs alone in autocommit.

    ``token_keys``: a token must carry the mark of one of them
    (:mod:`rls_tenancy.identity.token_key`), checked before any lookup, so made-up
    tokens cost no round trip; ``accept_unmarked`` looks up tokens without
    it too, while tokens issued before the keys are replaced.
    """
    rejections = rejection_log(engine if audit_engine is None else audit_engine)
    window = rejection_window

    def resolve(request: Request) -> Resolution | None:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        if len(header) > _MAX_AUTHORIZATION or not header.isascii() or not header.isprintable():
            _reject(rejections, AuthenticationError("malformed", "the Authorization header is malformed"), None, window)
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = credentials.strip()
        try:
            claimed, digest = parse_token(token, token_keys, accept_unmarked=accept_unmarked)
        except AuthenticationError as error:
            # A forged token is well-formed: the tenant it claims is kept in the event.
            _reject(rejections, error, error.claimed_tenant, window)
        try:
            identity = _authenticate(engine, session, claimed, digest)
        except AuthenticationError as error:
            _reject(rejections, error, claimed, window)
        return Resolution(identity.tenant_id, identity.user_id, identity.scopes, "token", identity.user_row)

    return resolve


def _authenticate(engine: Engine, session: Callable[[], Session] | None, claimed: int, digest: bytes) -> TokenIdentity:
    refuse_ended(digest)  # a token found revoked or expired before stays so: no lookup, no Session
    try:
        return _look_up(engine, None if session is None else session(), claimed, digest)
    except AuthenticationError as error:
        remember_ended(digest, error)
        raise


def _look_up(engine: Engine, request_session: Session | None, claimed: int, digest: bytes) -> TokenIdentity:
    if not _can_begin(request_session):
        # One statement, no tenant: in autocommit it is one round trip
        # instead of two (BEGIN with the lookup, ROLLBACK). Not behind a
        # pooler, where no reset could precede it: a transaction begins with one.
        with engine.connect() as connection:
            if not behind_pooler(connection):
                connection.execution_options(isolation_level="AUTOCOMMIT")
            return authenticate_parsed(connection, claimed, digest)
    identity = _in_request_transaction(
        request_session,
        lambda: authenticate_in_transaction(
            lambda: request_session.connection(bind_arguments={"bind": engine}), claimed, digest
        ),
    )
    assert identity is not None  # a token that does not hold raises
    return identity


def _can_begin(request_session: Session | None) -> TypeGuard[Session]:
    """Whether a credential check may be the first statement of ``request_session``'s transaction.

    Not when it is in one already (a ``before_request`` of the app's ran a
    query), nor when it never begins one by itself (``autobegin=False``: the
    app's views begin their own, ``with session.begin():``).
    """
    return request_session is not None and request_session.autobegin and not request_session.in_transaction()


def _in_request_transaction(request_session: Session, check: Callable[[], _T | None]) -> _T | None:
    """Run ``check``, which binds ``request_session``'s new transaction to a claimed tenant.

    Should ``check`` find the claim false (it raises, or answers None), the
    transaction is rolled back before anything else can run in it as that
    tenant: an error handler of the app's own, say.
    """
    try:
        found = check()
    except Exception:
        _roll_back(request_session)
        raise
    if found is None:
        _roll_back(request_session)
    return found


def _roll_back(request_session: Session) -> None:
    with contextlib.suppress(exc.DBAPIError):  # the connection is gone: nothing is left bound
        request_session.rollback()


def _reject(
    rejections: RejectionLog, error: AuthenticationError, claimed_tenant: int | None, window: float
) -> NoReturn:
    proven = error.reason in ("expired", "revoked")  # the hash matched: the token is that tenant's
    rejections.record(
        "auth.token_rejected",
        str(error),
        tenant_id=claimed_tenant if proven else None,
        reason=error.reason,
        data={"reason": error.reason} if proven else {"reason": error.reason, "claimed_tenant": claimed_tenant},
        window=window,
    )
    raise error


def session_resolver(engine: Engine, *, session: Callable[[], Session] | None = None) -> Resolver:
    """A user logged in with :func:`~rls_tenancy.flask.login` (the signed session cookie).

    The user must still exist: a cookie outliving its user (or tenant) makes
    the request anonymous, and is forgotten. With ``session`` (the request's
    Session, as for :func:`token_resolver`) the check is the first statement
    of the request's transaction and binds the user as it finds them.
    """

    def resolve(request: Request) -> Resolution | None:
        stored: Any = cookie.get(SESSION_KEY)
        if not isinstance(stored, dict):
            return None
        tenant_id, user_id = stored.get("tenant_id"), stored.get("user_id")
        if not (is_row_id(tenant_id) and is_row_id(user_id)):
            cookie.pop(SESSION_KEY, None)
            return None
        found = _user_exists(engine, None if session is None else session(), tenant_id, user_id)
        if not found:
            cookie.pop(SESSION_KEY, None)
            return None
        return Resolution(tenant_id, user_id, None, "session", found if isinstance(found, UserRow) else None)

    return resolve


#: The cookie's check for libpq, sent with the transaction's BEGIN and binding
#: (:func:`~rls_tenancy.binding.engine.begin_bound_with`), which binds the cookie's
#: user beside its tenant (and signs both, with a context key): row level
#: security on users finds the user only in the tenant bound. It reads the
#: user's row, which the request's get_current_user() then takes.
_USER_WIRE = (
    b"SELECT "
    + user_rows.select_list("u")
    + b" FROM rls_tenancy.users AS u WHERE u.id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
)


def _user_exists(engine: Engine, request_session: Session | None, tenant_id: int, user_id: int) -> UserRow | bool:
    """Whether the cookie's user exists in its tenant: their row where the check read it, else a bool."""
    if not _can_begin(request_session):
        with as_tenant_for_call(tenant_id), engine.connect() as connection:
            return connection.scalar(select(User.id).where(User.id == user_id)) is not None

    def check() -> UserRow | bool | None:
        # The pool then prefers a connection that last served the tenant.
        with as_tenant_for_call(tenant_id, user=user_id):
            connection = request_session.connection(bind_arguments={"bind": engine})
            result = begin_bound_with(connection, _USER_WIRE, [str(user_id).encode()])
            if result is not None:
                return user_rows.read(result, 0, connection)
            # the transaction had begun, or cannot begin that way
            return connection.execute(select(User.id).where(User.id == user_id)).first() is not None or None

    return _in_request_transaction(request_session, check) or False


def subdomain_resolver(engine: Engine, parent_domain: str) -> Resolver:
    """``acme.<parent_domain>`` acts for the tenant with slug ``acme``."""
    suffix = "." + parent_domain.lower().strip(".")

    def resolve(request: Request) -> Resolution | None:
        # The raw header: werkzeug's request.host turns a malformed one into "".
        raw = request.headers.get("Host", "")
        if len(raw) > _MAX_HOST + 6 or not raw.isascii() or not raw.isprintable():
            raise InvalidRequestError("the Host header is malformed")
        if raw.startswith("["):  # an IPv6 literal is nobody's subdomain
            return None
        name, colon, port = raw.partition(":")
        if colon and not (port.isdigit() and len(port) <= 5):
            raise InvalidRequestError("the Host header has a malformed port")
        name = name.lower()
        name = name[:-1] if name.endswith(".") else name  # the fully qualified form
        if not name.endswith(suffix):
            return None
        slug = name[: -len(suffix)]
        if not SLUG_PATTERN.match(slug):
            raise InvalidRequestError(f"{slug!r} cannot be a tenant's subdomain")
        with engine.connect() as connection:
            tenant_id = tenant_id_for_slug(connection, slug)
        if tenant_id is None:
            raise UnknownTenantError(f"there is no tenant {slug!r}")
        return Resolution(int(tenant_id), None, None, source="subdomain")

    return resolve


def is_row_id(value: object) -> TypeGuard[int]:
    """Whether ``value`` can be a bigint id: a positive int below 2**63 (and no bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
