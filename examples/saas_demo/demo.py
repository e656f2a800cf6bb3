"""``make demo``: two tenants, one database, and what each of them can reach.

Uses ``$DATABASE_URL`` (a superuser URL) when set, else starts a throwaway
PostgreSQL. Creates a database of its own there, migrates it (the app's
migrations with rls_tenancy's as a branch), seeds two tenants, prints what
each one sees and what a cross-tenant write gets, and drops the database.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from rls_tenancy import (
    NoTenantError,
    Tenant,
    TenantMismatchError,
    TenantQuery,
    UnsafeBypass,
    as_tenant,
    bind_engine,
    scope_sessions,
)
from rls_tenancy.testing import postgres_server, tenancy_database
from rls_tenancy.urls import database_url
from saas_demo.models import Project, Task

ALEMBIC_INI = Path(__file__).parent / "alembic.ini"

SEED = {
    "acme": ("Acme Corp", {"Website relaunch": ["Pick fonts", "Write copy"], "Billing": ["Send invoices"]}),
    "globex": ("Globex", {"Secret lab": ["Order lasers"], "Payroll": ["Pay Hank"]}),
}


@contextmanager
def _server() -> Iterator[tuple[URL, str]]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield database_url(given), "the server at $DATABASE_URL"
    else:
        with postgres_server() as url:
            yield url, "a throwaway PostgreSQL started for this run"


def _seed(bypass: UnsafeBypass) -> dict[str, int]:
    ids = {}
    with bypass.session(reason="demo: create tenants and seed data") as session:
        for slug, (name, projects) in SEED.items():
            tenant = Tenant(slug=slug, name=name)
            session.add(tenant)
            session.flush()
            ids[slug] = tenant.id
            for project_name, titles in projects.items():
                project = Project(tenant_id=tenant.id, name=project_name)
                session.add(project)
                session.flush()
                session.add_all(Task(tenant_id=tenant.id, project_id=project.id, title=t) for t in titles)
    return ids


def _show(factory: sessionmaker[Session], app_engine: Engine, bypass: UnsafeBypass, ids: dict[str, int]) -> None:
    for slug, tenant_id in ids.items():
        with as_tenant(tenant_id), factory() as session:
            print(f"\nTenant {slug} (id {tenant_id}) sees:")
            for project in session.scalars(select(Project).order_by(Project.id)):
                print(f"  {project.name}: {', '.join(t.title for t in project.tasks)}")
            raw = session.execute(text("SELECT count(*) FROM projects")).scalar()
            print(f"  raw SQL, SELECT count(*) FROM projects: {raw}")

    acme, globex = ids["acme"], ids["globex"]
    with as_tenant(globex), factory() as session:
        victim = session.scalars(select(Project.id)).first()

    print("\nAcme tries to reach Globex's data:")
    with as_tenant(acme), factory() as session:
        changed = session.execute(text("UPDATE projects SET name = 'pwned' WHERE id = :id"), {"id": victim}).rowcount  # type: ignore[attr-defined]
        print(f"  UPDATE Globex's project #{victim} by id: {changed} rows changed")
        session.rollback()
        try:
            session.execute(text("INSERT INTO projects (tenant_id, name) VALUES (:t, 'planted')"), {"t": globex})
        except DBAPIError as error:
            print(f"  INSERT a project for Globex: refused by PostgreSQL: {str(error.orig).splitlines()[0]}")
        session.rollback()
        try:
            session.add(Project(tenant_id=globex, name="planted"))
            session.flush()
        except TenantMismatchError as error:
            print(f"  the same through the ORM: refused before flush: {error}")
        session.rollback()
        lifted = session.query(Project).tenant_unconstrained_unsafe().count()  # type: ignore[attr-defined]
        print(f"  lifting the ORM filter (tenant_unconstrained_unsafe): still {lifted} projects, its own")

    print("\nWith no tenant in context:")
    with factory() as session:
        try:
            session.scalars(select(Project)).all()
        except NoTenantError as error:
            print(f"  ORM query: NoTenantError: {error}")
    with app_engine.connect() as conn:
        print(
            f"  raw SQL, SELECT count(*) FROM projects: {conn.execute(text('SELECT count(*) FROM projects')).scalar()}"
        )

    with bypass.session(reason="demo: count projects across tenants") as session:
        total = session.scalar(select(func.count()).select_from(Project))
        print(
            f"\nThe bypass role (BYPASSRLS, entered with a logged reason) sees {total} projects "
            f"across {len(ids)} tenants."
        )


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="  [log] %(name)s: %(message)s")
    with (
        _server() as (server_url, where),
        tenancy_database(server_url, alembic_config=Config(ALEMBIC_INI)) as db,
    ):
        print(f"rls_tenancy demo on {where}")
        print(
            f"Migrated database {db.name}: roles {db.roles.owner} (owner), {db.roles.app} (application), "
            f"{db.roles.bypass} (bypass); projects and tasks isolated by row level security."
        )
        app_engine = bind_engine(create_engine(db.app_url))
        bypass_engine = create_engine(db.bypass_url)
        try:
            factory = sessionmaker(app_engine, query_cls=TenantQuery)
            scope_sessions(factory)
            bypass = UnsafeBypass(bypass_engine)
            _show(factory, app_engine, bypass, _seed(bypass))
        finally:
            app_engine.dispose()
            bypass_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
