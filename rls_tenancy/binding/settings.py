"""The names of the settings a transaction is bound with, said once.

The policies and functions in ``sql/`` read these names; every statement
the library sends that sets or reads them is composed here from the names,
so a name is never spelled twice in Python.
"""

from __future__ import annotations

from psycopg import sql

#: The tenant the policies act for (``rls_tenancy.current_tenant_id()``).
TENANT = "app.current_tenant"
#: The acting user the audit log and the user functions read (``rls_tenancy.current_user_id()``).
USER = "app.current_user_id"
#: The proof beside both, where the database requires a signed context (:mod:`rls_tenancy.binding.context_key`).
PROOF = "app.context_proof"
#: What tells a transaction apart from every other one of the server's: its start, to the microsecond,
#: and its backend. Neither can SQL change; a signed binding reads it back, and a grant is made for it
#: (``rls_tenancy.grant_valid()`` computes the same). Every name qualified, its text no setting's.
TRANSACTION_MARK = (
    "pg_catalog.concat_ws(':', pg_catalog.encode(pg_catalog.timestamptz_send(pg_catalog.now()), 'hex'),"
    " pg_catalog.pg_backend_pid())"
)


def set_configs(names: tuple[str, ...], placeholders: tuple[str, ...], *, local: bool = True) -> str:
    """``SELECT set_config(name, <placeholder>, true), ...``: each name bound transaction-locally.

    ``local=False`` binds for the rest of the session: only the sabotage of
    the binding layer (:mod:`rls_tenancy.testing`) asks for that.
    """
    scope = sql.SQL("true" if local else "false")
    calls = sql.SQL(", ").join(
        sql.SQL("pg_catalog.set_config({}, {}, {})").format(sql.Literal(name), sql.SQL(placeholder), scope)
        for name, placeholder in zip(names, placeholders, strict=True)
    )
    return sql.SQL("SELECT {}").format(calls).as_string(None)


def set_locals(names: tuple[str, ...], values: tuple[str, ...], *, local: bool = True) -> tuple[bytes, ...]:
    """``SET LOCAL name = 'value'``, one statement per name: the spelling Citus propagates to its workers.

    Citus forwards ``SET LOCAL`` statements, never a ``set_config()`` call.
    ``SET`` takes no bound parameters, so each value is a quoted literal.
    ``local=False`` spells ``SET``, for the rest of the session: only the
    sabotage of the binding layer (:mod:`rls_tenancy.testing`) asks for that.
    """
    verb = sql.SQL("SET LOCAL" if local else "SET")
    return tuple(
        sql.SQL("{} {} = {}").format(verb, sql.Identifier(*name.split(".")), sql.Literal(value)).as_bytes(None)
        for name, value in zip(names, values, strict=True)
    )


def current_setting(name: str) -> str:
    """``pg_catalog.current_setting(name, true)``: the setting, or NULL where it was never set."""
    return sql.SQL("pg_catalog.current_setting({}, true)").format(sql.Literal(name)).as_string(None)
