"""app_branch when the application already had an Alembic chain of its own before adopting the library."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL

from rls_tenancy import RoleNames
from rls_tenancy.schema.migrate import upgrade, versions_path
from rls_tenancy.testing import empty_database
from tests.schema.test_migrations import APP_ENV

ROOT = Path(__file__).parents[2]
ROLES = RoleNames(owner="chain_owner", app="chain_app", bypass="chain_admin")

# A revision the app had before it adopted the library: no branch label, no dependency on the library.
EXISTING_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("{table}")
"""


@pytest.fixture()
def empty_db(rls_postgres_url: URL) -> Iterator[URL]:
    with empty_database(rls_postgres_url, prefix="rls_chain") as url:
        yield url


def _app_config(tmp_path: Path, existing: dict[str, str]) -> Config:
    """An app's script directory (env.py with ``app_branch("app")``), holding ``existing`` revisions."""
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(APP_ENV)
    (tmp_path / "script.py.mako").write_text((ROOT / "migrations" / "script.py.mako").read_text())
    for revision, table in existing.items():
        (tmp_path / "versions" / f"{revision}.py").write_text(EXISTING_REVISION.format(revision=revision, table=table))
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("version_locations", f"{tmp_path / 'versions'} rls_tenancy:migrations/versions")
    config.set_main_option("path_separator", "space")
    # env.py, and so app_branch, runs for a plain `alembic revision` too (autogenerate would add nothing here
    # that matters, and warns about the unnamed key it renders).
    config.set_main_option("revision_environment", "true")
    return config


def test_the_first_labelled_revision_continues_the_apps_existing_head(empty_db: URL, tmp_path: Path) -> None:
    config = _app_config(tmp_path, {"app_0001": "notes"})
    upgrade(empty_db, roles=ROLES, config=config)  # the library's head and the app's: two heads
    library_files = sorted(versions_path().iterdir())

    command.revision(config, "tenant notes")
    command.revision(config, "second")

    assert sorted(versions_path().iterdir()) == library_files
    scripts = ScriptDirectory.from_config(config)
    second = scripts.get_revision("app@head")
    first = scripts.get_revision(str(second.down_revision))
    assert first.down_revision == "app_0001"  # ordered after the revision that created the table
    assert ("app" in first.branch_labels, first.dependencies) == (True, "rls_tenancy_0001")
    assert Path(first.path).parent == tmp_path / "versions"
    # One head now (the library's is a dependency of the branch): no later command needs --head.
    assert [head.revision for head in scripts.get_revisions("heads") if head is not None] == [second.revision]


def test_two_heads_of_the_apps_own_ask_for_head(empty_db: URL, tmp_path: Path) -> None:
    config = _app_config(tmp_path, {"app_0001": "notes", "app_0001b": "drafts"})
    upgrade(empty_db, roles=ROLES, config=config)
    with pytest.raises(CommandError, match=r"2 heads \(app_0001, app_0001b\): pass --head"):
        command.revision(config, "tenant notes")
    assert sorted(path.name for path in (tmp_path / "versions").glob("*.py")) == ["app_0001.py", "app_0001b.py"]

    command.revision(config, "tenant notes", head="app_0001b", branch_label="app")
    assert ScriptDirectory.from_config(config).get_revision("app@head").down_revision == "app_0001b"
