"""The SQL-injection boundary, stated as tests: what arbitrary SQL run as the app role can and cannot do.

An attacker who can make the application role run SQL of their choosing can
call ``set_config('app.current_tenant', ...)`` and read and write another
tenant's rows for the rest of that transaction, in a database that does not
require a signed context (the default, and this suite's database): the
policies trust the setting. The first test documents it; with a signed
context required, tests/binding/test_signed_context.py turns it and the other
limits into refusals. Everything else here is what
such an attacker still cannot do: turn the policies off, become the bypass
role, write the audit log directly, or make a switched tenant outlive the
transaction it was injected into; and, signed, within its own tenant:
revoke another user's tokens, write the overrides the application keeps for
administrators or name another user as their author, or see what the
library sends in the next anonymous request through a temporary type.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from alembic.config import Config
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from rls_tenancy import User, as_tenant, bind_engine
from rls_tenancy.binding import grants
from rls_tenancy.binding.context_key import ContextKey
from rls_tenancy.context import enter_request_tenant, leave_request_tenant
from rls_tenancy.errors import OverrideNotAllowedError
from rls_tenancy.features.declare import Feature, FeatureRegistry
from rls_tenancy.features.overrides import clear_override, set_override
from rls_tenancy.identity.tokens import issue_token, revoke_grant, revoke_token
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import require_signing, signing_requested, tenancy_database
from saas_demo.models import Project
from tests.conftest import DEMO_ALEMBIC_INI, World

SWITCH = text("SELECT set_config('app.current_tenant', :tenant, :session_wide)")


def test_injected_sql_switches_the_tenant_only_where_the_context_is_unsigned(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        conn.execute(SWITCH, {"tenant": str(world.b), "session_wide": False})
        stolen = set(conn.execute(text("SELECT name FROM projects")).scalars())
    if signing_requested():  # RLS_TENANCY_TEST_SIGNED: the setting alone is no tenant
        assert stolen == set()
    else:  # the boundary: see the README's "does not protect against"
        assert stolen == world.projects[world.b]


@pytest.mark.parametrize("session_wide", [False, True], ids=["set_config local", "set_config session-wide"])
def test_a_switched_tenant_never_outlives_its_transaction(app_engine: Engine, world: World, session_wide: bool) -> None:
    engine = app_engine.execution_options()  # same pool: the next checkout may be the same backend
    with as_tenant(world.a), engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        conn.execute(SWITCH, {"tenant": str(world.b), "session_wide": session_wide})
        conn.commit()
        # Same connection, next transactions: the binding overrides whatever was injected.
        assert set(conn.execute(select(Project.name)).scalars()) == world.projects[world.a]
        conn.commit()
    with engine.connect() as conn:
        if conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid:
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
        conn.rollback()


ESCAPES = {
    "disable RLS": "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
    "stop forcing RLS": "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
    "drop the policy": "DROP POLICY tenant_isolation ON projects",
    "add a permissive policy": "CREATE POLICY open ON projects USING (true)",
    "truncate": "TRUNCATE projects",
    "write the audit log directly": "INSERT INTO rls_tenancy.audit_log (action) VALUES ('forged')",
    "rewrite the audit log": "UPDATE rls_tenancy.audit_log SET message = 'rewritten'",
    "create a function to hide behind": "CREATE FUNCTION public.peek() RETURNS bigint LANGUAGE sql "
    "SECURITY DEFINER RETURN 1",
    "turn row security off and read": "SET LOCAL row_security = off; SELECT count(*) FROM projects",
}


@pytest.mark.parametrize("statement", ESCAPES.values(), ids=ESCAPES.keys())
def test_injected_sql_cannot_escape_the_policies(app_engine: Engine, world: World, statement: str) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises((ProgrammingError, DBAPIError)) as caught:
            conn.exec_driver_sql(statement)
    assert (
        "permission denied" in str(caught.value)
        or "must be owner" in str(caught.value)
        or ("row-level security" in str(caught.value))
    )


def test_injected_sql_cannot_become_the_bypass_role(app_engine: Engine, db: TenancyDatabase, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        for role in (db.roles.bypass, db.roles.owner):
            with pytest.raises(DBAPIError, match="permission denied"):
                conn.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
            conn.rollback()


# Signed: what SQL run for one user may do within its own tenant. A database of its own, signing required,
# broken under --rls-break=signing as the suite's is: one tenant, an intern and an administrator.


@dataclass(frozen=True)
class Staff:
    db: TenancyDatabase
    key: ContextKey
    tenant: int
    intern: int
    admin: int


@pytest.fixture(scope="module")
def staff(rls_postgres_url: URL, rls_break_database: Callable[[URL], None]) -> Iterator[Staff]:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI), signed=False) as db:
        key = ContextKey.generate(1)
        url = db.superuser_url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url) as owner:
            tenant = owner.execute(
                "INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('staff', 'Staff') RETURNING id"
            ).fetchone()
            assert tenant is not None
            ids = [
                owner.execute(
                    "INSERT INTO rls_tenancy.users (tenant_id, email, roles) VALUES (%s, %s, %s) RETURNING id",
                    (tenant[0], email, roles),
                ).fetchone()
                for email, roles in (("intern@staff.example", ["projects:read"]), ("boss@staff.example", ["admin"]))
            ]
        require_signing(db.superuser_url, key)
        rls_break_database(db.superuser_url)
        assert ids[0] is not None and ids[1] is not None
        yield Staff(db, key, int(str(tenant[0])), int(str(ids[0][0])), int(str(ids[1][0])))


@pytest.fixture()
def staff_engine(staff: Staff) -> Iterator[Engine]:
    """One connection: each request of the tenant takes the backend the one before it used."""
    engine = bind_engine(create_engine(staff.db.app_url, pool_size=1, max_overflow=0), context_key=staff.key)
    yield engine
    engine.dispose()


def _owner_reads(staff: Staff, query: str, *values: object) -> list[tuple[object, ...]]:
    url = staff.db.superuser_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as owner:
        return owner.execute(query, values).fetchall()


_REVOKE = text("SELECT rls_tenancy.revoke_token(:id)")
_REVOKE_ALL = text("SELECT rls_tenancy.revoke_token(t.id) FROM rls_tenancy.api_tokens t ORDER BY t.id")
_LIVE = "SELECT id FROM rls_tenancy.api_tokens WHERE id = ANY(%s) AND revoked_at IS NULL ORDER BY id"


@pytest.mark.rls_signing
def test_injected_sql_cannot_revoke_the_tokens_of_another_user_of_its_tenant(
    staff: Staff, staff_engine: Engine
) -> None:
    """A revocation cannot be undone: SQL run for an intern would otherwise lock the administrator out."""
    with as_tenant(staff.tenant, user=staff.admin), Session(staff_engine) as session, session.begin():
        admins = issue_token(session, name="boss's laptop", scopes=["admin"], user_id=staff.admin).id
        nobodys = issue_token(session, name="deploy bot", scopes=["projects:read"]).id
    with as_tenant(staff.tenant, user=staff.intern), Session(staff_engine) as session, session.begin():
        own = issue_token(session, name="intern's laptop", scopes=["projects:read"], user_id=staff.intern).id
    refused = pytest.raises(DBAPIError, match="revoked only with the application's grant")
    with as_tenant(staff.tenant, user=staff.intern), staff_engine.connect() as conn:
        for victim in (admins, nobodys):
            with refused, conn.begin_nested():
                conn.execute(_REVOKE, {"id": victim})
        with refused, conn.begin_nested():
            conn.execute(_REVOKE_ALL)  # every token of the tenant in one statement, as the probe did
        grants.add(conn, revoke_grant(staff.tenant, own))  # the app's grant for another token than SQL revokes
        with refused, conn.begin_nested():
            conn.execute(_REVOKE, {"id": admins})
        assert conn.execute(_REVOKE, {"id": own}).scalar_one() is True  # its own user's: no grant needed
        conn.commit()
    assert _owner_reads(staff, _LIVE, [admins, nobodys, own]) == [(admins,), (nobodys,)]


def test_the_app_revokes_any_token_of_its_tenant_with_its_grant(staff: Staff, staff_engine: Engine) -> None:
    """``revoke_token()`` adds the grant: for an administrator's request, and for a job or command of no user."""
    with as_tenant(staff.tenant, user=staff.intern), Session(staff_engine) as session, session.begin():
        interns = [issue_token(session, name=f"intern {n}", scopes=[], user_id=staff.intern).id for n in range(2)]
    with as_tenant(staff.tenant, user=staff.admin), Session(staff_engine) as session, session.begin():
        assert revoke_token(session, interns[0]) is True
        assert revoke_token(session, interns[0]) is False  # no live token: nothing to grant
    with as_tenant(staff.tenant), staff_engine.begin() as conn:
        assert revoke_token(conn, interns[1]) is True
    assert _owner_reads(staff, _LIVE, interns) == []


