"""A scoped Session's engine that no binding covers is refused when its work checks out a connection.

Sessions made by a scoped ``sessionmaker`` deal with tenant models. On an
engine :func:`~rls_tenancy.bind_engine` never bound (a read replica's engine
the app made itself, say), a tenant in context still passes the ORM's checks,
while the database sees no tenant: row level security shows the application
role nothing, and the app answers with empty pages. So such an engine's
checkouts ask the server, once, whether its role is under row level
security, and if it is, raise :class:`~rls_tenancy.errors.ConfigurationError`
for as long as it stays unbound. A superuser's or a ``BYPASSRLS`` role's
engine (tests of the ORM filter alone, say) passes. The engines watched are
the sessionmaker's bind and ``binds`` when scoped, and the bind each scoped
Session's first statement for a tenant runs on (a ``configure(bind=...)``
after :func:`~rls_tenancy.scope_sessions`, say).
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from rls_tenancy.binding.engine import is_bound
from rls_tenancy.errors import ConfigurationError

_ROLE_UNDER_RLS = (
    "SELECT NOT (r.rolsuper OR r.rolbypassrls) FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER"
)

#: Engines already given the check: one listener each.
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def watch_unbound(bind: object) -> None:
    """Check ``bind`` (an Engine, an AsyncEngine, a Connection) at its checkouts while it is unbound."""
    engine = getattr(bind, "sync_engine", None) or getattr(bind, "engine", bind)
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql" or engine in _watched:
        return
    _watched.add(engine)
    if is_bound(engine):
        return
    reference = weakref.ref(engine)
    under_rls: list[bool] = []  # the role's answer, asked once

    def check(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        watched = reference()
        if watched is None or is_bound(watched):
            return
        if not under_rls:
            under_rls.append(_role_under_rls(dbapi_connection))
        if under_rls[0]:
            raise ConfigurationError(
                f"a scoped Session's engine ({watched.url.render_as_string(hide_password=True)}) is not bound, and "
                "its role is under row level security: every transaction would run with no tenant and see none of "
                "a tenant's rows. Call rls_tenancy.bind_engine() on it (a read replica's engine too)"
            )

    event.listen(engine, "checkout", check)


def _role_under_rls(dbapi_connection: Any) -> bool:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_ROLE_UNDER_RLS)
        row = cursor.fetchone()
    finally:
        cursor.close()
    dbapi_connection.rollback()
    return bool(row is not None and row[0])
