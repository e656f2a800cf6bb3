"""``doctor``: the isolation gaps the database reports about itself, as a table or JSON.

The checks live in SQL (``rls_tenancy.findings()``, ``sql/012_doctor.sql``)
so a DBA can run them from psql; this module prints them and turns them
into an exit status that can gate CI and deploys: 1 when any finding is an
error, else 0. The distribution checks (could each tenant table be sharded
by ``tenant_id`` in Citus, docs/citus.md) are info unless asked for with
``distributed=True``; as warnings they do not change the exit status either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, text

SEVERITIES = ("error", "warning", "info")
_FINDINGS = text("SELECT severity, check_name, object_name, message, fix FROM rls_tenancy.findings()")
# findings(true) needs EXECUTE on findings(boolean) too: only asked for when wanted.
_DISTRIBUTED = text("SELECT severity, check_name, object_name, message, fix FROM rls_tenancy.findings(true)")


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, which check, on what, what it means, and the SQL that fixes it."""

    severity: str
    check: str
    object: str
    message: str
    fix: str


def findings(connection: Connection, *, distributed: bool = False) -> list[Finding]:
    """Every finding, errors first (needs the bypass role, the owner, or a superuser).

    ``distributed`` reports the distribution checks (``distribution_*``) as
    warnings instead of info: for a database about to move to Citus.
    """
    return [Finding(*row) for row in connection.execute(_DISTRIBUTED if distributed else _FINDINGS)]


def exit_status(found: Sequence[Finding]) -> int:
    """1 when any finding is an error, else 0."""
    return 1 if any(finding.severity == "error" for finding in found) else 0


def as_json(found: Sequence[Finding]) -> str:
    counts = {severity: sum(f.severity == severity for f in found) for severity in SEVERITIES}
    return json.dumps({"counts": counts, "findings": [asdict(f) for f in found]}, indent=2)


def as_table(found: Sequence[Finding], *, info: bool = False) -> str:
    """A readable report: one block per finding, then the counts.

    Info findings (exemptions recorded on purpose, and the distribution
    checks unless asked for as warnings) are counted but printed only with
    ``info``: a report read at every deploy shows what needs a look.
    """
    if not found:
        return "no findings: every table with a tenant_id is covered\n"
    lines = []
    for finding in found:
        if finding.severity == "info" and not info:
            continue
        lines.append(f"{finding.severity.upper():8} {finding.check:38} {finding.object}")
        lines.append(f"         {finding.message}")
        lines.append(f"         fix: {finding.fix}")
    hidden = sum(f.severity == "info" for f in found) if not info else 0
    if hidden:
        lines.append(f"({hidden} info finding(s), exemptions and notes, not shown: --info shows them)")
    counts = ", ".join(f"{sum(f.severity == s for f in found)} {s}(s)" for s in SEVERITIES)
    lines.append(counts)
    return "\n".join(lines) + "\n"
