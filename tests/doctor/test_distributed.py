"""Ready to shard by tenant: the distribution checks, each planted and found, its fix applied and the finding gone.

The checks (``rls_tenancy.distribution_findings()`` in sql/012_doctor.sql,
docs/citus.md) report what would keep a tenant table from being distributed
by ``tenant_id`` in Citus: info by default, warnings with ``findings(true)``,
``findings(connection, distributed=True)`` and ``rls-tenancy doctor
--distributed``. Citus itself is not installed here: these tests read the
catalogs of a plain PostgreSQL, as the checks do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from alembic.config import Config
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from rls_tenancy.cli import main
from rls_tenancy.doctor import findings
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.app import create_app
from tests.conftest import DEMO_ALEMBIC_INI, ddl
from tests.doctor.support import (
    DISTRIBUTION_EXEMPT,
    WARNINGS,
    Key,
    Row,
    clean,
    finding_rows,
    key_of,
    planted_in,
    run,
)

TENANT = "tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id)"


def _isolated(table: str, columns: str) -> list[str]:
    """``public.<table>`` with ``columns`` and a tenant_id, isolated as the library does it."""
    create = sql.SQL("CREATE TABLE {} ({}, {})").format(
        sql.Identifier("public", table), sql.SQL(TENANT), sql.SQL(columns)
    )
    isolate = sql.SQL("SELECT rls_tenancy.enable_tenant_isolation({})").format(sql.Literal("public." + table))
    return [create.as_string(None), isolate.as_string(None)]


# A tenant table made for distribution: its key leads with tenant_id, its id is a bigint identity.
NOTES = _isolated("doctor_dist_notes", "id bigint GENERATED ALWAYS AS IDENTITY, name text, PRIMARY KEY (tenant_id, id)")
# A shared table with a foreign key into projects: the composite key of a tenant table.
SHARED_INTO_PROJECTS = [
    "CREATE TABLE public.doctor_dist_picks (id integer PRIMARY KEY, project_tenant bigint, project_id integer, "
    "CONSTRAINT doctor_dist_picks_project_fkey FOREIGN KEY (project_tenant, project_id) "
    "REFERENCES public.projects (tenant_id, id))",
    "SELECT rls_tenancy.share_table('public.doctor_dist_picks')",
]
# A shared table of 101 MB (over the 100 MB limit) written cheaply: at fillfactor 10 each page holds one row.
LARGE_SHARED = [
    "CREATE TABLE public.doctor_dist_large (id integer PRIMARY KEY, pad text NOT NULL) WITH (fillfactor = 10)",
    "INSERT INTO public.doctor_dist_large SELECT n, repeat('x', 700) FROM generate_series(1, 12900) n",
    "SELECT rls_tenancy.share_table('public.doctor_dist_large')",
]
CODES = "CREATE TABLE public.doctor_dist_codes (code text PRIMARY KEY)"


@dataclass(frozen=True)
class Plant:
    setup: list[str]
    check: str
    object: str
    says: str  # a fragment the message must contain
    remedy: tuple[str, ...] = ()  # when the fix is not plain SQL: what a DBA would run instead


PLANTS = {
    "a primary key on id alone": Plant(
        _isolated("doctor_dist_keys", "id integer PRIMARY KEY"),
        "distribution_key_without_tenant",
        "public.doctor_dist_keys_pkey",
        "does not include tenant_id",
    ),
    "a partial unique index without tenant_id": Plant(
        [*NOTES, "CREATE UNIQUE INDEX doctor_dist_name ON public.doctor_dist_notes (name) WHERE name <> ''"],
        "distribution_key_without_tenant",
        "public.doctor_dist_name",
        "refuses a primary key, unique or exclusion constraint",
    ),
    "an exclusion constraint that does not compare tenant_id": Plant(
        [
            "CREATE EXTENSION IF NOT EXISTS btree_gist",
            *_isolated(
                "doctor_dist_bookings",
                "id integer, during int4range, PRIMARY KEY (tenant_id, id), "
                "CONSTRAINT doctor_dist_bookings_during_excl EXCLUDE USING gist (during WITH &&)",
            ),
        ],
        "distribution_key_without_tenant",
        "public.doctor_dist_bookings_during_excl",
        "does not compare tenant_id with =",
        remedy=(
            "ALTER TABLE public.doctor_dist_bookings DROP CONSTRAINT doctor_dist_bookings_during_excl, "
            "ADD CONSTRAINT doctor_dist_bookings_during_excl EXCLUDE USING gist (tenant_id WITH =, during WITH &&)",
        ),
    ),
    "a foreign key between tenant tables on the id alone": Plant(
        [
            *_isolated("doctor_dist_orders", "id integer UNIQUE, PRIMARY KEY (tenant_id, id)"),
            *_isolated(
                "doctor_dist_lines",
                "id integer, order_id integer REFERENCES public.doctor_dist_orders (id), PRIMARY KEY (tenant_id, id)",
            ),
        ],
        "distribution_foreign_key_without_tenant",
        "public.doctor_dist_lines constraint doctor_dist_lines_order_id_fkey",
        "does not pair tenant_id with tenant_id",
    ),
    "a foreign key into one of the library's tables": Plant(
        [
            *NOTES,
            "ALTER TABLE public.doctor_dist_notes ADD COLUMN author_id bigint, ADD CONSTRAINT doctor_dist_notes_author "
            "FOREIGN KEY (tenant_id, author_id) REFERENCES rls_tenancy.users (tenant_id, id)",
        ],
        "distribution_foreign_key_to_local",
        "public.doctor_dist_notes constraint doctor_dist_notes_author",
        "stays on the coordinator (a Citus local table)",
    ),
    "a foreign key into a table neither shared nor keyed by tenant": Plant(
        [
            CODES,
            *_isolated(
                "doctor_dist_coded",
                "id integer, code text REFERENCES public.doctor_dist_codes (code), PRIMARY KEY (tenant_id, id)",
            ),
        ],
        "distribution_foreign_key_to_local",
        "public.doctor_dist_coded constraint doctor_dist_coded_code_fkey",
        "is not shared",
    ),
    "a shared table with a foreign key into a tenant table": Plant(
        SHARED_INTO_PROJECTS,
        "distribution_shared_references_tenant",
        "public.doctor_dist_picks constraint doctor_dist_picks_project_fkey",
        "into tenant table public.projects",
    ),
    "a shared table over 100 MB": Plant(
        LARGE_SHARED,
        "distribution_reference_too_large",
        "public.doctor_dist_large",
        "the limit for a reference table here is 100 MB",
        remedy=("TRUNCATE public.doctor_dist_large",),
    ),
    "an integer serial a key needs unique across tenants": Plant(
        _isolated("doctor_dist_serials", "id serial UNIQUE, PRIMARY KEY (tenant_id, id)"),
        "distribution_sequence_unique_across_shards",
        "public.doctor_dist_serials_id_seq",
        "works on the coordinator alone",
    ),
    "an integer identity a key needs unique across tenants": Plant(
        _isolated("doctor_dist_identities", "id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text"),
        "distribution_sequence_unique_across_shards",
        "public.doctor_dist_identities_id_seq",
        "(integer) fills public.doctor_dist_identities.id",
    ),
    "a tenant_id that may be NULL": Plant(
        [
            *_isolated("doctor_dist_loose", "id integer"),
            "ALTER TABLE public.doctor_dist_loose ALTER COLUMN tenant_id DROP NOT NULL",
        ],
        "distribution_tenant_id_nullable",
        "public.doctor_dist_loose",
        "Citus refuses a row without one",
    ),
}


@pytest.mark.usefixtures("stays_clean")
@pytest.mark.parametrize("plant", [pytest.param(plant, id=name) for name, plant in PLANTS.items()])
def test_each_distribution_check_is_info_by_default_a_warning_when_distributed_and_its_fix_clears_it(
    superuser_engine: Engine, plant: Plant
) -> None:
    with planted_in(superuser_engine, plant.setup) as conn:
        default = {key_of(row): row for row in finding_rows(conn)}
        distributed = {key_of(row): row for row in finding_rows(conn, distributed=True)}
        assert ("info", plant.check, plant.object) in default, sorted(default)
        assert ("warning", plant.check, plant.object) not in default
        row = distributed.get(("warning", plant.check, plant.object))
        assert row is not None, sorted(distributed)
        assert "(exempt: " not in row[3] and plant.says in row[3], row[3]
        assert row[4].strip()
        for statement in plant.remedy or (row[4],):
            run(conn, statement)
        after = {(check, name) for _severity, check, name in map(key_of, finding_rows(conn, distributed=True))}
        assert (plant.check, plant.object) not in after, f"{plant.remedy or row[4]!r} left the finding"


@pytest.mark.usefixtures("stays_clean")
def test_the_sequence_finding_is_its_own_and_its_fix_leaves_the_key_finding(superuser_engine: Engine) -> None:
    """Widening the sequence keeps its values apart on every node; the key on id alone is still refused."""
    with planted_in(superuser_engine, PLANTS["an integer serial a key needs unique across tenants"].setup) as conn:
        (sequence,) = [row for row in finding_rows(conn, distributed=True) if row[1].endswith("_across_shards")]
        assert sequence[4].startswith(
            "ALTER TABLE public.doctor_dist_serials ALTER COLUMN id TYPE bigint; "
            "ALTER SEQUENCE public.doctor_dist_serials_id_seq AS bigint;"
        )
        run(conn, sequence[4])
        keys = {key_of(row) for row in finding_rows(conn, distributed=True)}
    assert ("warning", "distribution_key_without_tenant", "public.doctor_dist_serials_id_key") in keys
    assert not [key for key in keys if key[1] == "distribution_sequence_unique_across_shards"]


@pytest.mark.usefixtures("stays_clean")
def test_a_schema_made_for_distribution_adds_no_distribution_finding(
    superuser_engine: Engine, baseline: list[Row]
) -> None:
    well_made = [
        *NOTES,  # key (tenant_id, id), a bigint identity
        "SELECT rls_tenancy.share_table('public.doctor_dist_codes')",
        "ALTER TABLE public.doctor_dist_notes ADD COLUMN code text REFERENCES public.doctor_dist_codes (code), "
        "ADD COLUMN project_id integer",
        "SELECT rls_tenancy.add_tenant_foreign_key('public.doctor_dist_notes', 'project_id', 'public.projects')",
        "CREATE EXTENSION IF NOT EXISTS btree_gist",
        *_isolated(
            "doctor_dist_bookings",
            "id integer, during int4range, PRIMARY KEY (tenant_id, id), "
            "EXCLUDE USING gist (tenant_id WITH =, during WITH &&)",
        ),
        # A partitioned tenant table: its partitions' keys are its own.
        "CREATE TABLE public.doctor_dist_events (tenant_id bigint NOT NULL, id bigint, PRIMARY KEY (tenant_id, id)) "
        "PARTITION BY LIST (tenant_id)",
        "CREATE TABLE public.doctor_dist_events_1 PARTITION OF public.doctor_dist_events FOR VALUES IN (1)",
        "SELECT rls_tenancy.enable_tenant_isolation('public.doctor_dist_events')",
    ]
    with planted_in(superuser_engine, [CODES, *well_made]) as conn:
        found = {key_of(row) for row in finding_rows(conn, distributed=True) if row[1].startswith("distribution_")}
    assert found == {key_of(row) for row in baseline if row[1].startswith("distribution_")} == DISTRIBUTION_EXEMPT


def test_the_demo_database_has_no_distribution_warning(superuser_engine: Engine, db: TenancyDatabase) -> None:
    """projects and tasks (keys and foreign key on tenant_id), plans (shared, small): nothing to report.

    The library's own tables are reported, as info with the exemption's reason
    (they stay on the coordinator), also when asked for warnings.
    """
    with superuser_engine.connect() as conn:
        rows = finding_rows(conn, distributed=True)
    assert {key_of(row) for row in rows} == clean(db.name)
    distribution = [row for row in rows if row[1].startswith("distribution_")]
    assert {key_of(row) for row in distribution} == DISTRIBUTION_EXEMPT
    assert all("Citus local tables" in row[3] and row[3].endswith("(docs/citus.md))") for row in distribution)


def test_findings_distributed_through_the_bypass_role(bypass_engine: Engine, db: TenancyDatabase) -> None:
    with bypass_engine.connect() as conn:
        found = findings(conn, distributed=True)
    assert {(f.severity, f.check, f.object) for f in found} == clean(db.name)


@pytest.mark.usefixtures("stays_clean")
def test_an_exemption_keeps_a_distribution_finding_info_when_distributed(superuser_engine: Engine) -> None:
    planted = [
        *PLANTS["a primary key on id alone"].setup,
        "INSERT INTO rls_tenancy.doctor_exemptions (object_name, check_name, reason) VALUES "
        "('public.doctor_dist_keys_pkey', 'distribution_key_without_tenant', 'doctor test: stays on the coordinator')",
    ]
    with planted_in(superuser_engine, planted) as conn:
        (row,) = [
            row
            for row in finding_rows(conn, distributed=True)
            if row[2] == "public.doctor_dist_keys_pkey" and row[1] == "distribution_key_without_tenant"
        ]
    assert row[0] == "info"
    assert row[3].endswith("(exempt: doctor test: stays on the coordinator)")


# A committed finding only the distribution checks see: a tenant table referencing a table that stays local.
COMMITTED: Key = (
    "warning",
    "distribution_foreign_key_to_local",
    "public.doctor_dist_coded constraint doctor_dist_coded_code_fkey",
)


@pytest.fixture(scope="module")
def undistributable_database(rls_postgres_url: URL) -> Iterator[TenancyDatabase]:
    """A scratch demo database of its own with a committed foreign key into a table that stays on the coordinator."""
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        try:
            with engine.begin() as conn:
                for statement in PLANTS["a foreign key into a table neither shared nor keyed by tenant"].setup:
                    run(conn, statement)
                run(conn, ddl("REVOKE ALL ON public.doctor_dist_codes FROM {}", database.roles.app))
        finally:
            engine.dispose()
        yield database


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _counts(lines: list[str]) -> str:
    return lines[-1]


def test_cli_doctor_distributed_reports_warnings_and_keeps_the_exit_status(
    undistributable_database: TenancyDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --distributed the finding is info (counted, not printed); with it, a warning. Both exit 0:
    warnings never fail the doctor, with or without --distributed; only errors do."""
    url = _url(undistributable_database.bypass_url)
    assert main(["doctor", "--database-url", url, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["doctor", "--database-url", url, "--json", "--distributed"]) == 0
    distributed = json.loads(capsys.readouterr().out)
    as_info = {(f["severity"], f["check"], f["object"]) for f in default["findings"]}
    as_warning = {(f["severity"], f["check"], f["object"]) for f in distributed["findings"]}
    assert ("info", *COMMITTED[1:]) in as_info and COMMITTED not in as_info
    assert COMMITTED in as_warning
    assert as_warning - as_info == {COMMITTED}
    assert distributed["counts"]["warning"] == default["counts"]["warning"] + 1 == len(WARNINGS) + 1
    assert distributed["counts"]["info"] == default["counts"]["info"] - 1

    assert main(["doctor", "--database-url", url]) == 0
    assert "distribution_" not in capsys.readouterr().out
    assert main(["doctor", "--database-url", url, "--distributed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["WARNING", COMMITTED[1], "public.doctor_dist_coded"] for line in lines), lines
    assert "fix: SELECT rls_tenancy.share_table('public.doctor_dist_codes');" in "\n".join(lines)
    assert _counts(lines).startswith(f"0 error(s), {len(WARNINGS) + 1} warning(s)")


def test_cli_doctor_distributed_still_exits_1_on_an_error(
    unforced_database: TenancyDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--database-url", _url(unforced_database.bypass_url), "--distributed"]) == 1
    assert "rls_not_forced" in capsys.readouterr().out


def test_flask_tenancy_doctor_distributed_reports_the_same_warning(undistributable_database: TenancyDatabase) -> None:
    app = create_app(undistributable_database.app_url, undistributable_database.bypass_url)
    try:
        runner = app.test_cli_runner()
        default = runner.invoke(args=["tenancy", "doctor", "--json"])
        distributed = runner.invoke(args=["tenancy", "doctor", "--json", "--distributed"])
        assert (default.exit_code, distributed.exit_code) == (0, 0), (default.output, distributed.output)
        as_info = {(f["severity"], f["check"], f["object"]) for f in json.loads(default.output)["findings"]}
        as_warning = {(f["severity"], f["check"], f["object"]) for f in json.loads(distributed.output)["findings"]}
        assert COMMITTED not in as_info and COMMITTED in as_warning
    finally:
        state = app.extensions["rls_tenancy"]
        for engine in (state.engine, state.audit_engine, state.bypass.engine):
            engine.dispose()
