"""The documentation names what exists: every test, SQL script and example file it points to.

A page that names a test as the proof of a guarantee must not outlive the
test. The Sphinx build (``make docs``, warnings as errors) checks links and
included code; this checks the names it cannot see, the README's length, and
that the alembic.ini edit adopting.md gives fits the file ``alembic init`` writes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from rls_tenancy.schema._resources import install_scripts

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", *(page for page in (ROOT / "docs").rglob("*.md") if "_build" not in page.parts)])
_TEST = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")
_FILE = re.compile(r"\b((?:sql|examples|benchmarks|rls_tenancy)/[\w/.-]+\.(?:sql|py|md|svg))\b")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_test_a_page_names_exists(page: Path) -> None:
    for file, name in _TEST.findall(page.read_text()):
        path = ROOT / file
        assert path.is_file(), f"{page.name} names {file}, which does not exist"
        if name:
            assert name in _test_names(path), f"{page.name} names {file}::{name}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_file_a_page_names_exists(page: Path) -> None:
    for file in _FILE.findall(page.read_text()):
        assert (ROOT / file).exists(), f"{page.name} names {file}, which does not exist"


def test_the_guarantees_table_names_a_test_in_every_row() -> None:
    table = (ROOT / "docs" / "guarantees.md").read_text().split("## Each guarantee and its test", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 20
    for row in rows:
        assert _TEST.search(row) and "::" in row, row


def test_the_psql_install_on_the_sql_page_runs_the_whole_specification() -> None:
    page = (ROOT / "docs" / "sql.md").read_text()
    assert re.findall(r"^\\i sql/(\d{3}_\w+\.sql)$", page, re.M) == install_scripts()


def test_the_readme_stays_a_front_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_alembic_ini_edit_adopting_gives_fits_alembics_own_template(tmp_path: Path) -> None:
    """Section 2's edit, made to the file this Alembic's ``alembic init`` writes: Alembic reads it (no option twice)."""
    page = (ROOT / "docs" / "adopting.md").read_text().split("## 2. Migrate", 1)[1]
    deleted = re.search(r"delete the\s+template's two lines `([^`\n]+)` and `([^`\n]+)`", page)
    block = re.search(r"```ini\n(.*?)```", page, re.DOTALL)
    assert deleted and block
    ini = tmp_path / "alembic.ini"
    command.init(Config(str(ini)), str(tmp_path / "migrations"))
    lines = ini.read_text().splitlines(keepends=True)
    for line in deleted.groups():
        assert lines.count(f"{line}\n") == 1, f"alembic init no longer writes {line!r} once"
    at = lines.index(f"{deleted[1]}\n")
    lines = [line for line in lines if line.rstrip("\n") not in deleted.groups()]
    ini.write_text("".join([*lines[:at], block[1], *lines[at:]]))
    config = Config(str(ini))
    assert config.get_main_option("prepend_sys_path") == str(tmp_path)
    assert "rls_tenancy_0001" in ScriptDirectory.from_config(config).get_heads()
