"""Feature flags: the seed's ``Feature``, declared in code, with a stable rollout.

    NEW_SIGN_IN_FLOW = Feature("new-sign-in-flow", scope="ip", enable_chance=0.9, allow_overrides="admin")
    NEW_DASHBOARD = Feature("new-dashboard", scope="user", allow_overrides="user", default=created_after_2017)

    if NEW_DASHBOARD.evaluate(): ...          # or feature_enabled("new-dashboard") in Flask and templates

A feature's *scope* names who it is decided for: ``"ip:10.0.0.1"``,
``"user:42"``, ``"tenant:7"``, or whatever a custom scope function returns.
The value is decided, in this order (see :class:`~rls_tenancy.features.flags.Flags`):
an override stored in the database for this feature and scope (or for
every scope, ``*``), else the rollout (``enable_chance``), else ``default``.
A request without the scope (no user on an anonymous request) gets the
``*`` overrides and then the default, never an error.

The rollout is stable: the same feature and scope always land at the same
position (:func:`rollout_position`), on every process, machine and Python
version, and two features with the same chance enable different scopes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from rls_tenancy.audit.events import current_origin
from rls_tenancy.context import current_tenant_id, current_user_id
from rls_tenancy.errors import UnknownFeatureError, UsageError
from rls_tenancy.orm.models import storable

#: A feature key: 1 to 64 characters, lower-case letters, digits, ``_ . -``, starting with a letter.
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
MAX_SCOPE = 200
#: The scope of an override that applies to every scope of its feature.
EVERY_SCOPE = "*"
OVERRIDE_RULES = ("admin", "user")

ScopeFunction = Callable[["Feature"], str | None]
DefaultValue = bool | Callable[[], bool]


def rollout_position(key: str, scope: str) -> float:
    """Where ``scope`` falls in ``[0, 1)`` for feature ``key``; below ``enable_chance`` means enabled.

    The first 8 bytes of SHA-256 over the UTF-8 bytes of ``key``, one zero
    byte, and the UTF-8 bytes of ``scope``, read as a big-endian unsigned
    integer and divided by 2**64. Pinned by test vectors: changing it would
    switch features on and off for existing users.
    """
    digest = hashlib.sha256(key.encode("utf-8") + b"\x00" + scope.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def ip_scope(_feature: Feature) -> str | None:
    """``ip:<address>``: the client address of the request (or of :func:`~rls_tenancy.audit.events.event_origin`)."""
    ip = current_origin().ip
    return None if ip is None else f"ip:{ip}"


def user_scope(_feature: Feature) -> str | None:
    """``user:<id>``: the user in context."""
    user_id = current_user_id()
    return None if user_id is None else f"user:{user_id}"


def tenant_scope(_feature: Feature) -> str | None:
    """``tenant:<id>``: the tenant in context."""
    tenant_id = current_tenant_id()
    return None if tenant_id is None else f"tenant:{tenant_id}"


BUILTIN_SCOPES: dict[str, ScopeFunction] = {"ip": ip_scope, "user": user_scope, "tenant": tenant_scope}


class FeatureRegistry:
    """The declared features by key; declaring a key twice is an error."""

    def __init__(self) -> None:
        self._features: dict[str, Feature] = {}

    def register(self, feature: Feature) -> None:
        if feature.key in self._features:
            raise UsageError(f"feature {feature.key!r} is declared twice")
        self._features[feature.key] = feature

    def get(self, key: str | Feature) -> Feature:
        """The feature called ``key``; :class:`UnknownFeatureError` when none is declared."""
        name = key.key if isinstance(key, Feature) else key
        found = self._features.get(name) if isinstance(name, str) else None
        if found is None or (isinstance(key, Feature) and found is not key):
            raise UnknownFeatureError(f"no feature {name!r} is declared")
        return found

    def __iter__(self) -> Iterator[Feature]:
        return iter(list(self._features.values()))

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, key: object) -> bool:
        return key in self._features


#: Where features are declared unless given another registry.
REGISTRY = FeatureRegistry()


@dataclass(frozen=True, eq=False)
class Feature:
    """A feature flag, registered in ``registry`` when declared.

    ``scope``: ``"ip"``, ``"user"``, ``"tenant"`` or a function of the
    feature returning a scope string (or None when the request has none).
    ``enable_chance``: the share of scopes it is on for, from 0 to 1 (0.9
    means 90 %). ``allow_overrides``: who may store an override within a
    tenant: ``"admin"`` (requests with the ``admin`` scope), ``"user"`` (also
    each user for their own ``user:<id>`` scope), or None (nobody; global
    overrides through the bypass role still work). ``default``: a bool, or a
    function returning one, called when neither an override nor the rollout
    decides.
    """

    key: str
    scope: str | ScopeFunction
    enable_chance: float | None = None
    allow_overrides: str | None = None
    default: DefaultValue = False
    registry: FeatureRegistry = field(default=REGISTRY, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not KEY_PATTERN.match(self.key):
            raise UsageError(
                f"invalid feature key {self.key!r}: 1 to 64 characters, lower-case letters, digits, "
                "'_', '.' or '-', starting with a letter"
            )
        if isinstance(self.scope, str):
            if self.scope not in BUILTIN_SCOPES:
                raise UsageError(f"unknown scope {self.scope!r}: use 'ip', 'user', 'tenant' or a function")
        elif not callable(self.scope):
            raise UsageError("a feature's scope is 'ip', 'user', 'tenant' or a function of the feature")
        chance = self.enable_chance
        if chance is not None and (isinstance(chance, bool) or not isinstance(chance, int | float)):
            raise UsageError("enable_chance is a number from 0 to 1")
        if chance is not None and not 0 <= chance <= 1:
            raise UsageError(f"enable_chance is a share from 0 to 1 (0.9 means 90 %), not {chance}")
        if self.allow_overrides is not None and self.allow_overrides not in OVERRIDE_RULES:
            raise UsageError("allow_overrides is 'admin', 'user' or None")
        if self.allow_overrides == "user" and self.scope_function is not user_scope:
            raise UsageError("allow_overrides='user' lets users override their own user scope: use scope='user'")
        if not isinstance(self.default, bool) and not callable(self.default):
            raise UsageError("a feature's default is True, False, or a function returning one")
        self.registry.register(self)

    @property
    def scope_function(self) -> ScopeFunction:
        return BUILTIN_SCOPES[self.scope] if isinstance(self.scope, str) else self.scope

    def scope_value(self) -> str | None:
        """This feature's scope in the current context, or None when there is none."""
        value = self.scope_function(self)
        if value is None:
            return None
        check_scope(value, what=f"the scope function of {self.key!r} returned")
        return value

    def default_value(self) -> bool:
        """``default``, called when it is a function."""
        value = self.default() if callable(self.default) else self.default
        if not isinstance(value, bool):
            raise UsageError(f"the default of feature {self.key!r} returned {value!r}, not True or False")
        return value

    def rolled_out_to(self, scope: str) -> bool | None:
        """Whether the rollout enables ``scope``; None when the feature has no ``enable_chance``."""
        if self.enable_chance is None:
            return None
        return rollout_position(self.key, scope) < self.enable_chance

    def evaluate(self) -> bool:
        """The seed's spelling: this feature's value for the current request or unit of work."""
        return values_in_context().is_enabled(self)

    def __repr__(self) -> str:
        return f"<Feature {self.key!r}>"


class FeatureValues(Protocol):
    """What answers for features in a context: :class:`rls_tenancy.features.flags.Flags`."""

    def is_enabled(self, feature: Feature, /) -> bool: ...


#: Where :meth:`Feature.evaluate` finds the values of the current request or
#: ``flags_for`` block. :mod:`rls_tenancy.features.flags` sets it; it lives here so
#: that a feature can evaluate itself without importing what evaluates it.
VALUES: ContextVar[Callable[[], FeatureValues] | None] = ContextVar("rls_tenancy.flags", default=None)
NO_VALUES = "no feature flags in context: evaluate inside a request, or in `with flags_for(session):`"


def values_in_context() -> FeatureValues:
    """The values of the current request or ``flags_for`` block; :class:`UsageError` outside one."""
    source = VALUES.get()
    if source is None:
        raise UsageError(NO_VALUES)
    return source()


def check_scope(value: object, *, what: str = "a scope is") -> str:
    """``value`` if it can be a scope: text of 1 to 200 characters; :class:`UsageError` otherwise."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SCOPE or not storable(value):
        raise UsageError(f"{what} {value!r}; a scope is text of 1 to {MAX_SCOPE} characters")
    return value
