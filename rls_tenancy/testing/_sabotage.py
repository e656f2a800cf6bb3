"""One layer of isolation broken on purpose, for ``--rls-break``.

A test that claims a layer keeps tenants apart proves it only if it fails
once that layer is gone; the plugin breaks the layer and expects exactly
that. The policies and the signed context's check are broken in the test
database, the binding and the ORM filter in this process.
"""

from __future__ import annotations

from typing import NamedTuple

from psycopg import sql
from psycopg.rows import class_row
from sqlalchemy.engine import URL
from sqlalchemy.orm import ORMExecuteState

from rls_tenancy.binding import engine as binding
from rls_tenancy.binding import settings as _settings
from rls_tenancy.orm import scoping
from rls_tenancy.testing.database import _connect

#: Each layer that can be broken, and the marker of the tests guarding it.
MARKERS = {"policy": "rls_policy", "binding": "rls_binding", "orm": "rls_orm", "signing": "rls_signing"}


class _Policy(NamedTuple):
    name: str
    schema: str
    table: str
    command: str  # pg_policy.polcmd


_POLICIES = """
SELECT p.polname AS name, n.nspname AS schema, c.relname AS "table", p.polcmd AS command
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY n.nspname, c.relname, p.polname
"""
# By pg_policy.polcmd: SELECT and DELETE policies take no WITH CHECK, INSERT ones no USING.
_EVERYTHING = {
    "r": sql.SQL("USING (true)"),
    "d": sql.SQL("USING (true)"),
    "a": sql.SQL("WITH CHECK (true)"),
    "w": sql.SQL("USING (true) WITH CHECK (true)"),
    "*": sql.SQL("USING (true) WITH CHECK (true)"),
}

_SCOPE_STATEMENT = scoping._scope_statement


def open_every_policy(database_url: URL) -> None:
    """Let every row level security policy of the database through, the library's own included.

    Altered rather than dropped: a table left without policies would refuse
    every row, and the tests would fail for the wrong reason.
    """
    with _connect(database_url) as conn, conn.transaction():
        for policy in conn.cursor(row_factory=class_row(_Policy)).execute(_POLICIES).fetchall():
            conn.execute(
                sql.SQL("ALTER POLICY {} ON {} {}").format(
                    sql.Identifier(policy.name),
                    sql.Identifier(policy.schema, policy.table),
                    _EVERYTHING[policy.command],
                )
            )


# The signed context's check taken out: the bound tenant as set, proved or not.
_UNCHECKED = sql.SQL(
    "CREATE OR REPLACE FUNCTION rls_tenancy.verified_tenant() RETURNS bigint"
    " LANGUAGE sql STABLE PARALLEL RESTRICTED"
    " RETURN nullif(pg_catalog.current_setting({}, true), '')::bigint"
).format(sql.Literal(_settings.TENANT))

#: Every write and read a grant covers let through without one.
_UNGRANTED = (
    "CREATE OR REPLACE FUNCTION rls_tenancy.granted(what text) RETURNS boolean LANGUAGE sql STABLE RETURN true;"
    " CREATE OR REPLACE FUNCTION rls_tenancy.grant_valid(given text, what text) RETURNS boolean"
    " LANGUAGE sql STABLE RETURN true;"
    " CREATE OR REPLACE FUNCTION rls_tenancy.user_id_drawn(id bigint) RETURNS boolean LANGUAGE sql RETURN true"
)


def skip_signature_check(database_url: URL) -> None:
    """Make the database take ``app.current_tenant`` without its proof, and writes without their grants."""
    with _connect(database_url) as conn, conn.transaction():
        if conn.execute("SELECT pg_catalog.to_regprocedure('rls_tenancy.verified_tenant()')").fetchone() != (None,):
            conn.execute(_UNCHECKED)
        if conn.execute("SELECT pg_catalog.to_regprocedure('rls_tenancy.granted(text)')").fetchone() != (None,):
            conn.execute(_UNGRANTED)


def break_process(layer: str | None) -> None:
    """Break the binding or the ORM filter in this process; idempotent, and a no-op for the other layers."""
    if layer == "binding":
        binding._bind_session_wide(True)
    elif layer == "orm":
        # Replaced before scope_sessions() listens with it; a listener already installed stays whole.
        scoping._scope_statement = _scope_nothing


def restore_process() -> None:
    """Undo :func:`break_process`."""
    binding._bind_session_wide(False)
    scoping._scope_statement = _SCOPE_STATEMENT


def _scope_nothing(state: ORMExecuteState) -> None:
    """The ORM filter's listener with the filter taken out."""
