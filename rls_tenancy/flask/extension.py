"""``Tenancy``: the Flask extension that gives every request its tenant.

    tenancy = Tenancy()

    def create_app():
        app = Flask(__name__)
        db.init_app(app)                 # Flask-SQLAlchemy, or engine=... / session=...
        tenancy.init_app(app, db=db)
        return app

Before each request the configured resolvers find the request's tenant, and
that tenant is in context (:func:`~rls_tenancy.as_tenant`) until the request
ends, whatever happens: every transaction the view runs on a bound engine
carries it. The user, the scopes and the language are looked up on first use.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Flask
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Query, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry as PoolEntry

from rls_tenancy.audit.rejections import WINDOW
from rls_tenancy.binding.engine import bind_engine
from rls_tenancy.binding.urls import database_url
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.errors import UsageError
from rls_tenancy.features.declare import REGISTRY, FeatureRegistry
from rls_tenancy.flask.cli import tenancy_commands
from rls_tenancy.flask.converters import CONVERTERS
from rls_tenancy.flask.errors import register_error_handlers
from rls_tenancy.flask.features import feature_enabled
from rls_tenancy.flask.lifecycle import (
    begin_request,
    echo_request_id,
    end_request,
    note_begun,
    own_context,
    request_session,
)
from rls_tenancy.flask.resolvers import (
    Resolver,
    session_resolver,
    subdomain_resolver,
    token_resolver,
)
from rls_tenancy.flask.state import (
    EXTENSION_KEY,
    SessionSource,
    TenancyState,
    rejection_window,
    state,
)
from rls_tenancy.identity.token_key import TokenKey, token_keys
from rls_tenancy.orm.query import TenantQuery, tenant_query_class
from rls_tenancy.orm.scoping import listen_on_sessions, scope_sessions

if TYPE_CHECKING:  # an optional dependency (extra flask-sqlalchemy)
    from flask_sqlalchemy import SQLAlchemy as FlaskSQLAlchemy


class TenancyOptions(NamedTuple):
    """What an app gives :class:`Tenancy`, to the constructor or to ``init_app``; None: not given."""

    db: FlaskSQLAlchemy | None
    engine: Engine | None
    session: SessionSource | None
    bypass_engine: Engine | None
    audit_engine: Engine | None
    read_engine: Engine | None
    resolvers: Sequence[str | Resolver] | None
    features: FeatureRegistry | None


class Tenancy:
    """Tenant, user, scopes and language for each request; see the module docs.

    Give it exactly one of ``db`` (Flask-SQLAlchemy), or ``engine`` with an
    optional ``session`` (a ``sessionmaker`` or ``scoped_session``; one is made
    from the engine otherwise). ``bypass_engine`` (or config
    ``RLS_TENANCY_BYPASS_DATABASE_URL``) serves the admin CLI.
    ``audit_engine`` writes security events (default: the app's engine
    settings on a pool of its own). ``read_engine`` (or config
    ``RLS_TENANCY_READ_DATABASE_URL``), a hot standby's, serves
    :attr:`read_session`; credentials are still checked on ``engine``. ``resolvers``
    overrides config ``RLS_TENANCY_RESOLVERS``. ``features`` is the
    :class:`~rls_tenancy.features.declare.FeatureRegistry` to evaluate (default: the
    one every ``Feature`` joins unless told otherwise). All can be given to the
    constructor or to :meth:`init_app`, for the app-factory pattern.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: FlaskSQLAlchemy | None = None,
        engine: Engine | None = None,
        session: SessionSource | None = None,
        bypass_engine: Engine | None = None,
        audit_engine: Engine | None = None,
        read_engine: Engine | None = None,
        resolvers: Sequence[str | Resolver] | None = None,
        features: FeatureRegistry | None = None,
    ) -> None:
        self._options = TenancyOptions(
            db, engine, session, bypass_engine, audit_engine, read_engine, resolvers, features
        )
        if app is not None:
            self.init_app(app)

    @property
    def session(self) -> Session:
        """The current app's ORM session for this request, as ``db.session`` is Flask-SQLAlchemy's."""
        return state().session()

    @property
    def read_session(self) -> Session:
        """This request's read-only Session on the read engine (a hot standby), bound to the same tenant.

        Without a read engine, the request's own :attr:`session`: code
        written for a standby runs unchanged where there is none.
        """
        return state().read_session()

    def init_app(
        self,
        app: Flask,
        *,
        db: FlaskSQLAlchemy | None = None,
        engine: Engine | None = None,
        session: SessionSource | None = None,
        bypass_engine: Engine | None = None,
        audit_engine: Engine | None = None,
        read_engine: Engine | None = None,
        resolvers: Sequence[str | Resolver] | None = None,
        features: FeatureRegistry | None = None,
    ) -> None:
        """Register on ``app``; each option given here replaces the constructor's."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("rls_tenancy is already registered on this app; call init_app once per app")
        given = TenancyOptions(db, engine, session, bypass_engine, audit_engine, read_engine, resolvers, features)
        options = self._options._replace(**{name: v for name, v in given._asdict().items() if v is not None})
        config = app.config
        config.setdefault("RLS_TENANCY_RESOLVERS", ["token", "session"])
        config.setdefault("RLS_TENANCY_SUBDOMAIN_OF", None)
        config.setdefault("RLS_TENANCY_LANGUAGES", ["en"])
        config.setdefault("RLS_TENANCY_DEFAULT_LANGUAGE", "en")
        config.setdefault("RLS_TENANCY_BYPASS_DATABASE_URL", None)
        config.setdefault("RLS_TENANCY_READ_DATABASE_URL", None)
        config.setdefault("RLS_TENANCY_REQUEST_ID_HEADER", "X-Request-ID")
        config.setdefault("RLS_TENANCY_CONTEXT_KEY", None)  # None: RLS_TENANCY_CONTEXT_KEY in the environment
        config.setdefault("RLS_TENANCY_REJECTION_WINDOW", WINDOW)
        config.setdefault("RLS_TENANCY_TOKEN_KEYS", None)  # None: RLS_TENANCY_TOKEN_KEYS in the environment
        config.setdefault("RLS_TENANCY_ACCEPT_UNMARKED_TOKENS", False)
        rejection_window(config)  # a bad value fails here, not at the first rejection
        keys = token_keys(config["RLS_TENANCY_TOKEN_KEYS"])

        if options.resolvers is not None:
            config["RLS_TENANCY_RESOLVERS"] = list(options.resolvers)  # so app.config shows what is used
        key = config["RLS_TENANCY_CONTEXT_KEY"]
        engine, sessions = _engine_and_sessions(app, options, key)
        bind_engine(engine, context_key=key)
        audit_engine = options.audit_engine or _audit_engine_for(engine)
        bind_engine(audit_engine, context_key=key)
        scope_sessions(sessions)
        read_engine = options.read_engine or _configured_engine(config, "READ")
        read_sessions = _read_sessions(read_engine, key)
        for made_by in (sessions, read_sessions):  # transactions begun before the tenant is resolved, to end
            if made_by is not None:
                listen_on_sessions(made_by, "after_begin", note_begun)
        bypass = options.bypass_engine
        if bypass is None:
            bypass = _configured_engine(config, "BYPASS")
        languages = list(config["RLS_TENANCY_LANGUAGES"])
        if config["RLS_TENANCY_DEFAULT_LANGUAGE"] not in languages:
            raise UsageError("RLS_TENANCY_DEFAULT_LANGUAGE must be one of RLS_TENANCY_LANGUAGES")
        resolvers, host_resolver = _resolvers(config["RLS_TENANCY_RESOLVERS"], engine, audit_engine, config, keys)
        app.extensions[EXTENSION_KEY] = TenancyState(
            engine=engine,
            audit_engine=audit_engine,
            sessions=sessions,
            resolvers=resolvers,
            languages=languages,
            default_language=config["RLS_TENANCY_DEFAULT_LANGUAGE"],
            bypass=None if bypass is None else UnsafeBypass(bypass),
            host_resolver=host_resolver,
            features=REGISTRY if options.features is None else options.features,
            token_keys=keys,
            read_sessions=read_sessions,
            read_engine=read_engine,
        )
        # Each request runs in a contextvars context of its own (WSGI middleware,
        # Flask's documented way): whatever a request leaves in context, even
        # when a teardown function fails, dies with it.
        app.wsgi_app = own_context(app.wsgi_app)  # type: ignore[method-assign,assignment]
        app.before_request_funcs.setdefault(None, []).insert(0, begin_request)
        app.after_request(echo_request_id)
        app.teardown_request(end_request)
        register_error_handlers(app)
        for name, converter in CONVERTERS.items():
            app.url_map.converters.setdefault(name, converter)
        app.cli.add_command(tenancy_commands)
        app.jinja_env.globals["feature_enabled"] = feature_enabled


def _engine_and_sessions(app: Flask, options: TenancyOptions, key: str | None) -> tuple[Engine, SessionSource]:
    db = options.db
    if db is not None:
        if options.engine is not None or options.session is not None:
            raise UsageError("give Tenancy either db=... (Flask-SQLAlchemy) or engine=/session=, not both")
        if "sqlalchemy" not in app.extensions:
            raise RuntimeError("call db.init_app(app) before tenancy.init_app(app)")
        with app.app_context():
            for each in db.engines.values():
                # Other binds (a SQLite cache, say) hold no tenant tables.
                if each is db.engine or each.dialect.name == "postgresql":
                    bind_engine(each, context_key=key)
            # db.session.query(Model) as Model.query: with tenant_unconstrained_unsafe(), and
            # Flask-SQLAlchemy's own methods (first_or_404, paginate). Sessions are made per app
            # context, after this.
            factory = db.session.session_factory
            factory.kw["query_cls"] = tenant_query_class(factory.kw.get("query_cls", Query))
            return db.engine, db.session
    engine = options.engine
    if engine is None:
        raise UsageError("Tenancy needs db=... (Flask-SQLAlchemy) or engine=... (SQLAlchemy)")
    sessions = options.session or sessionmaker(engine, query_cls=TenantQuery)
    return engine, sessions


def _configured_engine(config: Any, which: str) -> Engine | None:
    """An engine for ``RLS_TENANCY_<which>_DATABASE_URL``, if set; a value that is no URL fails here, named."""
    name = f"RLS_TENANCY_{which}_DATABASE_URL"
    url = config[name]
    if not url:
        return None
    try:
        return create_engine(database_url(url))
    except exc.ArgumentError as error:
        raise UsageError(f"{name} is not a database URL ({error})") from None


def _read_sessions(engine: Engine | None, key: str | None) -> sessionmaker[Session] | None:
    """Sessions for a request's reads: bound as the app's engine is, read-only, with the ORM filter.

    Read-only at ``BEGIN`` (``postgresql_readonly``): a write refused on a
    standby is refused the same way on a read engine that is the primary.
    """
    if engine is None:
        return None
    bind_engine(engine, context_key=key)
    sessions = sessionmaker(engine.execution_options(postgresql_readonly=True), query_cls=TenantQuery)
    scope_sessions(sessions)
    return sessions


_AUDIT_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _audit_engine_for(engine: Engine) -> Engine:
    """``engine``'s connection settings on a pool of its own; one per engine, following its disposal."""
    found = _AUDIT_ENGINES.get(engine)
    if found is None:
        # Pool.recreate() keeps the connection creator (URL, connect_args) and the pool's sizes.
        found = _AUDIT_ENGINES[engine] = create_engine(engine.url, pool=engine.pool.recreate())
        _follow_disposal(found, weakref.ref(engine))
    return found


