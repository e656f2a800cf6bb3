"""Retention: ``purge_audit_log`` removes old events and leaves every chain verifiable from its anchor.

Purging runs in a scratch database of each test's own, so the shared test database's chains stay intact.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from rls_tenancy import UsageError, as_tenant
from rls_tenancy.audit.chain import ChainHead, chain_heads, check_anchors, purge
from rls_tenancy.audit.events import log_event
from tests.audit.support import Scratch, first_break, last_event_id, refused_with
from tests.conftest import ddl

# --- purge -------------------------------------------------------------------------------------------------------


def _old_events(scratch: Scratch, tenant_id: int | None, count: int, *, age: str = "40 days") -> list[int]:
    """Events stamped ``age`` ago: inserted by the owner with the stamp trigger off, sealed as usual."""
    with scratch.superuser.begin() as conn:
        conn.execute(text("ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_stamp"))
        conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", scratch.db.roles.owner))
        ids = [
            int(
                conn.execute(
                    text(
                        "INSERT INTO rls_tenancy.audit_log (tenant_id, db_role, action, message, created_at) "
                        "VALUES (:t, session_user, 'test.old', :m, now() - CAST(:age AS interval)) RETURNING id"
                    ),
                    {"t": tenant_id, "m": f"old event {n}", "age": age},
                ).scalar_one()
            )
            for n in range(count)
        ]
        conn.execute(text("RESET ROLE"))
        # Seal now: ALTER TABLE refuses while seals are pending.
        conn.execute(text("SET CONSTRAINTS rls_tenancy.audit_log_seal IMMEDIATE"))
        conn.execute(text("ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER audit_log_stamp"))
    return ids


def _purged_events(scratch: Scratch) -> list[Row[Any]]:
    with scratch.bypass.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT tenant_id, seq, db_role, data FROM rls_tenancy.audit_log "
                    "WHERE action = 'audit.purged' ORDER BY tenant_id NULLS FIRST"
                )
            )
        )


def test_purge_removes_old_events_and_keeps_chains_verifiable(scratch: Scratch) -> None:
    p, q, r = scratch.tenant(), scratch.tenant(), scratch.tenant()
    old = {p: _old_events(scratch, p, 3), q: _old_events(scratch, q, 2), None: _old_events(scratch, None, 1)}
    with scratch.bypass.connect() as conn:
        anchors_at_the_cut = chain_heads(conn)  # p's head is its last old event
    new = {p: scratch.log(p, 2), q: scratch.log(q, 1), r: scratch.log(r, 2)}
    assert all(status.intact for status in scratch.statuses().values())
    everything = last_event_id(scratch.bypass)

    with scratch.bypass.begin() as conn:
        removed = purge(conn, timedelta(days=30))
    assert removed == 6

    with scratch.bypass.connect() as conn:
        remaining = set(conn.execute(text("SELECT id FROM rls_tenancy.audit_log")).scalars())
        heads = {row.tenant_id: row for row in conn.execute(text("SELECT * FROM rls_tenancy.audit_chain_heads()"))}
        assert check_anchors(conn, anchors_at_the_cut) == []  # the anchor at the cut is still checkable
        # An anchor older than the cut names an event the database says it purged: only the database
        # says so, and anchors exist to not take its word (a wiped chain would look the same).
        [older] = check_anchors(conn, [ChainHead(p, 1, b"\x00" * 32, None)])
        assert "says it was purged (cut at 3)" in older
        # At the cut, the recorded hash still has to match.
        assert len(check_anchors(conn, [ChainHead(p, 3, b"\x00" * 32, None)])) == 1
    assert not remaining & {event_id for ids in old.values() for event_id in ids}
    assert {event_id for ids in new.values() for event_id in ids} <= remaining
    assert (heads[p].anchor_seq, heads[q].anchor_seq, heads[None].anchor_seq, heads[r].anchor_seq) == (3, 2, 1, 0)

    purged = _purged_events(scratch)
    assert [(row.tenant_id, row.data["removed"], row.data["through_seq"]) for row in purged] == [
        (None, 1, 1),
        (p, 3, 3),
        (q, 2, 2),
    ]
    assert {row.db_role for row in purged} == {scratch.db.roles.bypass}
    assert last_event_id(scratch.bypass) == everything + 3

    statuses = scratch.statuses()
    assert all(status.intact for status in statuses.values())
    assert (statuses[p].events, statuses[q].events, statuses[r].events) == (3, 2, 2)
    for tenant in (p, q):
        rows = scratch.chain(tenant)
        assert rows[0].prev_hash == heads[tenant].anchor_hash
        assert rows[-1].seq == heads[tenant].seq
        assert first_break(rows, anchor_seq=heads[tenant].anchor_seq, anchor_hash=heads[tenant].anchor_hash) is None

    # Nothing more is old enough: nothing removed, nothing recorded; the chains go on.
    with scratch.bypass.begin() as conn:
        assert purge(conn, timedelta(days=30)) == 0
    assert len(_purged_events(scratch)) == 3
    scratch.log(p, 1)
    assert scratch.broken(p) is None

    # Removing the first event after the cut is still caught: verification starts at the anchor.
    first_kept = scratch.chain(p)[0].id
    scratch.tamper("DELETE FROM rls_tenancy.audit_log WHERE id = :id", id=first_kept)
    assert scratch.broken(p) is not None


@pytest.mark.parametrize("retention", ["23 hours 59 minutes", "-400 days", None])
def test_purge_refuses_a_retention_under_a_day(scratch: Scratch, retention: str | None) -> None:
    tenant = scratch.tenant()
    _old_events(scratch, tenant, 2)
    before = last_event_id(scratch.bypass)
    with scratch.bypass.begin() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT rls_tenancy.purge_audit_log(CAST(:r AS interval))"), {"r": retention})
    refused_with(caught, "22023", "rls_tenancy: the audit retention must be at least one day")
    with scratch.bypass.connect() as conn, pytest.raises(UsageError):
        purge(conn, timedelta(hours=23))
    assert len(scratch.chain(tenant)) == 2
    assert last_event_id(scratch.bypass) == before


def test_app_role_cannot_purge(scratch: Scratch) -> None:
    tenant = scratch.tenant()
    _old_events(scratch, tenant, 2)
    with as_tenant(tenant), scratch.app.connect() as conn, pytest.raises(ProgrammingError) as caught:
        purge(conn, timedelta(days=30))
    refused_with(caught, "42501", "permission denied for function purge_audit_log")
    assert len(scratch.chain(tenant)) == 2


def test_purge_cuts_only_a_prefix_that_is_old_throughout(scratch: Scratch) -> None:
    """Chain order is commit order: an old event sealed after a new one must not take the new one with it."""
    p = scratch.tenant()
    [first] = _old_events(scratch, p, 1)
    [newer] = scratch.log(p, 1)
    [late_old] = _old_events(scratch, p, 1)  # created long ago, sealed after `newer`
    with scratch.bypass.begin() as conn:
        purge(conn, timedelta(days=30))
    with scratch.bypass.connect() as conn:
        kept = set(conn.execute(text("SELECT id FROM rls_tenancy.audit_log WHERE tenant_id = :t"), {"t": p}).scalars())
    assert first not in kept
    assert {newer, late_old} <= kept
    assert scratch.broken(p) is None


def test_a_purge_in_progress_locks_no_writer_out(scratch: Scratch) -> None:
    """Writers of other chains log and commit while a purge is still open; before, it locked the whole log."""
    p, other = scratch.tenant(), scratch.tenant()
    _old_events(scratch, p, 3)
    with scratch.bypass.connect() as purging:
        purging.begin()
        assert purge(purging, timedelta(days=30)) == 3  # not committed yet
        with as_tenant(other), scratch.app.begin() as writer:
            writer.execute(text("SET LOCAL lock_timeout = '2s'"))  # a lock wait is an error, not a slow test
            log_event(writer, "test.during_purge", "written while a purge is open")
        purging.commit()
    assert [row.action for row in scratch.chain(other)] == ["test.during_purge"]
    assert scratch.broken(p) is None and scratch.broken(other) is None


@pytest.mark.parametrize("role", ["superuser", "owner"])
def test_setting_the_purge_flag_by_hand_deletes_nothing(scratch: Scratch, role: str) -> None:
    """The delete trigger lets through only the purge: the owner role inside its own transaction flag.

    A superuser setting the flag is still refused (it is not the owner); the owner setting it by hand
    could disable the trigger as well, so only the flag's misuse by someone else is a claim.
    """
    tenant = scratch.tenant()
    [event] = scratch.log(tenant, 1)
    with scratch.superuser.connect() as conn, conn.begin():
        conn.execute(text("SELECT set_config('rls_tenancy.purging', 'on', true)"))
        if role == "superuser":
            with pytest.raises(DBAPIError) as caught:
                conn.execute(text("DELETE FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event})
            refused_with(caught, "42501", "the audit log is append-only; DELETE refused")
        else:
            conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", scratch.db.roles.owner))
            deleted = conn.execute(text("DELETE FROM rls_tenancy.audit_log WHERE id = :id"), {"id": event})
            assert deleted.rowcount == 1  # the owner's own trigger-disabling power, spelled differently
            conn.rollback()
    assert [row.id for row in scratch.chain(tenant)] == [event]
