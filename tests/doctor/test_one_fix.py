"""Grants, causes and rules the doctor once got wrong: a fix that did nothing, one cause reported many times
over (with a second fix that broke a working function), a schema the app role owns left out, and a rule whose
owner the policies bind reported as a leak.

Each is planted by a superuser in a rolled-back transaction; the printed fix is applied exactly as printed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from rls_tenancy.schema.reinstall import reinstall_on
from rls_tenancy.schema.roles import RoleNames
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import World, bind_then_become, ddl
from tests.doctor.support import Key, Row, can, finding_rows, key_of, planted_in, run


def _on_this_database(template: str, *names: str) -> str:
    """``template`` (``%I`` the database, ``{}`` the roles ``names``) run on the database the test runs in."""
    statement = ddl(template, *names)
    return "DO $$ BEGIN EXECUTE format('" + statement.replace("'", "''") + "', current_database()); END $$"


def _as(role: str, *statements: str) -> list[str]:
    """``statements`` run as ``role`` (SET ROLE, then back)."""
    return [ddl("SET ROLE {}", role), *statements, "RESET ROLE"]


# 2. Grants passed on WITH GRANT OPTION: the grantor's, which a superuser's REVOKE does not take back.
DELEGATE = f"doctor_delegate_{secrets.token_hex(4)}"
LARGE_OBJECT = 1_000_000 + secrets.randbelow(1_000_000_000)


def _passed_on(r: RoleNames) -> list[str]:
    large_object = sql.Literal(LARGE_OBJECT)
    return [
        ddl("CREATE ROLE {} NOLOGIN", DELEGATE),
        ddl("GRANT SET ON PARAMETER session_replication_role TO {} WITH GRANT OPTION", DELEGATE),
        *_as(DELEGATE, ddl("GRANT SET ON PARAMETER session_replication_role TO {}", r.app)),
        "CREATE SCHEMA doctor_reports",
        ddl("GRANT CREATE, USAGE ON SCHEMA doctor_reports TO {} WITH GRANT OPTION", DELEGATE),
        *_as(DELEGATE, ddl("GRANT CREATE, USAGE ON SCHEMA doctor_reports TO {}", r.app)),
        _on_this_database("GRANT CREATE ON DATABASE %I TO {} WITH GRANT OPTION", DELEGATE),
        *_as(DELEGATE, _on_this_database("GRANT CREATE ON DATABASE %I TO {}", r.app)),
        sql.SQL("SELECT lo_from_bytea({}, 'x'::bytea)").format(large_object).as_string(None),
        sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {} WITH GRANT OPTION")
        .format(large_object, sql.Identifier(DELEGATE))
        .as_string(None),
        *_as(
            DELEGATE,
            sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}")
            .format(large_object, sql.Identifier(r.app))
            .as_string(None),
        ),
    ]


PASSED_ON: list[tuple[Key, str]] = [
    (
        ("error", "app_role_sets_parameter", "parameter session_replication_role"),
        "SET LOCAL session_replication_role = replica",
    ),
    (("error", "app_role_schema_create", "doctor_reports"), "CREATE TABLE doctor_reports.planted (x int)"),
    (("error", "app_role_database_create", "{database}"), "CREATE SCHEMA doctor_planted"),
    (("error", "large_object_readable", f"large object {LARGE_OBJECT}"), f"SELECT lo_get({LARGE_OBJECT})"),
]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(("expected", "use"), PASSED_ON, ids=[key[1] for key, _ in PASSED_ON])
def test_a_grant_passed_on_with_grant_option_is_revoked_by_the_printed_fix(
    superuser_engine: Engine, db: TenancyDatabase, expected: Key, use: str
) -> None:
    """A superuser's REVOKE acts as the owner and takes back the owner's grants only: the fix names the grantor."""
    key = (expected[0], expected[1], expected[2].format(database=db.name))
    with planted_in(superuser_engine, _passed_on(db.roles)) as conn:
        assert can(conn, db.roles.app, use)
        (found,) = [row for row in finding_rows(conn) if key_of(row) == key]
        assert found[4].startswith(f"SET ROLE {DELEGATE}; REVOKE "), found[4]  # the names need no quotes
        assert found[4].endswith(f" FROM {db.roles.app}; RESET ROLE;"), found[4]
        run(conn, found[4])
        assert key not in {key_of(row) for row in finding_rows(conn)}, f"the fix {found[4]!r} left it"
        assert not can(conn, db.roles.app, use)


def _delegated(grant: str, to: str = "{app}") -> Callable[[RoleNames], list[str]]:
    """``grant`` (``{}``: the grantee) to DELEGATE WITH GRANT OPTION, then by DELEGATE to ``to``."""

    def setup(r: RoleNames) -> list[str]:
        grantee = sql.SQL("PUBLIC") if to == "PUBLIC" else sql.Identifier(r.app)
        return [
            ddl("CREATE ROLE {} NOLOGIN", DELEGATE),
            ddl("GRANT USAGE ON SCHEMA rls_tenancy TO {}", DELEGATE),  # to name the library's objects
            sql.SQL(grant + " WITH GRANT OPTION").format(sql.Identifier(DELEGATE)).as_string(None),
            *_as(DELEGATE, sql.SQL(grant).format(grantee).as_string(None)),
        ]

    return setup


DEFINER = [
    "CREATE FUNCTION public.doctor_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $$ SELECT 1::bigint $$",
    "REVOKE ALL ON FUNCTION public.doctor_definer() FROM PUBLIC",
]
DELEGATED = {
    "context_key_readable": (
        _delegated("GRANT SELECT ON SEQUENCE rls_tenancy.context_key_1a TO {}"),
        ("error", "context_key_readable", "rls_tenancy.context_key_1a"),
    ),
    "doctor_input_writable": (
        _delegated("GRANT INSERT ON rls_tenancy.doctor_exemptions TO {}"),
        ("error", "doctor_input_writable", "rls_tenancy.doctor_exemptions"),
    ),
    "app_role_dangerous_privilege": (
        _delegated("GRANT TRUNCATE ON public.projects TO {}"),
        ("error", "app_role_dangerous_privilege", "public.projects"),
    ),
    "app_role_reads_catalog": (
        _delegated("GRANT SELECT ON pg_catalog.pg_statistic TO {}"),
        ("error", "app_role_reads_catalog", "pg_statistic"),
    ),
    "definer_executable_by_public": (
        lambda r: [*DEFINER, *_delegated("GRANT EXECUTE ON FUNCTION public.doctor_definer() TO {}", "PUBLIC")(r)],
        ("error", "definer_executable_by_public", "public.doctor_definer()"),
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(("setup", "expected"), [pytest.param(*case, id=name) for name, case in DELEGATED.items()])
def test_every_revoke_fix_names_the_grantor_of_a_grant_passed_on(
    superuser_engine: Engine, db: TenancyDatabase, setup: Callable[[RoleNames], list[str]], expected: Key
) -> None:
    with planted_in(superuser_engine, setup(db.roles)) as conn:
        (found,) = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert f"SET ROLE {DELEGATE}; REVOKE " in found[4], found[4]
        run(conn, found[4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}, f"the fix {found[4]!r} left it"


@pytest.mark.usefixtures("stays_clean")
def test_a_grant_both_the_owner_and_a_grantor_made_is_revoked_by_both(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    planted = [
        ddl("CREATE ROLE {} NOLOGIN", DELEGATE),
        "CREATE SCHEMA doctor_reports",
        ddl("GRANT CREATE, USAGE ON SCHEMA doctor_reports TO {} WITH GRANT OPTION", DELEGATE),
        *_as(DELEGATE, ddl("GRANT CREATE, USAGE ON SCHEMA doctor_reports TO {} WITH GRANT OPTION", db.roles.app)),
        ddl("GRANT CREATE ON SCHEMA doctor_reports TO {}", db.roles.app),
        # the app role passed it on in turn: CASCADE takes that too
        *_as(db.roles.app, "GRANT CREATE ON SCHEMA doctor_reports TO PUBLIC"),
    ]
    with planted_in(superuser_engine, planted) as conn:
        found = [row for row in finding_rows(conn) if row[1] == "app_role_schema_create"]
        assert {row[2] for row in found} == {"doctor_reports"}
        for row in found:
            run(conn, row[4])
        assert not [row for row in finding_rows(conn) if row[1] == "app_role_schema_create"]
        assert not can(conn, db.roles.app, "CREATE TABLE doctor_reports.planted (x int)")


def _as_owner_count(conn: Connection, db: TenancyDatabase) -> int:
    savepoint = conn.begin_nested()
    try:
        run(conn, ddl("SET LOCAL ROLE {}", db.roles.owner))
        return int(conn.execute(text("SELECT count(*) FROM public.projects")).scalar_one())
    finally:
        savepoint.rollback()


# 3. CREATE on the database, or on a schema a definer searches: one finding, the REVOKE, which closes the
# definers' paths too (dropping the schema from a definer's path instead broke it).
def _counting(path: str) -> Callable[[RoleNames], list[str]]:
    """A definer of the owner role's counting projects by an unqualified name, searching ``path``."""
    create = sql.SQL(
        "CREATE FUNCTION public.doctor_count() RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER"
        " SET search_path = {} AS $$ BEGIN RETURN (SELECT count(*) FROM projects); END $$"
    ).format(sql.SQL(path))
    return lambda r: [
        create.as_string(None),
        ddl("ALTER FUNCTION public.doctor_count() OWNER TO {}", r.owner),
        "REVOKE ALL ON FUNCTION public.doctor_count() FROM PUBLIC",
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_count() TO {}", r.app),
    ]


