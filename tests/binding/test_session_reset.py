"""Nothing a tenant's transactions leave in a session reaches another tenant's.

A pool of one connection (the same backend, asserted) serves tenant A, then
B, then A. What A's transaction leaves behind (temp tables and views, holdable
cursors, ``LISTEN``, session settings, prepared statements, advisory locks,
sequence values), by an ordinary app's code or by SQL injected as the app
role, is gone before B's transaction runs its first statement, at no round
trip of its own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import pytest
from alembic.config import Config
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from psycopg import sql
from sqlalchemy import Connection, Engine, cast, create_engine, literal, select, text
from sqlalchemy.dialects.postgresql import HSTORE
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from rls_tenancy import (
    AuthenticationError,
    ConfigurationError,
    InsecureRoleError,
    TenancyError,
    UnsafeBypass,
    as_tenant,
    bind_engine,
)
from rls_tenancy.flask import Tenancy
from rls_tenancy.identity.tokens import authenticate_token, issue_token
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import tenancy_database
from rls_tenancy.testing.pgbouncer import find_pgbouncer, pgbouncer
from rls_tenancy.testing.server import find_bindir, local_cluster
from tests.conftest import DEMO_ALEMBIC_INI, World, ddl

PID = text("SELECT pg_backend_pid()")
T = TypeVar("T")
NAMES = text("SELECT name FROM projects ORDER BY name")


def _as(
    engine: Engine, tenant: int | None, work: Callable[[Connection], T], *, commit: bool = True, user: int | None = None
) -> T:
    """``work`` in one transaction of ``tenant`` (or none); returns what it returns, with the backend pid checked."""
    with as_tenant(tenant, user=user) if tenant is not None else _nothing(), engine.connect() as conn:
        result = work(conn)
        _PIDS.add(conn.execute(PID).scalar_one())
        if commit:
            conn.commit()
        return result


_PIDS: set[int] = set()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


@pytest.fixture(autouse=True)
def _one_backend() -> Iterator[None]:
    _PIDS.clear()
    yield
    assert len(_PIDS) <= 1, "every transaction ran on the same backend"


def _scalar(sql: str, **values: object) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(text(sql), values).scalar()


def _run(sql: str, **values: object) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(text(sql), values)


def _names(conn: Connection) -> set[str]:
    return set(conn.execute(NAMES).scalars())


@pytest.mark.rls_binding
@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_temp_table_made_for_one_tenant_is_gone_for_the_next(
    pinned_engine: Engine, world: World, ending: str
) -> None:
    report = "CREATE TEMP TABLE IF NOT EXISTS report AS SELECT name FROM projects"

    def make_and_read(conn: Connection) -> set[str]:
        conn.execute(text(report))
        return set(conn.execute(text("SELECT name FROM report")).scalars())

    _as(pinned_engine, world.a, _run(report))  # an ordinary app's code, committed
    # B's transaction, however it ends, never sees A's table, and makes its own.
    assert (
        _as(pinned_engine, world.b, _scalar("SELECT to_regclass('pg_temp.report')"), commit=ending == "commit") is None
    )
    assert _as(pinned_engine, world.b, make_and_read) == world.projects[world.b]
    assert _as(pinned_engine, world.a, make_and_read) == world.projects[world.a]


@pytest.mark.rls_binding
def test_a_temp_view_cannot_shadow_a_table_for_the_next_tenant(pinned_engine: Engine, world: World) -> None:
    _as(pinned_engine, world.a, _run("CREATE TEMP VIEW projects AS SELECT 'planted'::text AS name"))
    assert _as(pinned_engine, world.b, _names) == world.projects[world.b]


@pytest.mark.rls_binding
def test_a_holdable_cursor_is_closed_before_the_next_tenant(pinned_engine: Engine, world: World) -> None:
    _as(pinned_engine, world.a, _run("DECLARE leak CURSOR WITH HOLD FOR SELECT name FROM projects"))
    with pytest.raises(DBAPIError, match='cursor "leak" does not exist'):
        _as(pinned_engine, world.b, _run("FETCH ALL FROM leak"))


@pytest.mark.rls_binding
def test_listen_registrations_end_before_the_next_tenant(pinned_engine: Engine, world: World) -> None:
    _as(pinned_engine, world.a, _run("LISTEN tenant_a_events"))
    assert _as(pinned_engine, world.b, _scalar("SELECT count(*) FROM pg_listening_channels()")) == 0


@pytest.mark.rls_binding
@pytest.mark.parametrize(
    ("plant", "check", "default"),
    [
        ("SET search_path = pg_temp, public", "SHOW search_path", '"$user", public'),
        ("SET default_transaction_read_only = on", "SHOW default_transaction_read_only", "off"),
        ("SET enable_indexscan = off", "SHOW enable_indexscan", "on"),
        ("SELECT set_config('app.anything', 'planted', false)", "SELECT current_setting('app.anything', true)", ""),
    ],
    ids=["search_path", "read_only", "planner", "custom"],
)
def test_session_settings_are_reset_before_the_next_tenant(
    pinned_engine: Engine, world: World, plant: str, check: str, default: str
) -> None:
    _as(pinned_engine, world.a, _run(plant))
    assert _as(pinned_engine, world.b, _scalar(check)) == default


# A transaction without a tenant binds the empty one over any session value;
# only autocommit work, which has no transaction to bind, rests on the reset.
@pytest.mark.parametrize("isolation", ["READ COMMITTED", pytest.param("AUTOCOMMIT", marks=pytest.mark.rls_binding)])
def test_a_session_wide_tenant_set_by_sql_is_gone_for_work_without_a_tenant(
    pinned_engine: Engine, world: World, isolation: str
) -> None:
    injected = _run("SELECT set_config('app.current_tenant', :b, false)", b=str(world.b))
    _as(pinned_engine, world.a, injected)  # committed: session-wide from here on
    plain = pinned_engine.execution_options(isolation_level=isolation)
    assert _as(plain, None, _names) == set()
    with pytest.raises(DBAPIError, match="row-level security"):
        _as(plain, None, _run("INSERT INTO projects (name) VALUES ('lands in B?')"))
    assert _as(pinned_engine, world.b, _names) == world.projects[world.b]  # B's rows are all still B's and nothing more


@pytest.fixture()
def members(superuser_engine: Engine, world: World) -> dict[int, int]:
    """A user of each tenant: psycopg prepares statements in transactions acting for a user (signed, only those)."""
    with superuser_engine.begin() as conn:
        return {
            tenant: conn.execute(
                text("INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (:tenant, :email) RETURNING id"),
                {"tenant": tenant, "email": f"member-{tenant}@reset.example"},
            ).scalar_one()
            for tenant in (world.a, world.b)
        }


@pytest.mark.rls_binding
def test_a_drivers_statement_re_prepared_by_sql_never_runs_for_the_next_tenant(
    pinned_engine: Engine, world: World, members: dict[int, int]
) -> None:
    def prepared(conn: Connection) -> list[tuple[str, str]]:
        return [(row[0], row[1]) for row in conn.execute(text("SELECT name, statement FROM pg_prepared_statements"))]

    name = _drivers_name_for_names(pinned_engine, world.a, members[world.a])

    def swap(conn: Connection) -> None:  # A's injected SQL puts its own text under the driver's name
        conn.exec_driver_sql(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)).as_string(None))
        planted = sql.SQL("PREPARE {} AS SELECT 'planted'::text AS name").format(sql.Identifier(name))
        conn.exec_driver_sql(planted.as_string(None))

    _as(pinned_engine, world.a, swap, user=members[world.a])
    assert _as(pinned_engine, world.b, _names, user=members[world.b]) == world.projects[world.b]
    assert not any("planted" in statement for _, statement in _as(pinned_engine, world.b, prepared))


def _prepared(conn: Connection) -> dict[str, tuple[str, bool, int]]:
    query = "SELECT name, statement, from_sql, generic_plans + custom_plans FROM pg_prepared_statements"
    rows = conn.execute(text(query))
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _drivers_name_for_names(engine: Engine, tenant: int, user: int) -> str:
    """The name psycopg prepared the NAMES query under, after running it enough times for ``tenant``'s ``user``."""
    for _ in range(6):  # psycopg prepares a statement on its fifth execution
        _as(engine, tenant, _names, user=user)
    (name,) = [name for name, row in _as(engine, tenant, _prepared).items() if "FROM projects" in row[0]]
    return name


