"""Data migrations under FORCE ROW LEVEL SECURITY: per tenant, through the bypass role, or warned about.

On a scratch database of its own (the demo schema, three tenants: two with
projects, one without), each test in a superuser transaction that is rolled
back, as a migration connection would be.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL

from rls_tenancy.schema.migrate import upgrade
from rls_tenancy.schema.migration_data import (
    UntenantedWriteWarning,
    as_bypass_role,
    each_tenant,
    watch_untenanted_writes,
)
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from tests.conftest import DEMO_ALEMBIC_INI, SIGN_WHERE_REQUIRED, ddl

ARCHIVE_ALL = text("UPDATE projects SET status = 'archived' WHERE status = 'active'")
WHO = text(
    "SELECT current_user, current_setting('role'), current_setting('app.current_tenant', true), "
    "rls_tenancy.current_tenant_id()"
)


@dataclass(frozen=True)
class Scratch:
    database: TenancyDatabase
    engine: Engine
    projects: dict[int, int]  # tenant id -> number of its projects

    @property
    def owner(self) -> str:
        return self.database.roles.owner


@pytest.fixture(scope="module")
def scratch(rls_postgres_url: URL) -> Iterator[Scratch]:
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        projects: dict[int, int] = {}
        with engine.begin() as conn:
            for label, count in (("a", 2), ("b", 3), ("c", 0)):
                tenant = conn.execute(
                    text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:slug, :name) RETURNING id"),
                    {"slug": f"{label}-{secrets.token_hex(3)}", "name": f"Tenant {label}"},
                ).scalar_one()
                for n in range(count):
                    conn.execute(
                        text("INSERT INTO projects (tenant_id, name) VALUES (:t, :name)"),
                        {"t": tenant, "name": f"{label}-project-{n}"},
                    )
                projects[tenant] = count
        try:
            yield Scratch(database, engine, projects)
        finally:
            engine.dispose()


@pytest.fixture()
def migration(scratch: Scratch) -> Iterator[Connection]:
    """A migration's connection: a superuser login, in a transaction rolled back afterwards."""
    with scratch.engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


def _as_owner(conn: Connection, scratch: Scratch) -> None:
    conn.exec_driver_sql(ddl("SET LOCAL ROLE {}", scratch.owner))


def _archived_by_tenant(conn: Connection) -> dict[int, int]:
    """As the superuser (RLS does not apply): archived projects per tenant."""
    rows = conn.execute(text("SELECT tenant_id, count(*) FROM projects WHERE status = 'archived' GROUP BY 1"))
    return {int(tenant): int(count) for tenant, count in rows}


@pytest.fixture()
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in the test (the suite turns warnings into errors otherwise)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _untenanted(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UntenantedWriteWarning)]


def test_owner_without_a_tenant_changes_nothing_and_is_warned(migration: Connection, scratch: Scratch) -> None:
    _as_owner(migration, scratch)
    watch_untenanted_writes(migration)
    with pytest.warns(UntenantedWriteWarning, match="changed no row while no tenant was bound") as caught:
        assert migration.execute(ARCHIVE_ALL).rowcount == 0
    assert len(caught) == 1
    assert "each_tenant()" in str(caught[0].message) and "UPDATE projects" in str(caught[0].message)
    migration.execute(text("RESET ROLE"))
    assert _archived_by_tenant(migration) == {}  # silently nothing, which is the trap
    assert migration.execute(text("SELECT count(*) FROM projects")).scalar() == sum(scratch.projects.values())


@pytest.mark.parametrize(
    "statement",
    [
        "-- a backfill\nupdate projects set status = 'archived'",
        "DELETE FROM projects",
        "INSERT INTO projects (tenant_id, name) SELECT tenant_id, name || ' copy' FROM projects",
        "MERGE INTO projects p USING (SELECT id FROM projects) s ON p.id = s.id "
        "WHEN MATCHED THEN UPDATE SET status = 'archived'",
    ],
    ids=["update after a comment", "delete", "insert ... select", "merge"],
)
def test_every_kind_of_write_is_watched(migration: Connection, scratch: Scratch, statement: str) -> None:
    _as_owner(migration, scratch)
    watch_untenanted_writes(migration)
    with pytest.warns(UntenantedWriteWarning):
        assert migration.exec_driver_sql(statement).rowcount == 0


