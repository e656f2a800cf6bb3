"""Migrations: standalone, as a branch of an app's Alembic setup, offline, and autogenerate."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Column, Engine, ForeignKey, Integer, MetaData, Table, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy import RoleNames
from rls_tenancy.orm.models import TenancyBase
from rls_tenancy.schema._resources import install_scripts, sql_script
from rls_tenancy.schema.alembic_ops import (
    DisableTenantIsolationOp,
    EnableTenantIsolationOp,
    ShareTableOp,
    UnshareTableOp,
)
from rls_tenancy.schema.migrate import downgrade, upgrade, versions_path
from rls_tenancy.testing import empty_database, tenancy_database
from saas_demo.models import Base
from tests.conftest import DEMO_ALEMBIC_INI

ROOT = Path(__file__).parents[2]


@pytest.fixture()
def empty_db(rls_postgres_url: URL) -> Iterator[URL]:
    """A database with nothing installed, dropped afterwards."""
    with empty_database(rls_postgres_url, prefix="rls_mig") as url:
        yield url


def _facts(url: URL) -> dict[str, object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "schema": conn.execute(text("SELECT to_regnamespace('rls_tenancy') IS NOT NULL")).scalar(),
                "isolated": set(
                    conn.execute(
                        text(
                            "SELECT polrelid::regclass::text FROM pg_policy WHERE polname = 'tenant_isolation' "
                            "AND polrelid::regclass::text NOT LIKE 'rls_tenancy.%'"
                        )
                    ).scalars()
                ),
                "versions": set(
                    conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'alembic_version%'"
                        )
                    ).scalars()
                ),
            }
    finally:
        engine.dispose()


def _env(url: URL, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False), **extra}


def test_standalone_alembic_cli_installs_and_removes(empty_db: URL) -> None:
    roles = {
        "RLS_TENANCY_OWNER_ROLE": "cli_owner",
        "RLS_TENANCY_APP_ROLE": "cli_app",
        "RLS_TENANCY_BYPASS_ROLE": "cli_admin",
    }
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    subprocess.run([*alembic, "upgrade", "head"], env=_env(empty_db, **roles), check=True, capture_output=True)
    assert _facts(empty_db) == {
        "schema": True,
        "isolated": set(),
        "versions": {"alembic_version_rls_tenancy"},
    }
    engine = create_engine(empty_db)
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT purpose, role_name FROM rls_tenancy.roles")).all()) == {
            "owner": "cli_owner",
            "app": "cli_app",
            "bypass": "cli_admin",
        }
    engine.dispose()
    subprocess.run([*alembic, "downgrade", "base"], env=_env(empty_db), check=True, capture_output=True)
    assert _facts(empty_db)["schema"] is False


def test_console_script_migrates_and_reports_errors(empty_db: URL) -> None:
    cli = [sys.executable, "-m", "rls_tenancy.cli"]
    done = subprocess.run([*cli, "migrate"], env=_env(empty_db), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _facts(empty_db)["schema"] is True
    bad = subprocess.run(
        [*cli, "migrate"],
        env=_env(empty_db, RLS_TENANCY_APP_ROLE="Robert'); --"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "not a lower-case identifier" in bad.stderr
    unreachable = empty_db.set(port=1, host="127.0.0.1")
    refused = subprocess.run([*cli, "migrate"], env=_env(unreachable), capture_output=True, text=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr


def test_default_role_names(rls_postgres_url: URL) -> None:
    with tenancy_database(rls_postgres_url, roles=RoleNames()) as database:
        assert (database.roles.owner, database.roles.app, database.roles.bypass) == (
            "rls_owner",
            "rls_app",
            "rls_admin",
        )
        engine = create_engine(database.app_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "rls_app"
        engine.dispose()


def test_app_branch_upgrades_and_downgrades(empty_db: URL) -> None:
    config = Config(DEMO_ALEMBIC_INI)
    roles = RoleNames(owner="branch_owner", app="branch_app", bypass="branch_admin")
    upgrade(empty_db, roles=roles, config=config)
    assert _facts(empty_db) == {
        "schema": True,
        "isolated": {"projects", "tasks"},
        "versions": {"alembic_version"},
    }
    downgrade(empty_db, roles=roles, config=config, revision="saas_demo@base")
    assert _facts(empty_db)["isolated"] == set()
    assert _facts(empty_db)["schema"] is True
    downgrade(empty_db, roles=roles, config=config, revision="base")
    assert _facts(empty_db)["schema"] is False


def test_uninstall_refuses_while_tables_are_isolated(empty_db: URL) -> None:
    config = Config(DEMO_ALEMBIC_INI)
    upgrade(
        empty_db,
        roles=RoleNames(owner="branch_owner", app="branch_app", bypass="branch_admin"),
        config=config,
    )
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn, pytest.raises(Exception, match="tables still isolated: projects, tasks"):
            conn.exec_driver_sql(
                (ROOT / "sql" / "uninstall.sql").read_text(), execution_options={"no_parameters": True}
            )
    finally:
        engine.dispose()


def test_offline_sql_is_the_sql_files_verbatim() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(DEMO_ALEMBIC_INI), "upgrade", "heads", "--sql"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    for script in sorted((ROOT / "sql").glob("00*.sql")):
        assert script.read_text().strip() in out
    assert "SELECT rls_tenancy.enable_tenant_isolation(CAST(quote_ident('projects') AS REGCLASS))" in out


@pytest.mark.parametrize(
    ("forward", "backward"),
    [(EnableTenantIsolationOp, DisableTenantIsolationOp), (ShareTableOp, UnshareTableOp)],
)
def test_ops_are_each_others_reverse(forward: type[ShareTableOp], backward: type[UnshareTableOp]) -> None:
    there = forward("projects", schema="app").reverse()
    back = there.reverse()
    assert (type(there), there.table_name, there.schema) == (backward, "projects", "app")
    assert (type(back), back.table_name, back.schema) == (forward, "projects", "app")


def test_autogenerate_adds_isolation_for_new_tenant_tables(db: object, superuser_engine: Engine) -> None:
    metadata = MetaData()
    for table in [*TenancyBase.metadata.tables.values(), *Base.metadata.tables.values()]:
        table.to_metadata(metadata)
    Table(
        "invoices",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", BigInteger, ForeignKey("rls_tenancy.tenants.id"), nullable=False),
    )
    Table("countries", metadata, Column("id", Integer, primary_key=True))
    with superuser_engine.connect() as conn:
        script = produce_migrations(MigrationContext.configure(conn), metadata)
    assert script.upgrade_ops is not None and script.downgrade_ops is not None
    upgrade_code = render_python_code(script.upgrade_ops)
    downgrade_code = render_python_code(script.downgrade_ops)
    assert upgrade_code.index("op.create_table('invoices'") < upgrade_code.index(
        "op.enable_tenant_isolation('invoices')"
    )
    assert "enable_tenant_isolation('countries')" not in upgrade_code
    assert downgrade_code.index("op.disable_tenant_isolation('invoices')") < downgrade_code.index(
        "op.drop_table('invoices')"
    )
    # Tables already isolated in the database are left alone.
    assert "projects" not in upgrade_code
    assert "tasks" not in upgrade_code


def test_autogenerate_finds_nothing_to_change_in_the_migrated_demo(db: object, superuser_engine: Engine) -> None:
    """The demo's models and its migrations agree: identity columns, keys, constraints, defaults."""
    demo = set(Base.metadata.tables)

    def only_demo(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return type_ != "table" or name in demo

    with superuser_engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": only_demo, "compare_server_default": True, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []


DEMO_KEYS = text(
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid IN ('public.projects'::regclass, 'public.tasks'::regclass) AND contype IN ('p', 'u', 'f') "
    "AND conname NOT LIKE '%tenant_id_fkey' ORDER BY conname"
)
DEMO_EXEMPTIONS = text(
    "SELECT object_name, check_name, reason FROM rls_tenancy.doctor_exemptions "
    "WHERE object_name LIKE 'public.%' ORDER BY object_name, check_name"
)
NEW_PROJECT = text("INSERT INTO projects (tenant_id, name) VALUES (:t, 'new') RETURNING id")


def test_saas_0004_keys_by_tenant_continues_the_ids_and_its_downgrade_restores_serial_keys(empty_db: URL) -> None:
    config = Config(DEMO_ALEMBIC_INI)
    roles = RoleNames(owner="keys_owner", app="keys_app", bypass="keys_admin")
    upgrade(empty_db, roles=roles, config=config, revision="saas_0003")
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn:
            tenant = conn.execute(text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES ('k', 'K') RETURNING id"))
            t = tenant.scalar_one()
            conn.execute(
                text("INSERT INTO projects (tenant_id, name) SELECT :t, 'p' || g FROM generate_series(1, 3) g"),
                {"t": t},
            )
            conn.execute(text("DELETE FROM projects WHERE name = 'p3'"))  # id 3 was given: never again
            conn.execute(
                text("INSERT INTO tasks (tenant_id, project_id, title) SELECT tenant_id, id, name FROM projects")
            )
            serial_keys, old_exemptions = conn.execute(DEMO_KEYS).all(), conn.execute(DEMO_EXEMPTIONS).all()
        upgrade(empty_db, roles=roles, config=config)
        with engine.begin() as conn:
            assert conn.execute(DEMO_KEYS).all() == [
                ("projects_pkey", "PRIMARY KEY (tenant_id, id)"),
                ("tasks_pkey", "PRIMARY KEY (tenant_id, id)"),
                ("tasks_project_fkey", "FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id)"),
            ]
            assert conn.execute(DEMO_EXEMPTIONS).all() == []
            assert conn.execute(NEW_PROJECT, {"t": t}).scalar_one() == 4
            task = text("INSERT INTO tasks (tenant_id, project_id, title) VALUES (:t, 4, 'new') RETURNING id")
            assert conn.execute(task, {"t": t}).scalar_one() == 3
        downgrade(empty_db, roles=roles, config=config, revision="saas_0003")
        with engine.begin() as conn:
            assert conn.execute(DEMO_KEYS).all() == serial_keys
            assert serial_keys[0] == ("projects_pkey", "PRIMARY KEY (id)")
            assert conn.execute(DEMO_EXEMPTIONS).all() == old_exemptions != []
            assert conn.execute(NEW_PROJECT, {"t": t}).scalar_one() == 5
            usage = text("SELECT has_sequence_privilege('keys_app', 'public.projects_id_seq', 'USAGE')")
            assert conn.execute(usage).scalar_one() is True
            insert = text("SELECT has_table_privilege('keys_app', 'public.projects', 'INSERT')")
            assert conn.execute(insert).scalar_one() is True
    finally:
        engine.dispose()


def test_versions_path_is_the_shipped_directory() -> None:
    assert versions_path().resolve() == (ROOT / "migrations" / "versions").resolve()


def test_an_unmodified_alembic_template_env_works(empty_db: URL, tmp_path: Path) -> None:
    """An app whose env.py is Alembic's own template, plus one version_locations line."""
    config = Config(tmp_path / "alembic.ini")
    command.init(config, str(tmp_path / "migrations"))
    config = Config(tmp_path / "alembic.ini")
    config.set_main_option(
        "version_locations", f"{tmp_path / 'migrations' / 'versions'} rls_tenancy:migrations/versions"
    )
    config.set_main_option("path_separator", "space")
    (tmp_path / "migrations" / "versions" / "app_0001.py").write_text(APP_REVISION)
    upgrade(empty_db, roles=RoleNames(owner="tpl_owner", app="tpl_app", bypass="tpl_admin"), config=config)
    assert _facts(empty_db)["isolated"] == {"invoices"}
    # The template's fileConfig() disables the loggers made before it: the bypass's warnings stay on.
    assert not logging.getLogger("rls_tenancy.bypass").disabled


APP_REVISION = """
import sqlalchemy as sa
from alembic import op

import rls_tenancy.schema.alembic_ops  # noqa: F401

revision = "app_0001"
down_revision = None
branch_labels = ("app",)
depends_on = "rls_tenancy_0001"


def upgrade():
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.BigInteger, sa.ForeignKey("rls_tenancy.tenants.id"), nullable=False),
    )
    op.enable_tenant_isolation("invoices")
"""


APP_ENV = """
from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rls_tenancy import TenantBoundMixin
from rls_tenancy.schema.alembic_branch import app_branch


class Base(DeclarativeBase):
    pass


class Note(TenantBoundMixin, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)


metadata = Base.metadata
engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      process_revision_directives=app_branch("app"))
    with context.begin_transaction():
        context.run_migrations()
"""


def test_new_revisions_go_on_the_apps_branch_not_the_librarys(empty_db: URL, tmp_path: Path) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(APP_ENV)
    (tmp_path / "script.py.mako").write_text((ROOT / "migrations" / "script.py.mako").read_text())
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("version_locations", f"{tmp_path / 'versions'} rls_tenancy:migrations/versions")
    config.set_main_option("path_separator", "space")
    roles = RoleNames(owner="br_owner", app="br_app", bypass="br_admin")
    upgrade(empty_db, roles=roles, config=config)  # the library alone: its head is the only head
    library_files = sorted(versions_path().iterdir())

    command.revision(config, "create notes", autogenerate=True)
    upgrade(empty_db, roles=roles, config=config)
    command.revision(config, "second", autogenerate=True)

    assert sorted(versions_path().iterdir()) == library_files
    scripts = ScriptDirectory.from_config(config)
    second = scripts.get_revision("app@head")
    first = scripts.get_revision(str(second.down_revision))
    assert (first.down_revision, first.branch_labels, first.dependencies) == (None, {"app"}, "rls_tenancy_0001")
    assert Path(first.path).parent == Path(second.path).parent == tmp_path / "versions"
    assert "op.enable_tenant_isolation('notes')" in Path(first.path).read_text()


# What the schema is, read from the catalogs: every policy, function definition and privilege of the
# library's schema and of the tables it isolated, and every setting the specification keeps in tables.
_SCHEMA = text(
    """
    SELECT 'policy ' || polrelid::regclass || ' ' || polname || ' ' || polcmd::text || ' '
           || coalesce(pg_get_expr(polqual, polrelid), '') || ' ' || coalesce(pg_get_expr(polwithcheck, polrelid), '')
      FROM pg_policy
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '')
      FROM pg_proc p WHERE p.pronamespace = 'rls_tenancy'::regnamespace AND p.prokind IN ('f', 'p')
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || c.relrowsecurity::text
           || c.relforcerowsecurity::text || ' ' || coalesce(c.relacl::text, '') || ' ' || pg_get_userbyid(c.relowner)
      FROM pg_class c WHERE c.relnamespace IN ('rls_tenancy'::regnamespace, 'public'::regnamespace)
       AND c.relkind IN ('r', 'v', 'S')
    UNION ALL
    SELECT 'trigger ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid)
      FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'public function ' || p.oid::regprocedure || ' ' || coalesce(p.proacl::text, '')
      FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
       AND p.proname IN ('pg_stat_get_activity', 'pg_stat_get_backend_activity', 'pg_cancel_backend',
                         'pg_terminate_backend', 'lo_creat', 'lo_create', 'lo_from_bytea')
    ORDER BY 1
    """
)


def _schema(url: URL) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(_SCHEMA).scalars())
    finally:
        engine.dispose()


def test_the_library_is_one_revision_that_runs_the_whole_specification() -> None:
    """One revision, whose upgrade is the specification; any later one re-runs it, then a delta of its own."""
    revisions = list(
        ScriptDirectory(str(versions_path().parent), version_locations=[str(versions_path())]).walk_revisions()
    )
    assert [revision.revision for revision in revisions] == ["rls_tenancy_0001"]
    out = subprocess.run(
        [sys.executable, "-m", "rls_tenancy.cli", "migrate", "--sql"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(URL.create("postgresql+psycopg", host="localhost", database="offline")),
    ).stdout
    positions = [out.index(sql_script(name).strip()) for name in install_scripts()]
    assert positions == sorted(positions)  # every script of sql/, each verbatim, in its order


def test_running_the_specification_again_changes_nothing(empty_db: URL) -> None:
    """What a later revision does first: the schema it leaves is the schema a fresh install has."""
    roles = RoleNames(owner="again_owner", app="again_app", bypass="again_admin")
    upgrade(empty_db, roles=roles)
    engine = create_engine(empty_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id bigint NOT NULL)"))
            conn.execute(text("SELECT rls_tenancy.enable_tenant_isolation('notes')"))
        fresh = _schema(empty_db)
        with engine.begin() as conn:
            for key, value in roles.settings().items():
                conn.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})
            for name in install_scripts():
                conn.exec_driver_sql(sql_script(name), execution_options={"no_parameters": True})
    finally:
        engine.dispose()
    assert _schema(empty_db) == fresh
    assert any(line.startswith("policy notes tenant_isolation") for line in fresh)