def test_the_drivers_intact_statements_survive_a_change_of_tenant(
    pinned_engine: Engine, world: World, members: dict[int, int]
) -> None:
    """The reset keeps what psycopg prepared through the protocol: B runs A's plan by name, not a new one."""
    name = _drivers_name_for_names(pinned_engine, world.a, members[world.a])
    runs = _as(pinned_engine, world.a, _prepared)[name][2]
    assert _as(pinned_engine, world.b, _names, user=members[world.b]) == world.projects[world.b]
    after = _as(pinned_engine, world.b, _prepared)
    assert after[name][2] == runs + 1  # executed by its name, for B, with B's rows
    assert not any(from_sql for _, from_sql, _ in after.values())


@pytest.mark.rls_binding
def test_a_statement_prepared_by_sql_is_gone_for_the_next_tenant(
    pinned_engine: Engine, world: World, members: dict[int, int]
) -> None:
    _as(pinned_engine, world.a, _run("PREPARE mine AS SELECT name FROM projects"), user=members[world.a])
    # A tenant's user keeps it between their own transactions (signed, a transaction for no user resets).
    assert "mine" in _as(pinned_engine, world.a, _prepared, user=members[world.a])
    assert "mine" not in _as(pinned_engine, world.b, _prepared)


def test_a_drivers_statement_deallocated_by_sql_is_prepared_again_for_the_next_tenant(
    pinned_engine: Engine, world: World, members: dict[int, int]
) -> None:
    """psycopg forgets its names when one is gone: the next tenant's statement runs, it does not fail."""
    name = _drivers_name_for_names(pinned_engine, world.a, members[world.a])
    _as(pinned_engine, world.a, _run(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)).as_string(None)))
    for _ in range(6):
        assert _as(pinned_engine, world.b, _names, user=members[world.b]) == world.projects[world.b]
    assert _as(pinned_engine, world.a, _names, user=members[world.a]) == world.projects[world.a]


