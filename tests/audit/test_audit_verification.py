"""Verifying the chain: tampering behind the triggers' back is named, and anchors catch a rewrite verification misses.

Tests that tamper run in a scratch database of their own; the application role verifies its own tenant's chain only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy import UsageError, as_tenant
from rls_tenancy.audit.chain import ChainStatus, chain_heads, check_anchors, dump_anchors, load_anchors, verify_chain
from tests.audit.support import DISABLE_APPEND_ONLY, ENABLE_APPEND_ONLY, Logged, Scratch, first_break, refused_with
from tests.conftest import World

# --- tampering is evident ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoChains:
    x: int
    y: int
    x_ids: list[int]
    y_ids: list[int]


@pytest.fixture()
def two_chains(scratch: Scratch) -> TwoChains:
    """Two tenants of five events each (all of x's written before y's), both intact."""
    x, y = scratch.tenant(), scratch.tenant()
    x_ids = scratch.log(x, 5, user=scratch.user(x))
    y_ids = scratch.log(y, 5, user=scratch.user(y))
    assert scratch.broken(x) is None and scratch.broken(y) is None
    return TwoChains(x, y, x_ids, y_ids)


EDITS = {
    "message": "UPDATE rls_tenancy.audit_log SET message = 'nothing happened' WHERE id = :id",
    "action": "UPDATE rls_tenancy.audit_log SET action = 'test.harmless' WHERE id = :id",
    "user_id": "UPDATE rls_tenancy.audit_log SET user_id = NULL WHERE id = :id",
    "db_role": "UPDATE rls_tenancy.audit_log SET db_role = 'someone_else' WHERE id = :id",
    "ip": "UPDATE rls_tenancy.audit_log SET ip = '198.51.100.1' WHERE id = :id",
    "request_id": "UPDATE rls_tenancy.audit_log SET request_id = 'other' WHERE id = :id",
    "data": "UPDATE rls_tenancy.audit_log SET data = data || '{\"n\": 99}' WHERE id = :id",
    "created_at": "UPDATE rls_tenancy.audit_log SET created_at = created_at + interval '1 microsecond' WHERE id = :id",
}


@pytest.mark.parametrize("column", sorted(EDITS))
def test_edited_event_is_named(scratch: Scratch, two_chains: TwoChains, column: str) -> None:
    edited = two_chains.x_ids[2]
    scratch.tamper(EDITS[column], id=edited)
    problem = (edited, 3, "its content does not match its hash: changed after it was written")
    assert scratch.broken(two_chains.x) == problem
    assert first_break(scratch.chain(two_chains.x)) == (edited, "content")
    statuses = scratch.statuses()
    assert statuses[two_chains.x] == ChainStatus(two_chains.x, 5, *problem)
    assert statuses[two_chains.y].intact


def test_deleted_middle_event_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=two_chains.x_ids[2])
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[3],
        4,
        "expected event 3 of the chain here: events were removed or added",
    )
    assert first_break(scratch.chain(two_chains.x)) == (two_chains.x_ids[3], "seq")
    assert scratch.broken(two_chains.y) is None


def test_deleted_last_event_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=two_chains.x_ids[4])
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[4],
        5,
        "the chain stops at event 4 but its head records 5: events at the end were removed",
    )
    assert scratch.broken(two_chains.y) is None


def test_event_moved_to_another_tenant_breaks_both_chains(scratch: Scratch, two_chains: TwoChains) -> None:
    moved = two_chains.x_ids[2]
    scratch.tamper("UPDATE rls_tenancy.audit_log SET tenant_id = :y WHERE id = :id", id=moved, y=two_chains.y)
    assert scratch.broken(two_chains.x) == (
        two_chains.x_ids[3],
        4,
        "expected event 3 of the chain here: events were removed or added",
    )
    # In y's chain it sits at seq 3, before y's own third event (lower id), linked to x's second.
    assert scratch.broken(two_chains.y) == (moved, 3, "does not link to the event before it")


def test_rewritten_prev_hash_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    rewritten = two_chains.x_ids[2]
    scratch.tamper("UPDATE rls_tenancy.audit_log SET prev_hash = :h WHERE id = :id", id=rewritten, h=bytes(32))
    assert scratch.broken(two_chains.x) == (rewritten, 3, "does not link to the event before it")
    assert first_break(scratch.chain(two_chains.x)) == (rewritten, "link")


def test_deleted_head_is_named(scratch: Scratch, two_chains: TwoChains) -> None:
    scratch.tamper("DELETE FROM rls_tenancy.audit_chain_heads WHERE chain = :x", x=two_chains.x)
    assert scratch.broken(two_chains.x) == (two_chains.x_ids[0], 1, "the chain has events but no recorded head")


def test_edited_then_restored_event_verifies_again(scratch: Scratch, two_chains: TwoChains) -> None:
    edited = two_chains.x_ids[1]
    (original,) = [row.message for row in scratch.chain(two_chains.x) if row.id == edited]
    update = "UPDATE rls_tenancy.audit_log SET message = :m WHERE id = :id"
    scratch.tamper(update, id=edited, m="nothing to see")
    assert scratch.broken(two_chains.x) is not None
    scratch.tamper(update, id=edited, m=original)
    assert scratch.broken(two_chains.x) is None
    assert scratch.statuses()[two_chains.x].intact


# --- anchors catch a consistent rewrite --------------------------------------------------------------------------


def test_anchors_round_trip(scratch: Scratch) -> None:
    x, y = scratch.tenant(), scratch.tenant()
    scratch.log(x, 3)
    scratch.log(y, 1)
    with scratch.bypass.connect() as conn:
        heads = chain_heads(conn)
    loaded = load_anchors(dump_anchors(heads))
    assert [(h.tenant_id, h.seq, h.hash) for h in loaded] == [(h.tenant_id, h.seq, h.hash) for h in heads]
    assert {(h.tenant_id, h.seq) for h in loaded} == {(x, 3), (y, 1)}
    for garbage in ("", "[]", '{"format": "something else", "heads": []}', dump_anchors(heads).replace('"seq"', '"n"')):
        with pytest.raises(UsageError):
            load_anchors(garbage)


def _rewrite_consistently(scratch: Scratch, tenant_id: int, from_seq: int) -> None:
    """What verification alone cannot see: edit an event and re-hash it, every later one, and the head."""
    with scratch.superuser.begin() as conn:
        conn.execute(DISABLE_APPEND_ONLY)
        events = conn.execute(
            text("SELECT id, seq, prev_hash FROM rls_tenancy.audit_log WHERE tenant_id = :t ORDER BY seq"),
            {"t": tenant_id},
        ).all()
        prev_hash: bytes | None = None
        for event in events:
            if event.seq < from_seq:
                continue
            if event.seq == from_seq:
                prev_hash = event.prev_hash
                conn.execute(
                    text("UPDATE rls_tenancy.audit_log SET message = 'nothing happened here' WHERE id = :id"),
                    {"id": event.id},
                )
            prev_hash = conn.execute(
                text(
                    "UPDATE rls_tenancy.audit_log SET prev_hash = :prev, hash = rls_tenancy.audit_event_hash("
                    "id, tenant_id, seq, user_id, db_role, action, message, ip, request_id, data, created_at, "
                    "CAST(:prev AS bytea)) WHERE id = :id RETURNING hash"
                ),
                {"id": event.id, "prev": prev_hash},
            ).scalar_one()
        conn.execute(
            text("UPDATE rls_tenancy.audit_chain_heads SET hash = :h WHERE chain = :t"),
            {"h": prev_hash, "t": tenant_id},
        )
        conn.execute(ENABLE_APPEND_ONLY)


def test_anchors_catch_a_consistent_rewrite_that_verification_misses(scratch: Scratch) -> None:
    x, y = scratch.tenant(), scratch.tenant()
    scratch.log(x, 5)
    scratch.log(y, 2)
    with scratch.bypass.connect() as conn:
        anchors = load_anchors(dump_anchors(chain_heads(conn)))
        assert check_anchors(conn, anchors) == []
    scratch.log(x, 2)  # events after the anchor do not disturb it
    with scratch.bypass.connect() as conn:
        assert check_anchors(conn, anchors) == []

    _rewrite_consistently(scratch, x, from_seq=2)

    assert [row.message for row in scratch.chain(x)][1] == "nothing happened here"
    assert all(status.intact for status in scratch.statuses().values())  # verification is fooled
    assert first_break(scratch.chain(x)) is None  # and so is a verifier outside the database
    with scratch.bypass.connect() as conn:
        assert check_anchors(conn, anchors) == [
            f"chain of tenant {x}: event 5 was anchored, the database has a different hash"
        ]


# --- the application role verifies its own tenant's chain only ---------------------------------------------------


def test_app_role_verifies_only_the_bound_tenants_chain(app_engine: Engine, world: World, logged: Logged) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        assert verify_chain(conn, world.a) is None
        with pytest.raises(DBAPIError) as caught:
            verify_chain(conn, world.b)
    refused_with(caught, "42501", "may verify only the audit chain of the tenant bound to its transaction")
    with app_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        verify_chain(conn, world.a)
    refused_with(caught, "42501", "may verify only")
    # Nor the chain of events without a tenant, which no tenant owns.
    for bound in (None, world.a):
        with app_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
            with as_tenant(bound) if bound is not None else contextlib.nullcontext():
                verify_chain(conn, None)
        refused_with(caught, "42501", "may verify only")
