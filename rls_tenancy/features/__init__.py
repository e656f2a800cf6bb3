"""Feature flags: declared in code, evaluated per request with scopes, rollout chance and overrides."""

from __future__ import annotations

from rls_tenancy.features.declare import EVERY_SCOPE, REGISTRY, Feature, FeatureRegistry, rollout_position
from rls_tenancy.features.flags import Flags, current_flags, flags_for

__all__ = [
    "EVERY_SCOPE",
    "REGISTRY",
    "Feature",
    "FeatureRegistry",
    "Flags",
    "current_flags",
    "flags_for",
    "rollout_position",
]