@pytest.mark.rls_binding
def test_session_advisory_locks_are_released_before_the_next_tenant(
    pinned_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    key = secrets.randbelow(2**31)
    _as(pinned_engine, world.a, _scalar("SELECT pg_advisory_lock(:key)", key=key))
    _as(pinned_engine, world.b, _scalar("SELECT 1"))
    other = create_engine(db.app_url)
    try:
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar() is True
    finally:
        other.dispose()


@pytest.mark.rls_binding
def test_lastval_does_not_tell_the_next_tenant_what_the_last_one_inserted(pinned_engine: Engine, world: World) -> None:
    _as(pinned_engine, world.a, _run("INSERT INTO projects (name) VALUES ('a new one')"))
    with pytest.raises(DBAPIError, match="lastval is not yet defined"):
        _as(pinned_engine, world.b, _scalar("SELECT lastval()"))


_SEEDED = "SELECT setseed(0.25)"
_DRAWN = "SELECT array_agg(random()) FROM generate_series(1, 3)"


@pytest.mark.parametrize("next_work", ["bound", "raw-autocommit"])
def test_a_seed_one_tenant_set_does_not_draw_the_next_tenants_random_numbers(
    pinned_engine: Engine, world: World, db: TenancyDatabase, next_work: str
) -> None:
    """``RESET ALL`` leaves ``setseed()``'s seed: A would know B's ``random()`` (a raffle, a code, a sample).

    Bound, the reset is ``reset_session()``; raw driver work in autocommit
    resets with the script, which PgBouncer's ``server_reset_query`` runs too.
    """
    control = create_engine(db.app_url)
    try:
        with control.connect() as conn:  # what A knows: the numbers that follow its seed
            conn.execute(text(_SEEDED))
            known = conn.execute(text(_DRAWN)).scalar_one()
    finally:
        control.dispose()
    _as(pinned_engine, world.a, _scalar(_SEEDED))
    if next_work == "bound":
        drawn = _as(pinned_engine, world.b, _scalar(_DRAWN))
    else:
        with as_tenant(world.b):
            raw = pinned_engine.raw_connection()
            try:
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
                cursor = raw.cursor()
                cursor.execute(_DRAWN)
                row = cursor.fetchone()
                assert row is not None
                drawn = row[0]
                _PIDS.add(raw.driver_connection.info.backend_pid)  # type: ignore[union-attr]
                raw.driver_connection.autocommit = False  # type: ignore[union-attr]
            finally:
                raw.close()
    assert drawn != known


def test_a_tenant_keeps_its_own_session_state_between_its_transactions(
    pinned_engine: Engine, world: World, members: dict[int, int]
) -> None:
    """The reset happens when the tenant (signed: the user) changes, not before every transaction."""
    user = members[world.a]
    _as(pinned_engine, world.a, _run("CREATE TEMP TABLE mine AS SELECT 1 AS x"), user=user)
    assert _as(pinned_engine, world.a, _scalar("SELECT count(*) FROM mine"), user=user) == 1


@contextmanager
def _app_role_defaults(db: TenancyDatabase, superuser_engine: Engine) -> Iterator[Engine]:
    """A plain engine of the app role; its role's defaults, whoever set them, reset afterwards."""
    plain = create_engine(db.app_url)
    try:
        yield plain
    finally:
        plain.dispose()
        with superuser_engine.begin() as conn:
            conn.exec_driver_sql(ddl("ALTER ROLE {} RESET ALL", db.roles.app))


def _refused_at_connect(db: TenancyDatabase, match: str) -> None:
    engine = bind_engine(create_engine(db.app_url))
    try:
        with pytest.raises(InsecureRoleError, match=match), engine.connect():
            pass
    finally:
        engine.dispose()


@pytest.mark.parametrize("setting", ["app.current_tenant", "app.current_user_id"])
def test_a_default_for_the_tenant_setting_is_refused_at_connect(
    db: TenancyDatabase, superuser_engine: Engine, world: World, setting: str
) -> None:
    """The app role cannot give itself one (PostgreSQL 15 refuses); a DBA's is refused on every new connection."""
    name, value = sql.Identifier(*setting.split(".")), sql.Literal(str(world.b))
    with _app_role_defaults(db, superuser_engine) as plain:
        with plain.begin() as conn, pytest.raises(DBAPIError, match="permission denied to set parameter"):
            conn.exec_driver_sql(sql.SQL("ALTER ROLE CURRENT_USER SET {} = {}").format(name, value).as_string(None))
        with superuser_engine.begin() as conn:
            role = sql.Identifier(db.roles.app)
            conn.exec_driver_sql(sql.SQL("ALTER ROLE {} SET {} = {}").format(role, name, value).as_string(None))
        _refused_at_connect(db, f"start with {setting}={world.b}")


#: Defaults SQL run as the app role may give its own role, each silently changing what every tenant
#: reads or writes: a probe showing it, and what the probe reads without it.
CHANGING_DEFAULTS = {
    "extra_float_digits = -15": ("SELECT 3.14159265358979::float8", 3.14159265358979),
    "array_nulls = off": ("SELECT ('{a,NULL}'::text[])[2] IS NULL", True),
    "gin_fuzzy_search_limit = 1": ("SELECT current_setting('gin_fuzzy_search_limit')", "0"),
    "standard_conforming_strings = off": ("SELECT 'x7' ~ '^x\\d$'", True),
    "transform_null_equals = on": ("SELECT count(*) FROM (VALUES (NULL::text)) AS v (t) WHERE t = NULL", 0),
}


@pytest.mark.parametrize("default", sorted(CHANGING_DEFAULTS))
def test_a_value_changing_default_sql_gives_the_app_role_is_refused_at_connect(
    db: TenancyDatabase, superuser_engine: Engine, default: str
) -> None:
    """SQL run as the app role may set its own role's defaults: these would change every tenant's values."""
    probe, unchanged = CHANGING_DEFAULTS[default]
    with _app_role_defaults(db, superuser_engine) as plain:
        with plain.begin() as conn:
            conn.exec_driver_sql(f"ALTER ROLE CURRENT_USER SET {default}")
        plain.dispose()
        with plain.connect() as conn:  # what every new session reads, unbound
            assert conn.exec_driver_sql(probe).scalar_one() != unchanged
        _refused_at_connect(db, f"start with {default}")


def test_behind_pgbouncer_a_value_changing_default_is_refused_on_a_new_server_session(
    db: TenancyDatabase, superuser_engine: Engine, world: World
) -> None:
    """The connect check ran when the client connected; the pooler's next server session starts with the default.

    SQL run for tenant A sets the app role's default; the pooler replaces its
    server connection (a lifetime, an idle timeout, here a terminate). B's
    next transaction fails loudly instead of reading its float rounded.
    """
    float_probe = "SELECT 3.14159265358979::float8"
    with _app_role_defaults(db, superuser_engine), _two_apps_behind_pgbouncer(db, reset=True) as (victim, attacker):
        assert _as(victim, world.b, _scalar(float_probe)) == 3.14159265358979  # checked at connect, served B
        _as(attacker, world.a, _run("ALTER ROLE CURRENT_USER SET extra_float_digits = -15"))
        server_session = _as(attacker, world.a, _scalar("SELECT pg_backend_pid()"))  # the pooler's only one
        with superuser_engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": server_session}).scalar()
        with pytest.raises(DBAPIError, match="start with extra_float_digits = -15"):
            _as(victim, world.b, _scalar(float_probe))


@pytest.mark.parametrize("pool", [StaticPool, SingletonThreadPool])
def test_pools_that_share_one_connection_are_refused(db: TenancyDatabase, pool: type) -> None:
    engine = create_engine(db.app_url, poolclass=pool)
    try:
        with pytest.raises(ConfigurationError, match=pool.__name__):
            bind_engine(engine)
    finally:
        engine.dispose()


def test_a_connection_shared_by_two_open_transactions_is_refused(db: TenancyDatabase, world: World) -> None:
    engine = bind_engine(create_engine(db.app_url))
    engine.pool = StaticPool(engine.pool._creator)  # as a custom sharing pool would
    try:
        with as_tenant(world.a), engine.connect() as first:
            first.execute(NAMES).all()
            with (
                as_tenant(world.b),
                engine.connect() as second,
                pytest.raises(ConfigurationError, match="open transaction"),
            ):
                second.execute(NAMES).all()
            # Closing the refused Connection rolled the shared DBAPI connection back: the
            # first one's work is gone with it, and its next statement is refused, never run for B.
            with pytest.raises(TenancyError, match="ended on the server"):
                first.execute(NAMES).all()
            first.rollback()
    finally:
        engine.dispose()


@pytest.mark.parametrize("reset", [True, False], ids=["readme-settings", "without-the-reset"])
def test_through_pgbouncer_two_client_engines_share_no_session_state(
    db: TenancyDatabase, world: World, members: dict[int, int], reset: bool
) -> None:
    """Two apps behind PgBouncer in transaction mode, one server connection: neither client knows who used it last.

    So behind a pooler every transaction begins with the library's reset,
    with PgBouncer's own reset configured or not.
    """
    with _two_apps_behind_pgbouncer(db, reset=reset) as (y, x):
        _as(y, world.b, _names, user=members[world.b])  # y has served B's user: no reason to reset for them
        _as(x, world.a, _run("CREATE TEMP TABLE IF NOT EXISTS report AS SELECT name FROM projects"))
        seen = _as(y, world.b, _scalar("SELECT to_regclass('pg_temp.report')"), user=members[world.b])
    assert seen is None  # B's app never finds A's table on the shared connection


@contextmanager
def _two_apps_behind_pgbouncer(db: TenancyDatabase, *, reset: bool) -> Iterator[tuple[Engine, Engine]]:
    """Two apps' engines behind PgBouncer, one server connection; its own reset, or (False) the library's alone."""
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    logins = {str(db.app_url.username): str(db.app_url.password)}
    with pgbouncer(db.superuser_url, logins, server_connections=1, reset=reset) as bouncer:
        url = bouncer.url(db.app_url)
        engines = tuple(bind_engine(create_engine(url, pool_size=1)) for _ in range(2))
        try:
            yield engines[0], engines[1]
        finally:
            for engine in engines:
                engine.dispose()


# A's SQL: a temp view shadowing projects that copies what it shows, padding that makes DISCARD TEMP slow,
# and a session-wide timeout that would cancel the reset partway, rolling all of it back.
SLOW_RESET_PLANT = """
CREATE TEMP TABLE loot (name text);
CREATE FUNCTION pg_temp.grab(n text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN INSERT INTO pg_temp.loot VALUES (n); RETURN true; END $$;
CREATE TEMP VIEW projects AS SELECT * FROM public.projects p WHERE pg_temp.grab(p.name);
DO $$ BEGIN FOR i IN 1..3000 LOOP EXECUTE 'CREATE TEMP TABLE pad_' || i || ' (a int, b text)'; END LOOP; END $$;
SELECT pg_catalog.set_config('statement_timeout', '30ms', false);
"""


def test_through_pgbouncer_a_timeout_set_by_sql_cannot_make_the_reset_fail(db: TenancyDatabase, world: World) -> None:
    """Before the reset script disarmed the timeouts, its DISCARD TEMP was cancelled, and B's rows went to A."""
    with _two_apps_behind_pgbouncer(db, reset=True) as (victim, attacker):
        _as(victim, world.b, _names)  # B's client connection has served B: it sees no reason to reset
        _as(attacker, world.a, lambda conn: conn.exec_driver_sql(SLOW_RESET_PLANT))  # several statements
        assert _as(victim, world.b, _names) == world.projects[world.b]
        loot = _as(attacker, world.a, _scalar("SELECT to_regclass('pg_temp.loot')"))
    assert loot is None  # the reset ran whole: A's temp objects, and what they copied of B's, are gone


# A's SQL: a temporary view shadowing projects that fails loudly if anyone reads through it, and more
# temporary functions than the shared lock table has room for (its nominal slots, three times: it has
# spare memory to grow into). Creating a function takes no lock; dropping
# one does, so DISCARD TEMP runs out of them ("out of shared memory") and its whole script rolls back.
LOCKS_EXHAUSTED_PLANT = """
CREATE FUNCTION pg_temp.trap() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the trap ran'; END $$;
CREATE TEMP VIEW projects AS SELECT * FROM public.projects p WHERE pg_temp.trap();
DO $$ BEGIN
    FOR i IN 1..(pg_catalog.current_setting('max_locks_per_transaction')::int
                 * pg_catalog.current_setting('max_connections')::int * 3) LOOP
        EXECUTE 'CREATE FUNCTION pg_temp.pad_' || i || '() RETURNS int LANGUAGE sql AS ''SELECT 1''';
    END LOOP;
END $$;
"""


def test_through_pgbouncer_a_reset_that_runs_out_of_locks_fails_closed() -> None:
    """PgBouncer keeps a server session whose reset failed, trap and all: the next tenant's transaction must fail.

    Before every transaction behind a pooler began with the library's own
    reset, B's next transaction read ``projects`` through A's view, which
    could copy B's rows and proof into A's session. On a server of its own:
    the plant leaves the lock table holding spare shared memory that other
    tests' transactions would then run short of.
    """
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    if find_bindir() is None:
        pytest.skip("*** no local PostgreSQL binaries: the lock table of a server of its own is not exhausted ***")
    with local_cluster() as cluster, tenancy_database(cluster.url, alembic_config=Config(DEMO_ALEMBIC_INI)) as db:
        superuser = create_engine(db.superuser_url)
        with superuser.begin() as admin:
            a, b = (
                admin.execute(
                    text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:s, :s) RETURNING id"), {"s": s}
                ).scalar_one()
                for s in ("a", "b")
            )
            admin.execute(text("INSERT INTO projects (tenant_id, name) VALUES (:t, 'b-one')"), {"t": b})
        superuser.dispose()
        with _two_apps_behind_pgbouncer(db, reset=True) as (victim, attacker):
            assert _as(victim, b, _names) == {"b-one"}
            _as(attacker, a, lambda conn: conn.exec_driver_sql(LOCKS_EXHAUSTED_PLANT))
            for _ in range(2):  # PgBouncer keeps the server session: each transaction on it fails
                with pytest.raises(DBAPIError) as failed:
                    _as(victim, b, _names)
                assert "trap" not in str(failed.value), "B's transaction read through A's view"


