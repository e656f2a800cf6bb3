"""Bad event input is refused by the database (``log_event`` and the INSERT trigger), and before it by Python.

The refusals are the limits and no more: the largest valid values go in whole, in SQL and in Python alike.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, TextClause, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import UsageError, as_tenant
from rls_tenancy.audit.events import log_event, log_security_event
from rls_tenancy.testing import TenancyDatabase
from tests.audit.support import LOG_EVENT, VALID, last_event_id, refused_with, rolled_back_connection, written_since
from tests.conftest import World

# --- bad input is refused by the database, and before it by Python -----------------------------------------------

SQL_BAD_INPUT: dict[str, dict[str, object]] = {
    "action-empty": {"action": ""},
    "action-null": {"action": None},
    "action-upper-case": {"action": "Auth.Login"},
    "action-65-chars": {"action": "a" * 65},
    "action-with-space": {"action": "auth login"},
    "action-starts-with-digit": {"action": "1auth"},
    "message-4001-chars": {"message": "m" * 4001},
    "data-array": {"data": "[1, 2]"},
    "data-string": {"data": '"text"'},
    "data-16385-bytes": {"data": json.dumps({"k": "x" * 16376})},
    "ip-network": {"ip": "10.0.0.0/8"},
    "ip6-network": {"ip": "2001:db8::/32"},
    "request-id-with-space": {"request_id": "req 1"},
    "request-id-129-chars": {"request_id": "r" * 129},
    "request-id-empty": {"request_id": ""},
    "request-id-non-ascii": {"request_id": "réq-1"},
}


@pytest.mark.parametrize("case", sorted(SQL_BAD_INPUT))
def test_log_event_refuses_bad_input_in_sql(app_engine: Engine, bypass_engine: Engine, world: World, case: str) -> None:
    last = last_event_id(bypass_engine)
    with as_tenant(world.a), app_engine.begin() as conn:
        with pytest.raises(DBAPIError) as caught, conn.begin_nested():
            conn.execute(LOG_EVENT, {**VALID, **SQL_BAD_INPUT[case]})
        message = refused_with(caught, "22023")
        assert message.startswith("rls_tenancy: ")
    assert written_since(bypass_engine, last) == 0


@pytest.mark.parametrize("case", sorted(SQL_BAD_INPUT))
def test_owner_insert_is_checked_like_log_event(
    superuser_engine: Engine, db: TenancyDatabase, world: World, case: str
) -> None:
    """The INSERT trigger does the checking, so a direct INSERT by the owner meets it too."""
    values = {**VALID, "data": "{}", **SQL_BAD_INPUT[case], "t": world.a}
    with rolled_back_connection(superuser_engine, db.roles.owner) as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(
            text(
                "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, message, data, ip, request_id) "
                "VALUES (:t, session_user, :action, :message, CAST(:data AS jsonb), CAST(:ip AS inet), :request_id)"
            ),
            values,
        )
    assert refused_with(caught, "22023").startswith("rls_tenancy: ")


def test_log_event_accepts_input_at_the_limits(app_engine: Engine, world: World) -> None:
    """The refusals above are the limits, not more: the largest valid values go in whole."""
    at_limits = {
        "action": "a" + "z0_.:-" * 10 + "abc",
        "message": "é" * 4000,  # characters, not bytes
        "data": json.dumps({"k": "x" * 16375}),  # 16384 bytes as jsonb text
        "ip": "2001:db8::1",
        "request_id": "~" * 128,
    }
    assert len(at_limits["action"]) == 64
    with as_tenant(world.a), app_engine.connect() as conn:
        event_id = conn.execute(LOG_EVENT, at_limits).scalar_one()
        stored = conn.execute(
            text(
                "SELECT action, message, octet_length(data::text) AS data_bytes, host(ip) AS ip, request_id "
                "FROM rls_tenancy.audit_log WHERE id = :id"
            ),
            {"id": event_id},
        ).one()
        conn.rollback()
    assert (stored.action, stored.message, stored.data_bytes, stored.ip, stored.request_id) == (
        at_limits["action"],
        at_limits["message"],
        16384,
        at_limits["ip"],
        at_limits["request_id"],
    )


def _nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"k": 1}
    for _ in range(depth):
        data = {"k": data}
    return data


PYTHON_BAD_INPUT: dict[str, dict[str, Any]] = {
    "action-empty": {"action": ""},
    "action-none": {"action": None},
    "action-upper-case": {"action": "Auth.Login"},
    "action-65-chars": {"action": "a" * 65},
    "action-with-space": {"action": "auth login"},
    "action-trailing-newline": {"action": "auth.login\n"},
    "message-4001-chars": {"message": "m" * 4001},
    "message-nul": {"message": "a\x00b"},
    "message-surrogate": {"message": "\ud800"},
    "message-not-text": {"message": 42},
    "data-list": {"data": [1, 2]},
    "data-not-json": {"data": {"k": object()}},
    "data-a-set": {"data": {"k": {1, 2}}},  # no order to write it in
    "data-nan": {"data": {"k": float("nan")}},
    "data-nul": {"data": {"k": "a\x00b"}},
    "data-16385-bytes": {"data": {"k": "x" * 16376}},
    "data-nested-2000-deep": {"data": _nested(2000)},  # Python's encoder raises RecursionError
    "ip-network": {"ip": "10.0.0.0/8"},
    "ip-garbage": {"ip": "not-an-address"},
    "request-id-with-space": {"request_id": "req 1"},
    "request-id-129-chars": {"request_id": "r" * 129},
    "request-id-empty": {"request_id": ""},
}


@pytest.mark.parametrize("case", sorted(PYTHON_BAD_INPUT))
def test_python_log_event_refuses_bad_input_before_the_database(app_engine: Engine, world: World, case: str) -> None:
    arguments = {"action": "test.valid", **PYTHON_BAD_INPUT[case]}
    action = arguments.pop("action")
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises(UsageError):
            log_event(conn, action, **arguments)
        # Any statement would have begun a transaction: none was sent.
        assert not conn.in_transaction()


def test_log_security_event_refuses_data_nested_too_deeply(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), pytest.raises(UsageError, match="nested too deeply"):
        log_security_event(app_engine, "test.deep", data=_nested(2000))


_DATA = text("SELECT data FROM rls_tenancy.audit_log WHERE id = :id")
_DATA_SIZE = text("SELECT octet_length(data::text) FROM rls_tenancy.audit_log WHERE id = :id")


def _stored_data(engine: Engine, world: World, data: dict[str, Any], query: TextClause = _DATA) -> object:
    """``data`` logged for tenant a, as ``query`` reads the event stored (rolled back after)."""
    with as_tenant(world.a), engine.connect() as conn:
        event_id = log_event(conn, "test.data", data=data)
        stored = conn.execute(query, {"id": event_id}).scalar_one()
        conn.rollback()
    return stored


def test_times_ids_and_decimals_in_data_are_written_as_text(app_engine: Engine, world: World) -> None:
    """What an app's data commonly holds beside JSON's types: written as text, not refused as the client's fault."""
    data = {
        "at": datetime(2026, 12, 7, 17, 30, tzinfo=UTC),
        "on": date(2026, 12, 7),
        "order": UUID("12345678-1234-5678-1234-567812345678"),
        "amount": Decimal("10.50"),
    }
    assert _stored_data(app_engine, world, data) == {
        "at": "2026-12-07T17:30:00+00:00",
        "on": "2026-12-07",
        "order": "12345678-1234-5678-1234-567812345678",
        "amount": "10.50",
    }


def test_text_spelling_a_nul_escape_is_no_nul(app_engine: Engine, world: World) -> None:
    """The six characters backslash-u-0-0-0-0 are text like any other: a client's data must not fail the write."""
    data = {"k": "\\u0000", "nested": ["a\\\\u0000"]}
    assert _stored_data(app_engine, world, data) == data


def test_python_and_sql_agree_on_the_data_size_limit(app_engine: Engine, world: World) -> None:
    assert _stored_data(app_engine, world, {"k": "x" * 16375}, _DATA_SIZE) == 16384
