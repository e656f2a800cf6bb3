"""Which tables hold tenants' rows, and which statements name one.

A statement on such a table, run with no tenant in context, would get no
rows from row level security: the ORM filter and the binding raise
:class:`~rls_tenancy.NoTenantError` for it instead, so a missing tenant is
never a silent empty result.
"""

from __future__ import annotations

import weakref
from typing import Any, cast

from sqlalchemy import Table, exc
from sqlalchemy.sql import visitors
from sqlalchemy.sql.visitors import ExternallyTraversible

_TENANTS_ID = "rls_tenancy.tenants.id"

#: Per compiled statement (SQLAlchemy caches and reuses them): whether it names a tenant table.
_named: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def is_tenant_table(table: Table) -> bool:
    """Whether ``table`` has a ``tenant_id`` referencing ``rls_tenancy.tenants``, or a tenant table's ``tenant_id``.

    The second is an association table's: its keys into two tenant tables
    are composite, ``(tenant_id, project_id)``, so its ``tenant_id`` reaches
    the tenants through them. Compares names for the tenants themselves, so
    a string foreign key to a table in no ``MetaData`` of the app's counts.
    """
    return _keyed_to_tenants(table, set())


def _keyed_to_tenants(table: Table, seen: set[Table]) -> bool:
    column = table.c.get("tenant_id")
    if column is None:
        return False
    keys = column.foreign_keys
    if any(fk.target_fullname == _TENANTS_ID for fk in keys):
        return True
    seen.add(table)
    for fk in keys:
        if not fk.target_fullname.endswith(".tenant_id"):
            continue
        try:
            target = fk.column.table
        except exc.NoReferenceError:  # its table is in no MetaData this one can see
            continue
        if isinstance(target, Table) and target not in seen and _keyed_to_tenants(target, seen):
            return True
    return False


def mentions_tenant_table(statement: object) -> bool:
    """Whether ``statement`` (a select, insert, update, delete, union...) names a tenant table anywhere.

    Only tables whose ``tenant_id`` is ``NOT NULL``: in one where it may be
    ``NULL`` (rows every tenant shares, as in ``feature_overrides``), a
    statement without a tenant may find rows its policies show to all.
    """
    return any(
        isinstance(element, Table) and is_tenant_table(element) and not element.c.tenant_id.nullable
        for element in visitors.iterate(cast(ExternallyTraversible, statement))
    )


def compiled_mentions_tenant_table(compiled: Any) -> bool:
    """:func:`mentions_tenant_table` for a compiled statement, walked once per compiled object."""
    named = _named.get(compiled)
    if named is None:
        named = _named[compiled] = mentions_tenant_table(compiled.statement)
    return named
