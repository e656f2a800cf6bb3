"""What the extension keeps per app and per request, and how code finds it.

Its own module so that everything the extension registers (the CLI, the
feature helpers, the current-request accessors) can read the state without
importing the extension that registers it.
"""

from __future__ import annotations

import contextlib
import contextvars
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, has_request_context, request
from sqlalchemy import Connection, Engine, exc
from sqlalchemy.orm import Session, SessionTransaction, scoped_session, sessionmaker

from rls_tenancy.audit.rejections import flush_rejections
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.context import Acting
from rls_tenancy.errors import UsageError
from rls_tenancy.features.declare import NO_VALUES, REGISTRY, FeatureRegistry
from rls_tenancy.features.flags import Flags
from rls_tenancy.flask.resolvers import Resolution, Resolver
from rls_tenancy.identity.token_key import TokenKey

EXTENSION_KEY = "rls_tenancy"

SessionSource = sessionmaker[Any] | scoped_session[Any]


@dataclass
class TenancyState:
    """What the extension keeps per app, in ``app.extensions["rls_tenancy"]``."""

    engine: Engine
    #: Security events are written on this engine's own pool, so a request
    #: holding a connection of the main pool never waits for a second one.
    audit_engine: Engine
    sessions: SessionSource
    resolvers: list[Resolver]
    languages: list[str]
    default_language: str
    bypass: UnsafeBypass | None = None
    #: The subdomain resolver, when configured: it names the tenant the host
    #: belongs to, which credentials must then agree with.
    host_resolver: Resolver | None = None
    #: The declared feature flags this app evaluates.
    features: FeatureRegistry = REGISTRY
    #: ``RLS_TENANCY_TOKEN_KEYS``: the first marks the tokens ``issue-token`` prints.
    token_keys: tuple[TokenKey, ...] = ()
    #: Read-only Sessions on the read engine (a hot standby), when one is configured.
    read_sessions: sessionmaker[Session] | None = None
    #: The read engine itself, when one is configured.
    read_engine: Engine | None = None

    def dispose(self) -> None:
        """Close the pooled connections of every engine the extension uses: the app's, audit, bypass and read ones.

        Repeated rejections still counted in memory are written first. For a
        test's teardown, before the plugin drops its database (the
        drop ends the connections still open; one still checked out then
        fails with ``AdminShutdown`` when next used or closed), and for a
        process about to fork workers. Each engine opens new connections
        when it is used again.
        """
        bypass = None if self.bypass is None else self.bypass.engine
        engines = dict.fromkeys(e for e in (self.engine, self.audit_engine, self.read_engine, bypass) if e)
        for engine in engines:  # their rejection counts first, while the database is there to take them
            flush_rejections(engine)
        for engine in engines:
            engine.dispose()

    def session(self) -> Session:
        """The app's ORM session for this request (the scoped one, or one made for it)."""
        if isinstance(self.sessions, scoped_session):
            scoped: Session = self.sessions()
            return scoped
        current = request_state()
        if current.session is None:
            current.session = self.sessions()
        return current.session

    def read_session(self) -> Session:
        """This request's read-only Session on the read engine; the request's :meth:`session` without one.

        Made on first use and closed with the request. The request's
        credentials were checked on the app's engine (the primary) before
        the view runs, so a standby behind on a revocation admits nobody.
        """
        if self.read_sessions is None:
            return self.session()
        if not has_request_context():
            raise UsageError("read_session() belongs to a request: outside one, make a Session on the read engine")
        current = request_state()
        if current.read_session is None:
            current.read_session = self.read_sessions()
        return current.read_session


@dataclass
class RequestState:
    """What one request knows about itself; kept in the WSGI environ, never in ``g``.

    ``g`` belongs to the app context, which an app may keep pushed across
    requests; the environ belongs to exactly one request.
    """

    resolution: Resolution | None = None
    context: Token[Acting] | None = None
    #: The contextvars context the request runs in (made by the WSGI wrapper),
    #: until its own teardown; teardowns elsewhere leave the request alone.
    running_in: contextvars.Context | None = None
    request_id: str | None = None
    session: Session | None = None
    read_session: Session | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    #: Each event ``log()`` wrote: its transaction and action; a transaction
    #: still open when the request ends is rolled back, and its events with it.
    logged: list[tuple[SessionTransaction, str]] = field(default_factory=list)
    #: The response's status, once the extension's ``after_request`` has seen it.
    status: int | None = None
    #: Whether its tenant is resolved (the extension's ``before_request`` ran to its end).
    resolved: bool = False
    #: The request's Sessions' transactions begun before that, each on its connection.
    begun_unresolved: list[tuple[Session, Connection]] = field(default_factory=list)


REQUEST_KEY = "rls_tenancy.request"


def request_flags() -> Flags:
    """This request's :class:`~rls_tenancy.features.flags.Flags`, made on first use."""
    if not has_request_context():
        raise UsageError(NO_VALUES)
    cache = request_state().cache
    flags = cache.get("flags")
    if not isinstance(flags, Flags):
        flags = cache["flags"] = Flags(state().session(), state().features)
    return flags


def request_state() -> RequestState:
    """This request's :class:`RequestState` (an empty one before resolution ran)."""
    found = request.environ.get(REQUEST_KEY)
    if not isinstance(found, RequestState):
        found = request.environ[REQUEST_KEY] = RequestState()
    return found


def state() -> TenancyState:
    """The extension's state for the current app, with a helpful error when missing."""
    try:
        found: TenancyState = current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "rls_tenancy is not registered on this app. Did you forget to call Tenancy.init_app(app)?"
        ) from None
    return found


def rejection_window(config: Any) -> float:
    """``RLS_TENANCY_REJECTION_WINDOW``: seconds over which one source's repeated rejections are counted."""
    window = config["RLS_TENANCY_REJECTION_WINDOW"]
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= 86_400:
        raise UsageError(f"RLS_TENANCY_REJECTION_WINDOW is seconds from 0 to 86400, not {window!r}")
    return float(window)


def request_sessions() -> list[Session]:
    """The request's Sessions that exist, its Session and its read Session; none is made."""
    tenancy = state()
    current = request_state()
    sessions = tenancy.sessions
    if isinstance(sessions, scoped_session):
        first = sessions() if sessions.registry.has() else None
    else:
        first = current.session
    return [session for session in (first, current.read_session) if session is not None]


def roll_back_request_sessions() -> None:
    """Roll back the request's Sessions, whatever their connections' state.

    For a request whose transaction failed: nothing of it can commit, and
    its Sessions serve the rest of the request (hooks, error handlers) only
    once rolled back. A connection that is gone is left to the teardown.
    """
    if not has_request_context():
        return
    for session in request_sessions():
        with contextlib.suppress(exc.DBAPIError):
            session.rollback()
