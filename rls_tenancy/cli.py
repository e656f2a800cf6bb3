"""``rls-tenancy``: install the library schema without writing any Python.

rls-tenancy migrate --database-url postgresql://dba@host/app
rls-tenancy migrate --sql > install.sql      # for review by a DBA
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alembic import command
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from rls_tenancy.errors import TenancyError
from rls_tenancy.migrate import alembic_config, downgrade, upgrade
from rls_tenancy.roles import RoleNames


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rls-tenancy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("migrate", "install or upgrade the library schema"), ("downgrade", "downgrade it")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--database-url", help="superuser URL (default: $DATABASE_URL)")
        sub.add_argument("--revision", default="heads" if name == "migrate" else "base")
        if name == "migrate":
            sub.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        roles = RoleNames.from_env()
        if args.command == "migrate" and args.sql:
            command.upgrade(alembic_config(), args.revision, sql=True)
        elif args.command == "migrate":
            upgrade(args.database_url, roles=roles, revision=args.revision)
        else:
            downgrade(args.database_url, roles=roles, revision=args.revision)
    except (TenancyError, CommandError) as error:
        print(f"rls-tenancy: {error}", file=sys.stderr)
        return 2
    except DBAPIError as error:
        print(f"rls-tenancy: the database refused: {error.orig}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
