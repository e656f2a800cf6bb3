"""An OpenFeature provider for rls_tenancy's feature flags (extra ``openfeature``).

    from openfeature import api
    from rls_tenancy.features.openfeature import TenancyFlagProvider

    api.set_provider(TenancyFlagProvider())
    api.get_client().get_boolean_value("new-dashboard", False)   # inside a request or flags_for()

Flags are evaluated exactly as :func:`~rls_tenancy.flask.features.feature_enabled`
would: for the request's (or ``flags_for`` block's) tenant, user and
address, with the overrides loaded once. The OpenFeature evaluation context
is not used to choose a scope: the request's own identity is the only one a
flag may be decided for. Flags are booleans; other types are a type
mismatch, an undeclared key is "flag not found", and OpenFeature then
returns the caller's default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, GeneralError, TypeMismatchError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from rls_tenancy.errors import UnknownFeatureError, UsageError
from rls_tenancy.features.flags import Flags, current_flags

_REASONS = {
    "global-override": Reason.TARGETING_MATCH,
    "tenant-override": Reason.TARGETING_MATCH,
    "rollout": Reason.SPLIT,
    "default": Reason.DEFAULT,
}


class TenancyFlagProvider(AbstractProvider):
    """Boolean flags from :mod:`rls_tenancy.features.declare`, for the OpenFeature SDK."""

    def __init__(self, flags: Callable[[], Flags] = current_flags) -> None:
        super().__init__()
        self._flags = flags

    def get_metadata(self) -> Metadata:
        return Metadata(name="rls_tenancy")

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        try:
            found = self._flags().explain(flag_key)
        except UnknownFeatureError as error:
            raise FlagNotFoundError(str(error)) from error
        except UsageError as error:  # no request or flags_for() in context
            raise GeneralError(str(error)) from error
        return FlagResolutionDetails(
            value=found.enabled,
            reason=_REASONS[found.reason],
            variant="on" if found.enabled else "off",
            flag_metadata={"reason": found.reason, **({"scope": found.scope} if found.scope else {})},
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        raise TypeMismatchError(f"{flag_key!r}: rls_tenancy flags are booleans")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        raise TypeMismatchError(f"{flag_key!r}: rls_tenancy flags are booleans")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        raise TypeMismatchError(f"{flag_key!r}: rls_tenancy flags are booleans")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        raise TypeMismatchError(f"{flag_key!r}: rls_tenancy flags are booleans")
