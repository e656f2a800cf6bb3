"""A user's row read beside the credential that names them, made a Session's user without a statement.

The request's token lookup and the session cookie's check run first in its
transaction, in the round trip that begins it; they read the user's row
too (``rls_tenancy.authenticate_token_user()``, the cookie's own ``SELECT``),
so the request's first :func:`~rls_tenancy.flask.get_current_user` costs
no statement: the row becomes the request Session's ``User``, as a load by
primary key would have made it, no validator run on what was stored, the
password hash left unloaded. Values are loaded by psycopg's adapters and
SQLAlchemy's result processors, the ones a query of the same columns uses.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.adapt import Transformer
from psycopg.pq.abc import PGresult
from sqlalchemy import Connection, inspect
from sqlalchemy.engine import Dialect, RootTransaction
from sqlalchemy.orm import ColumnProperty, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from rls_tenancy.binding.engine import statements_run
from rls_tenancy.identity.users import User

#: The columns a load of a ``User`` reads (its deferred password hash is not one), in mapper order.
COLUMNS: tuple[str, ...] = tuple(
    prop.key for prop in inspect(User).column_attrs if isinstance(prop, ColumnProperty) and not prop.deferred
)


def select_list(alias: str) -> bytes:
    """``alias.id, alias.email, ...``: :data:`COLUMNS` for a statement's select list."""
    columns = (User.__table__.c[key].name for key in COLUMNS)
    return sql.SQL(", ").join(sql.Identifier(alias, name) for name in columns).as_bytes(None)


@dataclass(frozen=True)
class UserRow:
    """A user's :data:`COLUMNS`, in order, loaded as a query's would be, and where they were read."""

    values: tuple[Any, ...]
    #: The transaction the row was read in, and its driver connection with the statements it had run.
    transaction: weakref.ref[RootTransaction] | None = field(default=None, compare=False, repr=False)
    driver: weakref.ref[Any] | None = field(default=None, compare=False, repr=False)
    statements: int | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> int:
        user_id: int = self.values[0]
        return user_id

    def current(self) -> bool:
        """Whether a load would read the same: its transaction is open and has run no statement since.

        A flush, a Core ``UPDATE`` or a ``DELETE`` of the user, raw SQL: any
        statement, or the transaction's end, and the user is loaded instead.
        Changes other transactions commit meanwhile are not seen, as from a
        snapshot taken at the check (the first statement of the transaction).
        """
        transaction = None if self.transaction is None else self.transaction()
        driver = None if self.driver is None else self.driver()
        return (
            transaction is not None
            and transaction.is_active
            and driver is not None
            and self.statements is not None
            and statements_run(driver) == self.statements
        )


def read(result: PGresult, first: int, connection: Connection) -> UserRow | None:
    """The user in ``result``'s first row, from column ``first`` on; None where its id is NULL (no user).

    ``result`` is the first statement's of ``connection``'s open transaction,
    read below its cursors (the round trip that began it).
    """
    if result.ntuples == 0 or result.get_value(0, first) is None:
        return None
    driver = connection.connection.driver_connection
    transformer = Transformer(driver)
    transformer.set_pgresult(result)
    loaded = transformer.load_row(0, tuple)
    assert loaded is not None
    processors = _processors(connection.dialect)
    values = loaded[first : first + len(COLUMNS)]
    transaction = connection.get_transaction()
    return UserRow(
        tuple(v if process is None else process(v) for process, v in zip(processors, values, strict=True)),
        transaction=None if transaction is None else weakref.ref(transaction),
        driver=weakref.ref(driver),
        statements=statements_run(driver),
    )


@functools.cache  # per dialect (one per engine): the types' processors never change
def _processors(dialect: Dialect) -> Sequence[Callable[[Any], Any] | None]:
    types = (User.__table__.c[key].type for key in COLUMNS)
    return tuple(kind.dialect_impl(dialect).result_processor(dialect, None) for kind in types)


def adopt(session: Session, row: UserRow) -> User | None:
    """The ``User`` of ``row`` in ``session``: the one it holds already, else made from the row, clean.

    As a load would: values set without events (no validator runs on what
    was stored), no history; merged without a load (``load=False``, the ORM's
    way to take in an object from a cache), so what the row lacks (the
    deferred hash, the tenant) loads as it would on a loaded user. None
    where the row is no longer what a load would read (:meth:`UserRow.current`):
    the caller loads the user.
    """
    held = session.identity_map.get(session.identity_key(User, row.id))
    if isinstance(held, User):
        return held
    if not row.current():
        return None
    user: User = inspect(User).class_manager.new_instance()
    for key, value in zip(COLUMNS, row.values, strict=True):
        set_committed_value(user, key, value)
    make_transient_to_detached(user)
    return session.merge(user, load=False)
