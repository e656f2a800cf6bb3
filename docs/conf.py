"""Sphinx configuration: the pages are MyST Markdown, the API reference comes from the docstrings."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "_ext")]

# autodoc reads the mixin's declared attributes off the unmapped class, as SQLAlchemy warns.
warnings.filterwarnings("ignore", message="Unmanaged access of declarative attribute")

project = "rls_tenancy"
copyright = "rls_tenancy contributors"  # noqa: A001 - Sphinx's own name for it
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "layers"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "alabaster"
html_title = "rls_tenancy"