_FEATURE = "new-sign-in-flow"  # the demo's: allow_overrides="admin"
_OVERRIDE = text(
    "INSERT INTO rls_tenancy.feature_overrides (tenant_id, feature, scope, enabled, set_by)"
    " VALUES (rls_tenancy.current_tenant_id(), :feature, '*', :enabled, :set_by)"
    " ON CONFLICT ON CONSTRAINT feature_overrides_key"
    " DO UPDATE SET enabled = excluded.enabled, set_by = excluded.set_by"
    " RETURNING set_by"
)


@pytest.mark.rls_signing
def test_injected_sql_cannot_write_its_tenants_overrides_nor_name_the_administrator_as_their_author(
    staff: Staff, staff_engine: Engine
) -> None:
    """allow_overrides="admin" is the application's rule; SQL run for an intern would otherwise go around it."""
    with as_tenant(staff.tenant, user=staff.admin), Session(staff_engine) as session, session.begin():
        set_override(session, _FEATURE, True, scope="*", granted={"admin"})
    refused = pytest.raises(DBAPIError, match="written only with the application's grant")
    values = {"feature": _FEATURE, "enabled": False, "set_by": staff.admin}
    with as_tenant(staff.tenant, user=staff.intern), staff_engine.connect() as conn:
        for statement in (
            _OVERRIDE,
            text("UPDATE rls_tenancy.feature_overrides SET enabled = :enabled WHERE feature = :feature"),
            text("DELETE FROM rls_tenancy.feature_overrides WHERE feature = :feature"),
        ):
            with refused, conn.begin_nested():
                conn.execute(statement, values)
        # Granted (an override the app allowed the intern), the row still names who wrote it, not whom SQL named.
        grants.add(conn, f"overrides.set|{staff.tenant}|{grants.field(_FEATURE)}{grants.field('*')}|off")
        assert conn.execute(_OVERRIDE, values).scalar_one() == staff.intern
        conn.rollback()
        # Nor may it bind the administrator to write as them: the binding is proved no longer.
        conn.execute(text("SELECT set_config('app.current_user_id', :admin, true)"), {"admin": str(staff.admin)})
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(_OVERRIDE, values)
        conn.rollback()
    rows = _owner_reads(staff, "SELECT enabled, set_by FROM rls_tenancy.feature_overrides WHERE feature = %s", _FEATURE)
    assert rows == [(True, staff.admin)]


