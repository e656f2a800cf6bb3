"""Login-role checks run on each new pooled connection.

Row level security is silently inert for superusers, BYPASSRLS roles and
table owners that can switch it off; these checks turn that misconfiguration
into :class:`~rls_tenancy.InsecureRoleError` on first use instead of a leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from rls_tenancy.errors import InsecureRoleError

# Roles the application login role can become that escape RLS, and RLS tables it controls.
_APP_ESCAPES = """
SELECT current_user || ' is or can become ' || r.rolname
       || CASE WHEN r.rolsuper THEN ' (superuser)' ELSE ' (BYPASSRLS)' END
  FROM pg_catalog.pg_roles r
 WHERE (r.rolsuper OR r.rolbypassrls)
   AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')
UNION ALL
SELECT current_user || ' owns (or is a member of the owner of) '
       || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relrowsecurity
   AND pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER')
"""

_BYPASS_UNFIT = """
SELECT current_user || CASE WHEN rolsuper THEN ' is a superuser' ELSE ' lacks BYPASSRLS' END
  FROM pg_catalog.pg_roles
 WHERE rolname = current_user AND (rolsuper OR NOT rolbypassrls)
"""


def verify_app_role(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    problems = _query_column(dbapi_connection, _APP_ESCAPES)
    if problems:
        dbapi_connection.close()  # useless, and the pool would not close it
        raise InsecureRoleError(
            "the application engine's login role escapes row level security: "
            + "; ".join(problems)
            + ". Connect as the application role (rls_app by default)."
        )


def _query_column(dbapi_connection: DBAPIConnection, query: str) -> list[Any]:
    """First column of ``query``'s rows, leaving no transaction open."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(query)
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()
        dbapi_connection.rollback()


def verify_bypass_role(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    problems = _query_column(dbapi_connection, _BYPASS_UNFIT)
    if problems:
        dbapi_connection.close()
        raise InsecureRoleError(
            f"the bypass engine's login role is not fit for it: {problems[0]}. "
            "Connect as the bypass role (rls_admin by default): BYPASSRLS, not superuser."
        )
