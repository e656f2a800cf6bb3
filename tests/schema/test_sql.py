"""The SQL layer as a DBA sees it: roles, functions, policies and grants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import psycopg
import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, ProgrammingError

from rls_tenancy import InsecureRoleError, UnsafeBypass, as_tenant, bind_engine
from rls_tenancy.identity.tokens import issue_token, parse_token, revoke_token
from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import World, ddl

#: What the tenant policies say, as pg_get_expr() shows them (rls_tenancy.tenant_condition()).
UNSIGNED_CONDITION = "(tenant_id = (NULLIF(current_setting('app.current_tenant'::text, true), ''::text))::bigint)"
# With RLS_TENANCY_TEST_SIGNED, the database requires a signed context: each row's tenant is also compared
# with the tenant the proof proved.
POLICY_CONDITION = (
    f"({UNSIGNED_CONDITION} AND (tenant_id OPERATOR(rls_tenancy.===) ( SELECT rls_tenancy.verified_tenant()"
    " AS verified_tenant)))"
    if signing_requested()
    else UNSIGNED_CONDITION
)


def _scalar(conn: Connection, query: str, **params: object) -> object:
    return conn.execute(text(query), params).scalar()


def test_roles_have_exactly_the_attributes_they_need(superuser_engine: Engine, db: TenancyDatabase) -> None:
    query = (
        "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb "
        "FROM pg_roles WHERE rolname = ANY(:names)"
    )
    roles = db.roles
    with superuser_engine.connect() as conn:
        found = {r[0]: r[1:] for r in conn.execute(text(query), {"names": [roles.owner, roles.app, roles.bypass]})}
        recorded = {
            r.purpose: r.role_name for r in conn.execute(text("SELECT purpose, role_name FROM rls_tenancy.roles"))
        }
    assert found[roles.owner] == (False, False, False, False, False)
    assert found[roles.app] == (False, False, True, False, False)
    assert found[roles.bypass] == (False, True, True, False, False)
    assert recorded == {"owner": roles.owner, "app": roles.app, "bypass": roles.bypass}


@pytest.mark.rls_policy
def test_app_role_owns_nothing_and_cannot_become_anyone(superuser_engine: Engine, db: TenancyDatabase) -> None:
    with superuser_engine.connect() as conn:
        owned = _scalar(
            conn,
            "SELECT count(*) FROM pg_class c WHERE pg_has_role(:app, c.relowner, 'MEMBER') "
            "AND c.relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg_%' "
            "OR nspname = 'information_schema')",
            app=db.roles.app,
        )
        memberships = _scalar(
            conn,
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :app",
            app=db.roles.app,
        )
        unprotected = _scalar(
            conn,
            "SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
            "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace "
            "AND NOT (c.relrowsecurity AND c.relforcerowsecurity AND EXISTS "
            "(SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation' "
            "AND rls_tenancy.is_tenant_condition(pg_get_expr(p.polqual, c.oid))))",
        )
    assert owned == 0
    assert memberships == 0
    assert unprotected == 0


def test_current_tenant_id_is_stable_and_inlined(superuser_engine: Engine, app_engine: Engine, world: World) -> None:
    with superuser_engine.connect() as conn:
        volatility, definer = conn.execute(
            text(
                "SELECT provolatile, prosecdef FROM pg_proc WHERE oid = 'rls_tenancy.current_tenant_id()'::regprocedure"
            )
        ).one()
    assert (volatility, definer) == ("s", False)
    with as_tenant(world.a), app_engine.connect() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN SELECT * FROM projects")))
    # Inlined, so the policy becomes an index condition, not a per-row call.
    assert "Index Cond: (tenant_id = (NULLIF(current_setting('app.current_tenant'" in plan


def test_isolated_tables_have_policy_grants_and_index(superuser_engine: Engine, db: TenancyDatabase) -> None:
    with superuser_engine.connect() as conn:
        for table in ("projects", "tasks"):
            rls, forced, owner = conn.execute(
                text(
                    "SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) FROM pg_class "
                    "WHERE oid = CAST(:t AS regclass)"
                ),
                {"t": table},
            ).one()
            assert (rls, forced, owner) == (True, True, db.roles.owner)
            qual, check = conn.execute(
                text(
                    "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
                    "FROM pg_policy WHERE polrelid = CAST(:t AS regclass)"
                ),
                {"t": table},
            ).one()
            assert qual == check == POLICY_CONDITION
            privileges = {
                p: _scalar(
                    conn,
                    "SELECT has_table_privilege(:r, CAST(:t AS regclass), :p)",
                    r=db.roles.app,
                    t=table,
                    p=p,
                )
                for p in ("SELECT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
            }
            # INSERT on every column but id (saas_0004): ids are generated, never chosen, by any role but the owner.
            for role in (db.roles.app, db.roles.bypass):
                inserts = conn.execute(
                    text(
                        "SELECT attname, has_column_privilege(:r, attrelid, attnum, 'INSERT') FROM pg_attribute "
                        "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
                    ),
                    {"r": role, "t": table},
                ).all()
                assert {name for name, granted in inserts if not granted} == {"id"}
            assert privileges == {
                "SELECT": True,
                "UPDATE": True,
                "DELETE": True,
                "TRUNCATE": False,
                "REFERENCES": False,
                "TRIGGER": False,
            }
            leading = _scalar(
                conn,
                "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE i.indrelid = CAST(:t AS regclass) AND a.attname = 'tenant_id'",
                t=table,
            )
            assert leading >= 1  # type: ignore[operator]


@pytest.fixture()
def scratch(superuser_engine: Engine) -> Iterator[Connection]:
    """A superuser transaction that is rolled back afterwards."""
    with superuser_engine.connect() as conn:
        conn.begin()
        yield conn
        conn.rollback()


def _enable(conn: Connection, table: str) -> None:
    conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation(CAST(:t AS regclass))"), {"t": table})


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE scratch (id int)", "has no tenant_id column"),
        ("CREATE TABLE scratch (tenant_id bigint)", "is nullable"),
        ("CREATE TABLE scratch (tenant_id int NOT NULL)", "not bigint"),
        (
            "CREATE TABLE scratch (tenant_id bigint NOT NULL); ALTER TABLE scratch ENABLE ROW LEVEL SECURITY; "
            "CREATE POLICY open ON scratch USING (true)",
            "other permissive policies",
        ),
        ("CREATE VIEW scratch AS SELECT 1::bigint AS tenant_id", "is not a table"),
    ],
)
def test_enable_refuses_tables_it_cannot_protect(scratch: Connection, ddl: str, message: str) -> None:
    scratch.exec_driver_sql(ddl)
    with pytest.raises(DBAPIError, match=message):
        _enable(scratch, "scratch")


def test_enable_lets_no_role_choose_a_generated_always_id(scratch: Connection, db: TenancyDatabase) -> None:
    """OVERRIDING SYSTEM VALUE would let an inserter choose the id: the app and bypass roles get the other columns."""
    scratch.exec_driver_sql(
        "CREATE TABLE scratch (id integer GENERATED ALWAYS AS IDENTITY, tenant_id bigint NOT NULL, "
        "PRIMARY KEY (tenant_id, id))"
    )
    _enable(scratch, "scratch")
    may = "SELECT has_column_privilege(:r, 'scratch', :c, 'INSERT')"
    for role in (db.roles.app, db.roles.bypass):
        assert (_scalar(scratch, may, r=role, c="id"), _scalar(scratch, may, r=role, c="tenant_id")) == (False, True)
    scratch.exec_driver_sql("ALTER TABLE scratch ADD COLUMN note text")
    assert _scalar(scratch, may, r=db.roles.app, c="note") is False  # a column added later: until enable runs again
    _enable(scratch, "scratch")
    assert _scalar(scratch, may, r=db.roles.app, c="note") is True
    assert _scalar(scratch, may, r=db.roles.app, c="id") is False
    scratch.exec_driver_sql(ddl("SET LOCAL ROLE {}", db.roles.app))
    with pytest.raises(DBAPIError, match="permission denied"):
        scratch.exec_driver_sql("INSERT INTO scratch (id, tenant_id) OVERRIDING SYSTEM VALUE VALUES (1, 1)")


def test_enable_is_idempotent_and_disable_closes_the_table(scratch: Connection, db: TenancyDatabase) -> None:
    scratch.exec_driver_sql("CREATE TABLE scratch (id serial, tenant_id bigint NOT NULL)")
    _enable(scratch, "scratch")
    _enable(scratch, "scratch")
    count = "SELECT count(*) FROM pg_policy WHERE polrelid = 'scratch'::regclass"
    indexes = "SELECT count(*) FROM pg_index WHERE indrelid = 'scratch'::regclass"
    assert (_scalar(scratch, count), _scalar(scratch, indexes)) == (1, 1)
    assert _scalar(scratch, "SELECT has_sequence_privilege(:r, 'scratch_id_seq', 'USAGE')", r=db.roles.app)
    scratch.execute(text("SELECT rls_tenancy.disable_tenant_isolation('scratch')"))
    assert _scalar(scratch, count) == 0
    assert _scalar(scratch, "SELECT relrowsecurity FROM pg_class WHERE oid = 'scratch'::regclass") is False
    # Without isolation the application role cannot touch the table at all.
    assert _scalar(scratch, "SELECT has_table_privilege(:r, 'scratch', 'SELECT')", r=db.roles.app) is False


def test_install_scripts_are_idempotent(scratch: Connection, db: TenancyDatabase) -> None:
    _set_role_names(scratch, db)
    for name in install_scripts():
        scratch.exec_driver_sql(sql_script(name), execution_options={"no_parameters": True})
    assert _scalar(scratch, "SELECT count(*) FROM pg_policy WHERE polname = 'tenant_isolation'") == 4


def _set_role_names(conn: Connection, db: TenancyDatabase) -> None:
    for key, value in db.roles.settings().items():
        conn.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})


def test_install_refuses_other_role_names_on_an_installed_database(scratch: Connection, db: TenancyDatabase) -> None:
    _set_role_names(scratch, db)
    scratch.execute(text("SELECT set_config('rls_tenancy.app_role', 'someone_else', true)"))
    with pytest.raises(DBAPIError, match="installed with app role"):
        scratch.exec_driver_sql(sql_script("001_roles.sql"), execution_options={"no_parameters": True})


def test_install_refuses_an_app_role_that_can_become_the_bypass_role(scratch: Connection, db: TenancyDatabase) -> None:
    scratch.exec_driver_sql(ddl("GRANT {} TO {}", db.roles.bypass, db.roles.app))
    _set_role_names(scratch, db)
    with pytest.raises(DBAPIError, match="could escape row level security"):
        scratch.exec_driver_sql(sql_script("001_roles.sql"), execution_options={"no_parameters": True})


APP_FORBIDDEN = {
    "enable": "SELECT rls_tenancy.enable_tenant_isolation('projects')",
    "disable": "SELECT rls_tenancy.disable_tenant_isolation('projects')",
    "drop-policy": "DROP POLICY tenant_isolation ON projects",
    "no-force": "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
    "truncate": "TRUNCATE projects",
    "set-role-owner": "SET ROLE {owner}",
    "set-role-bypass": "SET ROLE {bypass}",
    "create-tenant": "INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('evil', 'Evil')",
    "rename-tenant": "UPDATE rls_tenancy.tenants SET name = 'x'",
    "read-roles": "SELECT * FROM rls_tenancy.roles",
}


@pytest.mark.parametrize("action", sorted(APP_FORBIDDEN))
def test_app_role_cannot_switch_isolation_off(
    app_engine: Engine, db: TenancyDatabase, world: World, action: str
) -> None:
    statement = APP_FORBIDDEN[action].format(owner=db.roles.owner, bypass=db.roles.bypass)
    with as_tenant(world.a), app_engine.connect() as conn:
        with pytest.raises(ProgrammingError) as caught:
            result = conn.exec_driver_sql(statement)
            if action == "rename-tenant":  # UPDATE without privilege fails; 0 rows is not enough
                pytest.fail(f"updated {result.rowcount} rows")
        assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege | psycopg.errors.UndefinedFunction)


@pytest.mark.rls_policy
def test_app_sees_only_its_own_tenant_row(app_engine: Engine, world: World) -> None:
    with as_tenant(world.a), app_engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM rls_tenancy.tenants")).scalars().all() == [world.a]


@pytest.mark.parametrize("who", ["superuser", "bypass"])
def test_bound_engine_refuses_roles_that_escape_rls(db: TenancyDatabase, who: str) -> None:
    url = db.superuser_url if who == "superuser" else db.bypass_url
    engine = bind_engine(create_engine(url))
    try:
        with pytest.raises(InsecureRoleError, match="escapes row level security"), engine.connect():
            pass
    finally:
        engine.dispose()


def test_bound_engine_refuses_a_member_of_the_table_owner(superuser_engine: Engine, db: TenancyDatabase) -> None:
    member = f"{db.roles.owner}_member"
    with superuser_engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} LOGIN PASSWORD 'pw' IN ROLE {}", member, db.roles.owner))
    engine = bind_engine(create_engine(db.app_url.set(username=member, password="pw")))
    try:
        with pytest.raises(InsecureRoleError, match=r"owner of\) public\.projects"), engine.connect():
            pass
    finally:
        engine.dispose()
        with superuser_engine.begin() as conn:
            conn.exec_driver_sql(ddl("DROP ROLE {}", member))


@pytest.mark.parametrize(
    ("grant", "says"),
    [
        ("ALTER ROLE {} REPLICATION", "REPLICATION"),
        ("GRANT pg_read_all_data TO {}", "pg_read_all_data"),
        ("GRANT pg_execute_server_program TO {}", "pg_execute_server_program"),
    ],
)
def test_bound_engine_refuses_a_role_that_reads_around_rls(
    superuser_engine: Engine, db: TenancyDatabase, grant: str, says: str
) -> None:
    reader = f"{db.roles.app}_reader"
    with superuser_engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} LOGIN NOINHERIT PASSWORD 'pw'", reader))
        conn.exec_driver_sql(ddl(grant, reader))
    engine = bind_engine(create_engine(db.app_url.set(username=reader, password="pw")))
    try:
        with pytest.raises(InsecureRoleError, match=says), engine.connect():
            pass
    finally:
        engine.dispose()
        with superuser_engine.begin() as conn:
            conn.exec_driver_sql(ddl("DROP ROLE {}", reader))


def test_shared_tables_are_readable_by_all_and_writable_by_none(
    app_engine: Engine, bypass: UnsafeBypass, world: World
) -> None:
    # A plan of this test's own, removed again: the shared database's seed writes the demo's plans.
    with bypass.connect(reason="test: maintain reference data") as conn:
        conn.execute(text("INSERT INTO plans (name) VALUES (:n) ON CONFLICT DO NOTHING"), {"n": "Shared test plan"})
    try:
        for tenant in (world.a, world.b, None):
            with app_engine.connect() as conn, as_tenant(tenant) if tenant else nullcontext():
                assert "Shared test plan" in conn.execute(text("SELECT name FROM plans")).scalars().all()
    finally:
        with bypass.connect(reason="test: maintain reference data") as conn:
            conn.execute(text("DELETE FROM plans WHERE name = :n"), {"n": "Shared test plan"})
    for statement in (
        "INSERT INTO plans (name) VALUES ('Planted')",
        "UPDATE plans SET name = 'Renamed'",
        "DELETE FROM plans",
        "TRUNCATE plans",
    ):
        with as_tenant(world.a), app_engine.connect() as conn, pytest.raises(ProgrammingError) as caught:
            conn.execute(text(statement))
        assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)


def test_share_refuses_tenant_tables_and_unshare_closes(scratch: Connection, db: TenancyDatabase) -> None:
    with pytest.raises(DBAPIError, match="isolate it instead"):
        scratch.execute(text("SELECT rls_tenancy.share_table('projects')"))
    scratch.rollback()
    scratch.begin()
    scratch.exec_driver_sql("CREATE TABLE scratch_shared (id int)")
    scratch.execute(text("SELECT rls_tenancy.share_table('scratch_shared')"))
    readable = "SELECT has_table_privilege(:r, 'scratch_shared', :p)"
    assert _scalar(scratch, readable, r=db.roles.app, p="SELECT") is True
    assert _scalar(scratch, readable, r=db.roles.app, p="INSERT") is False
    assert _scalar(scratch, readable, r=db.roles.bypass, p="INSERT") is True
    scratch.execute(text("SELECT rls_tenancy.unshare_table('scratch_shared')"))
    assert _scalar(scratch, readable, r=db.roles.app, p="SELECT") is False


@pytest.fixture()
def extra_role(superuser_engine: Engine, db: TenancyDatabase) -> Iterator[str]:
    """A login role of this test's own (password 'pw'), dropped afterwards."""
    name = f"{db.roles.app}_x"
    yield name
    with superuser_engine.begin() as conn:
        conn.exec_driver_sql(ddl("DROP OWNED BY {}", name))
        conn.exec_driver_sql(ddl("DROP ROLE {}", name))