def test_the_app_sets_and_clears_overrides_with_its_grants(staff: Staff, staff_engine: Engine) -> None:
    """Set, set again (the upsert's update), a user's own scope, cleared: each write with the grant it needs."""
    registry = FeatureRegistry()
    feature = Feature("staff-dashboard", scope="user", allow_overrides="user", registry=registry)
    own = f"user:{staff.intern}"
    with as_tenant(staff.tenant, user=staff.intern), Session(staff_engine) as session, session.begin():
        set_override(session, feature, True, registry=registry)
        set_override(session, feature, False, registry=registry)  # ON CONFLICT DO UPDATE: one grant, one row
        with pytest.raises(OverrideNotAllowedError):
            set_override(session, feature, True, scope="*", registry=registry)
    with as_tenant(staff.tenant, user=staff.admin), Session(staff_engine) as session, session.begin():
        set_override(session, feature, True, scope="*", granted={"admin"}, registry=registry)
    query = "SELECT scope, enabled, set_by FROM rls_tenancy.feature_overrides WHERE feature = %s ORDER BY scope"
    assert _owner_reads(staff, query, feature.key) == [("*", True, staff.admin), (own, False, staff.intern)]
    with as_tenant(staff.tenant, user=staff.admin), Session(staff_engine) as session, session.begin():
        assert clear_override(session, feature, scope=own, granted={"admin"}, registry=registry)
        assert clear_override(session, feature, scope="*", granted={"admin"}, registry=registry)
    assert _owner_reads(staff, query, feature.key) == []


