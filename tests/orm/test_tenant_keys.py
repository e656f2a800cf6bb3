"""Tenant-consistent foreign keys: a row of one tenant can only reference its own tenant's rows.

Foreign key checks ignore row level security. With the composite key
``(tenant_id, project_id) -> projects (tenant_id, id)`` a task of tenant A
naming tenant B's project matches no row, and PostgreSQL refuses it exactly
as it refuses an id that exists nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Identity,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    and_,
    create_engine,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    configure_mappers,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.expression import ClauseElement

from rls_tenancy import Tenant, TenantBoundMixin, UsageError, User, as_tenant
from rls_tenancy.orm.tenant_keys import tenant_foreign_key, tenant_key
from rls_tenancy.schema.alembic_ops import AddTenantForeignKeyOp
from rls_tenancy.testing import TenancyDatabase, tenancy_database
from saas_demo.models import Base, Project, Task
from tests.conftest import World, bind_then_become

Refusal = tuple[str | None, str | None, str | None, str | None]  # sqlstate, message, detail, constraint


def _refusal(error: DBAPIError) -> Refusal:
    orig = error.orig
    diag = getattr(orig, "diag", None)
    assert diag is not None, f"not a PostgreSQL error: {orig!r}"
    return getattr(orig, "sqlstate", None), diag.message_primary, diag.message_detail, diag.constraint_name


def _unused_project_id(superuser_engine: Engine) -> int:
    with superuser_engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(id), 0) + 1000 FROM projects")).scalar_one())


INSERT_TASK = text("INSERT INTO tasks (project_id, title) VALUES (:project_id, 'pointing elsewhere')")


def _insert_task_refused(app_engine: Engine, tenant: int, project_id: int) -> Refusal:
    with as_tenant(tenant), app_engine.connect() as conn, pytest.raises(IntegrityError) as refused:
        conn.execute(INSERT_TASK, {"project_id": project_id})
    return _refusal(refused.value)


def test_task_cannot_reference_another_tenants_project(
    app_engine: Engine, superuser_engine: Engine, world: World
) -> None:
    own, theirs = world.project_ids[world.a][0], world.project_ids[world.b][0]
    with as_tenant(world.a), app_engine.connect() as conn:  # rolled back: nothing stays
        conn.execute(INSERT_TASK, {"project_id": own})
    cross_tenant = _insert_task_refused(app_engine, world.a, theirs)
    nowhere = _insert_task_refused(app_engine, world.a, _unused_project_id(superuser_engine))
    assert cross_tenant == (
        "23503",
        'insert or update on table "tasks" violates foreign key constraint "tasks_project_fkey"',
        # PostgreSQL leaves the key values out of the detail when the referenced
        # table has row level security (ri_ReportViolation), so the two texts
        # are identical, not just alike: no existence oracle, and no echo of B's id.
        'Key is not present in table "projects".',
        "tasks_project_fkey",
    )
    assert nowhere == cross_tenant
    with superuser_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks WHERE title = 'pointing elsewhere'")).scalar() == 0


def test_a_plain_foreign_key_would_let_tenants_point_across_and_tell_ids_apart(
    superuser_engine: Engine, db: TenancyDatabase, world: World
) -> None:
    """Why the composite key: with tasks.project_id -> projects.id, the same insert succeeds (rolled back)."""
    theirs, nowhere = world.project_ids[world.b][0], _unused_project_id(superuser_engine)
    with superuser_engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(text("ALTER TABLE tasks DROP CONSTRAINT tasks_project_fkey"))
            conn.execute(text("ALTER TABLE projects ADD UNIQUE (id)"))  # what a plain key needs, and the oracle
            conn.execute(text("ALTER TABLE tasks ADD FOREIGN KEY (project_id) REFERENCES projects (id)"))
            bind_then_become(conn, world.a, db.roles.app)
            conn.execute(INSERT_TASK, {"project_id": theirs})  # tenant A's task now points into tenant B
            with pytest.raises(IntegrityError) as refused, conn.begin_nested():
                conn.execute(INSERT_TASK, {"project_id": nowhere})  # while a free id is refused: an oracle
            assert _refusal(refused.value)[0] == "23503"
        finally:
            transaction.rollback()


# --- the model helpers --------------------------------------------------------------------------------


POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _ddl(table: Table) -> str:
    return " ".join(str(CreateTable(table).compile(dialect=POSTGRESQL)).split())


def test_demo_models_declare_keys_leading_with_tenant_id_and_ids_generated_always() -> None:
    projects, tasks = _ddl(Base.metadata.tables["projects"]), _ddl(Base.metadata.tables["tasks"])
    assert "CONSTRAINT projects_pkey PRIMARY KEY (tenant_id, id)" in projects
    assert "CONSTRAINT tasks_pkey PRIMARY KEY (tenant_id, id)" in tasks
    assert "id INTEGER GENERATED ALWAYS AS IDENTITY" in projects
    assert "id INTEGER GENERATED ALWAYS AS IDENTITY" in tasks
    assert "UNIQUE" not in projects + tasks
    assert (
        "CONSTRAINT tasks_project_fkey FOREIGN KEY(tenant_id, project_id) REFERENCES projects (tenant_id, id)" in tasks
    )


def test_helpers_take_column_name_and_on_delete() -> None:
    metadata = MetaData()
    Table(
        "folders",
        metadata,
        Column("code", Text, nullable=False),
        Column("tenant_id", BigInteger, nullable=False),
        tenant_key("folders", "code"),
    )
    files = Table(
        "files",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", BigInteger, nullable=False),
        Column("folder_code", Text, nullable=False),
        tenant_foreign_key("folder_code", "folders", "code", name="files_folder_fkey", ondelete="CASCADE"),
    )
    assert "CONSTRAINT folders_tenant_id_code_key UNIQUE (tenant_id, code)" in _ddl(metadata.tables["folders"])
    assert (
        "CONSTRAINT files_folder_fkey FOREIGN KEY(tenant_id, folder_code) REFERENCES folders (tenant_id, code) "
        "ON DELETE CASCADE" in _ddl(files)
    )


def test_migrated_constraints_are_what_the_models_declare(superuser_engine: Engine) -> None:
    with superuser_engine.connect() as conn:
        definitions: dict[str, tuple[str, str]] = {
            name: (definition, index)
            for name, definition, index in conn.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid), conindid::regclass::text FROM pg_constraint "
                    "WHERE conrelid IN ('public.projects'::regclass, 'public.tasks'::regclass) "
                    "AND contype IN ('p', 'u', 'f') AND conname NOT LIKE '%tenant_id_fkey'"
                )
            )
        }
        identities = conn.execute(
            text(
                "SELECT table_name, identity_generation FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name IN ('projects', 'tasks') AND column_name = 'id'"
            )
        ).all()
    assert definitions == {
        "projects_pkey": ("PRIMARY KEY (tenant_id, id)", "projects_pkey"),
        "tasks_pkey": ("PRIMARY KEY (tenant_id, id)", "tasks_pkey"),
        # The key it points at is the primary key: no UNIQUE (tenant_id, id) beside it.
        "tasks_project_fkey": (
            "FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id)",
            "projects_pkey",
        ),
    }
    assert sorted(identities) == [("projects", "ALWAYS"), ("tasks", "ALWAYS")]


ID_CHOSEN = {
    "INSERT": "INSERT INTO projects (id, tenant_id, name) VALUES (:id, :t, 'chosen')",
    "OVERRIDING SYSTEM VALUE": "INSERT INTO projects (id, tenant_id, name) OVERRIDING SYSTEM VALUE "
    "VALUES (:id, :t, 'chosen')",
    "UPDATE": "UPDATE projects SET id = :id WHERE tenant_id = :t",
}


@pytest.mark.parametrize("statement", ID_CHOSEN.values(), ids=ID_CHOSEN.keys())
def test_neither_the_app_role_nor_the_bypass_role_can_choose_an_id(
    app_engine: Engine, bypass_engine: Engine, world: World, statement: str
) -> None:
    """Ids are unique across tenants in fact, with no index that says so: nobody but the owner picks one."""
    theirs = world.project_ids[world.b][0]
    with as_tenant(world.a), app_engine.connect() as conn, pytest.raises(DBAPIError) as by_app:
        conn.execute(text(statement), {"id": theirs, "t": world.a})
    with bypass_engine.connect() as conn, pytest.raises(DBAPIError) as by_bypass:
        conn.execute(text(statement), {"id": theirs, "t": world.a})
    for refused in (by_app.value, by_bypass.value):
        # 428C9: generated always; 42501: no INSERT privilege on id (OVERRIDING SYSTEM VALUE needs none of its own)
        assert getattr(refused.orig, "sqlstate", None) == ("42501" if "OVERRIDING" in statement else "428C9")


def test_the_bypass_role_cannot_copy_an_id_in_either(bypass_engine: Engine, world: World) -> None:
    """COPY FROM ignores GENERATED ALWAYS; the column's missing INSERT privilege still stops it."""
    with bypass_engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with raw.cursor() as cursor, cursor.copy("COPY projects (id, tenant_id, name) FROM STDIN") as copy:
                copy.write_row((world.project_ids[world.b][0], world.a, "copied"))
        conn.rollback()


