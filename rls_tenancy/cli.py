"""``rls-tenancy``: install the library schema and check its audit log without writing any Python.

rls-tenancy migrate --database-url postgresql://dba@host/app
rls-tenancy migrate --sql > install.sql      # for review by a DBA
rls-tenancy migrate --reinstall [--sql]       # the install scripts again at the head (the doctor's
                                              # "install the library again"): restores guards, keeps data;
                                              # role names as recorded in the database
rls-tenancy audit-verify --database-url postgresql://rls_admin@host/app [--anchors heads.json]
rls-tenancy audit-heads --database-url postgresql://rls_admin@host/app > heads.json
rls-tenancy doctor --database-url postgresql://rls_admin@host/app [--json] [--info] [--distributed]
rls-tenancy context-key new | install | retire | require | optional | status   (see --help)
rls-tenancy token-key new                     # a key that marks API tokens (RLS_TENANCY_TOKEN_KEYS)
rls-tenancy postgres                          # a throwaway PostgreSQL for development; prints its URL;
                                              # Ctrl-C or kill (SIGTERM) stops it and removes its data

Exit status: 0 success; 1 the database refused a migration, audit-verify
found a broken chain or anchor, or doctor found an error; 2 bad usage, or the
check could not run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.exc import ArgumentError, DBAPIError

from rls_tenancy.audit.chain import chain_heads, dump_anchors, read_anchors, verification_report
from rls_tenancy.binding import context_key_cli as _context_key_cli
from rls_tenancy.binding.urls import database_url
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.doctor import as_json, as_table, exit_status, findings
from rls_tenancy.errors import TenancyError, UsageError
from rls_tenancy.identity.token_key import TokenKey
from rls_tenancy.schema.migrate import alembic_config, downgrade, upgrade
from rls_tenancy.schema.reinstall import reinstall, reinstall_sql
from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing.server import NoPostgresError, postgres_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rls-tenancy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("migrate", "install or upgrade the library schema"), ("downgrade", "downgrade it")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--database-url", help="superuser URL (default: $DATABASE_URL)")
        sub.add_argument("--revision", default="heads" if name == "migrate" else "base")
        if name == "migrate":
            sub.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
            sub.add_argument(
                "--reinstall",
                action="store_true",
                help="run the library's install scripts again where it is installed already (the doctor's "
                "'install the library again'): restores dropped or changed functions, triggers, policies "
                "and grants; keeps data, keys and settings",
            )
    for name, text in (
        ("audit-verify", "check every audit hash chain; exit 1 on a break"),
        ("audit-heads", "print the audit chain heads as JSON, for anchoring"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--database-url", help="the bypass role's URL (default: $DATABASE_URL)")
        if name == "audit-verify":
            sub.add_argument("--anchors", type=Path, help="heads exported earlier with audit-heads")
    doctor = commands.add_parser("doctor", help="report isolation gaps; exit 1 on any error-level finding")
    doctor.add_argument("--database-url", help="the bypass role's (or a superuser's) URL (default: $DATABASE_URL)")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of a table")
    doctor.add_argument("--info", action="store_true", help="also print info findings (recorded exemptions)")
    doctor.add_argument(
        "--distributed",
        action="store_true",
        help="report the distribution checks (sharding by tenant_id in Citus) as warnings, not info; "
        "warnings never change the exit status",
    )
    _context_key_cli.add_command(commands)
    token_key = commands.add_parser("token-key", help="make a key that marks the API tokens the app issues")
    token_key.add_argument("action", choices=("new",))
    commands.add_parser(
        "postgres",
        help="start a throwaway PostgreSQL as the test plugin does (Docker, local binaries, pgserver), "
        "print its superuser URL, and stop and remove it on Ctrl-C or SIGTERM",
    )
    return parser


def _postgres() -> int:
    """A development server for an app's migrations and its dev server; gone with its data when stopped.

    Stopped by Ctrl-C, ``kill`` (SIGTERM) or a closed terminal (SIGHUP) alike,
    also when started in the background (``&``), where a shell ignores SIGINT:
    each of them ends the wait below, so the server and its data are removed
    rather than left behind by a wrapper that died.
    """
    stop = threading.Event()
    for number in _STOP_SIGNALS:
        signal.signal(number, lambda _number, _frame: stop.set())
    with postgres_server() as url:
        print(url.render_as_string(hide_password=False), flush=True)
        libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
        print(f"rls-tenancy: for psql and createdb: {libpq}", file=sys.stderr, flush=True)
        print("rls-tenancy: serving until Ctrl-C or SIGTERM (everything in it goes then)", file=sys.stderr, flush=True)
        while not stop.wait(_POLL_SECONDS):  # wakes up now and then: signals run between waits
            pass
    return 0


#: What stops ``rls-tenancy postgres`` cleanly (SIGHUP: the terminal closed; not on Windows).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_POLL_SECONDS = 1.0


def _doctor(args: argparse.Namespace) -> int:
    engine = create_engine(database_url(args.database_url))
    try:
        with engine.connect() as connection:
            found = findings(connection, distributed=args.distributed)
    finally:
        engine.dispose()
    print(as_json(found) if args.json else as_table(found, info=args.info), end="" if not args.json else "\n")
    return exit_status(found)


def _reinstall(args: argparse.Namespace) -> None:
    """The role names: from the environment where set, else as the database recorded them (schema.reinstall)."""
    if args.revision != "heads":
        raise UsageError("--reinstall runs the scripts of the library's head; it takes no --revision")
    if args.sql:
        reinstall_sql(sys.stdout, url=args.database_url or os.environ.get("DATABASE_URL") or None)
        return
    reinstall(args.database_url)
    print("rls-tenancy: the library's install scripts ran again", file=sys.stderr)


def _audit(args: argparse.Namespace) -> int:
    anchors = None if getattr(args, "anchors", None) is None else read_anchors(args.anchors)
    engine = create_engine(database_url(args.database_url))
    try:
        with UnsafeBypass(engine).connect(reason=f"rls-tenancy {args.command}") as connection:
            if args.command == "audit-heads":
                print(dump_anchors(chain_heads(connection)))
                return 0
            lines, problems = verification_report(connection, anchors)
    finally:
        engine.dispose()
    print("\n".join(lines))
    return 1 if problems else 0


def _check_url(args: argparse.Namespace) -> None:
    """A URL the command would use that is none is a usage error up front, not a parser's traceback.

    The message leaves the value out: it may hold a password.
    """
    sql_only = getattr(args, "sql", False) and not getattr(args, "reinstall", False)
    if not hasattr(args, "database_url") or sql_only or getattr(args, "action", None) == "new":
        return  # no database: token-key, postgres, migrate --sql, context-key new
    given, where = args.database_url, "--database-url"
    if given is None:
        given, where = os.environ.get("DATABASE_URL"), "$DATABASE_URL"
    if not given:
        return  # database_url() says that none is given
    try:
        database_url(given)
    except UsageError:
        raise
    except (ArgumentError, ValueError):
        raise UsageError(f"{where} is not a database URL (postgresql://user:password@host:port/database)") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_url(args)
        if args.command.startswith("audit-"):
            return _audit(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "context-key":
            return _context_key_cli.run(args)
        if args.command == "postgres":
            return _postgres()
        if args.command == "token-key":
            print(TokenKey.generate())
            return 0
        roles = RoleNames.from_env()
        if args.command == "migrate" and args.reinstall:
            _reinstall(args)
        elif args.command == "migrate" and args.sql:
            command.upgrade(alembic_config(), args.revision, sql=True)
        elif args.command == "migrate":
            upgrade(args.database_url, roles=roles, revision=args.revision)
        else:
            downgrade(args.database_url, roles=roles, revision=args.revision)
    except (TenancyError, CommandError, OSError, NoPostgresError) as error:
        print(f"rls-tenancy: {error}", file=sys.stderr)
        return 2
    except DBAPIError as error:
        print(f"rls-tenancy: database error: {error.orig}", file=sys.stderr)
        # For the audit checks, 1 means "problems found"; not being able to look is another answer.
        return 2 if args.command.startswith("audit-") or args.command in ("doctor", "context-key") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