# A temporary domain named text (and bytea), made by SQL injected early in an anonymous request (a sign-up, a
# token of no user): its check would see each value the library casts to it later in that transaction, the
# grants the application adds among them. (A later request for no user begins with a reset, signed.)
_SPY = (
    "CREATE FUNCTION pg_temp.spy(seen pg_catalog.text) RETURNS boolean LANGUAGE sql AS $$"
    " SELECT pg_catalog.set_config('trap.seen',"
    " pg_catalog.concat_ws(' ', pg_catalog.current_setting('trap.seen', true), seen), false) IS NOT NULL $$",
    "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.spy(VALUE))",
    "CREATE DOMAIN pg_temp.bytea AS pg_catalog.bytea CHECK (pg_temp.spy(pg_catalog.encode(VALUE, 'hex')))",
)


def test_a_trap_set_in_an_anonymous_request_sees_nothing_the_library_sends_after_it(
    staff: Staff, staff_engine: Engine
) -> None:
    """The library names pg_catalog's types in what it sends: a grant, a token's scopes, a new user's roles."""
    with as_tenant(staff.tenant), Session(staff_engine) as session, session.begin():
        for statement in _SPY:
            session.connection().exec_driver_sql(statement, execution_options={"no_parameters": True})
        issued = issue_token(session, name="signup bot", scopes=["projects:read"])  # a grant, and its scopes
        session.add(User(email="signup@staff.example", roles=["projects:read"]))  # a grant, and the roles
        session.flush()
        seen = session.execute(text("SELECT current_setting('trap.seen', true)")).scalar()
        planted = session.execute(text("SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema()"))
        assert planted.scalar_one() > 0  # the trap is there
        session.rollback()
    assert issued.id > 0
    assert not seen


# Every statement psycopg prepared on this session, replaced by one of the same parameters that leaves a mark.
_SWAP = """DO $$
DECLARE
    prepared record;
    swapped integer := 0;
BEGIN
    FOR prepared IN SELECT name, parameter_types FROM pg_prepared_statements WHERE NOT from_sql LOOP
        EXECUTE format('DEALLOCATE %I', prepared.name);
        EXECUTE format('PREPARE %I (%s) AS SELECT pg_catalog.set_config(''trap.ran'', %L, false)',
                       prepared.name, array_to_string(prepared.parameter_types::text[], ', '), prepared.name);
        swapped := swapped + 1;
    END LOOP;
    IF swapped = 0 THEN
        RAISE EXCEPTION 'nothing to swap';
    END IF;
END $$"""


#: An app's own query, which psycopg prepares at its fifth run (the library's statements, signed, it never does).
_APPS_OWN = text("SELECT count(*) FROM projects WHERE name <> :name")


def _sign_up(engine: Engine, tenant: int, email: str, user: int | None = None) -> None:
    with as_tenant(tenant, user=user), Session(engine) as session, session.begin():
        session.execute(_APPS_OWN, {"name": email})  # the sign-up page reads something of the app's first
        new = User(email=email, roles=["projects:read"])
        new.set_password("correct horse battery staple")
        session.add(new)


