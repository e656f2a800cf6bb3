"""The doctor's fixes, each applied and shown to close the hole it names; and its precision: one finding per cause.

No false alarms either: membership chains, predefined roles, exemptions the app role could write, policies that
narrow or widen, views, child tables, search_path, ownership, default privileges and WITH CHECK.
"""

from __future__ import annotations

import secrets

import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from rls_tenancy.schema.reinstall import reinstall_on
from rls_tenancy.testing import TenancyDatabase
from rls_tenancy.testing.database import signing_requested
from tests.conftest import ddl
from tests.doctor.support import (
    CLOSED,
    VIEW,
    Row,
    can,
    chain,
    child_without_tenant,
    finding_rows,
    key_of,
    planted_in,
    run,
)


@pytest.mark.usefixtures("stays_clean")
def test_a_membership_chain_is_named_whole_and_its_fix_revokes_the_membership_the_app_role_holds(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    suffix = secrets.token_hex(4)
    analysts, reporting = f"doctor_analysts_{suffix}", f"doctor_reporting_{suffix}"
    with planted_in(superuser_engine, chain(db.roles, "BYPASSRLS", suffix)) as conn:
        (found,) = [row for row in finding_rows(conn) if row[1] == "app_role_member_of_privileged"]
        assert f"({db.roles.app} -> {analysts} -> {reporting}), which has BYPASSRLS" in found[3]
        assert found[4] == f"REVOKE {analysts} FROM {db.roles.app};"
        become = ddl("SET LOCAL ROLE {}", reporting)
        assert can(conn, db.roles.app, become)  # the leak: the app role becomes a BYPASSRLS role
        run(conn, found[4])
        assert not can(conn, db.roles.app, become)
        assert "app_role_member_of_privileged" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("granted", "peek", "says"),
    [
        (
            "pg_read_all_data",
            "SELECT pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_1a')",
            "the context key's included",
        ),
        (
            "pg_monitor",
            "SELECT count(query) FROM pg_catalog.pg_stat_activity",
            " -> pg_monitor -> pg_read_all_stats), which reads every session's query text",
        ),
    ],
    ids=["pg_read_all_data reads the context key", "pg_monitor reads other tenants' query text"],
)
def test_a_predefined_role_reads_around_rls_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, granted: str, peek: str, says: str
) -> None:
    """One cause, one finding: the membership, not the functions it grants as well."""
    # The app role is NOINHERIT: it reaches the predefined role's rights by SET ROLE, as injected SQL would.
    become = ddl("SET LOCAL ROLE {}; ", granted) + peek
    with planted_in(superuser_engine, [ddl("GRANT {} TO {}", granted, db.roles.app)]) as conn:
        assert can(conn, db.roles.app, become)
        checks = ("app_role_member_of_privileged", "app_role_cross_tenant_function")
        found = [row for row in finding_rows(conn) if row[1] in checks]
        assert [row[1] for row in found] == ["app_role_member_of_privileged"], found
        assert says in found[0][3]
        run(conn, found[0][4])
        assert not can(conn, db.roles.app, become)
        assert not can(conn, db.roles.app, peek)


EXEMPT_OPEN_TABLE = [
    "ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY",
    "INSERT INTO rls_tenancy.doctor_exemptions VALUES ('public.projects', 'rls_disabled', 'planted by the app role')",
]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("writable", [False, True], ids=["only the owner writes them", "the app role writes them"])
def test_exemptions_the_app_role_could_write_are_ignored(
    superuser_engine: Engine, db: TenancyDatabase, writable: bool
) -> None:
    grant = [ddl("GRANT INSERT ON rls_tenancy.doctor_exemptions TO {}", db.roles.app)] if writable else []
    with planted_in(superuser_engine, [*grant, *EXEMPT_OPEN_TABLE]) as conn:
        severities = {row[0] for row in finding_rows(conn) if row[1] == "rls_disabled" and row[2] == "public.projects"}
    assert severities == ({"error"} if writable else {"info"})


