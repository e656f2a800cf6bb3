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
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import psycopg
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.errors import TenancyError

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


class DoctorAccessError(TenancyError):
    """The doctor ran as a role that may not read what it checks (the application role, say).

    ``rls-tenancy doctor`` exits 2 on it, as when the check cannot run.
    """


class DoctorInputError(TenancyError):
    """What the report would be made by, or about, is not the library's: no report of it can be trusted.

    ``rls-tenancy doctor`` exits 2 on it, as when the check cannot run.
    """


_SQL = Path(__file__).parent / "sql"
# The functions findings() runs (directly or through one another), checked against the install scripts shipped
# with this package before any report is trusted: a findings() replaced by one that reports nothing, or a
# role_name() that names another role, would otherwise pass for a clean database. The helpers whose body is an
# SQL-standard one (RETURN ...: is_tenant_condition() and the policy tests, grantee_name()) are not in this
# list: PostgreSQL keeps no text of them to compare (library_definition_changed reports them in SQL).
_DOCTOR_FUNCTIONS = (
    "findings",
    "distribution_findings",
    "audit_findings",
    "library_owner_findings",
    "library_definition_findings",
    "library_definition_digests",
    "signing_findings",
    "role_name",
)
# What sql/012_doctor.sql creates in place of signing_findings() and library_definition_findings() where
# sql/016 and sql/018 have not run: accepted only where their tables (context_signing, library_definitions)
# are missing too.
_STUB = "SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text WHERE false"
_STUBBED = ("signing_findings", "library_definition_findings")
_DEFINITION = re.compile(
    r"CREATE (?:OR REPLACE )?FUNCTION rls_tenancy\.(?P<name>\w+)\((?P<args>[^)]*)\)"
    r"(?P<header>(?:(?!\nCREATE |\nREVOKE |\nCOMMENT ).)*?)"
    r"\bAS (?P<tag>\$\w*\$)(?P<body>.*?)(?P=tag)",
    re.DOTALL,
)


@dataclass(frozen=True)
class _Shipped:
    body: str
    language: str
    definer: bool
    config: tuple[str, ...] | None


def _argument_types(arguments: str) -> str:
    """``purpose text, distributed boolean DEFAULT false`` as PostgreSQL writes the types: ``text, boolean``."""
    types = []
    for argument in filter(None, (part.strip() for part in arguments.split(","))):
        words = re.split(r"\s+DEFAULT\s+|\s*=\s*", argument, maxsplit=1)[0].split()
        types.append(" ".join(words[1:] if len(words) > 1 else words))
    return ", ".join(types)


@lru_cache(maxsize=1)
def _shipped() -> dict[tuple[str, str], _Shipped]:
    """Each checked function, by name and argument types, as the install scripts (sql/NNN_*.sql, in order; the
    last definition wins) define it."""
    found: dict[tuple[str, str], _Shipped] = {}
    for script in sorted(_SQL.glob("[0-9][0-9][0-9]_*.sql")):
        for match in _DEFINITION.finditer(script.read_text()):
            if match["name"] not in _DOCTOR_FUNCTIONS:
                continue
            header = re.sub(r"--[^\n]*", "", match["header"])
            language = re.search(r"\bLANGUAGE (\w+)", header)
            settings = re.findall(r"\bSET (\w+) = ([^\n]+)", header)
            found[(match["name"], _argument_types(match["args"]))] = _Shipped(
                body=match["body"],
                language=language[1] if language else "sql",
                definer="SECURITY DEFINER" in header,
                config=tuple(f"{name}={value.strip()}" for name, value in settings) or None,
            )
    return found