def test_a_prepared_statement_swapped_in_an_anonymous_request_never_runs_in_the_next(
    staff: Staff, staff_engine: Engine
) -> None:
    """Two anonymous requests of one tenant are two clients: a statement psycopg prepared, swapped by the
    first's SQL, would run in the second, in the transaction that carries its grants and password hash.
    Signed, a transaction for no user begins with a reset (which drops what SQL replaced), and uses no
    prepared statement."""
    tag = secrets.token_hex(4)
    for number in range(6):  # psycopg prepares what it ran five times: the app's own query
        _sign_up(staff_engine, staff.tenant, f"early{number}-{tag}@staff.example", user=staff.admin)
    with as_tenant(staff.tenant), staff_engine.connect() as conn:  # SQL injected in an anonymous request
        conn.exec_driver_sql(_SWAP, execution_options={"no_parameters": True})
        conn.commit()
    _sign_up(staff_engine, staff.tenant, f"victim-{tag}@staff.example")  # the next visitor signs up
    with as_tenant(staff.tenant), staff_engine.connect() as conn:  # the first one's next request
        assert conn.execute(text("SELECT current_setting('trap.ran', true)")).scalar() in (None, "")
    _sign_up(staff_engine, staff.tenant, f"later-{tag}@staff.example", user=staff.admin)  # reset, not broken
    stored = _owner_reads(staff, "SELECT count(*) FROM rls_tenancy.users WHERE email LIKE %s", f"%-{tag}@staff.example")
    assert stored == [(8,)]


def test_a_swapped_statement_never_runs_in_tenantless_work_in_autocommit(staff: Staff, staff_engine: Engine) -> None:
    """Tenantless work in autocommit (the token lookup on a connection of its own) is not reset after a
    tenantless transaction, which would cost it a round trip: it uses no prepared statement instead."""
    lookup = text("SELECT t.id FROM (SELECT rls_tenancy.tenant_id_for_slug(:slug) AS id) AS t")
    for _ in range(6):  # psycopg prepares what it ran five times: the app's own query (the lookup, signed, never)
        with as_tenant(staff.tenant, user=staff.admin), staff_engine.connect() as conn:
            conn.execute(_APPS_OWN, {"name": "staff"})
            conn.execute(lookup, {"slug": "staff"})
            conn.commit()
    with staff_engine.connect() as conn:  # SQL injected in a request without a tenant
        conn.exec_driver_sql(_SWAP, execution_options={"no_parameters": True})
        conn.commit()
    with staff_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.execute(lookup, {"slug": "staff"}).scalar() == staff.tenant
        assert conn.execute(_APPS_OWN, {"name": "staff"}).scalar() == 0  # no tenant: no rows, and not swapped
        assert conn.execute(text("SELECT current_setting('trap.ran', true)")).scalar() in (None, "")
        swapped = conn.execute(text("SELECT count(*) FROM pg_prepared_statements WHERE from_sql")).scalar_one()
        assert swapped > 0  # the swapped statements are there: nothing reset the session in between
    with as_tenant(staff.tenant, user=staff.admin), staff_engine.connect() as conn:  # reset, not broken
        assert conn.execute(lookup, {"slug": "staff"}).scalar() == staff.tenant


# A temporary view named like the app's table (its models name no schema: pg_temp is searched first), whose
# trigger keeps what is written to it; and settings that would fail the next client's statements.
_TRAP = (
    "CREATE TEMP TABLE loot (name text)",
    "CREATE TEMP VIEW projects AS SELECT 1::bigint AS id, NULL::bigint AS tenant_id, 'PHISH'::text AS name",
    "CREATE FUNCTION pg_temp.keep() RETURNS trigger LANGUAGE plpgsql AS "
    "$$BEGIN INSERT INTO loot VALUES (NEW.name); RETURN NEW; END$$",
    "CREATE TRIGGER keep INSTEAD OF INSERT ON projects FOR EACH ROW EXECUTE FUNCTION pg_temp.keep()",
    "SET SESSION default_transaction_read_only = on",
    "SET SESSION DateStyle = 'SQL, DMY'",
)


@contextmanager
def _request(tenant: int | None) -> Iterator[None]:
    """A request's context: its tenant's block, or the one a request without a tenant enters."""
    if tenant is not None:
        with as_tenant(tenant):
            yield
        return
    token = enter_request_tenant(None)
    try:
        yield
    finally:
        leave_request_tenant(token)


