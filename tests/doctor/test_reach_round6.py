"""False alarms a sixth outside probe found, and what must stay reported beside them.

A body is read for what it runs, not for what its comments and messages say: the word "tenants" in a comment, a
RAISE message or a local variable of a pinned definer reads no rls_tenancy.tenants (H6a-c), and the printed fix
(SECURITY INVOKER) would break a correct audit trigger (H4c); a column named notify or the word in a string sends
no notification (H5b, H5c); a superuser's definer that names no tenant table, view or function of its own (a DDL
log, a status function) is a warning, with nothing to run, not an error whose fix fails (H15, H16). Planted in a
rolled-back transaction, as in test_reach_round5.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from rls_tenancy.testing import TenancyDatabase
from tests.conftest import World, ddl
from tests.doctor.support import can, finding_rows, key_of, planted_in, run
from tests.doctor.test_reach import _as_app, _own_rows
from tests.doctor.test_reach_round5 import _finding, _keys, _secrets

PINNED = "SET search_path = pg_catalog, pg_temp"


def _granted(name: str, d: TenancyDatabase, owner: str | None = None) -> list[str]:
    """``name`` owned by ``owner`` (the owner role by default), closed to PUBLIC and granted to the app role."""
    return [
        ddl(f"ALTER FUNCTION {name} OWNER TO {{}}", owner or d.roles.owner),
        f"REVOKE EXECUTE ON FUNCTION {name} FROM PUBLIC",
        ddl(f"GRANT EXECUTE ON FUNCTION {name} TO {{}}", d.roles.app),
    ]


# Definers of the owner role's over doctor_secrets (FORCEd: bound to the caller's tenant) whose text names
# rls_tenancy's tables outside their code only.
WORDY = {
    "H6a: the word in a comment of a SQL definer": (
        "public.doctor_count()",
        "CREATE FUNCTION public.doctor_count() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER " + PINNED + " AS $$"
        "\n  -- the bound tenant's secrets: other tenants are filtered out by the policy"
        "\n  SELECT count(*) FROM public.doctor_secrets $$",
        "SELECT 'works' WHERE public.doctor_count() = 1",
    ),
    "H6b: the word in a RAISE message, a dollar-quoted string and a local variable": (
        "public.doctor_rename(text,text)",
        "CREATE FUNCTION public.doctor_rename(old text, new text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
        + PINNED
        + " AS $$ DECLARE tenants bigint := 0; BEGIN"
        "\n  UPDATE public.doctor_secrets SET secret = new WHERE secret = old;"
        "\n  IF NOT FOUND THEN RAISE EXCEPTION 'no such secret (secrets of other tenants are invisible)'; END IF;"
        "\n  RAISE DEBUG '%', $q$nothing of rls_tenancy.tenants or audit_log is read here$q$;"
        "\n  tenants := tenants + 1; END $$",
        "SELECT 'works' FROM (SELECT public.doctor_rename('a-secret', 'a-renamed')) AS r",
    ),
    "H6c: the words in line and block comments": (
        "public.doctor_touch(text)",
        "CREATE FUNCTION public.doctor_touch(s text) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER "
        + PINNED
        + " AS $$"
        "\nBEGIN"
        "\n  -- tenants never see each other's secrets"
        "\n  /* Nothing is written to audit_log here /* nor read from rls_tenancy.tenants */ ever */"
        "\n  RETURN EXISTS (SELECT 1 FROM public.doctor_secrets WHERE secret = s);"
        "\nEND $$",
        "SELECT 'works' WHERE public.doctor_touch('a-secret') AND NOT public.doctor_touch('b-secret')",
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("plant", [pytest.param(plant, id=name) for name, plant in WORDY.items()])
def test_a_definer_naming_the_librarys_tables_in_comments_and_strings_only_is_no_error(
    superuser_engine: Engine, db: TenancyDatabase, world: World, plant: tuple[str, str, str]
) -> None:
    name, create, works = plant
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [create, *_granted(name, db)]:
            run(conn, statement)
        found = [row for row in finding_rows(conn) if row[2] == name]
        assert not [row for row in found if row[0] == "error"], found
        assert _as_app(conn, db, world.a, [works]) == "[('works',)]"
        assert _own_rows(conn, db, world) == ["a-secret"]


AUDIT = [
    "CREATE TABLE public.doctor_audit (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),"
    " id integer GENERATED ALWAYS AS IDENTITY, secret text, PRIMARY KEY (tenant_id, id))",
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_audit')",
]


@pytest.mark.usefixtures("stays_clean")
def test_a_correct_audit_trigger_with_tenants_in_a_comment_is_no_error_and_keeps_working(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """H4c: the owner role's definer trigger writes the writer's tenant's audit row, which the app role may not
    write itself. The doctor stays clean, and inserts keep working (SECURITY INVOKER would have broken them)."""
    name = "public.doctor_audit_secret()"
    audit = (
        "CREATE FUNCTION public.doctor_audit_secret() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        + PINNED
        + " AS $$ BEGIN"
        "\n  -- one audit row per write, in the writer's tenant: tenants read only their own"
        "\n  INSERT INTO public.doctor_audit (tenant_id, secret) VALUES (NEW.tenant_id, NEW.secret);"
        "\n  RETURN NEW; END $$"
    )
    trigger = (
        "CREATE TRIGGER doctor_audit AFTER INSERT ON public.doctor_secrets"
        " FOR EACH ROW EXECUTE FUNCTION public.doctor_audit_secret()"
    )
    insert = "INSERT INTO public.doctor_secrets (secret) VALUES ('a-second') RETURNING 'works'"
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [
            *AUDIT,
            ddl("REVOKE INSERT ON public.doctor_audit FROM {}", db.roles.app),
            audit,
            *_granted(name, db),
            trigger,
        ]:
            run(conn, statement)
        found = [row for row in finding_rows(conn) if row[2] == name]
        assert not [row for row in found if row[0] == "error"], found
        audited = "SELECT 'works' FROM public.doctor_audit WHERE secret = 'a-second'"
        assert _as_app(conn, db, world.a, [insert, audited]) == "[('works',)]"
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
def test_a_definer_reading_the_tenants_by_execute_text_is_still_an_error(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """Strings are left out of the names a body reads, except SQL text (EXECUTE 'SELECT ... FROM ...')."""
    name = "public.doctor_directory()"
    create = (
        "CREATE FUNCTION public.doctor_directory() RETURNS SETOF bigint LANGUAGE plpgsql STABLE SECURITY DEFINER "
        + PINNED
        + " AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT id FROM rls_tenancy.tenants'; END $$"
    )
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [create, *_granted(name, db)]:
            run(conn, statement)
        peek = ["SELECT 'reached' FROM public.doctor_directory() AS t (id) WHERE id = :b"]
        assert "reached" in _as_app(conn, db, world.a, peek, values={"b": world.b})
        assert ("error", "definer_escapes_rls", name) in _keys(conn)


@pytest.mark.usefixtures("stays_clean")
def test_a_writing_definer_reading_past_the_tenant_gets_a_fix_to_review_not_one_that_breaks_it(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """SECURITY INVOKER would make it fail on the write the app role may not do: the statement is left in a comment."""
    name = "public.doctor_stamp()"
    create = (
        "CREATE FUNCTION public.doctor_stamp() RETURNS void LANGUAGE sql SECURITY DEFINER " + PINNED + " AS $$"
        " INSERT INTO public.doctor_audit (tenant_id, secret)"
        " SELECT id, 'seen' FROM rls_tenancy.tenants WHERE id = rls_tenancy.current_tenant_id() $$"
    )
    expected = ("error", "definer_escapes_rls", name)
    stamp = "SELECT 'works' FROM (SELECT public.doctor_stamp()) AS s"
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [*AUDIT, ddl("REVOKE INSERT ON public.doctor_audit FROM {}", db.roles.app), create]:
            run(conn, statement)
        for statement in _granted(name, db):
            run(conn, statement)
        assert expected in _keys(conn)
        fix = _finding(conn, expected)[1]
        assert fix.startswith("-- review first") and "\n" not in fix, fix
        assert _as_app(conn, db, world.a, [stamp]) == "[('works',)]"


# Triggers on a tenant table that send nothing.
QUIET_TRIGGERS = {
    "H5b: a boolean column named notify": [
        "ALTER TABLE public.doctor_secrets ADD COLUMN notify boolean NOT NULL DEFAULT false,"
        " ADD COLUMN notified_at timestamptz",
        "CREATE FUNCTION public.doctor_notified_at() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.notify AND NEW.notified_at IS NULL THEN NEW.notified_at := now(); END IF; RETURN NEW; END $$",
    ],
    "H5c: the word in a string": [
        "ALTER TABLE public.doctor_secrets ADD COLUMN notified_at timestamptz",
        "CREATE FUNCTION public.doctor_notified_at() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE DEBUG 'New secret: we notify the assignee by mail; NOTIFY nobody';"
        " NEW.notified_at := now(); RETURN NEW; END $$",
    ],
}
NOTIFIED_AT = [
    "ALTER FUNCTION public.doctor_notified_at() OWNER TO {owner}",
    "CREATE TRIGGER doctor_notified_at BEFORE INSERT OR UPDATE ON public.doctor_secrets"
    " FOR EACH ROW EXECUTE FUNCTION public.doctor_notified_at()",
]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("plant", [pytest.param(plant, id=name) for name, plant in QUIET_TRIGGERS.items()])
def test_a_trigger_that_only_says_notify_is_no_finding(
    superuser_engine: Engine, db: TenancyDatabase, world: World, plant: list[str]
) -> None:
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [*plant, *NOTIFIED_AT]:
            run(conn, statement.replace("{owner}", ddl("{}", db.roles.owner)))
        assert "trigger_notifies_rows" not in {row[1] for row in finding_rows(conn)}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "body",
    [
        pytest.param("NOTIFY doctor_feed;", id="a NOTIFY statement"),
        pytest.param("EXECUTE 'NOTIFY doctor_feed';", id="NOTIFY as EXECUTE text"),
        pytest.param("PERFORM pg_catalog.pg_notify('doctor_feed', NEW.secret);", id="pg_catalog.pg_notify()"),
    ],
)
def test_a_trigger_that_notifies_is_still_an_error(
    superuser_engine: Engine, db: TenancyDatabase, world: World, body: str
) -> None:
    create = (
        "CREATE FUNCTION public.doctor_feed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        + body
        + " RETURN NEW; END $$"
    )
    trigger = (
        "CREATE TRIGGER doctor_feed AFTER INSERT ON public.doctor_secrets"
        " FOR EACH ROW EXECUTE FUNCTION public.doctor_feed()"
    )
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [create, ddl("ALTER FUNCTION public.doctor_feed() OWNER TO {}", db.roles.owner), trigger]:
            run(conn, statement)
        assert ("error", "trigger_notifies_rows", "public.doctor_secrets trigger doctor_feed") in _keys(conn)


# A superuser's definers that read no tenant's rows.
DDL_LOG = [
    "CREATE SCHEMA doctor_ops",
    "CREATE TABLE doctor_ops.ddl_log (at timestamptz NOT NULL DEFAULT now(), tag text, who text)",
    "CREATE FUNCTION doctor_ops.log_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER " + PINNED + " AS $$"
    " BEGIN INSERT INTO doctor_ops.ddl_log (tag, who) VALUES (tg_tag, session_user); END $$",
    "REVOKE EXECUTE ON FUNCTION doctor_ops.log_ddl() FROM PUBLIC",
    "CREATE EVENT TRIGGER doctor_log_ddl ON ddl_command_end EXECUTE FUNCTION doctor_ops.log_ddl()",
]
STATUS = [
    "CREATE FUNCTION public.doctor_status() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER " + PINNED + " AS $$"
    " SELECT 'server ' || current_setting('server_version') || ' ' || version() $$",
    "REVOKE EXECUTE ON FUNCTION public.doctor_status() FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.doctor_status() TO {app}",
]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    ("plant", "name", "works"),
    [
        pytest.param(
            DDL_LOG,
            "doctor_ops.log_ddl()",
            ["CREATE TEMP TABLE doctor_scratch (x integer)", "SELECT 'works'"],
            id="H15: a DDL audit writing to an ops schema",
        ),
        pytest.param(
            STATUS,
            "public.doctor_status()",
            ["SELECT 'works' WHERE public.doctor_status() LIKE 'server %'"],
            id="H16: a status function returning version()",
        ),
    ],
)
def test_a_superusers_definer_that_reads_no_table_of_tenants_is_a_warning_with_nothing_to_run(
    superuser_engine: Engine, db: TenancyDatabase, world: World, plant: list[str], name: str, works: list[str]
) -> None:
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in plant:
            run(conn, statement.replace("{app}", ddl("{}", db.roles.app)))
        found = [row for row in finding_rows(conn) if row[2] == name]
        assert not [row for row in found if row[0] == "error"], found
        message, fix = _finding(conn, ("warning", "definer_escapes_rls", name))
        assert "reads no tenant's rows as written" in message, message
        assert fix.startswith("-- nothing to run") and "\n" not in fix, fix
        assert _as_app(conn, db, world.a, works) == "[('works',)]"
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize(
    "reads",
    [
        pytest.param("SELECT count(*) FROM public.doctor_secrets", id="a tenant table"),
        pytest.param("SELECT count(*) FROM public.doctor_secrets_view", id="a view"),
        pytest.param("SELECT public.doctor_all()", id="an invoker function of its schema"),
    ],
)
def test_a_superusers_definer_that_names_what_reads_tenants_is_still_an_error(
    superuser_engine: Engine, db: TenancyDatabase, world: World, reads: str
) -> None:
    name = "public.doctor_total()"
    plant = [
        "CREATE VIEW public.doctor_secrets_view WITH (security_invoker = true) AS SELECT * FROM public.doctor_secrets",
        "CREATE FUNCTION public.doctor_all() RETURNS bigint LANGUAGE sql STABLE"
        " AS 'SELECT count(*) FROM public.doctor_secrets'",
        f"CREATE FUNCTION public.doctor_total() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER {PINNED}"
        f" AS $$ {reads} $$",
        "REVOKE EXECUTE ON FUNCTION public.doctor_total() FROM PUBLIC",
        ddl("GRANT EXECUTE ON FUNCTION public.doctor_total() TO {}", db.roles.app),
    ]
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in plant:
            run(conn, statement)
        assert _as_app(conn, db, world.a, ["SELECT 'reached' WHERE public.doctor_total() = 2"]) == "[('reached',)]"
        assert ("error", "definer_escapes_rls", name) in {key_of(row) for row in finding_rows(conn)}


# --- privileges on parameters (PostgreSQL 15) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("privilege", "parameter", "level"),
    [
        ("ALTER SYSTEM", "app.current_tenant", "error"),
        ("SET", "session_replication_role", "error"),
        ("SET", "log_statement", "warning"),
    ],
)
def test_a_privilege_on_a_parameter_the_app_role_holds_is_reported_and_its_fix_takes_it_back(
    superuser_engine: Engine, db: TenancyDatabase, privilege: str, parameter: str, level: str
) -> None:
    """ALTER SYSTEM SET app.current_tenant binds every session of the server once it reloads (it was a
    warning); SET session_replication_role = replica turns off foreign keys and the library's triggers."""
    grant = f"GRANT {privilege} ON PARAMETER {{}} TO {{}}"
    key = ("app_role_sets_parameter", f"parameter {parameter}")
    held = text("SELECT has_parameter_privilege(:role, :parameter, :privilege)")
    values = {"role": db.roles.app, "parameter": parameter, "privilege": privilege}
    with planted_in(superuser_engine, [ddl(grant, parameter, db.roles.app)]) as conn:
        assert conn.execute(held, values).scalar_one() is True  # what the app role may now do
        [(severity, check, name, _message, fix)] = [row for row in finding_rows(conn) if key_of(row)[1:] == key]
        assert (severity, check, name) == (level, *key)
        run(conn, fix)
        assert conn.execute(held, values).scalar_one() is False
        assert [row for row in finding_rows(conn) if key_of(row)[1:] == key] == []


