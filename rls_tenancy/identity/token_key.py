"""The key that marks this application's API tokens, so that a made-up token is refused without a lookup.

A token reads ``rlst_<tenant id>_<43 characters>``: 32 bytes in base64url.
Issued under a token key, its first 16 bytes are random and its last 16 a
MAC of the tenant id and those 16. The resolver checks the mark in memory
before it asks the database, so a flood of made-up tokens costs what a flood
of malformed ones costs: no round trip, no pooled connection, no session
reset. The database stays the authority (it holds each token's SHA-256, and
decides): a leaked token key lets nobody in, it only lets made-up tokens
reach the lookup again.

The application holds its keys in its configuration
(``RLS_TENANCY_TOKEN_KEYS``, 64 hex digits each, comma-separated): the
first marks new tokens, every one is accepted. A key can be retired only
once the tokens it marked have expired or been revoked.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from rls_tenancy.errors import UsageError

#: Where the keys come from when the configuration does not name them.
ENVIRONMENT = "RLS_TENANCY_TOKEN_KEYS"
_KEY_BYTES = 32
_RANDOM_BYTES = 16
_MARK_BYTES = 16
_LABEL = b"rls_tenancy.token.v1\x00"


@dataclass(frozen=True)
class TokenKey:
    """A 256-bit key that marks the tokens this application issues."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != _KEY_BYTES:
            raise UsageError("a token key is 32 bytes (64 hex digits)")

    @classmethod
    def generate(cls) -> TokenKey:
        """A fresh random key."""
        return cls(secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> TokenKey:
        """64 hex digits, as :meth:`__str__` writes them (the form configuration holds)."""
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError:
            raise UsageError("a token key is 64 hex digits") from None

    def __str__(self) -> str:
        return self.key.hex()

    def secret(self, tenant_id: int) -> str:
        """A token's random part for ``tenant_id``, marked: 43 base64url characters."""
        random = secrets.token_bytes(_RANDOM_BYTES)
        return base64.urlsafe_b64encode(random + self._mark(tenant_id, random)).rstrip(b"=").decode("ascii")

    def marked(self, tenant_id: int, secret: str) -> bool:
        """Whether ``secret`` (43 base64url characters) carries this key's mark for ``tenant_id``."""
        raw = base64.urlsafe_b64decode(secret + "=")
        return hmac.compare_digest(raw[_RANDOM_BYTES:], self._mark(tenant_id, raw[:_RANDOM_BYTES]))

    def _mark(self, tenant_id: int, random: bytes) -> bytes:
        message = _LABEL + str(tenant_id).encode("ascii") + b"\x00" + random
        return hmac.digest(self.key, message, "sha256")[:_MARK_BYTES]


def token_keys(given: str | TokenKey | Iterable[str | TokenKey] | None) -> tuple[TokenKey, ...]:
    """The configured keys, the one that marks new tokens first.

    ``None`` reads ``$RLS_TENANCY_TOKEN_KEYS``; a string is keys separated
    by commas; nothing configured is ``()``, tokens unmarked.
    """
    if given is None:
        given = os.environ.get(ENVIRONMENT, "")
    if isinstance(given, TokenKey):
        return (given,)
    items = given.split(",") if isinstance(given, str) else list(given)
    keys = tuple(
        item if isinstance(item, TokenKey) else TokenKey.parse(item)
        for item in items
        if isinstance(item, TokenKey) or item.strip()
    )
    if len({key.key for key in keys}) != len(keys):
        raise UsageError("a token key is listed twice")
    return keys