@pytest.mark.usefixtures("stays_clean")
def test_a_roles_table_naming_no_role_makes_the_doctor_fail_loudly_until_restored_as_its_hint_says(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    tampered = ["UPDATE rls_tenancy.roles SET role_name = 'no_such_role_' || md5(random()::text) WHERE purpose = 'app'"]
    with planted_in(superuser_engine, tampered) as conn:
        with pytest.raises(DBAPIError, match="rls_tenancy.roles names roles") as raised, conn.begin_nested():
            finding_rows(conn)
        hint = raised.value.orig.diag.message_hint or ""  # type: ignore[union-attr]
        assert "DELETE FROM rls_tenancy.roles, then rls-tenancy migrate --reinstall" in hint
        run(conn, "DELETE FROM rls_tenancy.roles")
        reinstall_on(conn, roles=db.roles)
        finding_rows(conn)  # reports again instead of raising
        recorded = conn.execute(text("SELECT role_name FROM rls_tenancy.roles WHERE purpose = 'app'")).scalar_one()
        assert recorded == db.roles.app


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("attribute", "role", "check"),
    [
        ("SUPERUSER", "app", "app_role_superuser"),
        ("BYPASSRLS", "owner", "owner_role_escapes_rls"),
        ("SUPERUSER", "owner", "owner_role_escapes_rls"),
    ],
)
def test_one_cause_is_one_finding(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row], attribute: str, role: str, check: str
) -> None:
    name = db.roles.app if role == "app" else db.roles.owner
    alter = sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(name), sql.SQL(attribute)).as_string(None)
    with planted_in(superuser_engine, [alter]) as conn:
        errors = [row for row in finding_rows(conn) if row[0] == "error"]
        found = {key_of(row) for row in finding_rows(conn)}
    assert [(row[1], row[2]) for row in errors] == [(check, name)]  # not one per function, table or role it reaches
    if role == "owner":  # the rest of the report is what it was
        assert found - {("error", check, name)} == {key_of(row) for row in baseline}


TENANT = "tenant_id = rls_tenancy.current_tenant_id()"


def _with_tenant(template: str) -> str:
    """``template`` with the tenant condition in place of each ``{tenant}``."""
    return sql.SQL(template).format(tenant=sql.SQL(TENANT)).as_string(None)


PER_COMMAND = [
    "CREATE TABLE public.doctor_commands (id integer, tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),"
    " PRIMARY KEY (tenant_id, id))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_commands')",
    "DROP POLICY tenant_isolation ON public.doctor_commands",
    _with_tenant("CREATE POLICY doctor_read ON public.doctor_commands FOR SELECT USING ({tenant})"),
    _with_tenant("CREATE POLICY doctor_add ON public.doctor_commands FOR INSERT WITH CHECK ({tenant})"),
    _with_tenant(
        "CREATE POLICY doctor_change ON public.doctor_commands FOR UPDATE USING ({tenant}) WITH CHECK ({tenant})"
    ),
    _with_tenant("CREATE POLICY doctor_remove ON public.doctor_commands FOR DELETE USING ({tenant})"),
]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "statements",
    [
        pytest.param(PER_COMMAND, id="a policy per command, each the tenant condition"),
        pytest.param(
            [_with_tenant("CREATE POLICY doctor_named ON public.projects FOR SELECT USING ({tenant} AND name <> '')")],
            id="a permissive policy that is the tenant condition AND a business rule",
        ),
        pytest.param(
            ["CREATE POLICY doctor_rule ON public.projects AS RESTRICTIVE USING (name <> '')"],
            id="a restrictive business rule without WITH CHECK",
        ),
    ],
)
def test_policies_that_narrow_the_tenant_condition_are_no_finding(
    superuser_engine: Engine, baseline: list[Row], statements: list[str]
) -> None:
    with planted_in(superuser_engine, statements) as conn:
        found = [row for row in finding_rows(conn) if row[0] != "info"]
    assert found == [row for row in baseline if row[0] != "info"]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "using",
    [
        "{tenant} OR name = 'x'",
        "({tenant} AND name <> '') OR true",
        "name <> '' AND {tenant} OR true",
        "{tenant} AND (true OR name <> '') OR tenant_id > 0",
    ],
)
def test_a_policy_that_widens_the_tenant_condition_is_still_an_error(superuser_engine: Engine, using: str) -> None:
    policy = _with_tenant("CREATE POLICY doctor_wide ON public.projects FOR SELECT USING (" + using + ")")
    with planted_in(superuser_engine, [policy]) as conn:
        found = {key_of(row) for row in finding_rows(conn)}
    assert ("error", "policy_not_tenant_keyed", "public.projects policy doctor_wide") in found


