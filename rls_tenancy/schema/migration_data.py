"""Data migrations under ``FORCE ROW LEVEL SECURITY``: per tenant, through the bypass role, or warned about.

Tenant tables force row level security on their owner too, so a data
migration running as the owner with no tenant bound sees no rows and changes
none, silently. In a migration, say which it should be::

    from rls_tenancy.schema.migration_data import as_bypass_role, each_tenant

    def upgrade():
        for tenant_id in each_tenant():          # as the owner role, one tenant bound at a time
            op.execute("UPDATE projects SET status = 'active' WHERE status IS NULL")
        with as_bypass_role():                   # every tenant at once
            op.execute("UPDATE projects SET name = btrim(name)")

and let :func:`watch_untenanted_writes` (called in ``env.py``) warn about an
``INSERT``, ``UPDATE``, ``DELETE`` or ``MERGE`` that changed no row while no
tenant was bound and row level security applied: the usual sign of the trap.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import op
from psycopg import sql
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.binding import settings as _settings

_CURRENT = text(
    sql.SQL(
        "SELECT pg_catalog.current_setting('role') AS role,"
        " pg_catalog.current_setting({tenant}, true) AS tenant,"
        " pg_catalog.current_setting({proof}, true) AS proof,"
        " pg_catalog.to_regprocedure('rls_tenancy.sign_context()') IS NOT NULL AS signable"
    )
    .format(tenant=sql.Literal(_settings.TENANT), proof=sql.Literal(_settings.PROOF))
    .as_string(None)
)
_CURRENT_TENANT = "SELECT " + _settings.current_setting(_settings.TENANT)
_SET_ROLE = text("SELECT pg_catalog.set_config('role', :role, true)")
_SET_TENANT = text(_settings.set_configs((_settings.TENANT,), (":tenant",)))
# As the owner, which holds the key: a database requiring a signed context takes the tenant with its proof.
_SIGN = text("SELECT rls_tenancy.sign_context()")
_SET_PROOF = text(_settings.set_configs((_settings.PROOF,), (":proof",)))
_ROLE = text("SELECT rls_tenancy.role_name(:purpose)")
# A write, also at the end of a WITH: "WITH moved AS (...) UPDATE ...".
_WRITE = re.compile(r"\s*(?:--[^\n]*\n\s*)*(?:with\b.*?)?\b(insert|update|delete|merge)\b", re.IGNORECASE | re.DOTALL)
_RLS_APPLIES = text(
    "SELECT NOT (r.rolsuper OR r.rolbypassrls) FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
)


class UntenantedWriteWarning(UserWarning):
    """A migration's write changed nothing while no tenant was bound under row level security."""


def each_tenant(bind: Connection | None = None) -> Iterator[int]:
    """Yield every tenant id with that tenant bound, acting as the owner role (so RLS applies).

    Whatever role the migration logs in as (a superuser too), statements
    inside the loop see and change exactly the yielded tenant's rows. The
    previous role and tenant are restored when the loop ends.
    """
    connection = bind if bind is not None else op.get_bind()
    owner = connection.execute(_ROLE, {"purpose": "owner"}).scalar_one()
    before = connection.execute(_CURRENT).one()
    tenant_ids = list(connection.execute(text("SELECT id FROM rls_tenancy.tenants ORDER BY id")).scalars())
    try:
        connection.execute(_SET_ROLE, {"role": owner})
        for tenant_id in tenant_ids:
            connection.execute(_SET_TENANT, {"tenant": str(tenant_id)})
            if before.signable:
                connection.execute(_SIGN)
            yield int(tenant_id)
    finally:
        _restore(connection, before)


@contextmanager
def as_bypass_role(bind: Connection | None = None) -> Iterator[None]:
    """Run the block as the bypass role (``BYPASSRLS``): every tenant's rows at once.

    The migration's login role must be allowed to ``SET ROLE`` to it (a
    superuser is; otherwise ``GRANT rls_admin TO <migrator>``).
    """
    connection = bind if bind is not None else op.get_bind()
    bypass = connection.execute(_ROLE, {"purpose": "bypass"}).scalar_one()
    before = connection.execute(_CURRENT).one()
    connection.execute(_SET_ROLE, {"role": bypass})
    try:
        yield
    finally:
        _restore(connection, before)


def _restore(connection: Connection, before: Any) -> None:
    # Both settings are transaction-local: after a failed statement the
    # transaction is rolled back anyway, and takes them with it.
    transaction = connection.get_transaction()
    if transaction is None or not transaction.is_active:
        return
    try:
        connection.execute(_SET_TENANT, {"tenant": before.tenant or ""})
        connection.execute(_SET_PROOF, {"proof": before.proof or ""})
        connection.execute(_SET_ROLE, {"role": before.role})
    except DBAPIError:
        pass  # the transaction has failed; its rollback restores both


def watch_untenanted_writes(connection: Connection) -> None:
    """Warn (:class:`UntenantedWriteWarning`) about writes that silently changed nothing.

    Call it on the migration connection in ``env.py``. Checks only writes
    that report zero rows, so a normal migration pays nothing.
    """
    if not event.contains(connection, "after_cursor_execute", _check_write):
        event.listen(connection, "after_cursor_execute", _check_write)


def _check_write(
    connection: Connection, cursor: Any, statement: str, _parameters: Any, _context: Any, _executemany: bool
) -> None:
    if getattr(cursor, "rowcount", -1) != 0 or not _WRITE.match(statement):
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    check = raw.cursor()
    try:
        check.execute(_RLS_APPLIES.text)
        applies = check.fetchone()
        check.execute(_CURRENT_TENANT)
        tenant = check.fetchone()
    finally:
        check.close()
    if applies and applies[0] and not (tenant and tenant[0]):
        warnings.warn(
            "this write changed no row while no tenant was bound; under FORCE ROW LEVEL SECURITY a "
            "migration sees no tenant's rows. Use rls_tenancy.schema.migration_data.each_tenant() or "
            f"as_bypass_role(): {statement.strip()[:120]}",
            UntenantedWriteWarning,
            stacklevel=2,
        )