class _Blog(DeclarativeBase):
    pass


class _Post(TenantBoundMixin, _Blog):
    """An application's model keyed to the library's users, as the README shows it."""

    __tablename__ = "key_posts"
    __table_args__ = (tenant_foreign_key("author_id", "rls_tenancy.users", name="key_posts_author_fkey"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[User] = relationship(
        User,
        primaryjoin=lambda: and_(_Post.author_id == User.id, _Post.tenant_id == User.tenant_id),
        foreign_keys=lambda: [_Post.tenant_id, _Post.author_id],
    )


@pytest.mark.parametrize("referent", ["rls_tenancy.users", User, User.__table__], ids=["name", "model", "table"])
def test_a_key_to_the_librarys_users_resolves_outside_the_apps_metadata(referent: object) -> None:
    metadata = MetaData()
    posts = Table(
        "posts",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", BigInteger, nullable=False),
        Column("author_id", BigInteger, nullable=False),
        tenant_foreign_key("author_id", referent, name="posts_author_fkey"),  # type: ignore[arg-type]
    )
    assert (
        "CONSTRAINT posts_author_fkey FOREIGN KEY(tenant_id, author_id) REFERENCES rls_tenancy.users (tenant_id, id)"
        in _ddl(posts)
    )
    configure_mappers()  # _Post's relationship to User joins on both columns
    assert {(pair[0].name, pair[1].name) for pair in _Post.author.property.local_remote_pairs} == {
        ("author_id", "id"),
        ("tenant_id", "tenant_id"),
    }


@pytest.mark.parametrize("referent", ["rls_tenancy.tenants", Tenant, object()], ids=["name", "model", "other"])
def test_a_tenant_key_to_what_has_no_tenant_id_is_refused(referent: object) -> None:
    with pytest.raises(UsageError, match="tenant"):
        tenant_foreign_key("owner_id", referent)  # type: ignore[arg-type]


def test_a_post_cannot_name_another_tenants_user(tables: Connection, db: TenancyDatabase, world: World) -> None:
    """Run as the app role, bound to tenant A: B's user and no user are refused alike."""
    tables.execute(CreateTable(_Post.__table__))  # type: ignore[arg-type]
    tables.execute(select(func.rls_tenancy.enable_tenant_isolation(literal("public.key_posts"))))
    authors = {
        tenant: tables.execute(
            text("INSERT INTO rls_tenancy.users (tenant_id, email) VALUES (:t, :e) RETURNING id"),
            {"t": tenant, "e": f"author-{tenant}@keys.example"},
        ).scalar_one()
        for tenant in (world.a, world.b)
    }
    nowhere = max(authors.values()) + 1000
    bind_then_become(tables, world.a, db.roles.app)
    insert = text("INSERT INTO key_posts (author_id) VALUES (:author)")
    tables.execute(insert, {"author": authors[world.a]})

    def refused(author: int) -> Refusal:
        with pytest.raises(IntegrityError) as error, tables.begin_nested():
            tables.execute(insert, {"author": author})
        return _refusal(error.value)

    cross_tenant = refused(authors[world.b])
    assert cross_tenant[0] == "23503" and cross_tenant == refused(nowhere)


# --- the SQL function -----------------------------------------------------------------------------------

PARENT = "CREATE TABLE public.key_parents (id integer PRIMARY KEY, tenant_id bigint NOT NULL, code text)"
CHILD = "CREATE TABLE public.key_children (id integer PRIMARY KEY, tenant_id bigint NOT NULL, parent_id integer)"
KEYS = text(
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid IN ('public.key_parents'::regclass, 'public.key_children'::regclass) AND contype IN ('u', 'f') "
    "ORDER BY conname"
)
UNIQUE_INDEXES = text("SELECT count(*) FROM pg_index WHERE indrelid = 'public.key_parents'::regclass AND indisunique")


@pytest.fixture()
def tables(superuser_engine: Engine) -> Iterator[Connection]:
    """A superuser transaction, rolled back afterwards; the tables are made by each test."""
    with superuser_engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


def _add(conn: Connection, *arguments: str) -> None:
    conn.execute(select(func.rls_tenancy.add_tenant_foreign_key(*(literal(value) for value in arguments))))


def _refused(conn: Connection, *arguments: str) -> Refusal:
    with pytest.raises(DBAPIError) as refused, conn.begin_nested():
        _add(conn, *arguments)
    return _refusal(refused.value)


def test_add_tenant_foreign_key_adds_the_unique_key_when_missing(tables: Connection) -> None:
    tables.execute(text(PARENT))
    tables.execute(text(CHILD))
    _add(tables, "public.key_children", "parent_id", "public.key_parents")
    assert tables.execute(KEYS).all() == [
        ("key_children_parent_id_fkey", "FOREIGN KEY (tenant_id, parent_id) REFERENCES key_parents(tenant_id, id)"),
        ("key_parents_tenant_id_id_key", "UNIQUE (tenant_id, id)"),
    ]
    # The same name the model helper gives, so a model and a migration agree.
    assert tenant_key("key_parents").name == "key_parents_tenant_id_id_key"
    # And it holds: tenant 2's row cannot point at tenant 1's parent.
    tables.execute(text("INSERT INTO public.key_parents (id, tenant_id) VALUES (1, 1)"))
    tables.execute(text("INSERT INTO public.key_children (id, tenant_id, parent_id) VALUES (1, 1, 1)"))
    with pytest.raises(IntegrityError) as refused, tables.begin_nested():
        tables.execute(text("INSERT INTO public.key_children (id, tenant_id, parent_id) VALUES (2, 2, 1)"))
    assert _refusal(refused.value)[0] == "23503"


@pytest.mark.parametrize(
    "existing",
    [
        "ALTER TABLE public.key_parents ADD CONSTRAINT key_parents_pair UNIQUE (tenant_id, id)",
        "ALTER TABLE public.key_parents ADD CONSTRAINT key_parents_pair UNIQUE (id, tenant_id)",
        "CREATE UNIQUE INDEX key_parents_pair ON public.key_parents (tenant_id, id)",
    ],
    ids=["UNIQUE (tenant_id, id)", "UNIQUE (id, tenant_id)", "a unique index on (tenant_id, id)"],
)
def test_add_tenant_foreign_key_uses_an_existing_unique_key(tables: Connection, existing: str) -> None:
    for statement in (PARENT, existing, CHILD):
        tables.execute(text(statement))
    assert tables.execute(UNIQUE_INDEXES).scalar() == 2  # the primary key and the pair
    _add(tables, "public.key_children", "parent_id", "public.key_parents")
    assert tables.execute(UNIQUE_INDEXES).scalar() == 2
    assert [name for name, _ in tables.execute(KEYS)] == ["key_children_parent_id_fkey"] + (
        ["key_parents_pair"] if existing.startswith("ALTER") else []
    )


@pytest.mark.parametrize(
    "near_miss",
    [
        "CREATE UNIQUE INDEX key_parents_pair ON public.key_parents (tenant_id, id) WHERE id > 0",
        "ALTER TABLE public.key_parents ADD CONSTRAINT key_parents_triple UNIQUE (tenant_id, id, code)",
        # Not usable as a referenced key: PostgreSQL refuses deferrable ones (55000).
        "ALTER TABLE public.key_parents ADD CONSTRAINT key_parents_pair UNIQUE (tenant_id, id) DEFERRABLE",
    ],
    ids=["partial unique index", "unique over three columns", "deferrable unique"],
)
def test_add_tenant_foreign_key_does_not_rely_on_keys_a_foreign_key_cannot_use(
    tables: Connection, near_miss: str
) -> None:
    for statement in (PARENT, near_miss, CHILD):
        tables.execute(text(statement))
    _add(tables, "public.key_children", "parent_id", "public.key_parents")
    names = [name for name, _ in tables.execute(KEYS)]
    assert "key_children_parent_id_fkey" in names and "key_parents_tenant_id_id_key" in names


@pytest.mark.parametrize(
    ("on_delete", "confdeltype"), [("NO ACTION", "a"), ("restrict", "r"), ("Cascade", "c"), (None, "a")]
)
def test_add_tenant_foreign_key_on_delete_and_name(tables: Connection, on_delete: str | None, confdeltype: str) -> None:
    tables.execute(text(PARENT))
    tables.execute(text(CHILD))
    tables.execute(
        text(
            "SELECT rls_tenancy.add_tenant_foreign_key('public.key_children', 'parent_id', 'public.key_parents', "
            "'id', 'key_children_parent_fkey', :on_delete)"
        ),
        {"on_delete": on_delete},
    )
    assert (
        tables.execute(
            text("SELECT confdeltype FROM pg_constraint WHERE conname = 'key_children_parent_fkey'")
        ).scalar()
        == confdeltype
    )


@pytest.mark.parametrize("on_delete", ["SET NULL", "set default", "CASCADE; DROP TABLE public.key_parents"])
def test_add_tenant_foreign_key_refuses_other_on_delete_actions(tables: Connection, on_delete: str) -> None:
    tables.execute(text(PARENT))
    tables.execute(text(CHILD))
    sqlstate, message, *_ = _refused(
        tables, "public.key_children", "parent_id", "public.key_parents", "id", "key_children_fkey", on_delete
    )
    assert sqlstate == "22023"
    assert message is not None and "on_delete must be NO ACTION, RESTRICT or CASCADE" in message
    assert tables.execute(KEYS).all() == []


def test_add_tenant_foreign_key_refuses_a_referent_without_tenant_id(tables: Connection) -> None:
    tables.execute(text("CREATE TABLE public.key_parents (id integer PRIMARY KEY, code text)"))
    tables.execute(text(CHILD))
    sqlstate, message, *_ = _refused(tables, "public.key_children", "parent_id", "public.key_parents")
    assert sqlstate == "42703"
    assert message == "rls_tenancy: public.key_parents needs the columns tenant_id and id"
    # Nor a referenced column that is not there.
    tables.execute(text("ALTER TABLE public.key_parents ADD COLUMN tenant_id bigint NOT NULL"))
    assert _refused(tables, "public.key_children", "parent_id", "public.key_parents", "uuid")[0] == "42703"
    assert tables.execute(KEYS).all() == []


def test_add_tenant_foreign_key_is_closed_to_the_app_role(app_engine: Engine) -> None:
    with app_engine.connect() as conn, pytest.raises(DBAPIError) as refused:
        conn.execute(text("SELECT rls_tenancy.add_tenant_foreign_key('projects', 'id', 'projects')"))
    assert _refusal(refused.value)[0] == "42501"


# --- op.add_tenant_foreign_key in an Alembic migration ----------------------------------------------------

REVISION = """
import sqlalchemy as sa
from alembic import op

import rls_tenancy.schema.alembic_ops  # noqa: F401

revision = "keys_0001"
down_revision = None
branch_labels = ("keys",)
depends_on = "rls_tenancy_0001"


def _tenant_id():
    return sa.Column("tenant_id", sa.BigInteger, sa.ForeignKey("rls_tenancy.tenants.id"), nullable=False)


def upgrade():
    op.create_table("folders", sa.Column("id", sa.Integer, primary_key=True), _tenant_id())
    op.enable_tenant_isolation("folders")
    op.execute("CREATE SCHEMA archive")
    op.create_table(
        "boxes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.Text, nullable=False),
        _tenant_id(), sa.UniqueConstraint("tenant_id", "label", name="boxes_label_key"), schema="archive",
    )
    op.enable_tenant_isolation("boxes", schema="archive")
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        _tenant_id(),
        sa.Column("folder_id", sa.Integer, nullable=False),
        sa.Column("box_label", sa.Text),
    )
    op.enable_tenant_isolation("documents")
    op.add_tenant_foreign_key("documents", "folder_id", "folders", ondelete="CASCADE")
    op.add_tenant_foreign_key(
        "documents", "box_label", "boxes", "label", name="documents_box_fkey", referent_schema="archive"
    )
"""


@pytest.fixture()
def keyed_database(rls_postgres_url: URL, tmp_path: Path) -> Iterator[TenancyDatabase]:
    """A scratch database migrated with the revision above (Alembic's own env.py template)."""
    config = Config(tmp_path / "alembic.ini")
    command.init(config, str(tmp_path / "migrations"))
    config = Config(tmp_path / "alembic.ini")
    config.set_main_option(
        "version_locations", f"{tmp_path / 'migrations' / 'versions'} rls_tenancy:migrations/versions"
    )
    config.set_main_option("path_separator", "space")
    (tmp_path / "migrations" / "versions" / "keys_0001.py").write_text(REVISION)
    with tenancy_database(rls_postgres_url, alembic_config=config) as database:
        yield database


def test_op_add_tenant_foreign_key_in_a_migration(keyed_database: TenancyDatabase) -> None:
    engine = create_engine(keyed_database.superuser_url)
    try:
        with engine.connect() as conn:
            constraints: dict[str, str] = dict(
                conn.execute(
                    text(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE contype IN ('u', 'f') AND conrelid IN "
                        "('public.folders'::regclass, 'public.documents'::regclass, 'archive.boxes'::regclass) "
                        "AND conname NOT LIKE '%tenant_id_fkey'"
                    )
                ).all()
            )
            errors = conn.execute(text("SELECT check_name FROM rls_tenancy.findings() WHERE severity = 'error'")).all()
    finally:
        engine.dispose()
    assert constraints == {
        "folders_tenant_id_id_key": "UNIQUE (tenant_id, id)",
        "documents_folder_id_fkey": (
            "FOREIGN KEY (tenant_id, folder_id) REFERENCES folders(tenant_id, id) ON DELETE CASCADE"
        ),
        "boxes_label_key": "UNIQUE (tenant_id, label)",  # existing: no second one was added
        "documents_box_fkey": "FOREIGN KEY (tenant_id, box_label) REFERENCES archive.boxes(tenant_id, label)",
    }
    assert errors == []


def test_op_renders_offline_as_a_call_of_the_sql_function() -> None:
    operation = AddTenantForeignKeyOp("documents", "box_label", "boxes", "label", referent_schema="archive")
    statement = operation.to_sql()
    assert isinstance(statement, ClauseElement)
    rendered = str(statement.compile(dialect=POSTGRESQL, compile_kwargs={"literal_binds": True}))
    assert rendered.startswith(
        "SELECT rls_tenancy.add_tenant_foreign_key(CAST(quote_ident('documents') AS REGCLASS), 'box_label', "
        "CAST(quote_ident('archive') || '.' || quote_ident('boxes') AS REGCLASS), 'label', NULL, 'NO ACTION')"
    )


# --- the ORM on keys that lead with tenant_id -------------------------------------------------------------


def test_the_orm_still_identifies_a_project_by_its_id_alone(
    scoped_factory: sessionmaker[Session], world: World
) -> None:
    """The mapper's primary key is id: get(), relationships, inserts with RETURNING, bulk updates by key."""
    own, theirs = world.project_ids[world.a][0], world.project_ids[world.b][0]
    with as_tenant(world.a), scoped_factory() as session:
        project = session.get(Project, own)
        assert project is not None and project.name in world.projects[world.a]
        assert session.get(Project, theirs) is None
        assert [task.title for task in project.tasks] == [f"task of {project.name}"]
        assert project.tasks[0].project is project
        added = Project(name="keyed by id", tasks=[Task(title="first")])
        session.add(added)
        session.flush()  # the ids come back from INSERT ... RETURNING
        assert added.id > 0 and added.tasks[0].id > 0 and added.tenant_id == world.a
        assert session.get(Project, added.id) is added
        # The statements the ORM writes name the whole table key: per-row bulk UPDATE takes tenant_id too.
        rows = [{"tenant_id": world.a, "id": i, "name": name} for i, name in ((own, "renamed"), (added.id, "again"))]
        session.execute(update(Project), rows)
        with pytest.raises(InvalidRequestError, match="projects.tenant_id"):
            session.execute(update(Project), [{"id": own, "name": "by id alone"}])
        session.expire_all()
        assert [session.get(Project, i).name for i in (own, added.id)] == ["renamed", "again"]  # type: ignore[union-attr]
        session.rollback()
    with as_tenant(world.b), scoped_factory() as session:
        assert session.get(Project, theirs) is not None  # and B's row is its own still


# --- a link table, as adopting.md shows it -------------------------------------------------------------


class _Invoicing(DeclarativeBase):
    pass


class _Tag(TenantBoundMixin, _Invoicing):
    __tablename__ = "m2m_tags"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)
    id: Mapped[int] = mapped_column(Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    name: Mapped[str] = mapped_column(Text)


class _InvoiceTag(TenantBoundMixin, _Invoicing):
    __tablename__ = "m2m_invoice_tags"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "invoice_id", "tag_id"),
        tenant_foreign_key("invoice_id", "m2m_invoices"),
        tenant_foreign_key("tag_id", "m2m_tags"),
    )
    invoice_id: Mapped[int] = mapped_column(BigInteger)
    tag_id: Mapped[int] = mapped_column(BigInteger)