@pytest.mark.usefixtures("stays_clean")
def test_a_view_whose_owner_the_policies_bind_is_a_warning_and_shows_the_bound_tenant_only(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    owned = [VIEW, ddl("ALTER VIEW public.doctor_view OWNER TO {}", db.roles.owner)]
    granted = ddl("GRANT SELECT ON public.doctor_view TO {}", db.roles.app)
    with planted_in(superuser_engine, [*owned, granted]) as conn:
        found = {key_of(row) for row in finding_rows(conn)}
        assert ("warning", "view_not_security_invoker", "public.doctor_view") in found
        if not signing_requested():  # the claim behind the downgrade: the view filters as the policies do
            tenant, mine, every = conn.execute(
                text(
                    "SELECT t, count(*) FILTER (WHERE tenant_id = t), count(*)"
                    " FROM public.projects, (SELECT min(tenant_id) AS t FROM public.projects) AS one GROUP BY t"
                )
            ).one()
            assert 0 < mine < every  # else the check below proves nothing
            run(conn, ddl("SET LOCAL SESSION AUTHORIZATION {}", db.roles.app))
            assert conn.execute(text("SELECT count(*) FROM public.doctor_view")).scalar() == 0  # no tenant bound
            conn.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(tenant)})
            assert conn.execute(text("SELECT count(*) FROM public.doctor_view")).scalar() == mine


@pytest.mark.usefixtures("stays_clean")
def test_a_child_table_is_reported_by_its_cause_only(superuser_engine: Engine, db: TenancyDatabase) -> None:
    with planted_in(superuser_engine, child_without_tenant(db.roles)) as conn:
        about = [row[1] for row in finding_rows(conn) if row[2] == "public.doctor_lines"]
    assert about == ["tenant_table_by_another_name"]  # not also table_not_isolated, its symptom


COUNTING = (
    "CREATE FUNCTION public.doctor_count() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER"
    " AS $$ BEGIN RETURN (SELECT count(*) FROM projects); END $$"
)


