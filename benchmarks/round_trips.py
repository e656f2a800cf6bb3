"""Round trips per transaction, counted on the wire, and their cost at 1 ms.

A loopback proxy (``rls_tenancy.testing.proxy``) sits between SQLAlchemy and
PostgreSQL and counts each time the client speaks after the server has: the
round trips. The baseline is SQLAlchemy + psycopg without tenancy (the
BYPASSRLS role, explicit ``WHERE tenant_id``); rls_tenancy is a bound engine
as the application role. Then the same transactions through a proxy that
holds every packet 1 ms each way, as a network between app and database
would, timed interleaved; that proxy runs in a process of its own, so that
the client's work never delays its forwarding (a network does not share the
app's interpreter lock). Counted for sync and asyncio engines alike. The
"through a Session" rows run the one-query transaction as an ORM app
would (``with Session() as s, s.begin(): s.scalars(select(Item)...)``):
the baseline a plain ``sessionmaker`` and model with its explicit ``WHERE
tenant_id``, rls_tenancy a ``sessionmaker(query_cls=TenantQuery)`` given
to ``scope_sessions``, a ``TenantBoundMixin`` model and no ``WHERE`` of its
own. The one-query rows are then counted and timed again with the
database requiring a signed tenant context and the bound engines signing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection as Pipe

from sqlalchemy import BigInteger, DateTime, Engine, Text, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from benchmarks import dataset as data
from benchmarks.context import Context
from benchmarks.harness import Row, Section, Target, side_by_side
from rls_tenancy import ContextKey, TenantBoundMixin, TenantQuery, as_tenant, bind_engine, scope_sessions
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, signing_requested
from rls_tenancy.testing.proxy import RoundTripProxy

NO_EXTRA = Target("added", "<=", 0, "round trips")
LATENCY = Target("ratio", "<=", 1.02)
# A one-query transaction pays the binding's server and client work once over
# three round trips: judged at 1.03 (decided with the planning floor, see
# benchmarks/FINDINGS.md); five queries share that cost and keep 1.02.
ONE_QUERY_LATENCY = Target("ratio", "<=", 1.03)
DATASET = "trips"  # data.build names its tables after it
SESSION = "1-query transaction through a Session"


class _PlainBase(DeclarativeBase):
    pass


class PlainItem(_PlainBase):
    """The baseline's model of the items table: no tenancy, ``tenant_id`` an ordinary column."""

    __tablename__ = f"{DATASET}_items"
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    title: Mapped[str] = mapped_column(Text)


class _TenancyBase(DeclarativeBase):
    pass


class TenantItem(TenantBoundMixin, _TenancyBase):
    """The same table as an app adopting rls_tenancy maps it."""

    __tablename__ = f"{DATASET}_items"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    title: Mapped[str] = mapped_column(Text)


def run(ctx: Context) -> Section:
    transactions = ctx.pick(5, 200, 1_000)
    section = Section("Round trips per transaction", __doc__.split("\n\n", 1)[1].replace("\n", " ").strip())
    with ctx.library_database() as db:
        items = data.build(db.superuser_url, name=DATASET, tenants=10, rows=10_000)
        for queries in (1, 5):
            with RoundTripProxy(str(db.app_url.host), int(db.app_url.port or 5432)) as proxy:
                base, rls = (_counted(proxy, url, items, queries, bound) for url, bound in _sides(db, proxy.port))
                section.add(Row(f"{queries}-query transaction", base, rls, "round trips", NO_EXTRA))
                base, rls = (_counted_async(proxy, url, items, queries, bound) for url, bound in _sides(db, proxy.port))
                section.add(Row(f"{queries}-query transaction, asyncio", base, rls, "round trips", NO_EXTRA))
                if queries == 1:
                    base, rls = (_counted_session(proxy, url, items, bound) for url, bound in _sides(db, proxy.port))
                    section.add(Row(SESSION, base, rls, "round trips", NO_EXTRA))
        for queries in (1, 5):
            with _proxy_process(str(db.app_url.host), int(db.app_url.port or 5432), delay=0.001) as port:
                engines = [_engine(url, bound) for url, bound in _sides(db, port)]
                try:
                    work = [
                        _transaction(engine, items, queries, bound)
                        for engine, bound in zip(engines, (False, True), strict=True)
                    ]
                    base_s, rls_s = side_by_side(work[0], work[1], repeats=transactions)
                    if queries == 1:
                        orm = [
                            session_transaction(engine, items, bound)
                            for engine, bound in zip(engines, (False, True), strict=True)
                        ]
                        orm_s = side_by_side(orm[0], orm[1], repeats=transactions)
                finally:
                    for engine in engines:
                        engine.dispose()
                section.add(
                    Row(
                        f"{queries}-query transaction, 1 ms each way",
                        base_s * 1e3,
                        rls_s * 1e3,
                        "ms",
                        ONE_QUERY_LATENCY if queries == 1 else LATENCY,
                    )
                )
                ctx.log(f"{queries} queries at 1 ms: ratio {rls_s / base_s:.3f}")
                if queries == 1:
                    section.add(
                        Row(f"{SESSION}, 1 ms each way", orm_s[0] * 1e3, orm_s[1] * 1e3, "ms", ONE_QUERY_LATENCY)
                    )
                    ctx.log(f"one query through a Session at 1 ms: ratio {orm_s[1] / orm_s[0]:.3f}")
        if not signing_requested():  # else the rows above are signed already
            _signed_rows(ctx, section, db, items, transactions)
    return section


