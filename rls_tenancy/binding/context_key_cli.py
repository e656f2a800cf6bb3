"""``rls-tenancy context-key``: make, install, rotate and require the key that signs the tenant context.

rls-tenancy context-key new [--slot 1]                  # print a fresh key, for the app's configuration
rls-tenancy context-key install [--key 1:<hex>]         # into its slot (default: $RLS_TENANCY_CONTEXT_KEY)
rls-tenancy context-key retire --slot 2                 # empty a slot: its proofs stop counting
rls-tenancy context-key require | optional              # require a signed context, or stop requiring it
rls-tenancy context-key status                          # required or not, each slot's fingerprint

The database commands take ``--database-url``, a superuser's (or the owner
role's) URL, default ``$DATABASE_URL``. No command prints an installed key.
"""

from __future__ import annotations

import argparse

from sqlalchemy import create_engine, text

from rls_tenancy.binding.context_key import SLOTS, ContextKey
from rls_tenancy.binding.signing import ENVIRONMENT, configured_key
from rls_tenancy.binding.urls import database_url
from rls_tenancy.errors import UsageError

_ACTIONS = ("new", "install", "retire", "require", "optional", "status")


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser("context-key", help="make, install, rotate and require the context key")
    sub.add_argument("action", choices=_ACTIONS)
    sub.add_argument("--slot", type=int, choices=SLOTS, help="for new (default 1) and retire")
    sub.add_argument("--key", help=f"for install: <slot>:<32 hex digits> (default: ${ENVIRONMENT})")
    sub.add_argument("--database-url", help="a superuser's URL (default: $DATABASE_URL)")


#: What ``rls-tenancy context-key require`` runs (and the test databases, when signing is asked for).
REQUIRE = "SELECT rls_tenancy.require_signed_context(true)"


def run(args: argparse.Namespace) -> int:
    if args.action == "new":
        print(ContextKey.generate(args.slot or 1))
        return 0
    statements = {
        "retire": ("SELECT rls_tenancy.retire_context_key(:slot)", {"slot": args.slot}),
        "require": (REQUIRE, {}),
        "optional": ("SELECT rls_tenancy.require_signed_context(false)", {}),
    }
    if args.action == "retire" and args.slot is None:
        raise UsageError("context-key retire needs --slot")
    key = configured_key(args.key) if args.action == "install" else None
    if args.action == "install" and key is None:
        raise UsageError(f"context-key install needs --key or ${ENVIRONMENT}")
    engine = create_engine(database_url(args.database_url))
    try:
        with engine.begin() as connection:
            if key is not None:
                connection.execute(
                    text("SELECT rls_tenancy.install_context_key(:slot, :key)"), {"slot": key.slot, "key": key.key}
                )
            elif args.action in statements:
                statement, values = statements[args.action]
                connection.execute(text(statement), values)
            required = connection.execute(text("SELECT rls_tenancy.context_signing_required()")).scalar()
            fingerprints = [
                connection.execute(text("SELECT rls_tenancy.context_key_fingerprint(:slot)"), {"slot": slot}).scalar()
                for slot in SLOTS
            ]
    finally:
        engine.dispose()
    print(f"signed context: {'required' if required else 'not required'}")
    for slot, fingerprint in zip(SLOTS, fingerprints, strict=True):
        print(f"slot {slot}: {'empty' if fingerprint is None else f'key with fingerprint {fingerprint}'}")
    return 0
