"""Login-role checks run on each new pooled connection.

Row level security is silently inert for superusers, BYPASSRLS roles and
table owners that can switch it off, and is read around by REPLICATION
(logical decoding) and the predefined roles that reach every table and
sequence or the server's files; these checks turn that misconfiguration into
:class:`~rls_tenancy.InsecureRoleError` on first use instead of a leak.
So is a default for the tenant setting (``ALTER ROLE rls_app SET
app.current_tenant``, which only a superuser may set): every session
would start acting for that tenant, and a reset only returns to it. So is a
default that silently changes values, which SQL run as the app role may
set on its own role (``ALTER ROLE CURRENT_USER SET extra_float_digits =
-15``): every session would round every float it reads, for every tenant;
``array_nulls = off`` stores a NULL in an array as the text ``'NULL'``;
``gin_fuzzy_search_limit`` drops rows from queries through GIN indexes;
``standard_conforming_strings = off`` and ``transform_null_equals = on``
change what SQL text means (``'C:\\temp'``, ``= NULL``).
The reset refuses them too (``rls_tenancy.reset_session()``): behind a
pooler, a new server session starts with one unseen by this check. The
other settings that change how values read back (``DateStyle``,
``IntervalStyle``, ``client_encoding``) make psycopg fail loudly instead;
what they, and ``TimeZone``, change in how text the app sends is read (a
date written ``03/04/2025``, ``now()::timestamp``) is left, as a DBA may set
them on purpose (docs/threat-model.md).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from rls_tenancy.binding import settings as _settings
from rls_tenancy.errors import InsecureRoleError

# Ways the application's roles could escape RLS: both the login role
# (session_user, which can always RESET ROLE back to itself) and the current
# role are checked, with every role they can become.
_APP_ESCAPES = """
WITH who (name) AS (SELECT DISTINCT u FROM (VALUES (current_user), (session_user)) v (u))
SELECT who.name || ' is or can become ' || r.rolname || CASE
         WHEN r.rolsuper THEN ' (superuser)'
         WHEN r.rolbypassrls THEN ' (BYPASSRLS)'
         WHEN r.rolcreaterole THEN ' (CREATEROLE: can grant itself any role)'
         WHEN r.rolreplication THEN ' (REPLICATION: logical decoding reads every tenant''s changes)'
         ELSE ' (reads or writes around row level security: every table and sequence, or the server''s files)' END
  FROM who JOIN pg_catalog.pg_roles r
    ON (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolreplication
        OR r.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files', 'pg_write_server_files',
                         'pg_execute_server_program'))
   AND pg_catalog.pg_has_role(who.name, r.oid, 'MEMBER')
UNION ALL
SELECT who.name || ' owns (or is a member of the owner of) '
       || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
  FROM who, pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relrowsecurity
   AND pg_catalog.pg_has_role(who.name, c.relowner, 'MEMBER')
UNION ALL
SELECT who.name || ' has ' || p.privilege || ' on '
       || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
       || CASE p.privilege WHEN 'TRUNCATE' THEN ' (TRUNCATE ignores row level security)'
                           ELSE ' (a way around row level security)' END
  FROM who, pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
       (VALUES ('TRUNCATE'), ('REFERENCES'), ('TRIGGER')) p (privilege)
 WHERE c.relrowsecurity
   AND pg_catalog.has_table_privilege(who.name, c.oid, p.privilege)
UNION ALL
SELECT 'sessions of ' || session_user || ' start with ' || setting || ' (a default set by ALTER '
       || CASE WHEN s.setrole = 0 THEN 'DATABASE' ELSE 'ROLE' END
       || ' ... SET: work outside a bound transaction would act for it; RESET it)'
  FROM pg_catalog.pg_db_role_setting s, LATERAL pg_catalog.unnest(s.setconfig) AS setting
 WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
   AND s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user))
   AND pg_catalog.split_part(setting, '=', 1) IN ({tenant}, {user})
UNION ALL
SELECT 'sessions of ' || session_user || ' start with ' || s.name || ' = ' || pg_catalog.current_setting(s.name)
       || ' (a default set by ALTER ROLE or ALTER DATABASE ... SET, which the app role may run on itself: '
       || s.does || ', silently, for every tenant; RESET it)'
  FROM (VALUES ('extra_float_digits', 'every float read back is rounded',
                pg_catalog.current_setting('extra_float_digits')::pg_catalog.int4 < 1),
               ('array_nulls', 'a NULL in an array written is stored as the text ''NULL''',
                NOT pg_catalog.current_setting('array_nulls')::pg_catalog.bool),
               ('gin_fuzzy_search_limit', 'a query through a GIN index returns only some of its rows',
                pg_catalog.current_setting('gin_fuzzy_search_limit')::pg_catalog.int4 <> 0),
               ('standard_conforming_strings', 'a backslash in a string literal of SQL text escapes',
                NOT pg_catalog.current_setting('standard_conforming_strings')::pg_catalog.bool),
               ('transform_null_equals', 'an = NULL in SQL text matches NULLs',
                pg_catalog.current_setting('transform_null_equals')::pg_catalog.bool)
       ) AS s (name, does, unsafe)
 WHERE s.unsafe
"""
_APP_ESCAPES = (
    sql.SQL(_APP_ESCAPES).format(tenant=sql.Literal(_settings.TENANT), user=sql.Literal(_settings.USER)).as_string(None)
)

_BYPASS_UNFIT = """
SELECT current_user || CASE WHEN rolsuper THEN ' is a superuser' ELSE ' lacks BYPASSRLS' END
  FROM pg_catalog.pg_roles
 WHERE rolname = current_user AND (rolsuper OR NOT rolbypassrls)
"""


def verify_app_role(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    problems = _query_column(dbapi_connection, _APP_ESCAPES)
    if problems:
        dbapi_connection.close()  # useless, and the pool would not close it
        # What to do first: the reasons can run long (a superuser's name every table it owns).
        raise InsecureRoleError(
            "a bound engine's login role (the app's, or its read engine's) escapes row level security; connect "
            "as the application "
            "role (rls_app by default), not a superuser or the tables' owner. Why: " + "; ".join(problems) + "."
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