#: The user the signed rows act for: the proof names one; a SELECT needs no row of them.
SIGNED_USER = 1


def _signed_rows(ctx: Context, section: Section, db: TenancyDatabase, items: data.Dataset, transactions: int) -> None:
    """The one-query rows again, the database requiring a signed context and the engines signing."""
    key = ContextKey.generate()
    require_signing(db.superuser_url, key)
    suffix = ", signed context"
    with RoundTripProxy(str(db.app_url.host), int(db.app_url.port or 5432)) as proxy:
        base, rls = (_counted(proxy, url, items, 1, bound, key) for url, bound in _sides(db, proxy.port))
        section.add(Row(f"1-query transaction{suffix}", base, rls, "round trips", NO_EXTRA))
        base, rls = (_counted_async(proxy, url, items, 1, bound, key) for url, bound in _sides(db, proxy.port))
        section.add(Row(f"1-query transaction, asyncio{suffix}", base, rls, "round trips", NO_EXTRA))
        base, rls = (_counted_session(proxy, url, items, bound, key) for url, bound in _sides(db, proxy.port))
        section.add(Row(f"{SESSION}{suffix}", base, rls, "round trips", NO_EXTRA))
    # Signed, what a request acts as matters: a user's transactions keep the session their user left; each
    # request (block) acting for no user begins with a reset, as two of them may be two clients.
    with _proxy_process(str(db.app_url.host), int(db.app_url.port or 5432), delay=0.001) as port:
        engines = [_engine(url, bound, key) for url, bound in _sides(db, port)]
        try:
            base_s, rls_s = side_by_side(
                _transaction(engines[0], items, 1, False, SIGNED_USER),
                _transaction(engines[1], items, 1, True, SIGNED_USER),
                repeats=transactions,
            )
            orm_s = side_by_side(
                session_transaction(engines[0], items, False, SIGNED_USER),
                session_transaction(engines[1], items, True, SIGNED_USER),
                repeats=transactions,
            )
            anonymous = side_by_side(
                _transaction(engines[0], items, 1, False),
                _transaction(engines[1], items, 1, True),
                repeats=transactions,
            )
        finally:
            for engine in engines:
                engine.dispose()
    mine = f"{suffix}, a user's"
    section.add(Row(f"1-query transaction, 1 ms each way{mine}", base_s * 1e3, rls_s * 1e3, "ms", ONE_QUERY_LATENCY))
    section.add(Row(f"{SESSION}, 1 ms each way{mine}", orm_s[0] * 1e3, orm_s[1] * 1e3, "ms", ONE_QUERY_LATENCY))
    section.add(
        Row(
            f"1-query transaction, 1 ms each way{suffix}, no user (a reset each)",
            anonymous[0] * 1e3,
            anonymous[1] * 1e3,
            "ms",
            None,
            "each request acting for no user begins with a session reset, in its BEGIN's round trip",
        )
    )
    ctx.log(
        f"signed at 1 ms: ratio {rls_s / base_s:.3f}, through a Session {orm_s[1] / orm_s[0]:.3f}, "
        f"no user {anonymous[1] / anonymous[0]:.3f}"
    )


@contextmanager
def _proxy_process(host: str, port: int, *, delay: float) -> Iterator[int]:
    """A delaying proxy in a process of its own; yields its port."""
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    process = spawn.Process(target=_serve_proxy, args=(theirs, host, port, delay))
    process.start()
    try:
        yield int(ours.recv())
    finally:
        ours.send("stop")
        process.join(10)


