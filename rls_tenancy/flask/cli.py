"""``flask tenancy ...``: tenants, users, tokens and the audit log from the command line.

Creating and listing tenants crosses tenants, so it goes through the unsafe
bypass (configure ``bypass_engine`` or ``RLS_TENANCY_BYPASS_DATABASE_URL``)
with a logged reason. Users and tokens belong to one tenant and are made as
that tenant, through the application's own engine and row level security.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from rls_tenancy.audit.chain import chain_heads, dump_anchors, purge, read_anchors, verification_report
from rls_tenancy.audit.events import log_event
from rls_tenancy.bypass import UnsafeBypass
from rls_tenancy.context import as_tenant
from rls_tenancy.doctor import DoctorAccessError, DoctorInputError, as_json, as_table, exit_status, findings
from rls_tenancy.errors import TenancyError
from rls_tenancy.features.declare import EVERY_SCOPE
from rls_tenancy.features.overrides import (
    clear_global_override,
    clear_override,
    list_overrides,
    set_global_override,
    set_override,
)
from rls_tenancy.flask.state import state
from rls_tenancy.identity.tokens import issue_token, revoke_token
from rls_tenancy.identity.users import User, email_matches
from rls_tenancy.orm.models import Tenant, tenant_id_for_slug


@click.group("tenancy")
def tenancy_commands() -> None:
    """Manage tenants, users and API tokens (rls_tenancy)."""


def _bypass() -> UnsafeBypass:
    bypass = state().bypass
    if bypass is None:
        raise click.ClickException(
            "this command needs the bypass role: pass bypass_engine= to Tenancy or set RLS_TENANCY_BYPASS_DATABASE_URL"
        )
    return bypass


def _tenant_id(slug: str) -> int:
    with Session(state().engine) as session:
        found = tenant_id_for_slug(session, slug)
    if found is None:
        raise click.ClickException(f"there is no tenant {slug!r}")
    return int(found)


def _fail(error: Exception) -> click.ClickException:
    if isinstance(error, IntegrityError):
        return click.ClickException(f"refused by the database: {str(error.orig).splitlines()[0]}")
    return click.ClickException(str(error))


@tenancy_commands.command("create-tenant")
@click.argument("slug")
@click.argument("name")
@with_appcontext
def create_tenant(slug: str, name: str) -> None:
    """Create tenant SLUG (a DNS label) called NAME."""
    try:
        with _bypass().session(reason=f"cli: create tenant {slug}") as session:
            tenant = Tenant(slug=slug, name=name)
            session.add(tenant)
            session.flush()
            click.echo(f"created tenant {tenant.slug} (id {tenant.id})")
    except (TenancyError, IntegrityError) as error:
        raise _fail(error) from error


@tenancy_commands.command("list-tenants")
@with_appcontext
def list_tenants() -> None:
    """List every tenant."""
    with _bypass().session(reason="cli: list tenants") as session:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.id)):
            click.echo(f"{tenant.id}\t{tenant.slug}\t{tenant.name}")


@tenancy_commands.command("create-user")
@click.argument("slug")
@click.argument("email")
@click.option("--role", "roles", multiple=True, help="A role (repeatable), e.g. admin or projects:write.")
@click.option("--language", default=None, help="Preferred language tag, e.g. de or pt-BR.")
@click.option("--password", default=None, help="Set a password (prompted for with --ask-password).")
@click.option("--ask-password", is_flag=True, help="Prompt for the password.")
@with_appcontext
def create_user(
    slug: str, email: str, roles: tuple[str, ...], language: str | None, password: str | None, ask_password: bool
) -> None:
    """Create a user EMAIL in tenant SLUG."""
    if ask_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with as_tenant(_tenant_id(slug)), Session(state().engine) as session, session.begin():
            user = User(email=email, roles=list(roles), language=language)
            if password:
                user.set_password(password)
            session.add(user)
            session.flush()
            log_event(
                session,
                "user.created",
                f"user {user.email} created from the command line",
                data={"user_id": user.id, "roles": sorted(roles)},
            )
            click.echo(f"created user {user.email} (id {user.id}) in {slug}")
    except (TenancyError, IntegrityError) as error:
        raise _fail(error) from error


@tenancy_commands.command("issue-token")
@click.argument("slug")
@click.option("--name", required=True, help="What the token is for, e.g. 'ci'.")
@click.option("--scope", "scopes", multiple=True, help="A scope it grants (repeatable).")
@click.option("--user", "email", default=None, help="Email of the user it acts for (default: none).")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@with_appcontext
def issue(slug: str, name: str, scopes: tuple[str, ...], email: str | None, expires_in_days: int | None) -> None:
    """Issue an API token for tenant SLUG; it is printed once, never stored."""
    expires = None if expires_in_days is None else datetime.now(UTC) + timedelta(days=expires_in_days)
    try:
        with as_tenant(_tenant_id(slug)), Session(state().engine) as session, session.begin():
            user_id = None
            if email is not None:
                user = session.scalars(select(User).where(email_matches(email))).first()
                if user is None:
                    raise click.ClickException(f"{slug} has no user {email!r}")
                user_id = user.id
            keys = state().token_keys
            issued = issue_token(
                session, name=name, scopes=scopes, user_id=user_id, expires_at=expires, key=keys[0] if keys else None
            )
    except (TenancyError, IntegrityError) as error:
        raise _fail(error) from error
    click.echo(f"token {issued.id} for {slug} (shown once, keep it secret):")
    click.echo(issued.token)


@tenancy_commands.command("revoke-token")
@click.argument("slug")
@click.argument("token_id", type=click.IntRange(1, 2**63 - 1))
@with_appcontext
def revoke(slug: str, token_id: int) -> None:
    """Revoke token TOKEN_ID of tenant SLUG."""
    with as_tenant(_tenant_id(slug)), Session(state().engine) as session, session.begin():
        if not revoke_token(session, token_id):
            raise click.ClickException(f"{slug} has no live token {token_id}")
    click.echo(f"revoked token {token_id}")


@tenancy_commands.group("audit")
def audit_commands() -> None:
    """Check, anchor and purge the security audit log (through the bypass role)."""


@audit_commands.command("verify")
@click.option(
    "--anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also check heads exported earlier with 'audit heads'.",
)
@with_appcontext
def audit_verify(anchors: Path | None) -> None:
    """Check every hash chain; exit 1 on any broken link or mismatched anchor."""
    try:
        anchored = None if anchors is None else read_anchors(anchors)
    except TenancyError as error:
        raise _fail(error) from error
    with _bypass().connect(reason="cli: verify the audit log") as connection:
        lines, problems = verification_report(connection, anchored)
    for line in lines:
        click.echo(line)
    if problems:
        raise SystemExit(1)


@audit_commands.command("heads")
@with_appcontext
def audit_heads() -> None:
    """Print every chain's head as JSON, to keep outside the database (anchoring)."""
    with _bypass().connect(reason="cli: export audit chain heads") as connection:
        heads = chain_heads(connection)
    click.echo(dump_anchors(heads))