_INSTALLED = text(
    "SELECT p.proname, pg_catalog.oidvectortypes(p.proargtypes), p.prosrc, l.lanname, p.prosecdef, p.proconfig,"
    " to_regclass(CASE p.proname WHEN 'signing_findings' THEN 'rls_tenancy.context_signing'"
    " WHEN 'library_definition_findings' THEN 'rls_tenancy.library_definitions' END) IS NOT NULL AS complete"
    " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang"
    " WHERE p.pronamespace = to_regnamespace('rls_tenancy') AND p.proname IN :names"
).bindparams(bindparam("names", expanding=True))
# The roles rls_tenancy.roles names as the application and bypass roles, and whether each holds the grant on
# rls_tenancy.tenants the installation gave it (SELECT; the bypass role more), or owns the table. A roles
# table re-pointed at a role that exists but was never installed as one would else make the report one about
# that role: clean, while the real application role may do anything.
_ROLES = text(
    "SELECT r.purpose, r.role_name, g.oid IS NOT NULL AS exists,"
    " g.oid = t.relowner"
    " OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(t.relacl) a WHERE a.grantee = g.oid) AS installed"
    " FROM rls_tenancy.roles r"
    " LEFT JOIN pg_catalog.pg_roles g ON g.rolname = r.role_name"
    " CROSS JOIN pg_catalog.pg_class t"
    " WHERE t.oid = to_regclass('rls_tenancy.tenants') AND r.purpose IN ('app', 'bypass')"
)


def verify_inputs(connection: Connection) -> None:
    """Refuse (:class:`DoctorInputError`) a database whose doctor is not the one this package installs.

    The functions findings() runs must be those of the install scripts shipped with this package (their
    body, language, ``SECURITY DEFINER`` and ``search_path``), and the application and bypass roles that
    ``rls_tenancy.roles`` names must hold the grants the installation made them on ``rls_tenancy.tenants``.
    A database installed by another version of the library is refused as well: migrate it first.
    """
    shipped = _shipped()
    rows = connection.execute(_INSTALLED, {"names": list(_DOCTOR_FUNCTIONS)}).all()
    # By name and argument types: an overload of the same name and number of arguments is another function
    # (findings() calls the one its arguments resolve to), and one the scripts do not define is refused.
    installed = {(row[0], row[1]): row for row in rows}
    changed = [
        f"rls_tenancy.{name}({arguments}) is not a function this package installs (an overload of one it does)"
        for name, arguments in sorted(installed.keys() - shipped.keys())
    ]
    for (name, arguments), expected in sorted(shipped.items()):
        row = installed.get((name, arguments))
        if row is None:
            changed.append(f"rls_tenancy.{name}({arguments}) is missing")
            continue
        _, _, body, language, definer, config, complete = row
        if name in _STUBBED and not complete and body == _STUB:
            continue
        config = tuple(config) if config else None
        if (body, language, definer, config) != (expected.body, expected.language, expected.definer, expected.config):
            changed.append(f"rls_tenancy.{name}({arguments}) differs from the definition this package installs")
    if changed:
        raise DoctorInputError(
            "the doctor's functions are not the ones this version of rls_tenancy installs, so its report cannot be "
            "trusted: " + "; ".join(changed) + ". Run the library's install scripts again as a superuser "
            "(rls-tenancy migrate --reinstall), with this version of the package"
        )
    for purpose, role, exists, granted in connection.execute(_ROLES):
        if exists and not granted:
            raise DoctorInputError(
                f"rls_tenancy.roles names {role!r} as the {purpose} role, but it holds none of the grants the "
                "installation gave that role on rls_tenancy.tenants: the roles table was re-pointed, and a report "
                "about that role would say nothing of the real one. Restore rls_tenancy.roles (as a superuser, "
                "DELETE FROM rls_tenancy.roles, then rls-tenancy migrate --reinstall with the role names the "
                "library was installed with)"
            )


def findings(connection: Connection, *, distributed: bool = False) -> list[Finding]:
    """Every finding, errors first (needs the bypass role, the owner, or a superuser).

    ``distributed`` reports the distribution checks (``distribution_*``) as
    warnings instead of info: for a database about to move to Citus.
    First :func:`verify_inputs`: a doctor replaced, or a roles table re-pointed,
    raises :class:`DoctorInputError` rather than report on what it was told.
    """
    try:
        verify_inputs(connection)
        return [Finding(*row) for row in connection.execute(_DISTRIBUTED if distributed else _FINDINGS)]
    except DBAPIError as error:
        if not isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            raise
        denied = str(error.orig).splitlines()[0]
        raise DoctorAccessError(
            f"the doctor cannot read the catalog as {connection.engine.url.username!r} ({denied}): it runs as the "
            "bypass role, the owner role or a superuser, never as the application role. Give --database-url (or "
            "$DATABASE_URL) the bypass role's URL (RLS_TENANCY_BYPASS_DATABASE_URL in a Flask app, which "
            "`flask tenancy doctor` uses)"
        ) from error


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
