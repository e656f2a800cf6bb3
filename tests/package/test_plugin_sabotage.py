"""The sabotage runs, as an application's own suite gets them from the plugin.

Each test runs a small app's suite in a pytest of its own (its migrations:
one table isolated with ``op.enable_tenant_isolation``), on this run's
server: with no break every claim holds; with a layer broken, the claims
marked as resting on it are strict xfails, everything else is deselected,
and a claim marked for a layer it does not rest on fails the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from rls_tenancy.binding.signing import ENVIRONMENT as KEY_ENVIRONMENT
from rls_tenancy.testing import ENV_URL
from rls_tenancy.testing.database import SIGNED_ENVIRONMENT

APP = '''
"""A one-table app: notes, isolated by tenant."""

from sqlalchemy import Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rls_tenancy import TenantBoundMixin, scope_sessions


class Base(DeclarativeBase):
    pass


class Note(TenantBoundMixin, Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)


class NoteSession(Session):
    pass


# Scoped as the app loads, before any fixture runs.
scope_sessions(NoteSession)
'''

ENV = """
from alembic import context

import rls_tenancy.schema.alembic_ops  # noqa: F401

context.configure(connection=context.config.attributes["connection"], transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
"""

MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "notes_0001"
down_revision = None
branch_labels = ("notes",)
depends_on = "rls_tenancy_0001"


def upgrade():
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.BigInteger, sa.ForeignKey("rls_tenancy.tenants.id"), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.enable_tenant_isolation("notes")
"""

CONFTEST = """
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from notes_app import NoteSession
from rls_tenancy import bind_engine
from rls_tenancy.schema.migrate import versions_path

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def rls_alembic_config():
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("path_separator", "space")
    config.set_main_option("version_locations", f"{HERE / 'migrations' / 'versions'} {versions_path()}")
    return config


@pytest.fixture(scope="session")
def app_engine(rls_database):
    engine = bind_engine(create_engine(rls_database.app_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def superuser_engine(rls_database):
    engine = create_engine(rls_database.superuser_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def tenants(superuser_engine):
    with superuser_engine.begin() as conn:
        ids = [
            conn.execute(
                text("INSERT INTO rls_tenancy.tenants (slug, name) VALUES (:slug, :slug) RETURNING id"),
                {"slug": slug},
            ).scalar_one()
            for slug in ("a", "b")
        ]
        conn.execute(text("INSERT INTO notes (tenant_id, body) VALUES (:id, 'a note')"), [{"id": i} for i in ids])
    return ids


@pytest.fixture(scope="session")
def app_sessions(app_engine):
    return sessionmaker(app_engine, class_=NoteSession)


@pytest.fixture(scope="session")
def superuser_sessions(superuser_engine):
    return sessionmaker(superuser_engine, class_=NoteSession)
"""

TESTS = """
import pytest
from sqlalchemy import create_engine, select, text

from notes_app import Note
from rls_tenancy import as_tenant, bind_engine
from rls_tenancy.testing.database import signing_requested


@pytest.mark.rls_policy
def test_the_app_role_reads_only_its_tenants_notes(app_engine, tenants):
    with as_tenant(tenants[0]), app_engine.connect() as conn:
        assert set(conn.execute(text("SELECT tenant_id FROM notes")).scalars()) == {tenants[0]}


@pytest.mark.rls_policy
def test_marked_for_the_policy_but_the_orm_filter_hides_the_rows(app_sessions, tenants):
    with as_tenant(tenants[0]), app_sessions() as session:
        assert set(session.scalars(select(Note.tenant_id))) == {tenants[0]}


@pytest.mark.rls_binding
def test_the_tenant_does_not_outlive_a_committed_transaction(rls_database, tenants):
    engine = bind_engine(create_engine(rls_database.app_url, pool_size=1, max_overflow=0))
    try:
        with as_tenant(tenants[0]), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            conn.commit()
        raw = engine.raw_connection()  # the same backend, past every hook
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT current_setting('app.current_tenant', true)")
            assert cursor.fetchone()[0] in ("", None)
        finally:
            raw.close()
    finally:
        engine.dispose()


@pytest.mark.rls_signing
@pytest.mark.skipif(not signing_requested(), reason="needs a database that requires a signed context")
def test_sql_naming_another_tenant_reads_none_of_its_notes(app_engine, tenants):
    with as_tenant(tenants[0]), app_engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.current_tenant', :b, true)"), {"b": str(tenants[1])})
        assert conn.execute(text("SELECT tenant_id FROM notes")).scalars().all() == []


@pytest.mark.rls_orm
def test_the_orm_filter_alone_hides_other_tenants(superuser_sessions, tenants):
    # A superuser: row level security does not apply, only the ORM filter does.
    with as_tenant(tenants[0]), superuser_sessions() as session:
        assert set(session.scalars(select(Note.tenant_id))) == {tenants[0]}


def test_a_note_belongs_to_a_tenant():
    assert "tenant_id" in Note.__table__.c
"""


@pytest.fixture()
def app_suite(pytester: pytest.Pytester, rls_postgres_url: URL, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The app's project, its suite pointed at this run's server (no second cluster)."""
    monkeypatch.setenv(ENV_URL, rls_postgres_url.render_as_string(hide_password=False))
    monkeypatch.delenv(SIGNED_ENVIRONMENT, raising=False)  # unsigned, whichever lane runs this
    monkeypatch.delenv(KEY_ENVIRONMENT, raising=False)
    pytester.makeini("[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n")
    pytester.makepyfile(notes_app=APP, conftest=CONFTEST, test_notes=TESTS)
    versions = pytester.mkdir("migrations") / "versions"
    versions.mkdir()
    (pytester.path / "migrations" / "env.py").write_text(ENV)
    (versions / "notes_0001.py").write_text(MIGRATION)
    return pytester


def test_with_nothing_broken_every_claim_holds(app_suite: pytest.Pytester) -> None:
    app_suite.runpytest_subprocess().assert_outcomes(passed=5, skipped=1)  # the signing claim needs signing


def test_policy_break_fails_the_policy_claims_and_rejects_a_claim_that_does_not_rest_on_them(
    app_suite: pytest.Pytester,
) -> None:
    result = app_suite.runpytest_subprocess("--rls-break=policy", "-rxfE")
    result.assert_outcomes(xfailed=1, failed=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "*_ test_marked_for_the_policy_but_the_orm_filter_hides_the_rows _*",
            "[[]XPASS(strict)[]] --rls-break=policy: *",
            "XFAIL test_notes.py::test_the_app_role_reads_only_its_tenants_notes - --rls-break=policy: *",
            "FAILED test_notes.py::test_marked_for_the_policy_but_the_orm_filter_hides_the_rows*",
        ]
    )


@pytest.mark.parametrize(
    ("layer", "claim"),
    [
        ("binding", "test_the_tenant_does_not_outlive_a_committed_transaction"),
        ("orm", "test_the_orm_filter_alone_hides_other_tenants"),
    ],
)
def test_binding_and_orm_breaks_fail_the_claims_marked_for_them(
    app_suite: pytest.Pytester, layer: str, claim: str
) -> None:
    result = app_suite.runpytest_subprocess(f"--rls-break={layer}", "-rxfE")
    result.assert_outcomes(xfailed=1, deselected=5)
    result.stdout.fnmatch_lines([f"XFAIL test_notes.py::{claim} - --rls-break={layer}: *"])


def test_a_signed_run_proves_the_signing_claim_and_its_break_fails_it(
    app_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/testing.md says: the signing claim runs against databases requiring a signed context."""
    monkeypatch.setenv(SIGNED_ENVIRONMENT, "1")
    app_suite.runpytest_subprocess().assert_outcomes(passed=6)
    result = app_suite.runpytest_subprocess("--rls-break=signing", "-rxfE")
    result.assert_outcomes(xfailed=1, deselected=5)
    result.stdout.fnmatch_lines(["XFAIL test_notes.py::test_sql_naming_another_tenant_reads_none_of_its_notes - *"])
    page = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    claim = TESTS[TESTS.index("@pytest.mark.rls_signing") : TESTS.index("@pytest.mark.rls_orm")].strip()
    assert claim in page, "docs/testing.md shows the signing claim as this suite runs it"