@audit_commands.command("purge")
@click.option("--older-than-days", type=click.IntRange(1, 36500), required=True)
@click.confirmation_option(prompt="Remove audit events for good?")
@with_appcontext
def audit_purge(older_than_days: int) -> None:
    """Remove events older than the retention; each cut is itself recorded."""
    with _bypass().connect(reason=f"cli: purge audit events older than {older_than_days} days") as connection:
        removed = purge(connection, timedelta(days=older_than_days))
    click.echo(f"removed {removed} audit event(s)")


@tenancy_commands.group("features")
def feature_commands() -> None:
    """List feature flags and set or clear their overrides."""


@feature_commands.command("list")
@click.argument("slug", required=False)
@with_appcontext
def features_list(slug: str | None) -> None:
    """List the declared features, and the overrides of tenant SLUG (or the global ones)."""
    for feature in state().features:
        chance = "-" if feature.enable_chance is None else f"{feature.enable_chance:.0%}"
        default = "(function)" if callable(feature.default) else str(feature.default).lower()
        scope = feature.scope if isinstance(feature.scope, str) else getattr(feature.scope, "__name__", "custom")
        click.echo(
            f"{feature.key}\tscope={scope}\trollout={chance}\tdefault={default}"
            f"\toverrides by={feature.allow_overrides or 'nobody'}"
        )
    if slug is None:
        with _bypass().session(reason="cli: list global feature overrides") as session:
            overrides = [o for o in list_overrides(session) if o.tenant_id is None]
    else:
        with as_tenant(_tenant_id(slug)), Session(state().engine) as session:
            overrides = list_overrides(session)
    for override in overrides:
        where = "global" if override.tenant_id is None else slug
        click.echo(f"override\t{override.feature}\t{override.scope}\t{'on' if override.enabled else 'off'}\t{where}")