def test_a_timeout_set_by_sql_cannot_make_the_next_tenants_reset_fail(pinned_engine: Engine, world: World) -> None:
    """The statement's timer is armed as it starts: before the reset went out behind two SETs, B's request failed."""
    _as(pinned_engine, world.a, lambda conn: conn.exec_driver_sql(SLOW_RESET_PLANT))
    assert _as(pinned_engine, world.b, _names) == world.projects[world.b]
    assert _as(pinned_engine, world.a, _scalar("SELECT to_regclass('pg_temp.loot')")) is None
    assert _as(pinned_engine, world.a, _scalar("SELECT current_setting('statement_timeout')")) == "0"


@pytest.mark.parametrize("pre_ping", [False, True])
def test_an_idle_session_timeout_set_by_sql_costs_the_next_request_its_connection(
    db: TenancyDatabase, world: World, pre_ping: bool
) -> None:
    """Availability, documented: the server ends the pooled session while it idles; pool_pre_ping replaces it."""
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0, pool_pre_ping=pre_ping))

    def names_of_b() -> set[str]:
        with as_tenant(world.b), engine.connect() as conn:  # not _as(): the backend changes on purpose
            return _names(conn)

    try:
        with as_tenant(world.a), engine.begin() as conn:
            conn.execute(text("SELECT set_config('idle_session_timeout', '50', false)"))
        time.sleep(0.3)  # idle in the pool
        if not pre_ping:
            with pytest.raises(DBAPIError) as failed:
                names_of_b()
            assert failed.value.connection_invalidated
        assert names_of_b() == world.projects[world.b]  # a new connection, from the ping or the next checkout
    finally:
        engine.dispose()