@pytest.mark.parametrize("tenantless", [False, True], ids=["same tenant", "no tenant"])
def test_a_trap_left_by_one_anonymous_client_is_gone_for_the_next(
    staff: Staff, staff_engine: Engine, tenantless: bool
) -> None:
    """Signed, two transactions for no user may be two clients: the second begins with a reset, so the first's
    SQL can neither answer its statements (a temporary view named like a table) nor fail them (settings)."""

    tenant = None if tenantless else staff.tenant
    with _request(tenant), staff_engine.connect() as conn:  # SQL injected in an anonymous request
        for statement in _TRAP:
            conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
        conn.commit()
    with _request(tenant), Session(staff_engine) as session:  # the next visitor
        if tenantless:
            assert session.execute(text("SELECT count(*) FROM projects WHERE name = 'PHISH'")).scalar_one() == 0
        else:
            assert "PHISH" not in session.scalars(select(Project.name)).all()
            session.add(Project(name="a visitor's project"))
            session.commit()
    if not tenantless:
        stored = _owner_reads(staff, "SELECT count(*) FROM public.projects WHERE name = %s", "a visitor's project")
        assert stored == [(1,)]


def test_one_blocks_transactions_for_no_user_share_the_session_the_next_blocks_do_not(
    staff: Staff, staff_engine: Engine
) -> None:
    """A job's `with as_tenant(...)` is one client: its transactions pay no reset between them; a request (a
    block of its own) finds nothing the job's left."""
    with as_tenant(staff.tenant):
        with staff_engine.connect() as conn:
            conn.execute(text("CREATE TEMP TABLE mine AS SELECT 1 AS x"))
            conn.commit()
        with staff_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM mine")).scalar_one() == 1
            conn.commit()
    with as_tenant(staff.tenant), staff_engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('pg_temp.mine')")).scalar() is None


_PLANT_VIEW = "CREATE TEMP VIEW projects AS SELECT 1::bigint AS id, NULL::bigint AS tenant_id, 'PHISH'::text AS name"


def test_each_call_of_a_decorated_generator_is_a_client_of_its_own(staff: Staff, staff_engine: Engine) -> None:
    """``@as_tenant(T)`` on a generator: each call may serve another client, as each request does."""

    @as_tenant(staff.tenant)
    def work(statement: str) -> Iterator[list[str]]:
        with staff_engine.connect() as conn:
            if statement:
                conn.execute(text(statement))
            yield list(conn.execute(text("SELECT name FROM projects")).scalars())
            conn.commit()

    list(work(_PLANT_VIEW))  # one client's call plants a view named like the table
    assert "PHISH" not in next(iter(work("")))  # the next call does not see it


def test_tenantless_work_outside_any_block_is_a_client_of_its_own_each_time(staff: Staff, staff_engine: Engine) -> None:
    """A thread pool's worker starts with an empty context: work there is no request's; nothing says whose."""
    with staff_engine.connect() as conn:
        conn.execute(text("CREATE TEMP VIEW plans AS SELECT 'Free: enter your card at evil.example'::text AS name"))
        conn.commit()
    with staff_engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('pg_temp.plans')")).scalar() is None


def _raw(engine: Engine, statement: str, *, commit: bool = False) -> list[object]:
    """``statement`` on the raw driver (``engine.raw_connection()``): its rows' first column."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(statement)
        rows = [row[0] for row in cursor.fetchall()] if cursor.description else []
        if commit:
            raw.commit()
        else:
            raw.rollback()
        return rows
    finally:
        raw.close()


@pytest.mark.parametrize("planted_by", ["a tenantless request", "autocommit work", "raw work"])
def test_raw_work_never_finds_what_another_client_left(staff: Staff, staff_engine: Engine, planted_by: str) -> None:
    """Raw work after another client's is reset first; a reset before unbound work records the client that
    works next, not a clean session, so the next client's raw work is reset in turn."""
    if planted_by == "a tenantless request":
        with _request(None), staff_engine.begin() as conn:
            conn.execute(text(_PLANT_VIEW))
    elif planted_by == "autocommit work":
        with staff_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(_PLANT_VIEW))
    else:
        with as_tenant(staff.tenant, user=staff.admin):
            _raw(staff_engine, _PLANT_VIEW, commit=True)
    with as_tenant(staff.tenant, user=staff.intern):
        assert "PHISH" not in _raw(staff_engine, "SELECT name FROM projects")
