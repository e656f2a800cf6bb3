"""The key that signs the tenant context, and the proof PostgreSQL checks beside the bare setting.

With signing required (``rls_tenancy.require_signed_context(true)``,
sql/016_signed_context.sql), the policies trust ``app.current_tenant`` and
``app.current_user_id`` only beside ``app.context_proof``, a MAC of both
under a key the application role cannot read: SQL that sets the tenant
itself, injected or not, gets no tenant. The application holds the key in
its configuration (``RLS_TENANCY_CONTEXT_KEY``, ``<slot>:<32 hex digits>``);
the database holds it in the slot's owner-only sequences.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from rls_tenancy.binding import settings as _settings
from rls_tenancy.errors import UsageError

SETTING = _settings.PROOF
SLOTS = (1, 2)
_KEY_BYTES = 16


@dataclass(frozen=True)
class ContextKey:
    """A 128-bit key in one of the database's two slots (two, so that a key can be rotated)."""

    slot: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.slot not in SLOTS:
            raise UsageError(f"a context key goes in slot 1 or 2, not {self.slot!r}")
        if not isinstance(self.key, bytes) or len(self.key) != _KEY_BYTES:
            raise UsageError("a context key is 16 bytes (128 bits)")

    @classmethod
    def generate(cls, slot: int = 1) -> ContextKey:
        """A fresh random key for ``slot``."""
        return cls(slot, secrets.token_bytes(_KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> ContextKey:
        """``<slot>:<32 hex digits>``, as :meth:`__str__` writes it (the form configuration holds)."""
        slot, _, digits = text.strip().partition(":")
        try:
            return cls(int(slot), bytes.fromhex(digits))
        except ValueError:
            raise UsageError("a context key reads <slot>:<32 hex digits>, e.g. 1:00ff...") from None

    def __str__(self) -> str:
        return f"{self.slot}:{self.key.hex()}"

    def fingerprint(self) -> str:
        """What ``rls_tenancy.context_key_fingerprint(slot)`` answers for this key: it tells nothing of it."""
        return hashlib.sha256(self.key + b"\x02").digest()[:8].hex()

    def proof(self, tenant: int | None, user: int | None, *, pid: int = 0, issued_ms: int | None = None) -> str:
        """``app.context_proof`` for the tenant and user bound beside it, now (or at ``issued_ms``).

        ``pid``: the backend the proof is good on (0: any, behind a pooler
        that hides which). PostgreSQL accepts it five minutes either side
        of its issue, against the server's clock at the transaction's start.
        """
        issued = int(time.time() * 1000) if issued_ms is None else issued_ms
        message = f"{'' if tenant is None else tenant}|{'' if user is None else user}|{issued}:{pid}"
        return f"{self.slot}:{issued}:{pid}:{self._mac(message)}"

    def grant(self, what: str, *, user: int | None, transaction: str) -> str:
        """One grant of ``app.grants`` (``rls_tenancy.granted(what)``): consent to one write, in one transaction.

        ``what`` names the write and every value it writes
        (:mod:`rls_tenancy.binding.grants`); ``user``: the user the
        transaction acts for (good for no other); ``transaction``: its mark,
        as the server answered its binding (its start and backend, which SQL
        cannot change): a copy is worth nothing in any other transaction.
        """
        message = f"grant|{transaction}|{'' if user is None else user}|{what}"
        return f"{self.slot}:{self._mac(message)}"

    def _mac(self, message: str) -> str:
        inner = hashlib.sha256(self.key + b"\x00" + message.encode()).digest()
        return hashlib.sha256(self.key + b"\x01" + inner).hexdigest()
