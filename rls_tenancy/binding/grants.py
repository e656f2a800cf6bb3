"""Grants: the application's consent, signed with the context key, to a write SQL alone may not make.

In a database that requires a signed context, a user's email, roles and
password hash, and every API token, are written only beside a grant in
``app.grants`` that names the write and each value it writes
(``rls_tenancy.granted()``, sql/016_signed_context.sql), for the user the
transaction acts for, in that transaction only, used up by the write it
grants. A grant is made for its transaction's mark (its start and backend,
which SQL cannot change): a copy SQL makes of a pending grant is worth
nothing in any later transaction, whether or not the write it names was
made. The bound tenant and user prove who the transaction acts for; a grant
proves that the application, not SQL run for that user, chose to make them
an administrator or set their password. Without a key (unsigned), nothing
is added: the database asks for no grant then.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Text, bindparam, text

from rls_tenancy.binding.engine import transaction_mark
from rls_tenancy.binding.signing import key_of
from rls_tenancy.context import acting

SETTING = "app.grants"
# pg_catalog.text: a temporary domain "text" would see every grant added (rls_tenancy.identity._types).
_ADD = text(
    "SELECT pg_catalog.set_config('app.grants', pg_catalog.concat_ws(',',"
    " NULLIF(pg_catalog.current_setting('app.grants', true), ''), CAST(:grant AS pg_catalog.text)), true)"
).bindparams(bindparam("grant", type_=Text))


def field(value: str | None) -> str:
    """One value of what is granted, as ``rls_tenancy.grant_field()`` writes it: its length, then itself."""
    return "-" if value is None else f"{len(value)}:{value}"


def names(values: Iterable[str]) -> str:
    """Roles or scopes as ``array_to_string(values, ',', '*')`` writes them (valid names hold no ',' or '*')."""
    return ",".join(values)


def make(connection: Connection, what: str) -> str | None:
    """A grant of ``what`` for this connection's transaction, to pass to a function; None without a key."""
    key = key_of(connection.dialect)
    return None if key is None else key.grant(what, user=acting()[1], transaction=transaction_mark(connection))


def add(connection: Connection, *whats: str) -> bool:
    """Add a grant of each of ``whats`` to this transaction, in one statement; False (nothing sent) without a key."""
    made = [make(connection, what) for what in whats]
    if not made or None in made:
        return False
    connection.execute(_ADD, {"grant": ",".join(str(grant) for grant in made)})
    return True
