"""Identity: the library's users and API tokens, each of one tenant.

Tokens are issued, checked and revoked by :mod:`rls_tenancy.identity.tokens`.
"""

from __future__ import annotations

from rls_tenancy.identity.token_key import TokenKey
from rls_tenancy.identity.users import User

__all__ = ["TokenKey", "User"]