def test_reads_are_not_watched(
    migration: Connection, scratch: Scratch, recorded: list[warnings.WarningMessage]
) -> None:
    _as_owner(migration, scratch)
    watch_untenanted_writes(migration)
    watch_untenanted_writes(migration)  # idempotent: one listener
    assert migration.execute(text("SELECT * FROM projects")).all() == []
    assert _untenanted(recorded) == []
    with pytest.warns(UntenantedWriteWarning) as caught:
        migration.execute(ARCHIVE_ALL)
    assert len(caught) == 1


@pytest.mark.parametrize("login_as_owner", [True, False], ids=["as the owner", "as a superuser"])
def test_each_tenant_updates_every_tenants_rows_and_restores_role_and_tenant(
    migration: Connection, scratch: Scratch, login_as_owner: bool, recorded: list[warnings.WarningMessage]
) -> None:
    if login_as_owner:
        _as_owner(migration, scratch)
    first = next(iter(scratch.projects))
    migration.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(first)})
    before = migration.execute(WHO).one()
    watch_untenanted_writes(migration)
    changed: dict[int, int] = {}
    for tenant in each_tenant(migration):
        user, _, bound, current = migration.execute(WHO).one()
        assert (user, bound, current) == (scratch.owner, str(tenant), tenant)
        changed[tenant] = migration.execute(ARCHIVE_ALL).rowcount
    # Exactly each tenant's own rows, once; the tenant without projects changed none, and was not warned about.
    assert changed == scratch.projects
    assert _untenanted(recorded) == []
    assert migration.execute(WHO).one() == before
    migration.execute(text("RESET ROLE"))
    assert _archived_by_tenant(migration) == {t: n for t, n in scratch.projects.items() if n}


def test_each_tenant_restores_an_unbound_tenant(migration: Connection, scratch: Scratch) -> None:
    _as_owner(migration, scratch)
    assert len(list(each_tenant(migration))) == len(scratch.projects)
    user, role, bound, current = migration.execute(WHO).one()
    assert (user, role, current) == (scratch.owner, scratch.owner, None)
    assert bound in (None, "")  # unset, or set to empty: either way no tenant
    assert migration.execute(text("SELECT count(*) FROM projects")).scalar() == 0


def test_as_bypass_role_sees_every_tenant(migration: Connection, scratch: Scratch) -> None:
    _as_owner(migration, scratch)
    assert migration.execute(text("SELECT count(*) FROM projects")).scalar() == 0
    watch_untenanted_writes(migration)
    with as_bypass_role(migration):
        assert migration.execute(text("SELECT current_user")).scalar() == scratch.database.roles.bypass
        by_tenant: dict[int, int] = dict(
            migration.execute(text("SELECT tenant_id, count(*) FROM projects GROUP BY 1")).all()
        )
        assert by_tenant == {t: n for t, n in scratch.projects.items() if n}
        assert migration.execute(ARCHIVE_ALL).rowcount == sum(scratch.projects.values())
    assert migration.execute(text("SELECT current_user")).scalar() == scratch.owner
    assert migration.execute(text("SELECT count(*) FROM projects")).scalar() == 0


def test_no_warning_for_writes_that_changed_rows_or_escape_rls(
    migration: Connection, scratch: Scratch, recorded: list[warnings.WarningMessage]
) -> None:
    watch_untenanted_writes(migration)
    # A superuser (RLS does not apply): a write that matches nothing is just that.
    assert migration.execute(text("UPDATE projects SET name = name WHERE id < 0")).rowcount == 0
    # Nor does it apply to the bypass role.
    with as_bypass_role(migration):
        assert migration.execute(text("UPDATE projects SET name = name WHERE id < 0")).rowcount == 0
    # The owner, no tenant bound, writing a row that counts.
    _as_owner(migration, scratch)
    migration.execute(text("CREATE TEMPORARY TABLE migration_notes (note text) ON COMMIT DROP"))
    assert migration.execute(text("INSERT INTO migration_notes VALUES ('written')")).rowcount == 1
    # The owner with a tenant bound: rows changed, or none (that tenant has nothing to change).
    for tenant, count in scratch.projects.items():
        migration.execute(text("SELECT set_config('app.current_tenant', :t, true)"), {"t": str(tenant)})
        migration.execute(SIGN_WHERE_REQUIRED)  # as the owner, which holds the key
        assert migration.execute(ARCHIVE_ALL).rowcount == count
    assert _untenanted(recorded) == []
    # The same statement as the owner without a tenant is the one that warns.
    migration.execute(text("SELECT set_config('app.current_tenant', '', true)"))
    migration.execute(text("UPDATE projects SET name = name WHERE id < 0"))
    assert len(_untenanted(recorded)) == 1


