"""Checking the audit log's hash chains, anchoring their heads outside the database, purging.

Each tenant's events form a chain (events without a tenant form one more);
``sql/009_audit.sql`` defines the encoding, which :func:`event_hash`
recomputes here so that a verifier need not trust the database's own
functions. Anchoring: export :func:`chain_heads` regularly to storage the
database cannot write (:func:`dump_anchors`), and check them later with
:func:`check_anchors`; a chain rewritten after an anchor was taken no longer
contains the anchored hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, Interval, func, literal, select

from rls_tenancy.audit.events import AuditEvent
from rls_tenancy.errors import UsageError

ENCODING_VERSION = b"rls_tenancy.audit.v1"
ANCHORS_FORMAT = "rls_tenancy.audit-anchors.v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ChainStatus:
    """One chain's verification: ``problem`` is None when every link holds."""

    tenant_id: int | None
    events: int
    event_id: int | None = None
    seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ChainHead:
    """The last sealed event of a chain: what an anchor records."""

    tenant_id: int | None
    seq: int
    hash: bytes | None
    last_id: int | None
    #: Events up to this seq were purged (0: none).
    anchor_seq: int = 0


def verify_chains(connection: Connection) -> list[ChainStatus]:
    """Every chain, checked in the database (needs the bypass role or the owner)."""
    rows = connection.execute(
        select(
            func.rls_tenancy.verify_audit_chains().table_valued(
                "tenant_id", "events", "event_id", "chain_seq", "problem"
            )
        )
    )
    return [ChainStatus(row.tenant_id, int(row.events), row.event_id, row.chain_seq, row.problem) for row in rows]


def verify_chain(connection: Connection, tenant_id: int | None) -> ChainStatus | None:
    """The first broken link of one chain, or None when it is intact.

    The application role may check only the tenant bound to its transaction.
    """
    found = connection.execute(
        select(
            func.rls_tenancy.verify_audit_chain(literal(tenant_id, BigInteger)).table_valued(
                "event_id", "chain_seq", "problem"
            )
        )
    ).first()
    if found is None:
        return None
    return ChainStatus(tenant_id, 0, found.event_id, found.chain_seq, found.problem)


def chain_heads(connection: Connection) -> list[ChainHead]:
    """The head of every chain (bypass role or owner)."""
    rows = connection.execute(
        select(
            func.rls_tenancy.audit_chain_heads().table_valued(
                "tenant_id", "seq", "hash", "last_id", "anchor_seq", "anchor_hash"
            )
        )
    )
    return [ChainHead(row.tenant_id, int(row.seq), row.hash, row.last_id, int(row.anchor_seq)) for row in rows]


def dump_anchors(heads: Sequence[ChainHead]) -> str:
    """The heads as a JSON document, to keep where the database cannot reach."""
    return json.dumps(
        {
            "format": ANCHORS_FORMAT,
            "taken_at": datetime.now(UTC).isoformat(),
            "heads": [
                {"tenant_id": h.tenant_id, "seq": h.seq, "hash": None if h.hash is None else h.hash.hex()}
                for h in heads
            ],
        },
        indent=2,
    )


