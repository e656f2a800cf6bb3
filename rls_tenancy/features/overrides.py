"""Storing feature flag overrides: per tenant under its rules, or globally through the bypass.

A tenant's overrides are written as that tenant, under row level security
(``sql/010_features.sql``), after the feature's ``allow_overrides`` rule
allowed it: ``"admin"`` needs the ``admin`` scope; ``"user"`` also lets a
user set their own ``user:<id>`` scope; None lets nobody. Global overrides
(for every tenant) can only be written on a bypass connection: the
application role's policy refuses rows without a tenant. Every change is an
audit event in the same transaction.

In a signed database the rule is the database's too: the application role
writes a tenant's override only beside the application's grant of that
write (``rls_tenancy.override_write_granted()``, sql/010_features.sql), which
:func:`set_override` and :func:`clear_override` add once the rule allowed
it, so SQL run for an intern cannot write the overrides kept for
administrators. Who set an override is the user bound to the transaction,
stamped by the database whatever the writer names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Connection, text

from rls_tenancy.audit.events import Executor, log_event
from rls_tenancy.binding import grants
from rls_tenancy.context import current_user_id, require_tenant_id
from rls_tenancy.errors import OverrideNotAllowedError, UsageError
from rls_tenancy.features.declare import EVERY_SCOPE, REGISTRY, Feature, FeatureRegistry, check_scope

_UPSERT = text(
    "INSERT INTO rls_tenancy.feature_overrides AS o (tenant_id, feature, scope, enabled, set_by) "
    "VALUES (:tenant_id, :feature, :scope, :enabled, :set_by) "
    "ON CONFLICT ON CONSTRAINT feature_overrides_key "
    "DO UPDATE SET enabled = excluded.enabled, set_by = excluded.set_by, updated_at = pg_catalog.now()"
)
_DELETE = text(
    "DELETE FROM rls_tenancy.feature_overrides o "
    "WHERE o.tenant_id IS NOT DISTINCT FROM :tenant_id AND o.feature = :feature AND o.scope = :scope "
    "RETURNING o.id"
)
_LIST = text(
    "SELECT o.tenant_id, o.feature, o.scope, o.enabled, o.set_by, o.updated_at "
    "FROM rls_tenancy.feature_overrides o ORDER BY o.feature, o.tenant_id NULLS FIRST, o.scope"
)


@dataclass(frozen=True)
class Override:
    """One stored override; ``tenant_id`` None for a global one."""

    tenant_id: int | None
    feature: str
    scope: str
    enabled: bool


def may_override(feature: Feature, scope: str, granted: Iterable[str], user_id: int | None) -> bool:
    """Whether a request holding ``granted`` scopes, acting for ``user_id``, may override ``scope``."""
    if feature.allow_overrides is None:
        return False
    if "admin" in set(granted):
        return True
    return feature.allow_overrides == "user" and user_id is not None and scope == f"user:{user_id}"


def set_override(
    executor: Executor,
    feature: Feature | str,
    enabled: bool,
    *,
    scope: str | None = None,
    granted: Iterable[str] = (),
    registry: FeatureRegistry = REGISTRY,
) -> Override:
    """Turn ``feature`` on or off for ``scope`` in the tenant in context.

    ``scope`` defaults to the feature's scope here (the user's own, for a
    user-scoped feature); ``"*"`` means every scope. ``granted`` are the
    scopes of whoever asks (``get_current_scopes()`` in Flask).
    :class:`~rls_tenancy.errors.OverrideNotAllowedError` when the feature's
    rule does not allow it; :class:`~rls_tenancy.errors.UnknownFeatureError`
    for an undeclared feature.
    """
    found, chosen, tenant_id = _checked(feature, scope, granted, registry)
    return _store(executor, tenant_id, found.key, chosen, enabled, set_by=current_user_id())


def clear_override(
    executor: Executor,
    feature: Feature | str,
    *,
    scope: str | None = None,
    granted: Iterable[str] = (),
    registry: FeatureRegistry = REGISTRY,
) -> bool:
    """Remove the tenant's override of ``feature`` for ``scope``; False when there was none."""
    found, chosen, tenant_id = _checked(feature, scope, granted, registry)
    return _remove(executor, tenant_id, found.key, chosen)


