"""An idle pooled connection goes back to the tenant it last served, when there is one.

A connection about to serve another tenant than its last pays the session
reset (:mod:`rls_tenancy.binding.engine`): about 100 µs of CPU, on both sides of
the wire, per change. SQLAlchemy's ``QueuePool`` hands out whichever idle
connection comes next, so with a handful of tenants nearly every other
checkout changes tenant. A bound engine's ``QueuePool`` takes, among its idle
connections, one that last served the tenant in context; if none did and the
pool holds fewer than ``pool_size`` connections, it opens one rather than
reset another tenant's (an app serving one request at a time would otherwise
keep one connection and reset it at every change); otherwise it takes the
one it would have taken. Only the choice changes: every connection is still
reset before it serves another tenant. With a context key, where a change of
user resets the session too, an idle connection that last served the same
user of that tenant comes first.

Exactly SQLAlchemy's ``QueuePool`` (the default of ``create_engine``); a
subclass of it, another pool class and asyncio engines' pools keep their
own order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy.pool import ConnectionPoolEntry, Pool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from rls_tenancy.binding.signing import key_of
from rls_tenancy.context import acting

#: conn.info: the tenant whose transactions the session last served, since its last reset.
SERVED = "rls_tenancy.served_tenant"
#: conn.info: the user whose transactions it last served (a boundary too, with a context key).
SERVED_USER = "rls_tenancy.served_user"
#: A new connection: its session is reset before it serves anyone.
NEVER = object()
#: The user a checkout is for when the context binds none yet (a token's, as last found).
_FOR_USER: ContextVar[object] = ContextVar("rls_tenancy_checkout_user", default=NEVER)


@contextmanager
def serving_user(user: object) -> Iterator[None]:
    """Inside the block, work binds no user yet but will serve ``user`` (a token's, as last found).

    Checkouts prefer a connection that last served that user of the tenant
    in context, and the binding resets a session only if it served another.
    """
    token = _FOR_USER.set(user)
    try:
        yield
    finally:
        _FOR_USER.reset(token)


def served_user(in_context: int | None) -> object:
    """The user the work in hand will serve: ``in_context``, unless :func:`serving_user` says whom."""
    hinted = _FOR_USER.get()
    return in_context if hinted is NEVER else hinted


def _wanted() -> tuple[int | None, object]:
    """The tenant in context, and the user the checkout is for."""
    tenant, user = acting()
    return tenant, served_user(user)


class _AffineQueue(sqla_queue.Queue[ConnectionPoolEntry]):
    """The pool's queue of idle connections, looked through for the tenant in context first."""

    def _get(self) -> ConnectionPoolEntry:
        queue = self.queue
        if len(queue) > 1:  # called with the queue's lock held
            tenant, user = _wanted()
            found = None
            # In the order the queue would have taken them: newest first when LIFO.
            for index in range(len(queue) - 1, -1, -1) if self.use_lifo else range(len(queue)):
                info = queue[index].info
                if info.get(SERVED, NEVER) == tenant:
                    if info.get(SERVED_USER, NEVER) == user:
                        found = index
                        break
                    found = index if found is None else found
            if found is not None:
                record = queue[found]
                del queue[found]
                return record
        return super()._get()

    def holds(self, tenant: object, user: object = NEVER) -> bool:
        """Whether an idle connection last served ``tenant`` (and ``user``, unless NEVER)."""
        with self.mutex:
            return any(
                record.info.get(SERVED, NEVER) == tenant
                and (user is NEVER or record.info.get(SERVED_USER, NEVER) == user)
                for record in self.queue
            )


class _AffinePool(QueuePool):
    """``QueuePool`` with :class:`_AffineQueue`; ``recreate()`` (``engine.dispose()``) keeps it."""

    _queue_class: Any = _AffineQueue
    _pool: _AffineQueue

    def _do_get(self) -> ConnectionPoolEntry:
        tenant, user = _wanted()
        # Signed, a change of user resets the session too (rls_tenancy.binding.engine).
        by_user = key_of(self._dialect) is not None
        if self._overflow < 0 and not self._pool.holds(tenant, user if by_user else NEVER) and self._grow():
            try:
                return self._create_connection()
            except BaseException:
                self._dec_overflow()
                raise
        return super()._do_get()

    def _grow(self) -> bool:
        """Count one more connection if the pool holds fewer than its size."""
        with self._overflow_lock:
            if self._overflow < 0:
                self._overflow += 1
                return True
            return False


def prefer_last_tenant(pool: Pool) -> None:
    """Make ``pool`` hand idle connections back to the tenant they last served, if it is a plain ``QueuePool``.

    Its queue is swapped while empty only (the engine's first use comes
    later); a pool already in use keeps its order until ``engine.dispose()``.
    """
    if type(pool) is not QueuePool:
        return
    idle = pool._pool  # noqa: SLF001  (its queue of idle connections)
    if type(idle) is not sqla_queue.Queue or pool.checkedin() or pool.checkedout():
        return
    pool._pool = _AffineQueue(idle.maxsize, use_lifo=idle.use_lifo)  # noqa: SLF001
    pool.__class__ = _AffinePool
