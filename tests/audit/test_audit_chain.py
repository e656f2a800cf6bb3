"""The hash chain as PostgreSQL builds it: sealed at commit in commit order, gapless under concurrent writers.

Its hash encoding is pinned by test vectors, and the Python verifier computes the same hashes the database stores.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import as_tenant
from rls_tenancy.audit.chain import ChainStatus, event_hash, postgres_host, verify_chain, verify_chains
from rls_tenancy.audit.events import log_event
from rls_tenancy.testing import TenancyDatabase
from tests.audit.support import EVENT, People, add_tenant, first_break, read_chain
from tests.conftest import World, run_in_threads

# --- concurrent writers: every chain gapless and intact ----------------------------------------------------------

THREADS = 8
TRANSACTIONS_PER_THREAD = 25


def test_concurrent_writers_leave_gapless_intact_chains(
    app_engine: Engine, bypass_engine: Engine, db: TenancyDatabase
) -> None:
    tenants = [add_tenant(bypass_engine) for _ in range(3)]
    committed: dict[int, list[int]] = {tenant: [] for tenant in tenants}
    rolled_back: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def write(thread: int) -> None:
        try:
            for n in range(TRANSACTIONS_PER_THREAD):
                tenant = tenants[(thread + n) % len(tenants)]
                with as_tenant(tenant), app_engine.connect() as conn:
                    transaction = conn.begin()
                    ids = [log_event(conn, "test.concurrent", f"thread {thread} transaction {n}")]
                    if n % 7 == 0:  # now and then two events in one transaction
                        ids.append(log_event(conn, "test.concurrent", f"thread {thread} transaction {n}, second"))
                    if (thread + n) % 5 == 0:
                        transaction.rollback()
                        with lock:
                            rolled_back.extend(ids)
                    else:
                        transaction.commit()
                        with lock:
                            committed[tenant].extend(ids)
        except Exception as error:  # reported below, not swallowed
            with lock:
                errors.append(error)

    run_in_threads(write, [(thread,) for thread in range(THREADS)])
    assert errors == []
    assert rolled_back and all(committed.values())

    with bypass_engine.connect() as conn:
        statuses = {status.tenant_id: status for status in verify_chains(conn)}
        present = conn.execute(
            text("SELECT count(*) FROM rls_tenancy.audit_log WHERE id = ANY(:ids)"), {"ids": rolled_back}
        ).scalar_one()
    assert present == 0
    for tenant in tenants:
        rows = read_chain(bypass_engine, tenant)
        assert [row.seq for row in rows] == list(range(1, len(committed[tenant]) + 1))
        assert sorted(row.id for row in rows) == sorted(committed[tenant])
        assert statuses[tenant] == ChainStatus(tenant, len(committed[tenant]))
        assert first_break(rows) is None  # recomputed in Python, too
        with as_tenant(tenant), app_engine.connect() as conn:
            assert verify_chain(conn, tenant) is None


def test_events_are_sealed_at_commit_in_commit_order(app_engine: Engine, bypass_engine: Engine, world: World) -> None:
    """An open transaction holding an event does not block another writer of the same tenant."""
    with as_tenant(world.a), app_engine.connect() as first:
        first.begin()
        written_first = log_event(first, "test.written-first")
        unsealed = first.execute(
            text("SELECT seq, prev_hash, hash FROM rls_tenancy.audit_log WHERE id = :id"), {"id": written_first}
        ).one()
        with app_engine.begin() as second:
            # Sealed at insert, the first event would hold the chain's head until `first` ends.
            second.execute(text("SET LOCAL lock_timeout = '10s'"))
            written_second = log_event(second, "test.written-second")
        first.commit()
    assert tuple(unsealed) == (None, None, None)
    with bypass_engine.connect() as conn:
        seq: dict[int, int] = {
            row.id: row.seq
            for row in conn.execute(
                text("SELECT id, seq FROM rls_tenancy.audit_log WHERE id IN (:a, :b)"),
                {"a": written_first, "b": written_second},
            )
        }
    assert written_first < written_second
    assert seq[written_first] == seq[written_second] + 1  # chain order is commit order


# --- the encoding is pinned --------------------------------------------------------------------------------------

SQL_HASH = text(
    "SELECT rls_tenancy.audit_event_hash(:id, :tenant_id, :seq, :user_id, :db_role, :action, :message, "
    "CAST(:ip AS inet), :request_id, CAST(:data AS jsonb), CAST(:created_at AS timestamptz), :prev_hash) AS hash, "
    "CAST(:data AS jsonb)::text AS data_text"
)
VECTOR_TIME = "2026-01-02 03:04:05.123456+00"
VECTORS: dict[str, tuple[dict[str, object], str]] = {
    "every-field": (
        {
            "id": 1234567890123,
            "tenant_id": 42,
            "seq": 7,
            "user_id": 99,
            "db_role": "rls_app",
            "action": "auth.login",
            "message": "Grüße, 世界 🔐",
            "ip": "2001:db8::1",
            "request_id": "req-0001",
            "data": '{"b": [1, 2.50, {"c": null}], "a": "ü"}',
            "created_at": VECTOR_TIME,
            "prev_hash": b"\xab" * 32,
        },
        "a7a68ce7e0c1a98e108ac63ca4c1b778a8a95efed35115c030b76a3e72b3594e",
    ),
    "nulls": (
        {
            "id": 1,
            "tenant_id": None,
            "seq": 1,
            "user_id": None,
            "db_role": "rls_admin",
            "action": "bypass.used",
            "message": None,
            "ip": None,
            "request_id": None,
            "data": "{}",
            "created_at": VECTOR_TIME,
            "prev_hash": None,
        },
        "ca63df11e4544ed2378d2aee66ceae86c01c8b613d1513b1940b8a89fa94787e",
    ),
}


@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kathmandu", "America/St_Johns"])
def test_hash_matches_the_pinned_test_vector(app_engine: Engine, vector: str, timezone: str) -> None:
    fields, expected = VECTORS[vector]
    with app_engine.connect() as conn:
        conn.execute(text("SELECT set_config('timezone', :tz, true)"), {"tz": timezone})
        conn.execute(text("SET LOCAL DateStyle = 'SQL, DMY'"))
        conn.execute(text("SET LOCAL extra_float_digits = 3"))
        computed = conn.execute(SQL_HASH, fields).one()
    assert computed.hash.hex() == expected
    # The Python re-implementation, on the same event (data in jsonb's text form), whatever the time zone.
    instant = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC).astimezone(ZoneInfo(timezone))
    event = SimpleNamespace(**{**fields, "data": computed.data_text, "created_at": instant})
    assert event_hash(event).hex() == expected


def test_python_hash_equals_stored_hash(
    app_engine: Engine, bypass_engine: Engine, world: World, people: People
) -> None:
    with as_tenant(world.a), app_engine.begin() as conn:
        bare = log_event(conn, "test.bare")  # no user, message, ip, request id or data
    with as_tenant(world.a, user=people.a_user), app_engine.begin() as conn:
        rich = [
            log_event(conn, "test.unicode", 'Zürich → 東京 🔐, "quoted"\n\ttabbed', ip="192.0.2.44"),
            log_event(conn, "test.ipv6", "v6", ip="2001:db8:0:0:1:0:0:1", request_id="req-v6"),
            log_event(
                conn,
                "test.nested",
                data={"z": [1, 2.5, {"deep": None, "ü": True}], "a": {"b": {"c": "d"}}, "n": -0.001, "big": 10**20},
            ),
        ]
    with bypass_engine.connect() as conn:
        rows = [conn.execute(EVENT, {"id": event_id}).one() for event_id in [bare, *rich]]
    assert (rows[0].user_id, rows[0].message, rows[0].ip, rows[0].request_id) == (None, None, None, None)
    for row in rows:
        assert event_hash(row) == row.hash, row.action


@pytest.mark.parametrize("ip", ["::ffff:192.0.2.1", "::192.0.2.1"])
def test_python_hash_equals_stored_hash_for_ipv4_mapped_addresses(
    app_engine: Engine, bypass_engine: Engine, world: World, ip: str
) -> None:
    with as_tenant(world.a), app_engine.begin() as conn:
        event_id = log_event(conn, "test.mapped", ip=ip)
    with bypass_engine.connect() as conn:
        row = conn.execute(EVENT, {"id": event_id}).one()
    assert event_hash(row) == row.hash


ADDRESSES = [
    "192.0.2.1", "0.0.0.0", "::", "::1", "::2", "::ffff:192.0.2.1", "::192.0.2.1", "::0.0.1.2", "::ffff:0:0",
    "::ffff:0.0.0.1", "1::", "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:0:0:1::1", "fe80::1:2:3:4",
    "1:0:1:1:1:1:1:1", "0:0:0:0:0:1:0:0", "::1:0:0:0", "ffff::ffff:1.2.3.4", "0:0:0:0:1:ffff:1.2.3.4",
]  # fmt: skip


def test_python_formats_addresses_as_postgres_host_does(bypass_engine: Engine) -> None:
    with bypass_engine.connect() as conn:
        for address in ADDRESSES:
            expected = conn.execute(text("SELECT host(CAST(:ip AS inet))"), {"ip": address}).scalar_one()
            assert postgres_host(address) == expected, address


# --- the chain without a tenant ----------------------------------------------------------------------------------


def test_no_tenant_can_have_id_0_which_names_the_chain_without_a_tenant(bypass_engine: Engine) -> None:
    with bypass_engine.connect() as conn, pytest.raises(DBAPIError, match="tenants_id_positive"):
        conn.execute(text("INSERT INTO rls_tenancy.tenants (id, slug, name) VALUES (0, 'zero', 'Zero')"))
