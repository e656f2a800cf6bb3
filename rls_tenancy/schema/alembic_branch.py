"""Keeping an application's new revisions on its own Alembic branch.

The library's revisions are a branch of their own. Until an application has
revisions of its own, the only head is the library's, so a plain ``alembic
revision`` would write the new file into the library's directory (inside
site-packages) and chain it onto the library's branch. Later, with two heads,
every ``alembic revision`` would need ``--head``. Pass
``process_revision_directives=app_branch("myapp")`` to ``context.configure()``
in ``env.py`` and neither happens: revisions made without ``--head`` go on
branch ``myapp``, in your own versions directory. The first one starts the
branch, depending on the library's head: from base when the application has
no revisions yet, or, when it already has a chain of its own (revisions made
before adopting the library, without the label), on top of that chain's one
head, so that the new revision runs after the ones that created its tables.
With more than one such head there is no telling which to continue:
``CommandError``, asking for ``--head``.

Alembic runs ``env.py``, and so this hook, for ``alembic revision
--autogenerate`` and, only when ``revision_environment = true`` is in
``alembic.ini``, for a plain ``alembic revision``: set it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations.ops import MigrationScript
from alembic.script import ScriptDirectory
from alembic.util import CommandError, coerce_resource_to_filename

from rls_tenancy.schema._resources import data_dir

LIBRARY_BRANCH = "rls_tenancy"

# What ``script.head`` is when no ``--head`` was given: ``command.revision``'s
# default is ``"head"``, the command line passes ``None``.
_NO_HEAD_GIVEN = ("head", None)

Directives = Callable[[MigrationContext, Any, list[MigrationScript]], None]


def app_branch(label: str) -> Directives:
    """A ``process_revision_directives`` hook putting new revisions on branch ``label``."""

    def directives(context: MigrationContext, _revision: Any, scripts: list[MigrationScript]) -> None:
        script_directory = context.script
        if script_directory is None:
            return
        for script in scripts:
            if script.head not in _NO_HEAD_GIVEN:  # an explicit --head: the user decided
                continue
            if _branch_exists(script_directory, label):
                script.head = f"{label}@head"
                continue
            script.head = _start_of_branch(script_directory, label)
            script.branch_label = label
            script.depends_on = script_directory.get_revision(f"{LIBRARY_BRANCH}@head").revision
            if script.version_path is None:
                script.version_path = str(_own_location(script_directory.version_locations))

    return directives


def _branch_exists(script_directory: ScriptDirectory, label: str) -> bool:
    # A label only: resolving "label@head" would also take "label" as the prefix of a revision id
    # (branch "app" and an unlabelled revision "app_0001").
    return any(label in script.branch_labels for script in script_directory.walk_revisions())


def _start_of_branch(script_directory: ScriptDirectory, label: str) -> str:
    """What a new branch ``label`` continues: the app's own head if it has one, else base."""
    library = _library_versions()
    own = [
        head.revision
        for head in script_directory.get_revisions("heads")
        if head is not None and not Path(head.path).resolve().is_relative_to(library)
    ]
    if not own:
        return "base"
    if len(own) > 1:
        raise CommandError(
            f"your revisions have {len(own)} heads ({', '.join(sorted(own))}): pass --head with the one "
            f"branch {label!r} should continue (or merge them first)"
        )
    return own[0]


def _library_versions() -> Path:
    return (data_dir("migrations") / "versions").resolve()


def _own_location(locations: Sequence[str] | None) -> Path:
    library = _library_versions()
    for location in locations or ():
        path = Path(coerce_resource_to_filename(location)).resolve()
        if path != library:
            return path
    raise CommandError(
        "no version location of your own: list your versions directory before "
        "rls_tenancy:migrations/versions in version_locations"
    )
