"""The documentation names what exists: every test, SQL script and example file it points to.

A page that names a test as the proof of a guarantee must not outlive the
test. The Sphinx build (``make docs``, warnings as errors) checks links and
included code; this checks the names it cannot see, and the README's length.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

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