class _Invoice(TenantBoundMixin, _Invoicing):
    __tablename__ = "m2m_invoices"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)
    id: Mapped[int] = mapped_column(Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    number: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[_Tag]] = relationship(
        secondary=lambda: _InvoiceTag.__table__,
        primaryjoin=lambda: and_(_Invoice.id == _InvoiceTag.invoice_id, _Invoice.tenant_id == _InvoiceTag.tenant_id),
        secondaryjoin=lambda: and_(_Tag.id == _InvoiceTag.tag_id, _Tag.tenant_id == _InvoiceTag.tenant_id),
    )


@pytest.fixture()
def invoicing(superuser_engine: Engine) -> Iterator[None]:
    """The three tables, isolated as a migration would; dropped afterwards."""
    tables = [_Tag.__table__, _Invoice.__table__, _InvoiceTag.__table__]
    with superuser_engine.begin() as conn:
        for table in tables:
            conn.execute(CreateTable(table))  # type: ignore[arg-type]
            conn.execute(select(func.rls_tenancy.enable_tenant_isolation(literal(f"public.{table.name}"))))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        with superuser_engine.begin() as conn:
            conn.execute(text("DROP TABLE m2m_invoice_tags, m2m_invoices, m2m_tags"))


def test_a_link_table_links_a_tenants_rows_and_no_other_tenants(
    invoicing: None, scoped_factory: sessionmaker[Session], world: World
) -> None:
    """Appending through the relationship fills the link's tenant_id; a link to B's tag is refused."""
    with as_tenant(world.b), scoped_factory() as session:
        theirs = _Tag(name="b's tag")
        session.add(theirs)
        session.commit()
        their_tag = theirs.id
    with as_tenant(world.a), scoped_factory() as session:
        invoice = _Invoice(number="A-1")
        invoice.tags.append(_Tag(name="urgent"))
        session.add(invoice)
        session.commit()
        session.expire_all()
        assert [tag.name for tag in session.get_one(_Invoice, invoice.id).tags] == ["urgent"]
        with pytest.raises(IntegrityError) as refused:
            session.execute(insert(_InvoiceTag).values(invoice_id=invoice.id, tag_id=their_tag))
        assert _refusal(refused.value)[0] == "23503"  # no such tag, to tenant A
        session.rollback()
        assert their_tag not in session.scalars(select(_InvoiceTag.tag_id)).all()
