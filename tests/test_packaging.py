"""What a user who pip-installs the wheel gets: the SQL, the migrations, the plugin."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


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
        "from rls_tenancy._resources import data_dir, sql_script\n"
        "from rls_tenancy.migrate import versions_path\n"
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
