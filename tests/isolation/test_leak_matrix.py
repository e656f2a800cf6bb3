"""The leak hunt: every access path, as the application role, aimed at another tenant.

Each vector runs bound to tenant A with tenant B's rows (projects and their
tasks, parent and child) planted as canaries, and says what it saw. The
checks: no canary is ever seen (reads, RETURNING, COPY output), nothing of
B's is changed or moved, and where a write is refused the error is the
same whether B's row exists or no row does (no existence oracle), except
where noted. Sessions here have no ORM tenant filter (``raw_factory``): the
database is the only wall, so every vector that rests on it is marked
``rls_policy`` and must fail when the policies are broken on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, literal, select, text, union_all, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased, joinedload, selectinload, sessionmaker, subqueryload

from rls_tenancy import UnsafeBypass, as_tenant
from rls_tenancy.testing import TenancyDatabase
from saas_demo.models import Project, Task
from tests.conftest import World, ddl
from tests.soak import FIGURES

pytestmark = [pytest.mark.soak]

Seen = Callable[[Session, World], set[str]]


def _names(rows: Any) -> set[str]:
    return {str(value) for value in rows}


READS: dict[str, Seen] = {
    "ORM select": lambda s, w: _names(s.scalars(select(Project.name))),
    "Session.get of B's id": lambda s, w: {p.name for i in w.project_ids[w.b] if (p := s.get(Project, i))},
    "legacy Query": lambda s, w: {p.name for p in s.query(Project).all()},
    "lazy load": lambda s, w: {t.title for p in s.scalars(select(Project)) for t in p.tasks},
    "joined load": lambda s, w: {
        t.title for p in s.scalars(select(Project).options(joinedload(Project.tasks))).unique() for t in p.tasks
    },
    "selectin load": lambda s, w: {
        t.title for p in s.scalars(select(Project).options(selectinload(Project.tasks))) for t in p.tasks
    },
    "subquery load": lambda s, w: {
        t.title for p in s.scalars(select(Project).options(subqueryload(Project.tasks))) for t in p.tasks
    },
    "aliased entity": lambda s, w: _names(s.scalars(select(aliased(Project).name))),
    "CTE": lambda s, w: _names(s.scalars(select(select(Project.name).cte("c").c.name))),
    "UNION": lambda s, w: _names(s.scalars(union_all(select(Project.name), select(Task.title)))),
    "window function": lambda s, w: _names(
        row.name for row in s.execute(select(Project.name, func.count().over().label("n")))
    ),
    "Core statement": lambda s, w: _names(s.connection().execute(select(Project.__table__.c.name)).scalars()),
    "text() SQL": lambda s, w: _names(
        s.execute(text("SELECT name FROM projects UNION ALL SELECT title FROM tasks")).scalars()
    ),
    "by B's ids in text()": lambda s, w: _names(
        s.execute(text("SELECT name FROM projects WHERE id = ANY(:ids)"), {"ids": w.project_ids[w.b]}).scalars()
    ),
    "server-side cursor (yield_per)": lambda s, w: _names(
        s.execute(select(Project.name).execution_options(yield_per=1)).scalars()
    ),
    "inside a savepoint": lambda s, w: _in_savepoint(s),
    "join parent to child": lambda s, w: _names(
        row.title for row in s.execute(select(Task.title).join(Project, Task.project_id == Project.id))
    ),
    "subquery in WHERE": lambda s, w: _names(
        s.scalars(select(Task.title).where(Task.project_id.in_(select(Project.id))))
    ),
    "plain SQL function": lambda s, w: _names(s.execute(text("SELECT leak_hunt_names()")).scalars()),
    "view (security_invoker)": lambda s, w: _names(s.execute(text("SELECT name FROM leak_hunt_invoker")).scalars()),
    "view owned by the owner role": lambda s, w: _names(s.execute(text("SELECT name FROM leak_hunt_owned")).scalars()),
    "RETURNING of an UPDATE of every row": lambda s, w: _names(
        s.execute(update(Project).values(name=Project.name).returning(Project.name)).scalars()
    ),
    "INSERT ... SELECT ... RETURNING": lambda s, w: {
        name.removesuffix(" (copy)")
        for name in s.execute(
            insert(Project)
            .from_select(["name"], select(Project.name + literal(" (copy)")).where(Project.tenant_id == w.b))
            .returning(Project.name)
        ).scalars()
    },
    "COPY TO": lambda s, w: _copy_out(s),
}


def _in_savepoint(session: Session) -> set[str]:
    with session.begin_nested():
        return _names(session.scalars(select(Project.name)))


def _driver(session: Session) -> Any:
    """The psycopg connection of the session's transaction, once bound.

    The binding is sent before the first statement SQLAlchemy runs; the driver
    used directly before that runs unbound (and sees no tenant's rows).
    """
    session.execute(text("SELECT 1"))
    return session.connection().connection.driver_connection


def _copy_out(session: Session) -> set[str]:
    raw = _driver(session)
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy("COPY (SELECT name FROM projects) TO STDOUT") as copy:
        written = b"".join(bytes(chunk) for chunk in copy)
    return set(written.decode().splitlines())


@pytest.fixture(scope="module")
def leak_objects(db: TenancyDatabase, superuser_engine: Engine) -> Iterator[None]:
    """A plain (invoker) SQL function and two views, made as a migration would make them."""
    with superuser_engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION public.leak_hunt_names() RETURNS SETOF text LANGUAGE sql STABLE"
                " AS 'SELECT name::text FROM public.projects'"
            )
        )
        conn.execute(
            text(
                "CREATE VIEW public.leak_hunt_invoker WITH (security_invoker = true)"
                " AS SELECT name FROM public.projects"
            )
        )
        conn.execute(text("CREATE VIEW public.leak_hunt_owned AS SELECT name FROM public.projects"))
        conn.execute(text(ddl("ALTER FUNCTION public.leak_hunt_names() OWNER TO {}", db.roles.owner)))
        for name in ("leak_hunt_invoker", "leak_hunt_owned"):
            conn.execute(text(ddl("ALTER VIEW public.{} OWNER TO {}", name, db.roles.owner)))
            conn.execute(text(ddl("GRANT SELECT ON public.{} TO {}", name, db.roles.app)))
    yield
    with superuser_engine.begin() as conn:
        conn.execute(text("DROP VIEW public.leak_hunt_invoker, public.leak_hunt_owned"))
        conn.execute(text("DROP FUNCTION public.leak_hunt_names()"))


def _canaries(world: World) -> set[str]:
    return world.projects[world.b] | world.tasks[world.b]


@pytest.mark.rls_policy
@pytest.mark.parametrize("path", READS.values(), ids=READS.keys())
def test_no_read_path_shows_another_tenants_rows(
    raw_factory: sessionmaker[Session], world: World, leak_objects: None, path: Seen
) -> None:
    for reader, target in ((world.a, world.b), (world.b, world.a)):
        canaries = world.projects[target] | world.tasks[target]
        with as_tenant(reader), raw_factory() as session:
            seen = path(session, world)
            session.rollback()
        FIGURES.add("vectors tried")
        leaked = seen & canaries
        if leaked:
            FIGURES.add("leaks found")
        assert not leaked, f"tenant {reader} saw {sorted(leaked)}"


# --- writes aimed at the other tenant ---------------------------------------------------------

Write = Callable[[Session, World], Any]


def _b_project(world: World) -> int:
    return world.project_ids[world.b][0]


#: What PostgreSQL says to an INSERT naming an id of a GENERATED ALWAYS identity column.
CHOSEN_ID = 'cannot insert a non-DEFAULT value into column "id"'

WRITES: dict[str, tuple[Write, str | None]] = {
    # (the write, what PostgreSQL says; None: no error, nothing happens)
    "UPDATE B's row": (
        lambda s, w: s.execute(update(Project).where(Project.id == _b_project(w)).values(name="pwned")),
        None,
    ),
    "DELETE B's rows": (lambda s, w: s.execute(text("DELETE FROM tasks WHERE tenant_id = :b"), {"b": w.b}), None),
    "UPDATE moving A's row to B": (
        lambda s, w: s.execute(update(Project).where(Project.tenant_id == w.a).values(tenant_id=w.b)),
        "new row violates row-level security policy",
    ),
    "INSERT a row for B": (
        lambda s, w: s.execute(insert(Project).values(tenant_id=w.b, name="planted")),
        "new row violates row-level security policy",
    ),
    # An id cannot be chosen at all: the demo's ids are GENERATED ALWAYS, and its keys lead with tenant_id, so
    # no unique index spans tenants; the refusal is the same whether B holds the id or nobody does
    # (test_an_id_cannot_be_chosen_so_no_key_is_an_existence_oracle).
    "INSERT ... ON CONFLICT (tenant_id, id) DO UPDATE at B's key": (
        lambda s, w: s.execute(
            text(
                "INSERT INTO projects (id, tenant_id, name) VALUES (:id, :a, 'pwned')"
                " ON CONFLICT (tenant_id, id) DO UPDATE SET name = 'pwned'"
            ),
            {"id": _b_project(w), "a": w.a},
        ),
        CHOSEN_ID,
    ),
    "INSERT with B's primary key": (
        lambda s, w: s.execute(
            text("INSERT INTO projects (id, tenant_id, name) VALUES (:id, :a, 'pwned')"),
            {"id": _b_project(w), "a": w.a},
        ),
        CHOSEN_ID,
    ),
    "INSERT OVERRIDING SYSTEM VALUE with B's primary key": (
        lambda s, w: s.execute(
            text("INSERT INTO projects (id, tenant_id, name) OVERRIDING SYSTEM VALUE VALUES (:id, :a, 'pwned')"),
            {"id": _b_project(w), "a": w.a},
        ),
        "permission denied for table projects",  # INSERT is granted on every column but id
    ),
    "a child pointing at B's parent": (
        lambda s, w: s.execute(insert(Task).values(tenant_id=w.a, project_id=_b_project(w), title="dangling")),
        "violates foreign key constraint",
    ),
    "COPY FROM rows claiming B": (lambda s, w: _copy_in(s, w), "COPY FROM not supported with row-level security"),
}


def _copy_in(session: Session, world: World) -> None:
    raw = _driver(session)
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy("COPY projects (tenant_id, name) FROM STDIN") as copy:
        copy.write_row((world.b, "planted by copy"))


def _snapshot(bypass: UnsafeBypass, tenant: int) -> set[tuple[Any, ...]]:
    with bypass.connect(reason="test: leak hunt snapshot") as conn:
        projects = conn.execute(
            text("SELECT 'p', id, name, tenant_id FROM projects WHERE tenant_id = :t"), {"t": tenant}
        )
        tasks = conn.execute(text("SELECT 't', id, title, tenant_id FROM tasks WHERE tenant_id = :t"), {"t": tenant})
        return {tuple(row) for row in [*projects, *tasks]}


#: Walls other than the policies: identity columns and their grants, a composite foreign key, COPY's refusal.
NOT_THE_POLICY = {
    "INSERT ... ON CONFLICT (tenant_id, id) DO UPDATE at B's key",
    "INSERT with B's primary key",
    "INSERT OVERRIDING SYSTEM VALUE with B's primary key",
    "a child pointing at B's parent",
    "COPY FROM rows claiming B",
}


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(value, id=key, marks=() if key in NOT_THE_POLICY else pytest.mark.rls_policy)
        for key, value in WRITES.items()
    ],
)
def test_no_write_path_changes_another_tenants_rows(
    raw_factory: sessionmaker[Session], bypass: UnsafeBypass, world: World, write: tuple[Write, str | None]
) -> None:
    action, refusal = write
    before = _snapshot(bypass, world.b)
    with as_tenant(world.a), raw_factory() as session:
        if refusal is None:
            action(session, world)
            session.commit()
        else:
            with pytest.raises(Exception, match=re.escape(refusal)):
                action(session, world)
                session.flush()
            session.rollback()
    FIGURES.add("vectors tried")
    after = _snapshot(bypass, world.b)
    if after != before:
        FIGURES.add("leaks found")
    assert after == before


def _fk_error(session: Session, world: World, project_id: int) -> str:
    with pytest.raises(DBAPIError) as caught:
        session.execute(insert(Task).values(tenant_id=world.a, project_id=project_id, title="dangling"))
    session.rollback()
    return str(caught.value.orig).replace(str(project_id), "<id>")


def test_a_foreign_key_into_another_tenant_is_no_existence_oracle(
    raw_factory: sessionmaker[Session], world: World
) -> None:
    """B's project and a project that exists nowhere give the same refusal, word for word."""
    with as_tenant(world.a), raw_factory() as session:
        foreign = _fk_error(session, world, _b_project(world))
        missing = _fk_error(session, world, 2_000_000_000)
    FIGURES.add("vectors tried", 2)
    assert foreign == missing


CHOOSING_AN_ID = {
    "INSERT": "INSERT INTO projects (id, tenant_id, name) VALUES (:id, :a, 'probe')",
    "ON CONFLICT DO UPDATE": "INSERT INTO projects (id, tenant_id, name) VALUES (:id, :a, 'probe')"
    " ON CONFLICT (tenant_id, id) DO UPDATE SET name = 'probe'",
    "OVERRIDING SYSTEM VALUE": "INSERT INTO projects (id, tenant_id, name) OVERRIDING SYSTEM VALUE"
    " VALUES (:id, :a, 'probe')",
}


def _refusal(session: Session, world: World, statement: str, project_id: int) -> tuple[Any, ...]:
    with pytest.raises(DBAPIError) as caught:
        session.execute(text(statement), {"id": project_id, "a": world.a})
    session.rollback()
    orig = caught.value.orig
    diag = getattr(orig, "diag", None)
    assert diag is not None
    return getattr(orig, "sqlstate", None), diag.message_primary, diag.message_detail, diag.constraint_name


@pytest.mark.parametrize("statement", CHOOSING_AN_ID.values(), ids=CHOOSING_AN_ID.keys())
def test_an_id_cannot_be_chosen_so_no_key_is_an_existence_oracle(
    raw_factory: sessionmaker[Session], world: World, statement: str
) -> None:
    """B's id and an id nobody holds get the same refusal, field for field: none names a key or an id."""
    with as_tenant(world.a), raw_factory() as session:
        foreign = _refusal(session, world, statement, _b_project(world))
        free = _refusal(session, world, statement, 2_000_000_000)
    FIGURES.add("vectors tried", 2)
    assert foreign == free
    assert foreign[0] in {"428C9", "42501"}  # generated always; no INSERT privilege on id


def test_an_update_of_another_tenants_row_is_no_existence_oracle(
    raw_factory: sessionmaker[Session], world: World
) -> None:
    """B's row and a missing row both update nothing, silently."""
    counts = []
    with as_tenant(world.a), raw_factory() as session:
        for target in (_b_project(world), 2_000_000_000):
            counts.append(session.execute(update(Project).where(Project.id == target).values(name="x")).rowcount)  # type: ignore[attr-defined]
        session.rollback()
    FIGURES.add("vectors tried", 2)
    assert counts == [0, 0]


def test_every_read_path_still_sees_the_tenants_own_rows(
    raw_factory: sessionmaker[Session], world: World, leak_objects: None
) -> None:
    """The reads above are not vacuous: each returns some of the reader's own rows."""
    own = world.projects[world.a] | world.tasks[world.a]
    empty = []
    for name, path in READS.items():
        if name in ("Session.get of B's id", "by B's ids in text()", "INSERT ... SELECT ... RETURNING"):
            continue  # aimed only at B: empty is the right answer
        with as_tenant(world.a), raw_factory() as session:
            if not path(session, world) & own:
                empty.append(name)
            session.rollback()
    assert not empty
