"""Evaluating feature flags for one unit of work: overrides loaded once, then all in memory.

A :class:`Flags` belongs to one request (the Flask extension makes one per
request) or one job (``with flags_for(session):``). The first evaluation
loads every override that could apply to any declared feature in this
context, in one query; every later evaluation is a dictionary lookup, as
long as the tenant and user in context are those it loaded for. A job
looping over tenants inside one block loads again for each: the overrides
and scopes of the last one are never another's.

Which value wins, for a feature and the context's scope:

1. an override for every scope (``*``) or for this scope, stored for all
   tenants (a *global* override, set through the bypass role);
2. one stored for the tenant in context (the database shows a tenant only
   its own);
   within each, the exact scope beats ``*``;
3. the rollout: on when the scope's :func:`~rls_tenancy.features.declare.rollout_position`
   is below ``enable_chance``;
4. the default (called when it is a function).

Without a scope (no user on an anonymous request), only ``*`` overrides and
the default apply. Global overrides come first so that an operator's kill
switch holds whatever a tenant chose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, text

from rls_tenancy.audit.events import Executor
from rls_tenancy.catalog_types import TextArray
from rls_tenancy.context import Acting, acting
from rls_tenancy.errors import UsageError
from rls_tenancy.features.declare import EVERY_SCOPE, REGISTRY, VALUES, Feature, FeatureRegistry, values_in_context

# Row level security shows the tenant's overrides and the global ones; the
# condition on tenant_id says the same again (defence in depth).
_LOAD = text(
    "SELECT o.tenant_id, o.feature, o.scope, o.enabled FROM rls_tenancy.feature_overrides o "
    "WHERE o.feature = ANY(:features) AND o.scope = ANY(:scopes) "
    "AND (o.tenant_id IS NULL OR o.tenant_id = rls_tenancy.current_tenant_id())"
).bindparams(bindparam("features", type_=TextArray()), bindparam("scopes", type_=TextArray()))


@dataclass(frozen=True)
class Evaluation:
    """A feature's value and why: ``reason`` is ``global-override``,
    ``tenant-override``, ``rollout`` or ``default``."""

    key: str
    enabled: bool
    reason: str
    scope: str | None


class Flags:
    """Feature values for one request or job; at most one query, on first use."""

    def __init__(self, executor: Executor, registry: FeatureRegistry = REGISTRY) -> None:
        self._executor = executor
        self._registry = registry
        self._scopes: dict[str, str | None | Exception] | None = None
        self._overrides: dict[tuple[str, str, bool], bool] | None = None
        self._loaded_for: Acting | None = None  # (tenant, user) the overrides and scopes are those of
        self.queries = 0

    def is_enabled(self, feature: Feature | str) -> bool:
        """Whether ``feature`` (or the feature with that key) is on here."""
        return self.explain(feature).enabled

    def explain(self, feature: Feature | str) -> Evaluation:
        """The value of ``feature`` with the reason it has it."""
        found = self._registry.get(feature)
        scopes, overrides = self._load()
        scope = scopes[found.key]
        if isinstance(scope, Exception):  # this feature's scope function failed; the others still work
            raise scope
        for is_global in (True, False):
            for candidate in (scope, EVERY_SCOPE):
                if candidate is None:
                    continue
                value = overrides.get((found.key, candidate, is_global))
                if value is not None:
                    return Evaluation(found.key, value, "global-override" if is_global else "tenant-override", scope)
        if scope is not None:
            rolled_out = found.rolled_out_to(scope)
            if rolled_out is not None:
                return Evaluation(found.key, rolled_out, "rollout", scope)
        return Evaluation(found.key, found.default_value(), "default", scope)

    def all(self) -> list[Evaluation]:
        """Every declared feature, evaluated."""
        return [self.explain(feature) for feature in self._registry]

    def invalidate(self) -> None:
        """Forget the loaded overrides (after changing one), so the next evaluation reloads."""
        self._scopes = self._overrides = None

    def _load(self) -> tuple[dict[str, str | None | Exception], dict[tuple[str, str, bool], bool]]:
        now = acting()
        if self._scopes is None or self._overrides is None or now != self._loaded_for:
            scopes = {feature.key: _scope_or_error(feature) for feature in self._registry}
            wanted = sorted({EVERY_SCOPE, *(scope for scope in scopes.values() if isinstance(scope, str))})
            rows = self._executor.execute(_LOAD, {"features": sorted(scopes), "scopes": wanted}).all()
            self.queries += 1
            self._overrides = {(row.feature, row.scope, row.tenant_id is None): row.enabled for row in rows}
            self._scopes = scopes
            self._loaded_for = (now[0], now[1])
        return self._scopes, self._overrides


def _scope_or_error(feature: Feature) -> str | None | Exception:
    """The feature's scope; a failing scope function fails that feature alone, when it is evaluated."""
    try:
        return feature.scope_value()
    except Exception as error:  # noqa: BLE001 - kept, and raised where that feature is evaluated
        return error


def current_flags() -> Flags:
    """The :class:`Flags` of the current request or ``flags_for`` block."""
    flags = values_in_context()
    if not isinstance(flags, Flags):  # only this module and the Flask extension set the source
        raise UsageError(f"the feature values in context are {flags!r}, not Flags")
    return flags


@contextmanager
def flags_for(executor: Executor, registry: FeatureRegistry = REGISTRY) -> Iterator[Flags]:
    """Evaluate features inside the block against ``executor`` (a Session or Connection)."""
    flags = Flags(executor, registry)
    token = VALUES.set(lambda: flags)
    try:
        yield flags
    finally:
        VALUES.reset(token)


def set_flags_source(source: Callable[[], Flags]) -> None:
    """Make ``source`` answer :func:`current_flags` in this context (a web request's own)."""
    VALUES.set(source)