@pytest.mark.usefixtures("stays_clean", "seeded")
def test_the_search_path_fix_keeps_the_names_a_definer_uses_and_never_reaches_a_temporary_table(
    superuser_engine: Engine,
) -> None:
    with planted_in(superuser_engine, [COUNTING, CLOSED.replace("doctor_definer", "doctor_count")]) as conn:
        (found,) = [row for row in finding_rows(conn) if row[1] == "definer_without_search_path"]
        fix = "ALTER FUNCTION public.doctor_count() SET search_path = pg_catalog, public, pg_temp;"
        assert found[4].startswith(fix)
        run(conn, found[4])
        every = conn.execute(text("SELECT count(*) FROM public.projects")).scalar()
        assert every  # else the decoy's count would match it
        run(conn, "CREATE TEMPORARY TABLE projects AS SELECT * FROM public.projects LIMIT 0")  # a planted decoy
        assert conn.execute(text("SELECT public.doctor_count()")).scalar() == every  # public's, not the decoy's
        assert "definer_without_search_path" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_the_ownership_fix_leaves_the_app_role_its_access(superuser_engine: Engine, db: TenancyDatabase) -> None:
    owned = [ddl("ALTER TABLE public.projects OWNER TO {}", db.roles.app)]
    with planted_in(superuser_engine, owned) as conn:
        (found,) = [row for row in finding_rows(conn) if row[1] == "app_role_owns_table"]
        run(conn, found[4])
        can = text("SELECT has_table_privilege(:r, 'public.projects', :p)")
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert conn.execute(can, {"r": db.roles.app, "p": privilege}).scalar(), privilege
        assert "app_role_owns_table" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_a_table_granted_by_default_privileges_names_them_as_its_cause(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    default = ddl("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {}", db.roles.app)
    with planted_in(superuser_engine, [default, "CREATE TABLE public.doctor_scratch (id int, note text)"]) as conn:
        (found,) = [row for row in finding_rows(conn) if row[2] == "public.doctor_scratch"]
    assert found[1] == "table_not_isolated"
    user = db.superuser_url.username
    assert found[3].endswith(f"(granted at creation by the default privileges of {user} in schema public)")


@pytest.mark.usefixtures("stays_clean")
def test_the_with_check_fix_keeps_the_business_rule(superuser_engine: Engine) -> None:
    rule = _with_tenant("CREATE POLICY doctor_named ON public.projects USING ({tenant} AND name <> '')")
    using = "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'doctor_named'"
    with planted_in(superuser_engine, [rule]) as conn:
        (found,) = [row for row in finding_rows(conn) if row[1] == "policy_without_with_check"]
        before = conn.execute(text(using)).scalar()
        run(conn, found[4])
        checked = "SELECT pg_get_expr(polwithcheck, polrelid) FROM pg_policy WHERE polname = 'doctor_named'"
        assert conn.execute(text(checked)).scalar() == before  # new rows keep "name <> ''"
        assert "policy_without_with_check" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_create_on_pg_catalog_is_one_finding_whose_fix_revokes_it(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    """pg_catalog is searched first whatever a search_path says: no path leaves it out, the grant is the cause."""
    with planted_in(superuser_engine, [ddl("GRANT CREATE ON SCHEMA pg_catalog TO {}", db.roles.app)]) as conn:
        found = [row for row in finding_rows(conn) if row[0] == "error"]
        assert [key_of(row) for row in found] == [("error", "app_role_schema_create", "pg_catalog")]
        assert found[0][4] == f"REVOKE CREATE ON SCHEMA pg_catalog FROM {db.roles.app};"  # names need no quotes
        assert not [row for row in finding_rows(conn) if "search_path = ;" in row[4]]
        run(conn, found[0][4])
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_a_rule_on_a_view_stays_reported_once_the_view_is_made_security_invoker(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """The view's fix covers what it reads; its INSTEAD rule still runs as its owner until dropped."""
    planted = [
        VIEW,
        "CREATE RULE doctor_add AS ON INSERT TO public.doctor_view DO INSTEAD UPDATE public.projects"
        " SET name = coalesce(NEW.name, projects.name) WHERE id = NEW.id RETURNING id, name",
        ddl("GRANT SELECT, INSERT ON public.doctor_view TO {}", db.roles.app),
    ]
    view = ("error", "view_not_security_invoker", "public.doctor_view")
    rule = ("error", "rule_reaches_tenant_table", "public.doctor_view rule doctor_add")
    with planted_in(superuser_engine, planted) as conn:
        found = {key_of(row): row for row in finding_rows(conn)}
        assert view in found and rule in found
        run(conn, found[view][4])
        after = {key_of(row): row for row in finding_rows(conn)}
        assert view not in after and rule in after
        run(conn, after[rule][4])
        assert rule not in {key_of(row) for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_the_signalling_functions_fix_revokes_the_membership_that_grants_them(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    with planted_in(superuser_engine, [ddl("GRANT pg_signal_backend TO {}", db.roles.app)]) as conn:
        found = [row for row in finding_rows(conn) if row[1] == "app_role_cross_tenant_function"]
        assert found
        assert all(f"REVOKE pg_signal_backend FROM {db.roles.app};" in row[4] for row in found)
        assert can(conn, db.roles.app, "SET LOCAL ROLE pg_signal_backend")
        run(conn, found[0][4])
        assert not can(conn, db.roles.app, "SET LOCAL ROLE pg_signal_backend")
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_an_installation_under_default_privileges_granting_the_app_role_functions_is_refused_until_revoked(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """The owner role's default privileges give the app role EXECUTE on each function the scripts create, its
    bypass functions among them; an installation made then recorded those grants as its own, and the doctor said
    nothing. The scripts refuse it instead, and the way out the refusal gives leaves the app role what the library
    grants it, and no more."""
    bypass_function = "rls_tenancy.audit_chain_heads()"
    laundered = [
        ddl("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT EXECUTE ON FUNCTIONS TO {}", db.roles.owner, db.roles.app),
        # what a first installation under them leaves (existing functions keep their grants when replaced)
        ddl("GRANT EXECUTE ON FUNCTION rls_tenancy.audit_chain_heads() TO {}", db.roles.app),
    ]
    may_run = text("SELECT has_function_privilege(:role, :function, 'EXECUTE')")
    with planted_in(superuser_engine, laundered) as conn:
        with pytest.raises(DBAPIError, match="default privileges give the application role EXECUTE") as raised:
            with conn.begin_nested():
                reinstall_on(conn, roles=db.roles)
        hint = raised.value.orig.diag.message_hint or ""  # type: ignore[union-attr]
        assert "REVOKE EXECUTE ON FUNCTIONS FROM" in hint and db.roles.app in hint
        revoke = ddl(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS FROM {}", db.roles.owner, db.roles.app
        )
        run(conn, revoke)
        run(conn, ddl("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA rls_tenancy FROM {}", db.roles.app))
        reinstall_on(conn, roles=db.roles)
        assert not conn.execute(may_run, {"role": db.roles.app, "function": bypass_function}).scalar_one()
        # what the library grants the app role, granted again by the installation
        current = "rls_tenancy.current_tenant_id()"
        assert conn.execute(may_run, {"role": db.roles.app, "function": current}).scalar_one()
        assert not [
            row for row in finding_rows(conn) if row[1] in ("library_function_granted", "default_privileges_grant_app")
        ]


GRANTS = text(
    "SELECT (SELECT relacl::text FROM pg_class WHERE oid = CAST(:t AS regclass)),"
    " (SELECT string_agg(attname || '=' || attacl::text, ' ' ORDER BY attnum) FROM pg_attribute"
    " WHERE attrelid = CAST(:t AS regclass))"
)


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("table", ["api_tokens", "audit_log", "feature_overrides"])
def test_the_fix_for_a_library_table_with_rls_off_restores_it_without_granting_anything(
    superuser_engine: Engine, table: str
) -> None:
    """enable_tenant_isolation() refused the nullable tenant_id and the other policies, or gave the app role
    writes to api_tokens the library never grants; row level security on again is the whole fix."""
    name = f"rls_tenancy.{table}"
    with planted_in(superuser_engine, []) as conn:
        before = conn.execute(GRANTS, {"t": name}).one()
        run(conn, ddl("ALTER TABLE rls_tenancy.{} DISABLE ROW LEVEL SECURITY", table))
        (found,) = [row for row in finding_rows(conn) if key_of(row) == ("error", "rls_disabled", name)]
        run(conn, found[4])
        assert conn.execute(GRANTS, {"t": name}).one() == before
        assert "rls_disabled" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_more_than_the_library_grants_on_api_tokens_is_revoked_and_what_it_grants_stays(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """A REVOKE on a table takes its column grants with it: the fix grants the library's back."""
    name = "rls_tenancy.api_tokens"
    with planted_in(superuser_engine, []) as conn:
        before = conn.execute(GRANTS, {"t": name}).one()
        run(conn, ddl("GRANT SELECT, INSERT ON rls_tenancy.api_tokens TO {}", db.roles.app))
        (found,) = [row for row in finding_rows(conn) if row[1] == "library_table_granted" and row[2] == name]
        assert found[0] == "error"
        run(conn, found[4])
        assert conn.execute(GRANTS, {"t": name}).one() == before
        assert "library_table_granted" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
def test_the_fixes_for_one_table_apply_top_to_bottom(superuser_engine: Engine, baseline: list[Row]) -> None:
    """enable_tenant_isolation() refuses a nullable tenant_id: rls_disabled's fix (an error, listed first) sets
    it NOT NULL first."""
    planted = ["CREATE TABLE public.doctor_shares (id integer, tenant_id bigint REFERENCES rls_tenancy.tenants (id))"]
    with planted_in(superuser_engine, planted) as conn:
        fixes = [row[4] for row in finding_rows(conn) if row[2] == "public.doctor_shares"]
        assert len(fixes) > 1
        for fix in fixes:
            run(conn, fix)
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_an_extension_in_the_library_schema_is_one_finding_whose_fix_moves_it_out(
    superuser_engine: Engine, baseline: list[Row]
) -> None:
    """Not one finding per function of it (library_definition_changed, library_object_owner)."""
    with planted_in(superuser_engine, ["CREATE EXTENSION pgcrypto SCHEMA rls_tenancy"]) as conn:
        found = [row for row in finding_rows(conn) if row not in baseline]
        assert [key_of(row) for row in found] == [("warning", "extension_in_library_schema", "extension pgcrypto")]
        run(conn, found[0][4])
        assert finding_rows(conn) == baseline


# For the database, and for the app role in it: an unquoted RESET folds the name to lower case and leaves it.
MIXED_CASE = {
    "database": ('ALTER DATABASE %I {} "App.Current_Tenant"', "App.Current_Tenant=7"),
    "role in database": ('ALTER ROLE {} IN DATABASE %I {} "APP"."CURRENT_TENANT"', "APP.CURRENT_TENANT=7"),
}


def _on_this_database(statement: str) -> str:
    return "DO $$ BEGIN EXECUTE format('" + statement.replace("'", "''") + "', current_database()); END $$"


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(("template", "setting"), MIXED_CASE.values(), ids=MIXED_CASE.keys())
def test_a_default_tenant_spelled_in_mixed_case_is_an_error_until_reset(
    db: TenancyDatabase, template: str, setting: str
) -> None:
    """Setting names are case-insensitive: "App.Current_Tenant" binds app.current_tenant at login. A session that
    never used app.current_tenant stores the name as written (once used, PostgreSQL writes its own spelling). The
    fix runs in a session of its own: in the planting one, RESET would find the name as planted, whatever its case."""
    target = template.replace("{}", db.roles.app, 1) if template.startswith("ALTER ROLE") else template
    stored = text("SELECT setting FROM pg_db_role_setting, unnest(setconfig) AS setting WHERE setting ILIKE 'App.%'")
    planting = create_engine(db.superuser_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    fixing = create_engine(db.superuser_url, poolclass=NullPool)
    try:
        with planting.connect() as conn:
            run(conn, _on_this_database(target.replace("{}", "SET") + " = '7'"))
            assert conn.execute(stored).scalar_one() == setting  # else the test proves nothing
        with planted_in(fixing, []) as conn:
            (found,) = [row for row in finding_rows(conn) if row[1] == "app_role_setting"]
            assert found[0] == "error"
            run(conn, found[4])
            assert "app_role_setting" not in {row[1] for row in finding_rows(conn)}
            assert conn.execute(stored).all() == []
    finally:
        with planting.connect() as conn:
            run(conn, _on_this_database(target.replace("{}", "RESET")))
        planting.dispose()
        fixing.dispose()


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("table", "policy"),
    [
        ("tenants", "owner_lookup"),
        ("users", "tenant_isolation"),
        ("feature_overrides", "global_overrides_read"),
        ("audit_log", "audit_owner"),
    ],
)
def test_a_library_policy_only_renamed_is_a_warning_whose_fix_names_it_back(
    superuser_engine: Engine, baseline: list[Row], table: str, policy: str
) -> None:
    """Compared by what it says: renamed, it is still the library's (not library_policy_missing, an error)."""
    rename = ddl("ALTER POLICY {} ON rls_tenancy.{} RENAME TO doctor_renamed", policy, table)
    with planted_in(superuser_engine, [rename]) as conn:
        found = [row for row in finding_rows(conn) if row not in baseline]
        expected = ("warning", "library_policy_renamed", f"rls_tenancy.{table} policy doctor_renamed")
        assert [key_of(row) for row in found] == [expected], found
        run(conn, found[0][4])
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_a_view_of_the_owner_roles_over_feature_overrides_is_a_warning(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """global_overrides_read lets the owner role read the rows of no tenant, which the app role reads itself."""
    planted = [
        "CREATE VIEW public.doctor_flags AS SELECT tenant_id, feature FROM rls_tenancy.feature_overrides",
        ddl("ALTER VIEW public.doctor_flags OWNER TO {}", db.roles.owner),
        ddl("GRANT SELECT ON public.doctor_flags TO {}", db.roles.app),
    ]
    with planted_in(superuser_engine, planted) as conn:
        found = {key_of(row) for row in finding_rows(conn) if row[2] == "public.doctor_flags"}
    assert found == {("warning", "view_not_security_invoker", "public.doctor_flags")}


@pytest.mark.usefixtures("stays_clean")
def test_select_on_a_library_sequence_is_a_warning_whose_fix_revokes_it(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    """Its last value counts every tenant's events."""
    peek = "SELECT last_value FROM rls_tenancy.audit_log_id_seq"
    grant = ddl("GRANT SELECT ON SEQUENCE rls_tenancy.audit_log_id_seq TO {}", db.roles.app)
    with planted_in(superuser_engine, [grant]) as conn:
        assert can(conn, db.roles.app, peek)
        found = [row for row in finding_rows(conn) if row not in baseline]
        expected = ("warning", "library_sequence_granted", "rls_tenancy.audit_log_id_seq")
        assert [key_of(row) for row in found] == [expected]
        run(conn, found[0][4])
        assert not can(conn, db.roles.app, peek)
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_writes_no_policy_lets_reach_a_row_are_a_warning(
    superuser_engine: Engine, db: TenancyDatabase, baseline: list[Row]
) -> None:
    """audit_log and tenants have no policy for the app role's UPDATE, DELETE or INSERT: nothing is touched yet."""
    grants = [
        ddl("GRANT UPDATE, DELETE ON rls_tenancy.audit_log TO {}", db.roles.app),
        ddl("GRANT INSERT, UPDATE ON rls_tenancy.tenants TO {}", db.roles.app),
    ]
    with planted_in(superuser_engine, grants) as conn:
        found = [row for row in finding_rows(conn) if row[1] == "library_table_granted"]
        assert sorted(key_of(row) for row in found) == [
            ("warning", "library_table_granted", "rls_tenancy.audit_log"),
            ("warning", "library_table_granted", "rls_tenancy.tenants"),
        ]
        for row in found:
            run(conn, row[4])
        assert finding_rows(conn) == baseline


@pytest.mark.usefixtures("stays_clean")
def test_a_with_check_that_opens_a_policy_is_the_expression_quoted(superuser_engine: Engine) -> None:
    widened = "ALTER POLICY tenant_overrides ON rls_tenancy.feature_overrides WITH CHECK (true)"
    with planted_in(superuser_engine, [widened]) as conn:
        errors = [row for row in finding_rows(conn) if row[:2] == ("error", "policy_not_tenant_keyed")]
        assert [row[3].rsplit(": ", 1)[1] for row in errors] == ["WITH CHECK true"]
        run(conn, errors[0][4])
        assert not [row for row in finding_rows(conn) if row[:2] == ("error", "policy_not_tenant_keyed")]