@pytest.mark.rls_binding
def test_an_asyncio_engine_resets_the_session_between_tenants_too(db: TenancyDatabase, world: World) -> None:
    async def scenario() -> object:
        engine = bind_engine(create_async_engine(db.app_url, pool_size=1, max_overflow=0))
        try:
            with as_tenant(world.a):
                async with engine.begin() as conn:
                    await conn.execute(text("CREATE TEMP TABLE report AS SELECT name FROM projects"))
            with as_tenant(world.b):
                async with engine.connect() as conn:
                    return (await conn.execute(text("SELECT to_regclass('pg_temp.report')"))).scalar()
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) is None


def test_a_database_without_the_reset_function_fails_with_a_clear_error(rls_postgres_url: URL) -> None:
    """A database without the reset function (an older schema): the reset fails, nothing runs, the error says why."""
    with tenancy_database(rls_postgres_url) as database:
        superuser = create_engine(database.superuser_url)
        engine = bind_engine(create_engine(database.app_url))
        try:
            with superuser.begin() as conn:
                conn.execute(text("DROP FUNCTION rls_tenancy.reset_session(text[])"))
            with pytest.raises(ProgrammingError, match=r"no rls_tenancy\.reset_session\(\).*upgrade") as raised:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            assert raised.value.connection_invalidated  # closed, never pooled again
        finally:
            engine.dispose()
            superuser.dispose()


