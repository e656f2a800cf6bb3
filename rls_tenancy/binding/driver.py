"""The driver's own connection, bound: for raw cursors (``COPY``), whose statements the binding never sees.

A bound engine binds a transaction at its first statement that goes
through SQLAlchemy, or, where SQLAlchemy began the transaction, before a raw
cursor's statement run first in it (the driver guard). A Connection not yet
begun has no transaction to bind: a raw statement there runs for no tenant.
:func:`driver_connection` begins and binds the transaction, in the round
trip the first statement would have carried it in, and hands out the
psycopg connection, or raises without a tenant in context.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from rls_tenancy.binding.engine import bind_transaction_now, is_bound
from rls_tenancy.context import require_tenant_id
from rls_tenancy.errors import ConfigurationError


def driver_connection(target: Session | Connection) -> psycopg.Connection[Any]:
    """The psycopg connection of ``target``'s transaction, bound to the tenant (and user) in context.

    ``target`` is a Session or a Connection of a bound engine; its
    transaction begins here if it has not. Raw cursors of the result run in
    that transaction, for the tenant in context; commit or roll back through
    ``target`` as usual. Without a tenant in context it raises
    :class:`~rls_tenancy.NoTenantError` rather than hand out a connection on
    which every tenant table reads as empty.
    """
    connection = target.connection() if isinstance(target, Session) else target
    if not isinstance(connection, Connection):
        raise ConfigurationError(f"driver_connection() takes a Session or a Connection, not {type(target).__name__}")
    if not is_bound(connection.engine):
        raise ConfigurationError("driver_connection() needs a bound engine (bind_engine); this one is not")
    require_tenant_id()
    if connection.get_transaction() is None:
        connection.begin()
    bind_transaction_now(connection)
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise ConfigurationError("driver_connection() serves psycopg's synchronous connections")
    return driver
