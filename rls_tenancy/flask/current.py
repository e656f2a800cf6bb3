"""The request's tenant, user, scopes and language, looked up once per request and cached.

Each is the seed's lazy accessor: computed on first use in a request, cached
for the rest of it. Outside a request they raise ``RuntimeError`` (Flask's
"working outside of request context"); jobs and shells use
:func:`~rls_tenancy.as_tenant` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import request
from sqlalchemy import exc
from sqlalchemy.orm import Session
from werkzeug.datastructures import LanguageAccept

from rls_tenancy.audit.events import log_security_event
from rls_tenancy.errors import AuthenticationError, PermissionDeniedError
from rls_tenancy.flask.resolvers import Resolution
from rls_tenancy.flask.state import request_state, state
from rls_tenancy.identity import user_rows
from rls_tenancy.identity.users import User
from rls_tenancy.orm.models import Tenant, storable

_F = TypeVar("_F", bound=Callable[..., Any])
ANONYMOUS = frozenset({"anonymous"})


def _resolution() -> Resolution | None:
    return request_state().resolution


def _cached(name: str, compute: Callable[[], Any]) -> Any:
    cache = request_state().cache
    if name not in cache:
        cache[name] = compute()
    return cache[name]


_M = TypeVar("_M")
_IN_FAILED_TRANSACTION = "25P02"


def _load(model: type[_M], ident: int) -> _M | None:
    """``model`` by ``ident`` in the request's Session, or, if its transaction failed, on a connection apart.

    An app's error handler, or a view's ``except`` block, may ask after a
    statement failed. That transaction is theirs to roll back (to a
    savepoint, say): read apart, bound to the request's tenant, the object
    comes back detached, and the failed transaction stays as it was.
    """
    session = state().session()
    try:
        return session.get(model, ident)
    except (exc.PendingRollbackError, exc.InternalError) as error:
        if isinstance(error, exc.InternalError) and getattr(error.orig, "sqlstate", None) != _IN_FAILED_TRANSACTION:
            raise
    with Session(state().engine) as apart:
        found = apart.get(model, ident)
        if found is not None:
            apart.expunge(found)
        return found


def get_current_tenant() -> Tenant | None:
    """The request's tenant, or None when the request names none."""
    resolution = _resolution()
    if resolution is None:
        return None
    if resolution.user_row is not None and resolution.user_row.current():
        get_current_user()  # taken while its row stands for a load: the tenant's load is a statement
    tenant: Tenant | None = _cached("tenant", lambda: _load(Tenant, resolution.tenant_id))
    return tenant


def get_current_user() -> User | None:
    """The request's user: the token's or the session's; None when anonymous."""
    resolution = _resolution()
    if resolution is None or resolution.user_id is None:
        return None
    user_id, row = resolution.user_id, resolution.user_row

    def compute() -> User | None:
        if row is not None and row.id == user_id:  # read beside the credential: no statement
            adopted = user_rows.adopt(state().session(), row)
            if adopted is not None:
                return adopted
        return _load(User, user_id)

    user: User | None = _cached("user", compute)
    return user


def get_current_scopes() -> frozenset[str]:
    """The seed's rule: the user's roles, narrowed to what the request's token grants.

    Without a user: ``{"anonymous"}``, or the token's scopes for a token that
    belongs to no user.
    """

    def compute() -> frozenset[str]:
        resolution = _resolution()
        token_scopes = None if resolution is None else resolution.token_scopes
        user = get_current_user()
        if user is None:
            token_only = resolution is not None and resolution.user_id is None and token_scopes is not None
            return token_scopes if token_only and token_scopes is not None else ANONYMOUS
        roles = frozenset(user.roles)
        return roles if token_scopes is None else roles & token_scopes

    scopes: frozenset[str] = _cached("scopes", compute)
    return scopes


def get_current_language() -> str:
    """The user's language, else the best match for ``Accept-Language``, else the default.

    Only languages in ``RLS_TENANCY_LANGUAGES`` are ever returned.
    """

    def compute() -> str:
        tenancy = state()
        user = get_current_user()
        if user is not None and user.language in tenancy.languages:
            return user.language
        return negotiate_language(request.accept_languages, tenancy.languages) or tenancy.default_language

    language: str = _cached("language", compute)
    return language


def require_scopes(*needed: str) -> Callable[[_F], _F]:
    """Let the view run only for requests holding every scope in ``needed``.

    No credentials at all: :class:`AuthenticationError` (401). Credentials
    without the scopes: :class:`PermissionDeniedError` (403), recorded as an
    ``auth.scope_denied`` audit event of the request's tenant and user.
    """
    wanted = frozenset(needed)

    def decorate(view: _F) -> _F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            resolution = _resolution()
            # A tenant known from the host alone is still an anonymous request.
            if resolution is None or (resolution.user_id is None and resolution.token_scopes is None):
                raise AuthenticationError("missing", "this needs credentials: a bearer token or a login")
            missing = wanted - get_current_scopes()
            if missing:
                # The path as sent, minus what cannot be stored (a %00 in the URL, say).
                path = "".join(c for c in request.path[:200] if c.isprintable() and storable(c))
                log_security_event(
                    state().audit_engine,
                    "auth.scope_denied",
                    f"{request.method} {path} needs {', '.join(sorted(missing))}",
                    data={"missing": sorted(missing), "endpoint": request.endpoint},
                )
                raise PermissionDeniedError(missing)
            return view(*args, **kwargs)

        return cast(_F, guarded)

    return decorate


def negotiate_language(accepted: LanguageAccept, offered: list[str]) -> str | None:
    """The best of ``offered`` for ``Accept-Language``, like RFC 4647 lookup.

    Preferences are taken in the client's order of quality; each one matches
    an offered tag exactly (case aside) or by its primary language, so
    ``de-DE, en;q=0.5`` gets ``de`` when the app offers ``de`` and ``en``
    (Werkzeug's ``best_match`` alone would say ``en``: it only falls back to
    primary languages when nothing matches exactly).
    """
    exact = {tag.lower(): tag for tag in offered}
    by_primary: dict[str, str] = {}
    for tag in offered:
        by_primary.setdefault(tag.lower().split("-")[0], tag)
    for wanted, quality in accepted:
        if quality <= 0:
            continue
        wanted = wanted.lower()
        if wanted == "*":
            return offered[0] if offered else None
        primary = wanted.split("-")[0]
        found = exact.get(wanted) or exact.get(primary) or by_primary.get(primary)
        if found is not None:
            return found
    return None
