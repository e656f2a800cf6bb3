"""No prepared statements in work bound to no tenant, nor, signed, in work that acts for no user.

Signed, a user is a boundary SQL cannot cross: the session is reset before
it serves another user than its last, and before each block (a request)
that acts for no user, since two of those may be two clients (a visitor,
then a sign-up). Work in autocommit is not reset that way (only tenantless work
runs there, the token lookup on a connection of its own among it): a reset
would cost each statement a round trip. What SQL in a transaction for no
user could leave for it to run is a statement psycopg prepared, swapped
under the same name (``DEALLOCATE``, then ``PREPARE``), which would run with
the next one's parameters. So psycopg neither prepares nor uses a prepared
statement while work for no user is bound; its names serve again once a
transaction acts for a user, after the reset that drops whatever SQL
replaced. The rest SQL can leave in the session runs nothing of the
library's: its statements name schemas and ``pg_catalog``'s types.

Unsigned, work bound to no tenant is no client of any tenant's either
(a visitor's request, the token lookup): SQL in one request without a
tenant could swap the lookup's prepared statement for one that answered
every later lookup on that connection with an identity of its choosing, a
made-up token acting as another tenant's administrator. So nothing bound
to no tenant prepares, signed or not.
"""

from __future__ import annotations

import weakref
from typing import Any

#: The threshold each driver connection had before an anonymous transaction set it aside.
_kept: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def prepare_for(driver: Any, signed: bool, tenant: int | None, user: int | None) -> None:
    """Set ``driver`` (psycopg's connection) to prepare statements only for a tenant (signed: and a user)."""
    if tenant is None or (signed and user is None):
        threshold = driver.prepare_threshold
        if threshold is not None:
            _kept[driver] = threshold
            driver.prepare_threshold = None
    elif _kept:  # nothing set aside anywhere: the usual case costs this test
        threshold = _kept.pop(driver, None)
        if threshold is not None:
            driver.prepare_threshold = threshold