def test_a_lookup_without_a_tenant_never_runs_a_statement_sql_swapped_on_the_connection(
    db: TenancyDatabase, world: World, bypass: UnsafeBypass
) -> None:
    """The token lookup, in autocommit on a connection of its own, is bound to no tenant: it prepares nothing.

    Unsigned, it used to prepare after five runs; SQL in a request without a
    tenant then swapped that statement under its name, and every later
    lookup on the connection answered with the identity it chose: a made-up
    token of tenant B as B's administrator, a victim's token hash copied to
    a setting.
    """
    engine = bind_engine(create_engine(db.app_url, pool_size=1, max_overflow=0))
    lookups = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with as_tenant(world.a), Session(engine) as session, session.begin():
            token = issue_token(session, name="ci", scopes=["projects:read"]).token
        for _ in range(8):  # ordinary traffic: psycopg prepares what it ran five times on a connection
            with lookups.connect() as conn:
                assert authenticate_token(conn, token).tenant_id == world.a
        with engine.connect() as conn:  # a request without a tenant, its SQL on the same connection
            prepared = conn.execute(
                text("SELECT name, parameter_types::text[] FROM pg_prepared_statements WHERE NOT from_sql")
            ).all()
            for name, types in prepared:
                conn.exec_driver_sql(
                    sql.SQL(
                        "DEALLOCATE {n}; PREPARE {n} ({types}) AS SELECT 1::bigint, NULL::bigint,"
                        " ARRAY['admin']::pg_catalog.text[], 'ok'::pg_catalog.text"
                    )
                    .format(n=sql.Identifier(name), types=sql.SQL(", ").join(sql.SQL(t) for t in types))
                    .as_string(None)
                )
            conn.commit()
        made_up = f"rlst_{world.b}_{'A' * 43}"
        with lookups.connect() as conn, pytest.raises(AuthenticationError):
            authenticate_token(conn, made_up)
        assert prepared == []
    finally:
        engine.dispose()