ONE_CAUSE = {
    'CREATE on the database, a definer searching "$user"': (
        lambda r: [
            _on_this_database("GRANT ALL ON DATABASE %I TO {}", r.app),
            *_counting('"$user", public, pg_temp')(r),
        ],
        ("error", "app_role_database_create", "{database}"),
    ),
    "CREATE on the database, a definer searching a schema not created yet": (
        lambda r: [
            _on_this_database("GRANT CREATE ON DATABASE %I TO {}", r.app),
            *_counting("doctor_helpers, public, pg_temp")(r),
        ],
        ("error", "app_role_database_create", "{database}"),
    ),
    "CREATE on public to PUBLIC, a definer searching public": (
        lambda r: ["GRANT CREATE ON SCHEMA public TO PUBLIC", *_counting("public, pg_temp")(r)],
        ("error", "app_role_schema_create", "public"),
    ),
    "CREATE on public to PUBLIC, definers searching pg_catalog, public": (
        lambda r: [
            "GRANT CREATE ON SCHEMA public TO PUBLIC",
            *_counting("pg_catalog, public, pg_temp")(r),
            "CREATE FUNCTION public.doctor_other() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER"
            " SET search_path = pg_catalog, public, pg_temp AS $$ SELECT count(*) FROM public.projects $$",
            "REVOKE ALL ON FUNCTION public.doctor_other() FROM PUBLIC",
        ],
        ("error", "app_role_schema_create", "public"),
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(("setup", "cause"), [pytest.param(*case, id=name) for name, case in ONE_CAUSE.items()])
def test_create_on_a_schema_or_the_database_is_one_finding_whose_revoke_keeps_the_definers_working(
    superuser_engine: Engine,
    db: TenancyDatabase,
    baseline: list[Row],
    setup: Callable[[RoleNames], list[str]],
    cause: Key,
) -> None:
    expected = (cause[0], cause[1], cause[2].format(database=db.name))
    with planted_in(superuser_engine, setup(db.roles)) as conn:
        errors = [row for row in finding_rows(conn) if row[0] == "error"]
        assert [key_of(row) for row in errors] == [expected]  # not one definer_search_path_writable per definer
        if cause[1] == "app_role_database_create":
            assert "public.doctor_count()" in errors[0][3]  # the message names the definers it reaches
        run(conn, errors[0][4])
        assert finding_rows(conn) == baseline
        # still works (dropping public from its path instead: relation "projects" does not exist), and counts what
        # its owner sees
        assert conn.execute(text("SELECT public.doctor_count()")).scalar() == _as_owner_count(conn, db)


@pytest.mark.usefixtures("stays_clean")
def test_a_definer_searching_a_schema_the_app_role_may_create_is_still_reported_when_no_grant_is_the_cause(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """The app role owns the database (app_role_owns_schema's cause): no REVOKE closes "$user" for it."""
    planted = [
        _on_this_database("ALTER DATABASE %I OWNER TO {}", db.roles.app),
        *_counting('"$user", public, pg_temp')(db.roles),
    ]
    expected = ("error", "definer_search_path_writable", "public.doctor_count()")
    with planted_in(superuser_engine, planted) as conn:
        found = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert any("$user" in row[3] for row in found)
        run(conn, found[0][4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}


# 4. A schema the app role owns: its owner creates there whatever the grants say.
@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "through_a_role", [False, True], ids=["owned by the app role", "owned by a role it can become"]
)
def test_a_schema_the_app_role_owns_is_reported_and_its_fix_leaves_the_app_its_functions(
    superuser_engine: Engine, db: TenancyDatabase, through_a_role: bool
) -> None:
    group = f"doctor_group_{secrets.token_hex(4)}"
    owner = group if through_a_role else db.roles.app
    roles = [ddl("CREATE ROLE {} NOLOGIN", group), ddl("GRANT {} TO {}", group, db.roles.app)] if through_a_role else []
    planted = [
        *roles,
        ddl("CREATE SCHEMA doctor_scratch AUTHORIZATION {}", owner),
        *_as(owner, "CREATE FUNCTION doctor_scratch.answer() RETURNS integer LANGUAGE sql AS 'SELECT 42'"),
    ]
    plant_more = "CREATE FUNCTION doctor_scratch.planted() RETURNS integer LANGUAGE sql AS 'SELECT 1'"
    use = "SELECT doctor_scratch.answer()"
    if through_a_role:
        plant_more, use = ddl("SET LOCAL ROLE {}; ", group) + plant_more, ddl("SET LOCAL ROLE {}; ", group) + use
    expected = ("error", "app_role_schema_create", "doctor_scratch")
    with planted_in(superuser_engine, planted) as conn:
        assert can(conn, db.roles.app, plant_more)
        (found,) = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert "owns schema doctor_scratch" in found[3]
        assert found[4] == (
            f"ALTER SCHEMA doctor_scratch OWNER TO {db.roles.owner}; GRANT USAGE ON SCHEMA doctor_scratch TO {owner};"
        )
        run(conn, found[4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}
        assert not can(conn, db.roles.app, plant_more)
        assert can(conn, db.roles.app, use)  # what it had there it still uses


NAMES_VIEW = (
    "CREATE VIEW public.doctor_names WITH (security_invoker = true) AS SELECT tenant_id, id, name FROM public.projects"
)


# 1. A rule of a view owned by the owner role: its actions run as that role, which the policies bind.
@pytest.mark.usefixtures("stays_clean")
def test_a_rule_of_a_view_whose_owner_the_policies_bind_is_a_warning_and_changes_the_bound_tenants_rows_only(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    planted = [
        NAMES_VIEW,
        ddl("ALTER VIEW public.doctor_names OWNER TO {}", db.roles.owner),
        # not even narrowed to the row updated: every row its owner may see
        "CREATE RULE doctor_rename AS ON UPDATE TO public.doctor_names DO INSTEAD"
        " UPDATE public.projects SET name = 'renamed-' || projects.name",
        ddl("GRANT SELECT, UPDATE ON public.doctor_names TO {}", db.roles.app),
    ]
    rule = ("public.doctor_names rule doctor_rename", "rule_reaches_tenant_table")
    with planted_in(superuser_engine, planted) as conn:
        found = [row for row in finding_rows(conn) if (row[2], row[1]) == rule]
        assert [row[0] for row in found] == ["warning"]
        assert "is bound by the policies" in found[0][3]
        savepoint = conn.begin_nested()
        bind_then_become(conn, world.a, db.roles.app)
        conn.execute(text("UPDATE public.doctor_names SET name = name"))
        run(conn, "RESET ROLE")
        renamed = conn.execute(
            text("SELECT tenant_id, name FROM public.projects WHERE tenant_id IN (:a, :b) AND name LIKE 'renamed-%'"),
            {"a": world.a, "b": world.b},
        ).all()
        savepoint.rollback()
    assert renamed and {tenant for tenant, _ in renamed} == {world.a}  # B's rows as they were


@pytest.mark.usefixtures("stays_clean")
def test_a_rule_of_a_view_owned_by_the_owner_role_writing_the_librarys_tables_stays_an_error(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """The library's guards exempt the owner role: a rule acting on its tables as that role is not bound."""
    planted = [
        NAMES_VIEW,
        ddl("ALTER VIEW public.doctor_names OWNER TO {}", db.roles.owner),
        "CREATE RULE doctor_promote AS ON UPDATE TO public.doctor_names DO ALSO"
        " UPDATE rls_tenancy.users SET roles = '{admin}'",
        ddl("GRANT SELECT, UPDATE ON public.doctor_names TO {}", db.roles.app),
    ]
    with planted_in(superuser_engine, planted) as conn:
        found = {key_of(row) for row in finding_rows(conn)}
    assert ("error", "rule_reaches_tenant_table", "public.doctor_names rule doctor_promote") in found


# 5. A library trigger dropped: its own check's finding, not also library_definition_changed.
@pytest.mark.usefixtures("stays_clean")
def test_a_dropped_guard_trigger_is_one_finding_with_one_fix(superuser_engine: Engine, db: TenancyDatabase) -> None:
    dropped = [
        "DROP TRIGGER audit_log_seal ON rls_tenancy.audit_log",
        "DROP TRIGGER users_write_granted ON rls_tenancy.users",
    ]
    with planted_in(superuser_engine, dropped) as conn:
        found = [row for row in finding_rows(conn) if row[0] == "error"]
        expected = [("audit_trigger_disabled", "rls_tenancy.audit_log audit_log_seal")]
        if signing_requested():  # the users' guard is the signed context's check
            expected.append(("users_grant_trigger_disabled", "rls_tenancy.users users_write_granted"))
        else:  # no check of its own without a signed context: the changed definition says it
            expected.append(("library_definition_changed", "trigger users_write_granted on rls_tenancy.users"))
        assert sorted((row[1], row[2]) for row in found) == sorted(expected)
        assert all("rls-tenancy migrate --reinstall" in row[4] for row in found)
        reinstall_on(conn, roles=db.roles)
        assert not [row for row in finding_rows(conn) if row[0] == "error"]


# 6. No warning for SET on a parameter any role may set; a GIN index's fix says what tenant_id needs there.
@pytest.mark.usefixtures("stays_clean")
def test_set_on_a_parameter_every_role_may_set_is_no_finding(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    granted = [
        ddl("GRANT SET ON PARAMETER work_mem TO {}", db.roles.app),
        "GRANT SET ON PARAMETER statement_timeout TO PUBLIC",
    ]
    with planted_in(superuser_engine, granted) as conn:
        assert finding_rows(conn) == baseline
        run(conn, ddl("GRANT SET ON PARAMETER log_min_duration_statement TO {}", db.roles.app))
        found = {key_of(row) for row in finding_rows(conn)}
        assert ("warning", "app_role_sets_parameter", "parameter log_min_duration_statement") in found
        run(conn, ddl("GRANT ALTER SYSTEM ON PARAMETER work_mem TO {}", db.roles.app))  # the whole server's
        found = {key_of(row) for row in finding_rows(conn)}
        assert ("warning", "app_role_sets_parameter", "parameter work_mem") in found


DOCS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE TABLE public.doctor_docs (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), id integer,"
    " body text, PRIMARY KEY (tenant_id, id))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_docs')",
    "CREATE INDEX doctor_docs_body ON public.doctor_docs USING gin (body gin_trgm_ops)",
]


@pytest.mark.usefixtures("stays_clean")
def test_the_fix_for_a_gin_index_adds_btree_gin_which_leading_it_with_tenant_id_needs(
    superuser_engine: Engine,
) -> None:
    expected = ("warning", "index_not_leading_with_tenant", "public.doctor_docs_body")
    led = "CREATE INDEX doctor_docs_led ON public.doctor_docs USING gin (tenant_id, body gin_trgm_ops)"
    with planted_in(superuser_engine, DOCS) as conn:
        (found,) = [row for row in finding_rows(conn) if key_of(row) == expected]
        assert "USING gin (tenant_id, body gin_trgm_ops)" in found[4]
        with pytest.raises(DBAPIError, match="operator class"), conn.begin_nested():
            run(conn, led)  # without btree_gin, bigint has no GIN operator class
        run(conn, found[4].split(" -- ")[0])  # the statement it prints: CREATE EXTENSION IF NOT EXISTS btree_gin;
        run(conn, led)
        run(conn, "DROP INDEX public.doctor_docs_body")
        assert not [row for row in finding_rows(conn) if row[2].startswith("public.doctor_docs")]


# 7. A function the app role owns, in a schema it may not create in: it cannot replace it there, but it may drop it,
# and DROP ... CASCADE drops the policy calling it. The fix hands it to the owner role and gives EXECUTE back.
@pytest.mark.usefixtures("stays_clean")
def test_a_function_the_app_role_owns_called_by_a_policy_is_reported_and_its_fix_keeps_it_callable(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    planted = [
        "CREATE SCHEMA doctor_rules",
        ddl("GRANT USAGE ON SCHEMA doctor_rules TO {}", db.roles.app),
        "CREATE FUNCTION doctor_rules.visible(s text) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT s <> '' $$",
        "REVOKE ALL ON FUNCTION doctor_rules.visible(text) FROM PUBLIC",  # the app role's own grant only
        ddl("ALTER FUNCTION doctor_rules.visible(text) OWNER TO {}", db.roles.app),
        "CREATE POLICY doctor_visible ON public.projects AS RESTRICTIVE FOR SELECT USING (doctor_rules.visible(name))",
    ]
    drop = "DROP FUNCTION doctor_rules.visible(text) CASCADE"
    policy = "SELECT 1 FROM pg_policy WHERE polname = 'doctor_visible'"
    expected = ("error", "app_role_owns_function", "doctor_rules.visible(text)")
    with planted_in(superuser_engine, planted) as conn:
        savepoint = conn.begin_nested()
        run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
        run(conn, drop)
        run(conn, "RESET SESSION AUTHORIZATION")
        assert conn.execute(text(policy)).first() is None  # the app role dropped another role's policy
        savepoint.rollback()
        found = [row for row in finding_rows(conn) if row[1] in ("app_role_owns_function", "app_role_schema_create")]
        assert [key_of(row) for row in found] == [expected]  # no CREATE on the schema: only this says it
        assert "policy doctor_visible on public.projects runs it" in found[0][3]
        assert found[0][4] == (
            f"ALTER FUNCTION doctor_rules.visible(text) OWNER TO {db.roles.owner};"
            f" GRANT EXECUTE ON FUNCTION doctor_rules.visible(text) TO {db.roles.app};"
        )
        run(conn, found[0][4])
        assert expected not in {key_of(row) for row in finding_rows(conn)}
        assert not can(conn, db.roles.app, drop)
        assert conn.execute(text(policy)).first() is not None
        assert can(conn, db.roles.app, "SELECT doctor_rules.visible('x')")  # the policy still runs for the app