def _refused(url: URL, match: str) -> None:
    engine = bind_engine(create_engine(url))
    try:
        with pytest.raises(InsecureRoleError, match=match), engine.connect():
            pass
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("grant", "match"),
    [
        (
            "GRANT TRUNCATE ON projects TO {}",
            r"TRUNCATE on public\.projects \(TRUNCATE ignores row level security\)",
        ),
        ("GRANT REFERENCES ON tasks TO {}", r"REFERENCES on public\.tasks"),
        ("GRANT TRIGGER ON projects TO {}", r"TRIGGER on public\.projects"),
        ("ALTER ROLE {} CREATEROLE", r"CREATEROLE"),
    ],
)
def test_bound_engine_refuses_privileges_that_get_around_rls(
    superuser_engine: Engine, db: TenancyDatabase, extra_role: str, grant: str, match: str
) -> None:
    with superuser_engine.begin() as conn:
        conn.exec_driver_sql(ddl("CREATE ROLE {} LOGIN PASSWORD 'pw'", extra_role))
        conn.exec_driver_sql(ddl(grant, extra_role))
    _refused(db.app_url.set(username=extra_role, password="pw"), match)


def test_bound_engine_checks_the_login_role_not_only_the_current_one(db: TenancyDatabase) -> None:
    """A superuser login that starts as the app role can always RESET ROLE."""
    disguised = db.superuser_url.update_query_dict({"options": f"-c role={db.roles.app}"})
    _refused(disguised, r"is or can become \S+ \(superuser\)")


