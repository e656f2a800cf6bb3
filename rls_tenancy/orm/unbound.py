"""A scoped Session working for a tenant on an engine no binding covers is refused.

Sessions made by a scoped ``sessionmaker`` deal with tenant models. On an
engine :func:`~rls_tenancy.bind_engine` never bound (a read replica's engine
the app made itself, say), a tenant in context still passes the ORM's checks,
while the database sees no tenant: row level security shows the application
role nothing, and the app answers with empty pages. So a scoped Session's
first statement for a tenant looks at the engine it runs on, however the
Session got it (``bind``, ``binds``, ``configure(bind=...)`` after
:func:`~rls_tenancy.scope_sessions`): unbound, the server is asked once per
engine whether its role is under row level security, and if it is,
:class:`~rls_tenancy.errors.ConfigurationError` is raised; so it is when such
a Session begins on a connection of an unbound engine with a tenant in
context (another model's engine, a Core statement, ``session.connection()``). A superuser's or a
``BYPASSRLS`` role's engine (tests of the ORM filter alone, say) passes, and
so does any use of the engine outside scoped Sessions (a health check before
``bind_engine()``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from sqlalchemy import Connection, Engine, exc
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from rls_tenancy.binding.engine import is_bound
from rls_tenancy.context import current_tenant_id
from rls_tenancy.errors import ConfigurationError

_ROLE_UNDER_RLS = (
    "SELECT NOT (r.rolsuper OR r.rolbypassrls) FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER"
)

#: Engines found bound (never unbound again), and unbound engines' roles: under row level security or not.
_bound: weakref.WeakSet[Engine] = weakref.WeakSet()
_under_rls: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def refuse_unbound(state: ORMExecuteState) -> None:
    """Raise :class:`ConfigurationError` if ``state``'s statement would run on an unbound engine under RLS."""
    session = state.session
    try:
        bind = session.get_bind(**state.bind_arguments)
    except exc.UnboundExecutionError:
        return  # SQLAlchemy says so itself when the statement runs
    _check(getattr(bind, "engine", bind), lambda: session.connection(bind_arguments=state.bind_arguments))


def refuse_unbound_begun(_session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    """``after_begin``: a scoped Session beginning on a connection of an unbound engine, with a tenant in context.

    Whatever runs next (another model's engine among ``binds``, a Core
    statement, ``session.connection()``, a Session given another bind) runs
    on that connection.
    """
    if current_tenant_id() is not None:
        _check(connection.engine, lambda: connection)


def _check(engine: object, connection: Callable[[], Connection]) -> None:
    if not isinstance(engine, Engine) or engine in _bound or engine.dialect.name != "postgresql":
        return
    if is_bound(engine):
        _bound.add(engine)
        return
    under_rls = _under_rls.get(engine)
    if under_rls is None:
        under_rls = _under_rls[engine] = bool(connection().exec_driver_sql(_ROLE_UNDER_RLS).scalar())
    if under_rls:
        raise ConfigurationError(
            f"a scoped Session's engine ({engine.url.render_as_string(hide_password=True)}) is not bound, and its "
            "role is under row level security: every transaction would run with no tenant and see none of a "
            "tenant's rows. Call rls_tenancy.bind_engine() on it (a read replica's engine too)"
        )
