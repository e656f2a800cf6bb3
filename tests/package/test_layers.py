"""The package's shape: no import cycles, at module level or deferred into a function.

A cycle hidden by an import inside a function (or under ``TYPE_CHECKING``)
still ties two modules into one: neither can be read, tested or moved
without the other. The graph is read from the source with :mod:`ast`, every
import statement wherever it stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "rls_tenancy"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports, by any import statement anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module in modules:
            for alias in node.names:  # `from package import module` imports that module
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's members, one list per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_detector_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("import second\n")
    second.write_text("def later():\n    import first\n")
    modules = {"first": first, "second": second}
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    assert cycles(graph) == [["first", "second"]]


def test_no_module_of_the_package_imports_itself_back() -> None:
    modules = _modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    # The package's __init__ re-exports its modules; a module importing a name
    # from the package instead of from its module would close a cycle here.
    assert cycles(graph) == []


def test_a_private_module_is_used_only_inside_its_own_package() -> None:
    """``_name.py`` means "this package's own": no other package of the library, nor its migration, imports it."""
    modules = _modules()
    versions = PACKAGE.parent / "migrations" / "versions"
    importers = {**modules, **{f"migrations.{path.stem}": path for path in versions.glob("*.py")}}
    for name, path in importers.items():
        for target in imports_of(path, modules):
            leaf = target.rsplit(".", 1)[-1]
            if leaf.startswith("_") and not leaf.startswith("__"):
                owner = target.rsplit(".", 1)[0]
                assert name == owner or name.startswith(owner + "."), f"{name} imports {target}"