# --- through Alembic: the demo's env.py watches, the helpers find op.get_bind() --------------------------

REVISION = """
from alembic import op

from rls_tenancy.schema.migration_data import as_bypass_role, each_tenant

revision = "data_0001"
down_revision = "saas_0002"
branch_labels = None
depends_on = None


def upgrade():
    # This migration runs as the owner role, as a migrator that is not a superuser would.
    op.execute("SELECT set_config('role', rls_tenancy.role_name('owner'), true)")
    op.execute("UPDATE projects SET status = 'archived'")  # the trap: no tenant, no rows
    for _tenant_id in each_tenant():
        op.execute("UPDATE projects SET name = name || ' (migrated)'")
    with as_bypass_role():
        op.execute("UPDATE projects SET status = 'invisible' WHERE name LIKE 'b-%'")
    op.execute("RESET ROLE")
"""


def test_a_data_migration_through_alembic(rls_postgres_url: URL, tmp_path: Path) -> None:
    (tmp_path / "data_0001.py").write_text(REVISION)
    config = Config(DEMO_ALEMBIC_INI)
    config.set_main_option("version_locations", f"{config.get_main_option('version_locations')} {tmp_path}")
    with tenancy_database(rls_postgres_url, alembic_config=Config(DEMO_ALEMBIC_INI)) as database:
        engine = create_engine(database.superuser_url)
        try:
            with engine.begin() as conn:
                for label in ("a", "b"):
                    conn.execute(
                        text(
                            "WITH t AS (INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:slug, :slug) "
                            "RETURNING id) INSERT INTO projects (tenant_id, name) "
                            "SELECT id, :slug || '-' || n FROM t, generate_series(1, 2) n"
                        ),
                        {"slug": f"{label}-{secrets.token_hex(3)}"},
                    )
                before: dict[str, str] = dict(conn.execute(text("SELECT name, status FROM projects")).all())
            with pytest.warns(UntenantedWriteWarning, match="UPDATE projects SET status = 'archived'") as caught:
                upgrade(database.superuser_url, roles=database.roles, config=config)
            with engine.connect() as conn:
                after: dict[str, str] = dict(conn.execute(text("SELECT name, status FROM projects")).all())
                versions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        finally:
            engine.dispose()
    assert len(caught) == 1  # the bare UPDATE; not the loop's passes, not the bypass block
    assert "data_0001" in versions  # beside the library's own head
    assert len(before) == 4
    assert after == {
        f"{name} (migrated)": "invisible" if name.startswith("b-") else status for name, status in before.items()
    }


def test_a_write_at_the_end_of_a_with_that_changed_nothing_warns(migration: Connection, scratch: Scratch) -> None:
    _as_owner(migration, scratch)
    watch_untenanted_writes(migration)
    with pytest.warns(UntenantedWriteWarning, match="WITH active AS"):
        migration.execute(
            text(
                "WITH active AS (SELECT id FROM projects WHERE status = 'active') "
                "UPDATE projects SET status = 'archived' WHERE id IN (SELECT id FROM active)"
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        migration.execute(text("WITH recent AS (SELECT id FROM projects) SELECT count(*) FROM recent"))


def test_a_failure_inside_each_tenant_surfaces_as_itself(migration: Connection, scratch: Scratch) -> None:
    """The migration's own error comes out, not one from restoring the role in a failed transaction."""
    with pytest.raises(Exception, match="division by zero"):
        for _tenant_id in each_tenant(migration):
            migration.execute(text("SELECT 1 / 0"))