_MINE = text("SELECT name FROM projects WHERE name <> :x")
_THEIRS = text("SELECT 'planted: ' || current_setting('app.current_tenant') WHERE CAST(:x AS text) IS NOT NULL")


def _mine(conn: Connection) -> set[str]:
    return set(conn.execute(_MINE, {"x": ""}).scalars())


def test_through_pgbouncer_another_clients_prepared_statement_never_runs_in_a_transaction(
    db: TenancyDatabase, world: World
) -> None:
    """psycopg names its statements alike on every connection (_pg3_0, ...): behind a pooler it prepares none.

    Before, B's reset kept the server's ``_pg3_0`` as B's own, and it was
    A's: B's transaction ran A's statement, which showed A what B's
    transaction was bound to, and could rewrite B's rows.
    """
    with _two_apps_behind_pgbouncer(db, reset=False) as (victim, attacker):
        for _ in range(7):  # psycopg prepares after five runs on a connection
            assert _as(victim, world.b, _mine) == world.projects[world.b]
            _as(attacker, world.a, lambda conn: conn.execute(_THEIRS, {"x": ""}).all())
        seen = _as(victim, world.b, _mine)
        prepared = _as(victim, world.b, _scalar("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"))
        assert seen == world.projects[world.b]
        assert prepared == 0


def test_through_pgbouncer_raw_driver_work_begins_with_the_reset_in_its_own_transaction(
    db: TenancyDatabase, world: World
) -> None:
    """Raw work no binding covers: reset first behind a pooler, in its own transaction; refused in autocommit.

    Before, the guard reset only when this client connection had served
    another tenant; behind a pooler another client may have used the
    server session since, and A's tenant, left session-wide, bound B's raw
    reads and writes.
    """
    with _two_apps_behind_pgbouncer(db, reset=False) as (victim, attacker):
        _as(victim, world.b, _names)  # B's client connection has served B
        _as(
            attacker,
            world.a,
            _run("SELECT set_config('app.current_tenant', current_setting('app.current_tenant'), false)"),
        )
        with as_tenant(world.b):
            raw = victim.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("SELECT current_setting('app.current_tenant', true), count(*) FROM projects")
                assert cursor.fetchone() in (("", 0), (None, 0))  # no tenant: none of A's rows
                raw.commit()
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
                with pytest.raises(ConfigurationError, match="behind a pooler"):
                    raw.cursor().execute("SELECT 1")
            finally:
                raw.close()


def test_through_pgbouncer_work_in_autocommit_is_refused_and_a_token_lookup_runs_in_a_transaction(
    db: TenancyDatabase, world: World
) -> None:
    """Behind a pooler each autocommit statement may run on a server session another client left a trap in.

    Before, A's temporary view named like the shared ``plans`` table answered
    another app's tenantless reads in autocommit, whenever that app's client
    connection had last done tenantless work itself (no reset was due). The
    Flask token resolver's lookup, which runs in autocommit where it cannot
    ride in the request's transaction, takes a transaction there instead.
    """
    with _two_apps_behind_pgbouncer(db, reset=False) as (victim, attacker):
        _as(victim, None, _scalar("SELECT count(*) FROM plans"))  # its last work: tenantless
        _as(attacker, world.a, _run("CREATE TEMP VIEW plans AS SELECT 1 AS id, 'PLANTED' AS name"))
        with victim.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            with pytest.raises(ConfigurationError, match="behind a pooler, work in autocommit"):
                conn.execute(text("SELECT name FROM plans")).all()
        with as_tenant(world.a, user=None), Session(attacker) as session, session.begin():
            issued = issue_token(session, name="pooled lookup", scopes=["projects:read"])
        app = Flask(__name__)
        sessions = sessionmaker(victim, autobegin=False)  # the lookup cannot ride in the request's transaction
        Tenancy(app, engine=victim, session=sessions)

        @app.get("/plans")
        def plans() -> ResponseReturnValue:
            with sessions() as session, session.begin():
                return jsonify(names=sorted(session.execute(text("SELECT name FROM plans")).scalars()))

        answer = app.test_client().get("/plans", headers={"Authorization": f"Bearer {issued.token}"})
        assert answer.status_code == 200, answer.json
        assert answer.json is not None and "PLANTED" not in answer.json["names"]


