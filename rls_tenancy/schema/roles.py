"""The three database roles, and how their names are configured.

The SQL in ``sql/`` reads the names from the settings ``rls_tenancy.owner_role``,
``rls_tenancy.app_role`` and ``rls_tenancy.bypass_role`` (defaults
``rls_owner``, ``rls_app``, ``rls_admin``) and records them in
``rls_tenancy.roles``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rls_tenancy.errors import UsageError

# Conservative: lower-case unquoted identifiers, so names never need quoting
# in a DBA's psql session and cannot smuggle anything into dynamic SQL.
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

_ENV = {"owner": "RLS_TENANCY_OWNER_ROLE", "app": "RLS_TENANCY_APP_ROLE", "bypass": "RLS_TENANCY_BYPASS_ROLE"}


@dataclass(frozen=True)
class RoleNames:
    """Names of the owner, application and bypass roles."""

    owner: str = "rls_owner"
    app: str = "rls_app"
    bypass: str = "rls_admin"

    def __post_init__(self) -> None:
        for purpose in ("owner", "app", "bypass"):
            name = getattr(self, purpose)
            if not isinstance(name, str) or not _ROLE_NAME.match(name):
                raise UsageError(
                    f"{purpose} role name {name!r} is not a lower-case identifier "
                    "(letters, digits, underscore; at most 63 characters)"
                )
        if len({self.owner, self.app, self.bypass}) != 3:
            raise UsageError("the owner, app and bypass roles must be three different roles")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RoleNames:
        """Names from ``RLS_TENANCY_{OWNER,APP,BYPASS}_ROLE`` (``environ``: the process's by default)."""
        environ = os.environ if environ is None else environ
        given = {purpose: environ[var] for purpose, var in _ENV.items() if environ.get(var)}
        return cls(**given)

    @classmethod
    def from_env_if_given(cls, environ: Mapping[str, str] | None = None) -> RoleNames | None:
        """Names from the environment when any ``RLS_TENANCY_*_ROLE`` variable is set, else None."""
        environ = os.environ if environ is None else environ
        return cls.from_env(environ) if any(environ.get(var) for var in _ENV.values()) else None

    def settings(self) -> dict[str, str]:
        """The settings the SQL scripts read the names from."""
        return {
            "rls_tenancy.owner_role": self.owner,
            "rls_tenancy.app_role": self.app,
            "rls_tenancy.bypass_role": self.bypass,
        }