_WHERE = [
    click.option("--tenant", "slug", default=None, help="The tenant whose override it is."),
    click.option("--global", "is_global", is_flag=True, help="An override for every tenant (through the bypass)."),
    click.option("--scope", default=EVERY_SCOPE, show_default=True, help="e.g. user:42, ip:10.0.0.1, tenant:7."),
]


def _where(function: Any) -> Any:
    for option in reversed(_WHERE):
        function = option(function)
    return function


def _one_place(slug: str | None, is_global: bool, scope: str) -> None:
    if (slug is None) == (not is_global):
        raise click.UsageError("give exactly one of --tenant SLUG and --global")
    if is_global and scope != EVERY_SCOPE:
        raise click.UsageError("a global override is for every scope ('*'); set per-scope ones with --tenant")


@feature_commands.command("set")
@click.argument("key")
@click.argument("value", type=click.Choice(["on", "off"]))
@_where
@with_appcontext
def features_set(key: str, value: str, slug: str | None, is_global: bool, scope: str) -> None:
    """Turn feature KEY on or off for a scope, in one tenant or in all (as an operator)."""
    _one_place(slug, is_global, scope)
    registry = state().features
    try:
        if slug is None:
            with _bypass().session(reason=f"cli: global override of feature {key}") as session:
                set_global_override(session, key, value == "on", registry=registry)
        else:
            with as_tenant(_tenant_id(slug)), Session(state().engine) as session, session.begin():
                set_override(session, key, value == "on", scope=scope, granted={"admin"}, registry=registry)
    except TenancyError as error:
        raise _fail(error) from error
    click.echo(f"{key} is {value} for {scope} in {'every tenant' if slug is None else slug}")


@feature_commands.command("clear")
@click.argument("key")
@_where
@with_appcontext
def features_clear(key: str, slug: str | None, is_global: bool, scope: str) -> None:
    """Remove an override of feature KEY."""
    _one_place(slug, is_global, scope)
    registry = state().features
    try:
        if slug is None:
            with _bypass().session(reason=f"cli: clear global override of feature {key}") as session:
                removed = clear_global_override(session, key, registry=registry)
        else:
            with as_tenant(_tenant_id(slug)), Session(state().engine) as session, session.begin():
                removed = clear_override(session, key, scope=scope, granted={"admin"}, registry=registry)
    except TenancyError as error:
        raise _fail(error) from error
    if not removed:
        raise click.ClickException(f"no override of {key} for {scope} to clear")
    click.echo(f"cleared the override of {key} for {scope}")


@tenancy_commands.command("doctor")
@click.option("--json", "as_machine", is_flag=True, help="Print JSON instead of a table.")
@click.option("--info", "with_info", is_flag=True, help="Also print info findings (recorded exemptions).")
@click.option(
    "--distributed",
    is_flag=True,
    help="Report what keeps tenant tables from being distributed by tenant_id (Citus) as warnings.",
)
@with_appcontext
def doctor(as_machine: bool, with_info: bool, distributed: bool) -> None:
    """Report isolation gaps found in the database; exit 1 on any error-level finding."""
    try:
        with _bypass().connect(reason="cli: doctor") as connection:
            found = findings(connection, distributed=distributed)
    except DBAPIError as error:
        click.echo(f"Error: the check could not run: {str(error.orig).splitlines()[0]}", err=True)
        raise SystemExit(2) from error
    except (DoctorInputError, DoctorAccessError) as error:  # no report, or none to trust: as when it cannot run
        click.echo(f"Error: {error}", err=True)
        raise SystemExit(2) from error
    click.echo(as_json(found) if as_machine else as_table(found, info=with_info), nl=as_machine)
    if exit_status(found):
        raise SystemExit(1)
