"""Reaches a fifth outside probe found: the server's files and connections through functions granted back, a tenant
table's sequence, objects a tenant guard or a generated column depends on, notifications, owners that read past the
tenant through a policy of their own, the library's own tables through the owner role's definers, pg_shadow.

As in test_reach.py: planted in a rolled-back transaction, shown to reach tenant B's data as the app role bound to
tenant A, reported as an error, and closed by the fix the doctor prints, after which the app role still reads its
own rows. Notifications are delivered at commit only: those plants are committed in a database of their own. And
the two false alarms the probe found: a tenant-shaped table the app role cannot reach, a file_fdw table.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy.testing import TenancyDatabase, tenancy_database
from tests.conftest import DEMO_ALEMBIC_INI, World, bind_then_become, ddl
from tests.doctor.support import Key, finding_rows, key_of, planted_in, run
from tests.doctor.test_reach import (
    B_EVENT,
    LOGS_EVENT,
    REACHED,
    SECRETS,
    _as_app,
    _column_gone,
    _own_rows,
)

BI = f"doctor_bi_{secrets.token_hex(4)}"
GROUP = f"doctor_files_{secrets.token_hex(4)}"


def _keys(conn: Connection) -> set[Key]:
    return {key_of(row) for row in finding_rows(conn)}


def _finding(conn: Connection, key: Key) -> tuple[str, str]:
    """The message and the fix of ``key``'s one finding."""
    (found,) = [(row[3], row[4]) for row in finding_rows(conn) if key_of(row) == key]
    return found


def _secrets(conn: Connection, world: World) -> None:
    for statement in SECRETS:
        conn.execute(text(statement), {"a": world.a, "b": world.b})


def _bi(d: TenancyDatabase) -> list[str]:
    """A reporting role meant to read every tenant: a permissive policy of its own, USING (true)."""
    return [
        ddl("CREATE ROLE {} NOLOGIN", BI),
        ddl("GRANT SELECT ON public.doctor_secrets TO {}", BI),
        ddl("CREATE POLICY doctor_bi_reads_all ON public.doctor_secrets FOR SELECT TO {} USING (true)", BI),
    ]


# The heap file of doctor_secrets holds every tenant's rows (written out by the plant's CHECKPOINT).
READ_HEAP = (
    "SELECT 'reached' WHERE position(convert_to('b-secret', 'UTF8') in"
    " pg_catalog.pg_read_binary_file(pg_catalog.pg_relation_filepath('public.doctor_secrets'))) > 0"
)
IMPORT_HEAP = [
    "SELECT pg_catalog.set_config('doctor.lo',"
    " pg_catalog.lo_import(pg_catalog.pg_relation_filepath('public.doctor_secrets'))::text, false)",
    "SELECT 'reached' WHERE position(convert_to('b-secret', 'UTF8') in"
    " pg_catalog.lo_get(current_setting('doctor.lo')::oid)) > 0",
]
# The library's policy replaced by the design "permissive USING (true), restrictive tenant guard", the guard using
# an operator, a collation or a domain (created by the superuser, then handed to the app role).
OPEN = [
    "DROP POLICY tenant_isolation ON public.doctor_secrets",
    "CREATE POLICY doctor_readable ON public.doctor_secrets FOR ALL USING (true) WITH CHECK (true)",
]


def _guarded(create: str, uses: str, alter: str) -> Callable[[TenancyDatabase], list[str]]:
    return lambda d: [
        create,
        *OPEN,
        "CREATE POLICY doctor_guard ON public.doctor_secrets AS RESTRICTIVE FOR ALL"
        f" USING (tenant_id = rls_tenancy.current_tenant_id() AND {uses})"
        " WITH CHECK (tenant_id = rls_tenancy.current_tenant_id())",
        ddl(alter + " OWNER TO {}", d.roles.app),
    ]


OPERATOR = (
    "CREATE FUNCTION public.doctor_ne(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 <> $2';"
    " CREATE OPERATOR public.<<>> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.doctor_ne)"
)
OTHER_SECRET = ["SELECT 'reached' FROM public.doctor_secrets WHERE secret = 'b-secret'"]
ADDS_OWN = "INSERT INTO public.doctor_secrets (secret) VALUES ('a-second') RETURNING 'works'"