def test_through_pgbouncer_a_driver_transaction_begins_with_the_reset_and_a_held_cursor_is_not_read_elsewhere(
    db: TenancyDatabase, world: World
) -> None:
    """``driver.transaction()`` resets inside the transaction it begins; a holdable cursor read after commit is refused.

    Before, both sent their BEGIN past the guard: B's raw transaction ran
    under A's tenant left session-wide (A's rows read, B's insert written
    to A), and a fetch after commit read a cursor A declared on the shared
    server session.
    """
    with _two_apps_behind_pgbouncer(db, reset=False) as (victim, attacker):
        _as(victim, world.b, _names)  # B's client connection has served B
        leave = "SELECT set_config('app.current_tenant', current_setting('app.current_tenant'), false)"
        _as(attacker, world.a, _run(leave))
        with as_tenant(world.b):
            raw = victim.raw_connection()
            try:
                driver = raw.driver_connection
                assert isinstance(driver, psycopg.Connection)
                for autocommit in (False, True):
                    driver.autocommit = autocommit
                    with driver.transaction():
                        row = driver.execute(
                            "SELECT current_setting('app.current_tenant', true), count(*) FROM projects"
                        )
                        assert row.fetchone() in (("", 0), (None, 0))
                    _as(attacker, world.a, _run(leave))
                driver.autocommit = False
                driver.tpc_begin(driver.xid(1, "rls-tenancy-test", "b"))  # its BEGIN, too, past every cursor
                row = driver.execute("SELECT current_setting('app.current_tenant', true), count(*) FROM projects")
                assert row.fetchone() in (("", 0), (None, 0))
                driver.tpc_rollback()
                held = driver.cursor("held", withhold=True)
                held.execute("SELECT name FROM projects")
                driver.commit()
                _as(attacker, world.a, _run("DECLARE held CURSOR WITH HOLD FOR SELECT 'planted by A'"))
                with pytest.raises(TenancyError, match="outside the transaction that declared it"):
                    held.fetchall()
            finally:
                raw.close()


def test_behind_pgbouncer_an_engines_first_connect_reads_no_type_a_tenants_sql_planted(
    rls_postgres_url: URL,
) -> None:
    """SQLAlchemy's first connect looked hstore up in ``pg_type``, unqualified, and kept what it found.

    A's SQL left a temporary view named ``pg_type`` on the pooler's server
    session, giving hstore the array type of ``text``: an engine whose first
    connect landed there loaded every ``text[]`` as hstore, for every tenant,
    for the life of the process. No reset can hold the lookup's session (the
    pooler may hand its transaction another); a bound engine makes no
    lookup, and hstore values still round-trip through SQLAlchemy's type.
    """
    if find_pgbouncer() is None:
        pytest.skip("*** pgbouncer is not installed (apt-get install pgbouncer; `make test` does so when it can) ***")
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as fresh:
        superuser = create_engine(fresh.superuser_url)
        with superuser.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION hstore")
            tenant = conn.exec_driver_sql(
                "INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('a', 'A') RETURNING id"
            ).scalar_one()
        superuser.dispose()
        logins = {str(fresh.app_url.username): str(fresh.app_url.password)}
        with pgbouncer(fresh.superuser_url, logins, server_connections=1, reset=False) as bouncer:
            url = bouncer.url(fresh.app_url)
            planter, victim = bind_engine(create_engine(url, pool_size=1)), bind_engine(create_engine(url, pool_size=1))
            try:
                _as(
                    planter,
                    tenant,
                    _run(
                        "CREATE TEMP VIEW pg_type AS SELECT t.typname, t.oid, CASE t.typname WHEN 'hstore'"
                        " THEN 'pg_catalog.text[]'::regtype::oid ELSE t.typarray END AS typarray, t.typdelim"
                        " FROM pg_catalog.pg_type t"
                    ),
                )
                assert _as(victim, tenant, _scalar("SELECT ARRAY['a=>b', 'c']::text[]")) == ["a=>b", "c"]
                stored = {"a": "b", "c": None}
                assert (
                    _as(victim, tenant, lambda conn: conn.scalar(select(cast(literal(stored, HSTORE), HSTORE))))
                    == stored
                )
            finally:
                planter.dispose()
                victim.dispose()