def load_anchors(text: str) -> list[ChainHead]:
    """Parse :func:`dump_anchors`' output; :class:`UsageError` when it is not that."""
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != ANCHORS_FORMAT:
            raise ValueError(f"not an {ANCHORS_FORMAT} document")
        return [
            ChainHead(
                tenant_id=None if item["tenant_id"] is None else int(item["tenant_id"]),
                seq=int(item["seq"]),
                hash=None if item["hash"] is None else bytes.fromhex(item["hash"]),
                last_id=None,
            )
            for item in document["heads"]
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read the anchors: {error}") from None


def read_anchors(path: Path) -> list[ChainHead]:
    """:func:`load_anchors` of a file; :class:`UsageError` also when it cannot be read or is not UTF-8."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the anchors from {path}: {error}") from None
    return load_anchors(text)


def check_anchors(connection: Connection, anchors: Iterable[ChainHead]) -> list[str]:
    """What no longer matches: each anchored event must still have the anchored hash.

    An anchor older than the chain's purge cut is a problem too: whether the
    purge was a real retention or a wiped chain, only the database says, and
    anchors exist to not take its word. Retire anchor files older than your
    retention when you purge. An anchor exactly at the cut is checked against
    the hash the purge recorded.
    """
    problems = []
    cuts = {head.tenant_id: head.anchor_seq for head in chain_heads(connection)}
    for anchor in anchors:
        if anchor.seq == 0:
            continue  # an empty chain anchors nothing
        if anchor.seq < cuts.get(anchor.tenant_id, 0):
            problems.append(
                f"chain of {_chain_name(anchor.tenant_id)}: event {anchor.seq} was anchored, but the database says "
                f"it was purged (cut at {cuts[anchor.tenant_id]}); if that purge was yours, retire older anchors"
            )
            continue
        at = func.rls_tenancy.audit_hash_at(literal(anchor.tenant_id, BigInteger), literal(anchor.seq, BigInteger))
        found = connection.execute(select(at)).scalar()
        if found != anchor.hash:
            what = "no event" if found is None else "a different hash"
            problems.append(
                f"chain of {_chain_name(anchor.tenant_id)}: event {anchor.seq} was anchored, the database has {what}"
            )
    return problems


def purge(connection: Connection, older_than: timedelta) -> int:
    """Remove events older than ``older_than`` (at least a day); returns how many.

    Each chain cut is recorded as an ``audit.purged`` event, and verification
    starts from the cut.
    """
    if older_than < timedelta(days=1):
        raise UsageError("the audit retention is at least one day")
    removed: int = connection.execute(
        select(func.rls_tenancy.purge_audit_log(literal(older_than, Interval)))
    ).scalar_one()
    return removed


def event_hash(event: AuditEvent | Any, prev_hash: bytes | None = None) -> bytes:
    """The event's hash, recomputed outside the database (encoding v1, see sql/009_audit.sql).

    ``event`` needs the columns of ``rls_tenancy.audit_log``; ``data`` must
    be its jsonb text form (``data::text``) as a string, since only
    PostgreSQL defines that form. ``prev_hash`` defaults to the event's own.
    """
    micros = (event.created_at - _EPOCH) // timedelta(microseconds=1)
    fields: list[bytes | None] = [
        *(None if value is None else str(value).encode() for value in (event.id, event.tenant_id, event.seq)),
        None if event.user_id is None else str(event.user_id).encode(),
        event.db_role.encode(),
        event.action.encode(),
        None if event.message is None else event.message.encode(),
        None if event.ip is None else postgres_host(event.ip).encode(),
        None if event.request_id is None else event.request_id.encode(),
        _jsonb_text(event.data).encode(),
        str(micros).encode(),
        event.prev_hash if prev_hash is None else prev_hash,
    ]
    encoded = ENCODING_VERSION + b"".join(
        b"\xff\xff\xff\xff" if value is None else len(value).to_bytes(4, "big") + value for value in fields
    )
    return hashlib.sha256(encoded).digest()


def postgres_host(ip: object) -> str:
    """An address as PostgreSQL's ``host(inet)`` prints it (IPv4 inside IPv6 stays dotted: ``::ffff:1.2.3.4``)."""
    address = ipaddress.ip_address(str(ip).split("/")[0])
    if address.version == 4:
        return str(address)
    words = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    if words[:5] == [0] * 5 and ((words[5] == 0 and words[6] != 0) or words[5] == 0xFFFF):
        embedded = ipaddress.IPv4Address(address.packed[12:])
        return ("::ffff:" if words[5] == 0xFFFF else "::") + str(embedded)
    return address.compressed


def _jsonb_text(data: object) -> str:
    if not isinstance(data, str):
        raise UsageError("event_hash() needs data as PostgreSQL's jsonb text (select data::text), not parsed JSON")
    return data


class VerificationReport(NamedTuple):
    """What ``audit verify`` prints, and how many problems it found (its exit status is 1 when any)."""

    lines: list[str]
    problems: int


def verification_report(connection: Connection, anchors: Sequence[ChainHead] | None = None) -> VerificationReport:
    """Every chain checked (and ``anchors``, when given): printable lines, and the number of problems."""
    statuses = verify_chains(connection)
    mismatches = [] if anchors is None else check_anchors(connection, anchors)
    lines = []
    for status in statuses:
        verdict = "intact" if status.intact else f"BROKEN at event {status.event_id} (#{status.seq}): {status.problem}"
        lines.append(f"{_chain_name(status.tenant_id)}: {status.events} events, {verdict}")
    lines.extend(f"ANCHOR MISMATCH: {mismatch}" for mismatch in mismatches)
    problems = sum(not status.intact for status in statuses) + len(mismatches)
    if problems:
        lines.append(f"{problems} problem(s) found")
    else:
        checked = "" if anchors is None else f", {len(anchors)} anchor(s) match"
        lines.append(f"{len(statuses)} chain(s) intact{checked}")
    return VerificationReport(lines, problems)


def _chain_name(tenant_id: int | None) -> str:
    return "events without a tenant" if tenant_id is None else f"tenant {tenant_id}"


__all__ = [
    "ChainHead",
    "ChainStatus",
    "check_anchors",
    "chain_heads",
    "dump_anchors",
    "event_hash",
    "postgres_host",
    "load_anchors",
    "purge",
    "read_anchors",
    "VerificationReport",
    "verification_report",
    "verify_chain",
    "verify_chains",
]