def set_global_override(
    bypass_executor: Executor, feature: Feature | str, enabled: bool, *, registry: FeatureRegistry = REGISTRY
) -> Override:
    """Turn ``feature`` on or off for every scope of every tenant; on a bypass connection only.

    Global overrides beat tenants' (a kill switch holds). They are for every
    scope (``*``) only: every tenant reads them, and a global row naming one
    user or address would tell every tenant who that is. The application
    role cannot write them: its policy refuses rows without a tenant.
    """
    return _store(bypass_executor, None, registry.get(feature).key, EVERY_SCOPE, enabled, set_by=None)


def clear_global_override(
    bypass_executor: Executor, feature: Feature | str, *, registry: FeatureRegistry = REGISTRY
) -> bool:
    """Remove a global override; False when there was none. Bypass connection only."""
    return _remove(bypass_executor, None, registry.get(feature).key, EVERY_SCOPE)


def _store(
    executor: Executor, tenant_id: int | None, key: str, scope: str, enabled: bool, *, set_by: int | None
) -> Override:
    """Upsert one override (a global one when ``tenant_id`` is None) and audit it in the same transaction."""
    if not isinstance(enabled, bool):
        raise UsageError("an override turns a feature on (True) or off (False)")
    params = {"tenant_id": tenant_id, "feature": key, "scope": scope, "enabled": enabled, "set_by": set_by}
    if tenant_id is not None:
        state = "on" if enabled else "off"
        _grant(executor, f"overrides.set|{tenant_id}|{grants.field(key)}{grants.field(scope)}|{state}")
    executor.execute(_UPSERT, params)
    where = "" if tenant_id is not None else " in every tenant"
    log_event(
        executor,
        _action(tenant_id, "set"),
        f"{key} turned {'on' if enabled else 'off'} for {scope}{where}",
        data={"feature": key, "scope": scope, "enabled": enabled},
    )
    return Override(tenant_id, key, scope, enabled)


def _remove(executor: Executor, tenant_id: int | None, key: str, scope: str) -> bool:
    """Delete one override, audited when there was one; False when there was none."""
    if tenant_id is not None:
        _grant(executor, f"overrides.clear|{tenant_id}|{grants.field(key)}{grants.field(scope)}|")
    removed = executor.execute(_DELETE, {"tenant_id": tenant_id, "feature": key, "scope": scope}).all()
    if removed:
        what = "override" if tenant_id is not None else "global override"
        log_event(
            executor,
            _action(tenant_id, "cleared"),
            f"{key} {what} for {scope} removed",
            data={"feature": key, "scope": scope},
        )
    return bool(removed)


def _grant(executor: Executor, what: str) -> None:
    """The application's grant of one write of a tenant's override, after its rule allowed it; signed only."""
    grants.add(executor if isinstance(executor, Connection) else executor.connection(), what)


def _action(tenant_id: int | None, verb: str) -> str:
    return f"feature.{'override' if tenant_id is not None else 'global_override'}_{verb}"


def list_overrides(executor: Executor) -> list[Override]:
    """The overrides visible here: the tenant's and the global ones (a bypass connection: all)."""
    rows = executor.execute(_LIST).all()
    return [Override(row.tenant_id, row.feature, row.scope, row.enabled) for row in rows]


class _Checked(NamedTuple):
    """An override request that may be carried out: the feature, the scope, the tenant it is for."""

    feature: Feature
    scope: str
    tenant_id: int


def _checked(feature: Feature | str, scope: str | None, granted: Iterable[str], registry: FeatureRegistry) -> _Checked:
    # A string is iterable too: "admin" would be read as its letters.
    if isinstance(granted, str) or not isinstance(granted, Iterable):
        raise UsageError(f"granted must be a list of scopes, got {granted!r}")
    granted = tuple(granted)  # read once: an iterator would be empty by the time it is checked
    if not all(isinstance(name, str) for name in granted):
        raise UsageError(f"granted must be a list of scopes, got {granted!r}")
    found = registry.get(feature)
    tenant_id = require_tenant_id()
    if scope is None:
        scope = found.scope_value()
        if scope is None:
            raise UsageError(f"no {found.key!r} scope here to override; pass scope= (or '*' for every scope)")
    chosen = scope if scope == EVERY_SCOPE else check_scope(scope)
    if not may_override(found, chosen, granted, current_user_id()):
        rule = found.allow_overrides
        why = (
            "nobody may override it"
            if rule is None
            else "it takes the admin scope"
            if rule == "admin"
            else "it takes the admin scope, or a user's own user scope"
        )
        raise OverrideNotAllowedError(f"you may not override feature {found.key!r} for {chosen}: {why}")
    return _Checked(found, chosen, tenant_id)
