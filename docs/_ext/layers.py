"""The ``layers`` directive: the layer diagram, drawn from the source at build time.

Each layer names the object that implements it and takes its one-line
summary from that object's docstring, and the policy row quotes the
condition from the SQL specification. Moving, renaming or rewording any of
them changes the diagram, and an object that is gone fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]

#: (layer, dotted path of what implements it), from the request inwards.
LAYERS = (
    ("tenant from the request", "rls_tenancy.flask.Tenancy"),
    ("tenant in context", "rls_tenancy.as_tenant"),
    ("ORM scoping", "rls_tenancy.scope_sessions"),
    ("transaction binding", "rls_tenancy.bind_engine"),
)
_CONDITION = re.compile(
    r"FUNCTION rls_tenancy\.tenant_condition_on\(.*?RETURN pg_catalog\.format\('((?:[^']|'')*)'",
    re.DOTALL,
)


def _resolve(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _summary(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    return re.sub(r"``?([^`]+)``?", r"\1", first.split(". ", 1)[0].rstrip("."))


def policy_condition() -> str:
    """The unsigned policy condition on ``tenant_id``, as ``sql/002_context.sql`` writes it."""
    found = _CONDITION.search((ROOT / "sql" / "002_context.sql").read_text())
    if found is None:
        raise RuntimeError("sql/002_context.sql no longer defines rls_tenancy.tenant_condition_on()")
    return found.group(1).replace("''", "'").replace("%I", "tenant_id")


def diagram() -> str:
    """The diagram as text: one row per layer, then the policy."""
    rows = [(layer, path, _summary(_resolve(path))) for layer, path in LAYERS]
    rows.append(("PostgreSQL RLS policy", "tenant_isolation (ENABLE + FORCE)", policy_condition()))
    width = max(len(layer) for layer, _, _ in rows)
    out = []
    for n, (layer, path, summary) in enumerate(rows):
        arrow = "request ─► " if n == 0 else "        ─► "
        out.append(f"{arrow}{layer.ljust(width)}  {path}")
        out.append(f"{' ' * (len(arrow) + width)}  {summary}")
    return "\n".join(out)


class LayersDirective(SphinxDirective):
    """``.. layers::`` (``{layers}`` in MyST): the diagram as a literal block."""

    def run(self) -> list[nodes.Node]:
        text = diagram()
        return [nodes.literal_block(text, text)]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("layers", LayersDirective)
    return {"parallel_read_safe": True, "version": "1"}