TOKEN_WRITES = {
    "read-hash": "SELECT token_hash FROM rls_tenancy.api_tokens",
    "hash-in-where": "SELECT id FROM rls_tenancy.api_tokens WHERE token_hash IS NOT NULL",
    "whole-row": "SELECT t FROM rls_tenancy.api_tokens t",
    "insert": "INSERT INTO rls_tenancy.api_tokens (name, token_hash) VALUES ('x', '\\x00')",
    "update": "UPDATE rls_tenancy.api_tokens SET revoked_at = NULL",
    "delete": "DELETE FROM rls_tenancy.api_tokens",
}


@pytest.mark.parametrize("action", sorted(TOKEN_WRITES))
def test_app_role_reads_no_token_hash_and_writes_tokens_only_through_functions(
    app_engine: Engine, world: World, action: str
) -> None:
    with as_tenant(world.a), app_engine.connect() as conn, pytest.raises(ProgrammingError) as caught:
        conn.exec_driver_sql(TOKEN_WRITES[action])
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)


def test_token_functions_stay_inside_the_bound_tenant(app_engine: Engine, world: World) -> None:
    with as_tenant(world.b), app_engine.begin() as conn:
        foreign = issue_token(conn, name="b's", scopes=[])
    with as_tenant(world.a), app_engine.begin() as conn:
        assert revoke_token(conn, foreign.id) is False  # another tenant's token: not there
        tenant_b, digest = parse_token(foreign.token)
        checked = conn.execute(
            text("SELECT status FROM rls_tenancy.authenticate_token(:t, :h)"), {"t": tenant_b, "h": digest}
        ).scalar()
        assert checked == "ok"
        # ... and the check handed the caller's tenant back.
        assert conn.execute(text("SELECT current_setting('app.current_tenant')")).scalar() == str(world.a)
    with app_engine.begin() as conn, pytest.raises(DBAPIError, match="needs a tenant bound"):
        conn.execute(text("SELECT rls_tenancy.issue_token('x', '\\x00'::bytea, '{}')"))
    with as_tenant(world.b), app_engine.begin() as conn:
        assert revoke_token(conn, foreign.id) is True