_SOURCE_POOL = "rls_tenancy.source_pool"


def _follow_disposal(audit: Engine, source: weakref.ref[Engine]) -> None:
    """Replace each of ``audit``'s connections opened before ``source`` was last disposed, at its next checkout.

    ``Engine.dispose()`` gives the engine a new pool. Not by the
    ``engine_disposed`` event: a connection event listener on the app's
    engine makes SQLAlchemy dispatch every event of every statement, about
    50 µs of CPU per transaction. Pool events cost nothing when unused.
    """

    def opened(_dbapi: object, record: PoolEntry) -> None:
        engine = source()
        record.info[_SOURCE_POOL] = None if engine is None else engine.pool

    def checkout(_dbapi: object, record: PoolEntry, _proxy: object) -> None:
        engine = source()
        if engine is not None and record.info.get(_SOURCE_POOL) is not engine.pool:
            # The pool closes this connection and opens another in its place.
            raise exc.DisconnectionError("the app's engine was disposed after this audit connection opened")

    event.listen(audit, "connect", opened)
    event.listen(audit, "checkout", checkout)


class _Resolvers(NamedTuple):
    """The credential resolvers in their order, and the host's, which credentials must agree with."""

    credentials: list[Resolver]
    host: Resolver | None


def _resolvers(
    names: Sequence[str | Resolver], engine: Engine, audit_engine: Engine, config: Any, keys: tuple[TokenKey, ...]
) -> _Resolvers:
    resolvers: list[Resolver] = []
    host_resolver: Resolver | None = None
    for name in names:
        if callable(name):
            resolvers.append(name)
        elif name == "token":
            resolvers.append(
                token_resolver(
                    engine,
                    audit_engine=audit_engine,
                    session=request_session,
                    rejection_window=rejection_window(config),
                    token_keys=keys,
                    accept_unmarked=bool(config["RLS_TENANCY_ACCEPT_UNMARKED_TOKENS"]),
                )
            )
        elif name == "session":
            resolvers.append(session_resolver(engine, session=request_session))
        elif name == "subdomain":
            parent = config["RLS_TENANCY_SUBDOMAIN_OF"]
            if not parent:
                raise UsageError("the subdomain resolver needs RLS_TENANCY_SUBDOMAIN_OF, e.g. 'example.com'")
            host_resolver = subdomain_resolver(engine, parent)
        else:
            raise UsageError(f"unknown resolver {name!r}: use 'token', 'session', 'subdomain' or a callable")
    return _Resolvers(resolvers, host_resolver)
