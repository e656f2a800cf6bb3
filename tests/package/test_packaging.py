"""What a user who pip-installs the wheel gets: the SQL, the migrations, the plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from rls_tenancy.testing import empty_database

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("rls_tenancy-*.whl")
    return built


def test_wheel_ships_sql_migrations_and_plugin(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in (ROOT / "sql").glob("*.sql"):
        assert f"rls_tenancy/sql/{script.name}" in names
    for migration in (ROOT / "migrations").rglob("*.py"):
        assert f"rls_tenancy/migrations/{migration.relative_to(ROOT / 'migrations')}" in names
    assert {
        "rls_tenancy/py.typed",
        "rls_tenancy/testing/plugin.py",
        "rls_tenancy/migrations/script.py.mako",
    } <= names
    assert not any(n.startswith(("tests/", "examples/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rls_tenancy = rls_tenancy.testing.plugin" in text
    assert "rls-tenancy = rls_tenancy.cli:main" in text


def test_installed_wheel_finds_its_files(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    probe = (
        "from alembic.util import coerce_resource_to_filename as resource\n"
        "from rls_tenancy.schema._resources import data_dir, sql_script\n"
        "from rls_tenancy.schema.migrate import versions_path\n"
        "print(data_dir('sql')); print(versions_path())\n"
        "print(resource('rls_tenancy:migrations/versions'))\n"
        "assert 'current_tenant_id' in sql_script('002_context.sql')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(line).is_relative_to(tmp_path) and Path(line).is_dir() for line in out)


# An adopter's project, as the README's migration steps make it: its own
# versions directory before the library's, app_branch in env.py (Alembic's
# template otherwise), a model keyed to the library's users.
ADOPTER_INI = """
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
version_locations = %(here)s/migrations/versions rls_tenancy:migrations/versions
path_separator = space
revision_environment = true
"""

ADOPTER_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

import rls_tenancy.schema.alembic_ops
from rls_tenancy.schema.alembic_branch import app_branch
from models import Base

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      process_revision_directives=app_branch("blog"))
    with context.begin_transaction():
        context.run_migrations()
"""

ADOPTER_MODELS = """
from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rls_tenancy import TenantBoundMixin
from rls_tenancy.orm.tenant_keys import tenant_foreign_key


class Base(DeclarativeBase):
    pass


class Post(TenantBoundMixin, Base):
    __tablename__ = "posts"
    __table_args__ = (tenant_foreign_key("author_id", "rls_tenancy.users", name="posts_author_fkey"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(Text)
"""

ADOPTER_ROLES = {
    "RLS_TENANCY_OWNER_ROLE": "ad_owner",
    "RLS_TENANCY_APP_ROLE": "ad_app",
    "RLS_TENANCY_BYPASS_ROLE": "ad_admin",
}


@pytest.fixture()
def adopter(tmp_path: Path, rls_postgres_url: URL) -> Iterator[Path]:
    """The adopter's project directory, its ``sqlalchemy.url`` an empty database."""
    project = tmp_path / "blog"
    (project / "migrations" / "versions").mkdir(parents=True)
    (project / "migrations" / "env.py").write_text(ADOPTER_ENV)
    (project / "migrations" / "script.py.mako").write_text((ROOT / "migrations" / "script.py.mako").read_text())
    (project / "models.py").write_text(ADOPTER_MODELS)
    with empty_database(rls_postgres_url, prefix="rls_adopter") as url:
        rendered = url.render_as_string(hide_password=False).replace("%", "%%")
        (project / "alembic.ini").write_text(ADOPTER_INI + f"sqlalchemy.url = {rendered}\n")
        yield project


def _alembic(project: Path, site: Path | None, *argv: str) -> str:
    """``alembic.config.main(argv)`` in a process of its own: the command line, on the given install."""
    env = {**os.environ, **ADOPTER_ROLES}
    if site is not None:  # the wheel's files first on the path, as site-packages would be
        env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from alembic.config import main; main(argv=sys.argv[1:])", *argv],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("install", ["wheel", "editable"])
def test_the_alembic_command_line_puts_an_apps_revisions_on_its_own_branch(
    install: str, wheel: Path, adopter: Path, tmp_path: Path
) -> None:
    site: Path | None = None
    if install == "wheel":
        site = tmp_path / "site-packages"
        zipfile.ZipFile(wheel).extractall(site)
    library = (site / "rls_tenancy" if site else ROOT) / "migrations" / "versions"
    shipped = sorted(path.name for path in library.iterdir())
    located = subprocess.run(
        [sys.executable, "-c", "import rls_tenancy; print(rls_tenancy.__file__)"],
        cwd=adopter,
        env={**os.environ, "PYTHONPATH": str(site or "")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(located).is_relative_to(site or ROOT)

    _alembic(adopter, site, "upgrade", "heads")  # the library alone: its head is the only head
    _alembic(adopter, site, "revision", "--autogenerate", "-m", "posts")
    _alembic(adopter, site, "upgrade", "heads")
    _alembic(adopter, site, "revision", "-m", "data fix")  # no autogenerate: revision_environment runs the hook
    _alembic(adopter, site, "upgrade", "heads")
    _alembic(adopter, site, "revision", "--autogenerate", "-m", "nothing new")

    assert sorted(path.name for path in library.iterdir()) == shipped
    mine = sorted((adopter / "migrations" / "versions").glob("*.py"), key=lambda p: p.stat().st_mtime_ns)
    assert len(mine) == 3
    texts = [path.read_text() for path in mine]
    assert "branch_labels = ('blog',)" in texts[0] and "depends_on = 'rls_tenancy_0001'" in texts[0]
    assert "op.enable_tenant_isolation('posts')" in texts[0]
    assert (
        "sa.ForeignKeyConstraint(['tenant_id', 'author_id'], ['rls_tenancy.users.tenant_id', 'rls_tenancy.users.id']"
        in texts[0]
    )
    assert "op." not in texts[2], texts[2]  # nothing to do: the key to rls_tenancy.users compares equal
    ids = [re.search(r"^revision = '(\w+)'", text, re.M) for text in texts]
    downs = [re.search(r"^down_revision = (.+)$", text, re.M) for text in texts]
    assert [d.group(1) for d in downs if d] == [
        "None",
        repr(ids[0] and ids[0].group(1)),
        repr(ids[1] and ids[1].group(1)),
    ]
    heads = _alembic(adopter, site, "heads")
    assert heads.split() == [
        ids[2] and ids[2].group(1),
        "(blog)",
        "(head)",
        "rls_tenancy_0001",
        "(rls_tenancy)",
        "(effective",
        "head)",
    ]


_WITHOUT_GREENLET = """
import sys


class NoGreenlet:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "greenlet":
            raise ImportError("greenlet is not installed")


sys.meta_path.insert(0, NoGreenlet())
from sqlalchemy.orm import sessionmaker

import rls_tenancy.cli
import rls_tenancy.flask
import rls_tenancy.testing
from rls_tenancy import scope_sessions

scope_sessions(sessionmaker())
print("ok")
"""


def test_the_library_imports_and_scopes_without_greenlet() -> None:
    """SQLAlchemy 2.1 installs greenlet (its asyncio's) only with its asyncio extra, which a sync app need not have."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT_GREENLET], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr
