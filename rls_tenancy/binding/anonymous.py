"""No prepared statements in a signing engine's transactions that act for no user.

Signed, a user is a boundary SQL cannot cross: the session is reset before
it serves another user than its last. Two anonymous transactions of one
tenant are not one user, though, but two clients (a visitor, then a
sign-up), and a reset between every two of them would cost each its reset.
What the first can leave in the session for the second to run is a
statement psycopg prepared, swapped by SQL under the same name
(``DEALLOCATE``, then ``PREPARE``): the second would run it with its own
parameters, a sign-up's grant and password hash among them. So psycopg
neither prepares nor uses a prepared statement while such a transaction
is bound; its names serve again once a transaction acts for a user, after
the reset that drops whatever SQL replaced. Other state SQL can leave
runs nothing of the library's: its statements name schemas and
``pg_catalog``'s types.
"""

from __future__ import annotations

import weakref
from typing import Any

#: The threshold each driver connection had before an anonymous transaction set it aside.
_kept: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def prepare_for(driver: Any, signed: bool, user: int | None) -> None:
    """Set ``driver`` (psycopg's connection) to prepare statements only where the transaction acts for a user."""
    if signed and user is None:
        threshold = driver.prepare_threshold
        if threshold is not None:
            _kept[driver] = threshold
            driver.prepare_threshold = None
    elif _kept:  # nothing set aside anywhere: the usual case costs this test
        threshold = _kept.pop(driver, None)
        if threshold is not None:
            driver.prepare_threshold = threshold
