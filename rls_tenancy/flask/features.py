"""Feature flags in Flask views and Jinja templates, one query per request at most.

``feature_enabled("new-dashboard")`` in a view or a template (a template
global) evaluates a declared feature for the request's scopes; the first
evaluation in a request loads the overrides for all of them at once, the
rest are in memory (:class:`~rls_tenancy.features.flags.Flags`). ``Feature.evaluate()``
works the same inside a request.
"""

from __future__ import annotations

from rls_tenancy.errors import InvalidRequestError, UnknownFeatureError, UsageError
from rls_tenancy.features.declare import Feature
from rls_tenancy.features.overrides import Override, clear_override, set_override
from rls_tenancy.flask.current import get_current_scopes
from rls_tenancy.flask.state import request_flags, state

__all__ = ["clear_feature_override", "feature_enabled", "request_flags", "set_feature_override"]


def feature_enabled(feature: Feature | str) -> bool:
    """Whether ``feature`` is on for this request; an undeclared key is an ``UnknownFeatureError``."""
    return request_flags().is_enabled(feature)


def set_feature_override(feature: Feature | str, enabled: bool, *, scope: str | None = None) -> Override:
    """Store an override in the request's tenant, as the request's user and scopes allow.

    In the request's transaction (commit it); 403 JSON when not allowed, 400
    when the request has no such scope or gives a bad one.
    """
    try:
        stored = set_override(
            state().session(), feature, enabled, scope=scope, granted=get_current_scopes(), registry=state().features
        )
    except UnknownFeatureError:
        raise
    except UsageError as error:  # a request's mistake (no scope to override, a bad value): 400
        raise InvalidRequestError(str(error)) from error
    request_flags().invalidate()
    return stored


def clear_feature_override(feature: Feature | str, *, scope: str | None = None) -> bool:
    """Remove an override of the request's tenant; False when there was none."""
    try:
        removed = clear_override(
            state().session(), feature, scope=scope, granted=get_current_scopes(), registry=state().features
        )
    except UnknownFeatureError:
        raise
    except UsageError as error:
        raise InvalidRequestError(str(error)) from error
    request_flags().invalidate()
    return removed