def _serve_proxy(pipe: Pipe, host: str, port: int, delay: float) -> None:
    with RoundTripProxy(host, port, delay=delay) as proxy:
        pipe.send(proxy.port)
        pipe.recv()  # until told to stop


def _sides(db: TenancyDatabase, port: int) -> list[tuple[URL, bool]]:
    """(URL through the proxy, bound?) for the baseline, then for rls_tenancy."""
    return [
        (db.bypass_url.set(host="127.0.0.1", port=port), False),
        (db.app_url.set(host="127.0.0.1", port=port), True),
    ]


def _engine(url: URL, bound: bool, key: ContextKey | None = None) -> Engine:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    return bind_engine(engine, context_key=key) if bound else engine


def _statements(items: data.Dataset, queries: int, bound: bool, rng: random.Random) -> list[tuple[str, dict[str, int]]]:
    tenant = items.small_tenants(1)[0]
    where = "" if bound else " AND tenant_id = :t"
    statement = f"SELECT title FROM {items.items} WHERE id = :id{where}"  # noqa: S608 - a fixed table name
    return [(statement, {"id": rng.randint(1, items.rows), "t": tenant}) for _ in range(queries)]


def _transaction(
    engine: Engine, items: data.Dataset, queries: int, bound: bool, user: int | None = None
) -> Callable[[], None]:
    rng = random.Random(11)
    tenant = items.small_tenants(1)[0]

    def one() -> None:
        with as_tenant(tenant, user=user), engine.connect() as conn:
            for statement, params in _statements(items, queries, bound, rng):
                conn.execute(text(statement), params).all()
            conn.commit()

    return one


def session_transaction(
    engine: Engine, items: data.Dataset, bound: bool, user: int | None = None
) -> Callable[[], None]:
    """One ORM transaction reading one item: the baseline's (``bound`` False) or an adopter's, scoped."""
    rng = random.Random(11)
    tenant = items.small_tenants(1)[0]
    if not bound:
        plain = sessionmaker(engine)

        def baseline() -> None:
            with as_tenant(tenant, user=user), plain() as session, session.begin():
                wanted = PlainItem.id == rng.randint(1, items.rows)
                session.scalars(select(PlainItem).where(wanted, PlainItem.tenant_id == tenant)).all()

        return baseline
    scoped = sessionmaker(engine, query_cls=TenantQuery)
    scope_sessions(scoped)

    def tenancy() -> None:
        with as_tenant(tenant, user=user), scoped() as session, session.begin():
            session.scalars(select(TenantItem).where(TenantItem.id == rng.randint(1, items.rows))).all()

    return tenancy


def _counted_session(
    proxy: RoundTripProxy, url: URL, items: data.Dataset, bound: bool, key: ContextKey | None = None
) -> float:
    engine = _engine(url, bound, key)
    try:
        return _count(proxy, session_transaction(engine, items, bound))
    finally:
        engine.dispose()


def _count(proxy: RoundTripProxy, work: Callable[[], None]) -> float:
    """Round trips per call of ``work``, once psycopg has connected and prepared what it will."""
    for _ in range(7):
        work()
    proxy.reset()
    for _ in range(10):
        work()
    return proxy.round_trips / 10


def _counted(
    proxy: RoundTripProxy, url: URL, items: data.Dataset, queries: int, bound: bool, key: ContextKey | None = None
) -> float:
    engine = _engine(url, bound, key)
    try:
        return _count(proxy, _transaction(engine, items, queries, bound))
    finally:
        engine.dispose()


def _counted_async(
    proxy: RoundTripProxy, url: URL, items: data.Dataset, queries: int, bound: bool, key: ContextKey | None = None
) -> float:
    async def measure() -> float:
        engine: AsyncEngine = create_async_engine(url, pool_size=1, max_overflow=0)
        if bound:
            bind_engine(engine, context_key=key)
        rng = random.Random(11)
        tenant = items.small_tenants(1)[0]

        async def one() -> None:
            with as_tenant(tenant):
                async with engine.connect() as conn:
                    for statement, params in _statements(items, queries, bound, rng):
                        (await conn.execute(text(statement), params)).all()
                    await conn.commit()

        try:
            for _ in range(7):
                await one()
            proxy.reset()
            for _ in range(10):
                await one()
            return proxy.round_trips / 10
        finally:
            await engine.dispose()

    return asyncio.run(measure())