# --- what a tenant table keeps outside its policies ---------------------------------------------------------

LONG_DOCS = [
    "CREATE TABLE public.doctor_long (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id), id integer,"
    " body text, PRIMARY KEY (tenant_id, id))",
    "ALTER TABLE public.doctor_long ALTER COLUMN body SET STORAGE EXTERNAL",  # stored apart, uncompressed
    "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_long')",
]


def test_a_tenant_tables_toast_table_granted_to_the_app_role_is_reported_and_its_fix_closes_it(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """Its chunks are every tenant's long values, and row level security does not apply to a TOAST table."""
    with planted_in(superuser_engine, LONG_DOCS) as conn:
        conn.execute(text("INSERT INTO public.doctor_long VALUES (:b, 1, repeat('b-secret ', 2000))"), {"b": world.b})
        toast = conn.execute(
            text("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'public.doctor_long'::regclass")
        ).scalar_one()
        run(conn, ddl("GRANT USAGE ON SCHEMA pg_toast TO {}", db.roles.app))
        run(conn, ddl(f"GRANT SELECT ON {toast} TO {{}}", db.roles.app))
        read = f"SELECT 1 FROM {toast} WHERE convert_from(chunk_data, 'UTF8') LIKE '%b-secret%'"
        assert can(conn, db.roles.app, read)  # B's value, read as the app role
        [(severity, name, fix)] = [(r[0], r[2], r[4]) for r in finding_rows(conn) if r[1] == "toast_table_readable"]
        assert (severity, name) == ("error", toast)
        run(conn, fix)
        assert not can(conn, db.roles.app, read)
        assert [r for r in finding_rows(conn) if r[1] == "toast_table_readable"] == []


def test_a_view_over_the_statistics_sampled_values_granted_to_the_app_role_is_reported(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    """pg_stats leaves out tables under row level security; a superuser's view over pg_statistic does not."""
    view = [
        "CREATE VIEW public.doctor_samples AS SELECT starelid::regclass::text AS tab, stavalues1::text AS sample"
        " FROM pg_catalog.pg_statistic",
        ddl("GRANT SELECT ON public.doctor_samples TO {}", db.roles.app),
    ]
    with planted_in(superuser_engine, view) as conn:
        assert can(conn, db.roles.app, "SELECT sample FROM public.doctor_samples")
        [(severity, fix)] = [
            (r[0], r[4])
            for r in finding_rows(conn)
            if key_of(r)[1:] == ("app_role_reads_catalog", "public.doctor_samples")
        ]
        assert severity == "error"
        run(conn, fix)
        assert not can(conn, db.roles.app, "SELECT sample FROM public.doctor_samples")