@dataclass(frozen=True)
class Reach:
    setup: Callable[[TenancyDatabase], list[str]]
    check: str
    object: str
    peek: list[str]  # as the app role bound to tenant A: returns or raises "reached" while B's data is in reach
    as_role: str | None = None  # SET ROLE to it first (a role the app role can become)
    works: tuple[str, ...] = ()  # after the fix, as the app role bound to A: each returns 'works'
    says: str = ""  # in the message


REACHES = {
    # 1. The functions pg_read_server_files and pg_write_server_files gate, granted back.
    "pg_read_binary_file() granted to the app role: a table's own file": Reach(
        lambda d: [
            "CHECKPOINT",
            ddl("GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {}", d.roles.app),
        ],
        "app_role_server_function",
        "pg_read_binary_file(text)",
        [READ_HEAP],
    ),
    "pg_read_binary_file() granted to a role the app role can become": Reach(
        lambda d: [
            "CHECKPOINT",
            ddl("CREATE ROLE {} NOLOGIN", GROUP),
            ddl("GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {}", GROUP),
            ddl("GRANT {} TO {}", GROUP, d.roles.app),
        ],
        "app_role_server_function",
        "pg_read_binary_file(text)",
        [READ_HEAP],
        as_role=GROUP,
    ),
    "the server-side lo_import() granted back to PUBLIC": Reach(
        lambda d: ["CHECKPOINT", "GRANT EXECUTE ON FUNCTION pg_catalog.lo_import(text) TO PUBLIC"],
        "app_role_server_function",
        "lo_import(text)",
        IMPORT_HEAP,
    ),
    # 2. What a tenant guard depends on, owned by the app role: DROP ... CASCADE drops the guard.
    "an operator of the tenant guard owned by the app role": Reach(
        _guarded(OPERATOR, "secret <<>> 'hidden'", "ALTER OPERATOR public.<<>> (text, text)"),
        "app_role_owns_policy_dependency",
        "operator public.<<>>(text,text)",
        ["DROP OPERATOR public.<<>> (text, text) CASCADE", *OTHER_SECRET],
        works=(ADDS_OWN,),
    ),
    "a collation of the tenant guard owned by the app role": Reach(
        _guarded(
            'CREATE COLLATION public.doctor_coll FROM "C"',
            "(secret COLLATE public.doctor_coll) <> 'hidden'",
            "ALTER COLLATION public.doctor_coll",
        ),
        "app_role_owns_policy_dependency",
        "collation public.doctor_coll",
        ["DROP COLLATION public.doctor_coll CASCADE", *OTHER_SECRET],
        works=(ADDS_OWN,),
    ),
    "a domain the tenant guard casts to, owned by the app role": Reach(
        _guarded(
            "CREATE DOMAIN public.doctor_label AS text",
            "secret::public.doctor_label <> 'hidden'",
            "ALTER DOMAIN public.doctor_label",
        ),
        "app_role_owns_policy_dependency",
        "domain public.doctor_label",
        ["DROP DOMAIN public.doctor_label CASCADE", *OTHER_SECRET],
        works=(ADDS_OWN,),
    ),
    "the function under a tenant guard's operator owned by the app role": Reach(
        _guarded(OPERATOR, "secret <<>> 'hidden'", "ALTER FUNCTION public.doctor_ne(text, text)"),
        "app_role_owns_function",
        "public.doctor_ne(text,text)",
        ["DROP FUNCTION public.doctor_ne(text, text) CASCADE", *OTHER_SECRET],
        works=(ADDS_OWN,),
    ),
    # 3. A function behind a generated column: DROP ... CASCADE takes the column from every tenant's rows.
    "the function of a tenant table's generated column owned by the app role": Reach(
        lambda d: [
            "CREATE FUNCTION public.doctor_slug(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower($1)'",
            "ALTER TABLE public.doctor_secrets ADD COLUMN slug text"
            " GENERATED ALWAYS AS (public.doctor_slug(secret)) STORED",
            ddl("ALTER FUNCTION public.doctor_slug(text) OWNER TO {}", d.roles.app),
        ],
        "app_role_owns_function",
        "public.doctor_slug(text)",
        ["DROP FUNCTION public.doctor_slug(text) CASCADE", _column_gone("public.doctor_secrets", "slug")],
        works=(ADDS_OWN,),
        says="the generated column public.doctor_secrets.slug",
    ),
    # 4. Owners that read past the tenant through a policy of their own.
    "a definer of a role with a policy USING (true), granted to the app role": Reach(
        lambda d: [
            *_bi(d),
            "CREATE FUNCTION public.doctor_all_secrets() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'SELECT secret FROM public.doctor_secrets'",
            ddl("ALTER FUNCTION public.doctor_all_secrets() OWNER TO {}", BI),
            "REVOKE EXECUTE ON FUNCTION public.doctor_all_secrets() FROM PUBLIC",
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_all_secrets() TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "public.doctor_all_secrets()",
        ["SELECT 'reached' FROM public.doctor_all_secrets() AS s (secret) WHERE secret = 'b-secret'"],
        # handed to the owner role, bound by FORCE: the bound tenant's rows only
        works=("SELECT 'works' FROM public.doctor_all_secrets() AS s (secret) WHERE secret = 'a-secret'",),
        says="policy doctor_bi_reads_all gives it USING (true)",
    ),
    "a materialized view of a role with a policy USING (true), over an invoker function": Reach(
        lambda d: [
            *_bi(d),
            "CREATE FUNCTION public.doctor_all_secrets() RETURNS SETOF text LANGUAGE sql STABLE"
            " AS 'SELECT secret FROM public.doctor_secrets'",
            "CREATE MATERIALIZED VIEW public.doctor_stored"
            " AS SELECT s.secret FROM public.doctor_all_secrets() AS s (secret) WITH NO DATA",
            ddl("ALTER MATERIALIZED VIEW public.doctor_stored OWNER TO {}", BI),
            "REFRESH MATERIALIZED VIEW public.doctor_stored",  # as its owner, whoever runs it
            ddl("GRANT SELECT ON public.doctor_stored TO {}", d.roles.app),
        ],
        "materialized_view_calls_function",
        "public.doctor_stored",
        ["SELECT 'reached' FROM public.doctor_stored WHERE secret = 'b-secret'"],
        says="reads public.doctor_secrets (policy doctor_bi_reads_all gives it USING (true)) past the bound tenant",
    ),
    # 5. The owner role's own definers over the library's tables its owner-only policies open to it.
    "a definer of the owner role's over rls_tenancy.tenants, granted to the app role": Reach(
        lambda d: [
            "CREATE FUNCTION public.doctor_directory() RETURNS SETOF bigint LANGUAGE sql STABLE SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'SELECT id FROM rls_tenancy.tenants'",
            ddl("ALTER FUNCTION public.doctor_directory() OWNER TO {}", d.roles.owner),
            "REVOKE EXECUTE ON FUNCTION public.doctor_directory() FROM PUBLIC",
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_directory() TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "public.doctor_directory()",
        ["SELECT 'reached' FROM public.doctor_directory() AS t (id) WHERE id = :b"],
        works=("SELECT 'works' FROM public.doctor_directory() AS t (id) WHERE id = :a",),
        says="policy owner_lookup gives it USING (true)",
    ),
    "a definer of the owner role's over rls_tenancy.audit_log, granted to the app role": Reach(
        lambda d: [
            *B_EVENT,
            "CREATE FUNCTION public.doctor_activity() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp"
            " BEGIN ATOMIC SELECT message FROM rls_tenancy.audit_log ORDER BY id DESC LIMIT 20; END",
            ddl("ALTER FUNCTION public.doctor_activity() OWNER TO {}", d.roles.owner),
            "REVOKE EXECUTE ON FUNCTION public.doctor_activity() FROM PUBLIC",
            ddl("GRANT EXECUTE ON FUNCTION public.doctor_activity() TO {}", d.roles.app),
        ],
        "definer_escapes_rls",
        "public.doctor_activity()",
        ["SELECT 'reached' FROM public.doctor_activity() AS a (message) WHERE message = 'b-secret'"],
        works=(LOGS_EVENT,),
    ),
    # 6. pg_shadow: every role's password verifier, the bypass role's included.
    "SELECT on pg_shadow to the app role": Reach(
        lambda d: [ddl("GRANT SELECT ON pg_catalog.pg_shadow TO {}", d.roles.app)],
        "app_role_reads_catalog",
        "pg_shadow",
        ["SELECT 'reached' FROM pg_catalog.pg_shadow WHERE passwd LIKE 'SCRAM-SHA-256$%' AND NOT usesuper"],
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("reach", [pytest.param(reach, id=name) for name, reach in REACHES.items()])
def test_what_the_fifth_probe_reached_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, reach: Reach
) -> None:
    expected = ("error", reach.check, reach.object)
    values = {"a": world.a, "b": world.b}
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in reach.setup(db):
            run(conn, statement)
        assert REACHED in _as_app(conn, db, world.a, reach.peek, as_role=reach.as_role, values=values), (
            "the plant reaches nothing: the test proves nothing"
        )
        assert expected in _keys(conn), f"{expected} not in {_keys(conn)}"
        message, fix = _finding(conn, expected)
        assert reach.says in message
        run(conn, fix)
        assert expected not in _keys(conn), f"the fix {fix!r} left it"
        assert REACHED not in _as_app(conn, db, world.a, reach.peek, as_role=reach.as_role, values=values)
        assert _own_rows(conn, db, world) == ["a-secret"]  # the app still works
        for work in reach.works:
            done = _as_app(conn, db, world.a, [work], values=values)
            assert "'works'" in done, f"after the fix {fix!r}: {work!r} gave {done}"


@pytest.mark.usefixtures("stays_clean")
def test_a_definer_trigger_of_a_role_reading_past_the_tenant_is_closed_by_its_owner_not_by_a_revoke(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """PostgreSQL checks no EXECUTE when a trigger fires: REVOKE ... FROM PUBLIC leaves it reading every tenant."""
    notes = "CREATE TABLE public.doctor_notes (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)"
    snoop = (
        "CREATE FUNCTION public.doctor_snoop() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
        " SET search_path = pg_catalog, pg_temp AS $$ BEGIN"
        " NEW.body := (SELECT string_agg(secret, ',') FROM public.doctor_secrets); RETURN NEW; END $$"
    )
    trigger = (
        "CREATE TRIGGER doctor_snoop BEFORE INSERT ON public.doctor_notes"
        " FOR EACH ROW EXECUTE FUNCTION public.doctor_snoop()"
    )
    peek = ["WITH n AS (INSERT INTO public.doctor_notes (body) VALUES ('x') RETURNING body) SELECT body FROM n"]
    name = "public.doctor_snoop()"
    escapes, open_to_all = ("error", "definer_escapes_rls", name), ("error", "definer_executable_by_public", name)
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [
            *_bi(db),
            notes,
            snoop,
            ddl("ALTER FUNCTION public.doctor_snoop() OWNER TO {}", BI),
            trigger,
            ddl("GRANT SELECT, INSERT ON public.doctor_notes TO {}", db.roles.app),
        ]:
            run(conn, statement)
        assert "b-secret" in _as_app(conn, db, world.a, peek)
        assert {escapes, open_to_all} <= _keys(conn)
        run(conn, _finding(conn, open_to_all)[1])
        assert open_to_all not in _keys(conn)
        assert "b-secret" in _as_app(conn, db, world.a, peek)  # still open: the trigger fires it all the same
        assert escapes in _keys(conn)
        fix = _finding(conn, escapes)[1]
        assert "OWNER TO" in fix, fix
        run(conn, fix)
        assert escapes not in _keys(conn), f"the fix {fix!r} left it"
        assert _as_app(conn, db, world.a, peek) == "[('a-secret',)]"  # the owner role is bound by FORCE
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
def test_update_on_a_tenant_tables_sequence_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """setval() by tenant A moves the sequence back: B's next insert fails on a duplicate key. The fix revokes
    UPDATE and gives USAGE back (nextval(), which UPDATE allowed): the app still inserts."""
    tickets = [
        "CREATE TABLE public.doctor_tickets (tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id),"
        " id bigserial PRIMARY KEY, item text)",
        "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_tickets')",
        "INSERT INTO public.doctor_tickets (tenant_id, item) VALUES (:a, 'a-1'), (:b, 'b-1')",
    ]
    settable = [
        ddl("REVOKE ALL ON SEQUENCE public.doctor_tickets_id_seq FROM {}", db.roles.app),
        ddl("GRANT UPDATE ON SEQUENCE public.doctor_tickets_id_seq TO {}", db.roles.app),
    ]
    move_back = ["SELECT 'moved' FROM (SELECT pg_catalog.setval('public.doctor_tickets_id_seq', 1)) AS s"]
    insert = ["INSERT INTO public.doctor_tickets (item) VALUES ('new') RETURNING 'works'"]
    # (a sequence keeps what setval() did when a savepoint rolls back: the superuser puts it back)
    restore = "SELECT pg_catalog.setval('public.doctor_tickets_id_seq', (SELECT max(id) FROM public.doctor_tickets))"
    expected = ("error", "tenant_sequence_settable", "public.doctor_tickets_id_seq")
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in [*tickets, *settable]:
            conn.execute(text(statement), {"a": world.a, "b": world.b})
        assert _as_app(conn, db, world.a, move_back) == "[('moved',)]"
        assert "duplicate key" in _as_app(conn, db, world.b, insert)  # tenant B can no longer insert
        run(conn, restore)
        assert expected in _keys(conn)
        fix = _finding(conn, expected)[1]
        run(conn, fix)
        assert expected not in _keys(conn), f"the fix {fix!r} left it"
        assert "permission denied" in _as_app(conn, db, world.a, move_back)
        assert _as_app(conn, db, world.b, insert) == "[('works',)]"
        assert _as_app(conn, db, world.a, insert) == "[('works',)]"
        assert _own_rows(conn, db, world) == ["a-secret"]


@pytest.mark.usefixtures("stays_clean")
def test_pg_file_write_granted_to_the_app_role_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """adminpack's pg_file_write() writes into the data directory (postgresql.auto.conf: a tenant bound for every
    session at the next reload); shown with a scratch file of its own, removed afterwards."""
    scratch = f"doctor_probe_{secrets.token_hex(4)}.txt"
    write = [
        sql.SQL("SELECT 'reached' FROM (SELECT pg_catalog.pg_file_write({}, 'x', true)) AS w")
        .format(sql.Literal(scratch))
        .as_string(None)
    ]
    expected = ("error", "app_role_server_function", "pg_file_write(text,text,boolean)")
    with planted_in(superuser_engine, []) as conn:
        data_directory = Path(str(conn.execute(text("SHOW data_directory")).scalar_one()))
        try:
            _secrets(conn, world)
            run(conn, "CREATE EXTENSION adminpack")
            run(
                conn, ddl("GRANT EXECUTE ON FUNCTION pg_catalog.pg_file_write(text, text, boolean) TO {}", db.roles.app)
            )
            assert REACHED in _as_app(conn, db, world.a, write)
            fix = _finding(conn, expected)[1]
            run(conn, fix)
            assert expected not in _keys(conn), f"the fix {fix!r} left it"
            assert "permission denied" in _as_app(conn, db, world.a, write)
            assert _own_rows(conn, db, world) == ["a-secret"]
        finally:
            with contextlib.suppress(OSError):
                (data_directory / scratch).unlink()


@pytest.fixture()
def trusted_socket(superuser_engine: Engine, db: TenancyDatabase) -> Iterator[dict[str, str]]:
    """pg_hba.conf trusting the superuser on this database's unix socket (Debian's first line is ``local all
    postgres peer``), put back after the test: what dblink_connect_u() needs to log in without a password."""
    with superuser_engine.connect() as conn:
        hba = Path(str(conn.execute(text("SHOW hba_file")).scalar_one()))
        sockets = str(conn.execute(text("SHOW unix_socket_directories")).scalar_one())
        port = str(conn.execute(text("SHOW port")).scalar_one())
    if not sockets or not hba.is_file():
        pytest.skip("the server is not local, or listens on no unix socket")
    target = {
        "host": sockets.split(",")[0].strip(),
        "port": port,
        "dbname": db.name,
        "user": db.superuser_url.username or "postgres",
    }
    original = hba.read_text()
    line = f"local {db.name} {target['user']} trust\n"
    try:
        hba.write_text(line + original)
        _reload_until(superuser_engine, target, trusted=True)
        yield target
    finally:
        hba.write_text(original)
        _reload_until(superuser_engine, target, trusted=False)


def _reload_until(engine: Engine, target: dict[str, str], *, trusted: bool) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_reload_conf()"))
    for _ in range(100):
        try:
            conninfo = psycopg.conninfo.make_conninfo(**target, passfile="/dev/null", connect_timeout="2")
            with psycopg.connect(conninfo):
                if trusted:
                    return
        except psycopg.OperationalError:
            if not trusted:
                return
        time.sleep(0.05)
    raise AssertionError(f"pg_hba.conf never {'trusted' if trusted else 'stopped trusting'} the socket")


@pytest.mark.usefixtures("stays_clean")
def test_dblink_connect_u_granted_to_the_app_role_is_an_error_until_its_fix_is_applied(
    superuser_engine: Engine, db: TenancyDatabase, world: World, trusted_socket: dict[str, str]
) -> None:
    """dblink_connect_u() logs in without a password wherever pg_hba.conf lets the server's user: as a superuser."""
    connect = (
        sql.SQL("SELECT public.dblink_connect_u('doctor_su', {})")
        .format(sql.Literal(psycopg.conninfo.make_conninfo(**trusted_socket)))
        .as_string(None)
    )
    peek = [
        connect,
        "SELECT 'reached' FROM public.dblink('doctor_su', 'SELECT id FROM rls_tenancy.tenants') AS t (id bigint)"
        " WHERE t.id = :b",
    ]
    expected = ("error", "app_role_server_function", "public.dblink_connect_u(text,text)")
    values = {"a": world.a, "b": world.b}
    with planted_in(superuser_engine, []) as conn:
        try:
            _secrets(conn, world)
            run(conn, "CREATE EXTENSION IF NOT EXISTS dblink")
            run(conn, ddl("GRANT EXECUTE ON FUNCTION public.dblink_connect_u(text, text) TO {}", db.roles.app))
            assert REACHED in _as_app(conn, db, world.a, peek, values=values)
            run(conn, "SELECT public.dblink_disconnect('doctor_su')")
            fix = _finding(conn, expected)[1]
            run(conn, fix)
            assert expected not in _keys(conn), f"the fix {fix!r} left it"
            assert REACHED not in _as_app(conn, db, world.a, peek, values=values)
            assert _own_rows(conn, db, world) == ["a-secret"]
        finally:
            run(conn, "SELECT public.dblink_disconnect(c) FROM unnest(public.dblink_get_connections()) AS c")


# The false alarms.


@pytest.mark.usefixtures("stays_clean")
def test_a_tenant_shaped_table_the_app_role_cannot_reach_is_a_warning_whose_fix_grants_nothing(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """CREATE TABLE archive.... AS SELECT * FROM a tenant table, nothing granted: no error, and its fix turns row
    level security on without handing the table to the app role."""
    copy = [
        "CREATE SCHEMA doctor_archive",
        "CREATE TABLE doctor_archive.secrets AS SELECT * FROM public.doctor_secrets",
    ]
    reads = ["SELECT 'reached' FROM doctor_archive.secrets WHERE secret = 'b-secret'"]
    app_may = text(
        "SELECT has_schema_privilege(CAST(:r AS name), 'doctor_archive', 'USAGE'),"
        " has_table_privilege(CAST(:r AS name), 'doctor_archive.secrets', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')"
    )
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in copy:
            run(conn, statement)
        assert "permission denied" in _as_app(conn, db, world.a, reads)
        found = [row for row in finding_rows(conn) if row[2] == "doctor_archive.secrets"]
        assert not [row for row in found if row[0] == "error"], found
        (fix,) = [row[4] for row in found if key_of(row) == ("warning", "rls_disabled", "doctor_archive.secrets")]
        run(conn, fix)
        assert "rls_disabled" not in {row[1] for row in finding_rows(conn) if row[2] == "doctor_archive.secrets"}
        assert conn.execute(app_may, {"r": db.roles.app}).one() == (False, False)
        assert "permission denied" in _as_app(conn, db, world.a, reads)
        # granted later, it shows the bound tenant's rows only
        run(conn, ddl("GRANT USAGE ON SCHEMA doctor_archive TO {}", db.roles.app))
        run(conn, ddl("GRANT SELECT ON doctor_archive.secrets TO {}", db.roles.app))
        assert REACHED not in _as_app(conn, db, world.a, reads)
        assert _as_app(conn, db, world.a, ["SELECT secret FROM doctor_archive.secrets"]) == "[('a-secret',)]"


def _file_table(name: str, columns: str, program: str) -> list[str]:
    """A file_fdw table reading what ``program`` prints, as file_fdw reads a file."""
    return [
        "CREATE EXTENSION IF NOT EXISTS file_fdw",
        "CREATE SERVER doctor_files FOREIGN DATA WRAPPER file_fdw",
        sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER doctor_files OPTIONS (program {}, format 'csv')")
        .format(sql.Identifier("public", name), sql.SQL(columns), sql.Literal(program))
        .as_string(None),
    ]


@pytest.mark.usefixtures("stays_clean")
def test_a_file_fdw_table_of_reference_data_is_no_error_and_no_connection_to_this_database(
    superuser_engine: Engine, db: TenancyDatabase
) -> None:
    planted = [
        *_file_table("doctor_rates", "code text, rate numeric", "printf 'EUR,1.0\\nUSD,1.08\\n'"),
        ddl("GRANT SELECT ON public.doctor_rates TO {}", db.roles.app),
        ddl("GRANT USAGE ON FOREIGN SERVER doctor_files TO {}", db.roles.app),
        "CREATE USER MAPPING FOR PUBLIC SERVER doctor_files",
    ]
    with planted_in(superuser_engine, planted) as conn:
        found = [row for row in finding_rows(conn) if row[2] in ("public.doctor_rates", "doctor_files")]
        assert [key_of(row) for row in found] == [("warning", "foreign_table_readable", "public.doctor_rates")]
        assert "this very database" not in found[0][3]
        assert "file_fdw" in found[0][3]


@pytest.mark.usefixtures("stays_clean")
def test_a_file_fdw_table_over_an_export_of_tenant_rows_is_reported_and_closed_by_its_fix(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """The file is a copy of tenant rows the catalogs cannot read: a warning, which says what the table reads."""
    export = sql.SQL("printf '%s,b-secret\\n' {}").format(sql.Literal(str(world.b))).as_string(None)
    planted = [
        *_file_table("doctor_export", "tenant_id bigint, secret text", export),
        ddl("GRANT SELECT ON public.doctor_export TO {}", db.roles.app),
    ]
    peek = ["SELECT 'reached' FROM public.doctor_export WHERE tenant_id = :b AND secret = 'b-secret'"]
    expected = ("warning", "foreign_table_readable", "public.doctor_export")
    with planted_in(superuser_engine, []) as conn:
        _secrets(conn, world)
        for statement in planted:
            run(conn, statement)
        assert REACHED in _as_app(conn, db, world.a, peek, values={"b": world.b})
        message, fix = _finding(conn, expected)
        assert "program" in message and "file_fdw" in message, message
        run(conn, fix)
        assert expected not in _keys(conn)
        assert REACHED not in _as_app(conn, db, world.a, peek, values={"b": world.b})
        assert _own_rows(conn, db, world) == ["a-secret"]


# Notifications: delivered at commit, to any session that LISTENs. In a database of their own.


@pytest.fixture(scope="module")
def notified(rls_postgres_url: URL) -> Iterator[TenancyDatabase]:
    """A demo database with doctor_secrets committed: tenants A and B, a secret each."""
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        try:
            with engine.begin() as conn:
                a, b = (100_000_000_000 + secrets.randbelow(800_000_000_000) for _ in range(2))
                conn.execute(
                    text("INSERT INTO rls_tenancy.tenants (id, slug, name) VALUES (:a, :sa, 'A'), (:b, :sb, 'B')"),
                    {"a": a, "b": b, "sa": f"a-{a}", "sb": f"b-{b}"},
                )
                _secrets(conn, World(a=a, b=b, projects={}, tasks={}, project_ids={}))
        finally:
            engine.dispose()
        yield database


def _tenants(engine: Engine) -> World:
    with engine.connect() as conn:
        owners = {row[0]: row[1] for row in conn.execute(text("SELECT secret, tenant_id FROM public.doctor_secrets"))}
    return World(a=owners["a-secret"], b=owners["b-secret"], projects={}, tasks={}, project_ids={})


def _heard(engine: Engine, database: TenancyDatabase, world: World, channel: str, secret: str) -> list[str]:
    """What a session of the app role LISTENing on ``channel`` receives while tenant B, through the app role, adds
    ``secret``."""
    listener = database.app_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(listener, autocommit=True) as session:
        session.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        with engine.begin() as conn:
            bind_then_become(conn, world.b, database.roles.app)
            conn.execute(text("INSERT INTO public.doctor_secrets (secret) VALUES (:s)"), {"s": secret})
        return [n.payload for n in session.notifies(timeout=2, stop_after=1)]


def _own_committed(engine: Engine, database: TenancyDatabase, world: World) -> list[str]:
    with engine.connect() as conn, conn.begin():
        bind_then_become(conn, world.a, database.roles.app)
        return sorted(conn.execute(text("SELECT secret FROM public.doctor_secrets")).scalars())


NOTIFYING = {
    "tcn's triggered_change_notification() on a tenant table": (
        [
            "CREATE EXTENSION IF NOT EXISTS tcn",
            "CREATE TRIGGER doctor_tcn AFTER INSERT OR UPDATE OR DELETE ON public.doctor_secrets"
            " FOR EACH ROW EXECUTE FUNCTION public.triggered_change_notification()",
        ],
        "tcn",
        "public.doctor_secrets trigger doctor_tcn",
    ),
    "a trigger function of the owner role's sending the new row with pg_notify()": (
        [
            "CREATE FUNCTION public.doctor_feed() RETURNS trigger LANGUAGE plpgsql"
            " SET search_path = pg_catalog, pg_temp"
            " AS $$ BEGIN PERFORM pg_notify('doctor_feed', row_to_json(NEW)::text); RETURN NEW; END $$",
            "ALTER FUNCTION public.doctor_feed() OWNER TO {owner}",
            "CREATE TRIGGER doctor_feed AFTER INSERT OR UPDATE ON public.doctor_secrets"
            " FOR EACH ROW EXECUTE FUNCTION public.doctor_feed()",
        ],
        "doctor_feed",
        "public.doctor_secrets trigger doctor_feed",
    ),
}


@pytest.mark.parametrize("plant", [pytest.param(plant, id=name) for name, plant in NOTIFYING.items()])
def test_a_trigger_notifying_tenant_rows_is_an_error_until_its_fix_is_applied(
    notified: TenancyDatabase, plant: tuple[list[str], str, str]
) -> None:
    statements, channel, trigger = plant
    expected = ("error", "trigger_notifies_rows", trigger)
    engine = create_engine(notified.superuser_url)
    try:
        world = _tenants(engine)
        with engine.begin() as conn:
            for statement in statements:
                run(conn, statement.replace("{owner}", ddl("{}", notified.roles.owner)))
        secret = f"b-{secrets.token_hex(4)}"
        assert any(secret in payload for payload in _heard(engine, notified, world, channel, secret))
        with engine.begin() as conn:
            assert expected in _keys(conn)
            run(conn, _finding(conn, expected)[1])
        with engine.connect() as conn:
            assert expected not in _keys(conn)
        assert _heard(engine, notified, world, channel, f"b-{secrets.token_hex(4)}") == []
        assert _own_committed(engine, notified, world) == ["a-secret"]
    finally:
        engine.dispose()
