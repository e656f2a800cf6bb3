"""Where the shipped SQL scripts and Alembic migrations are.

They live in the top-level ``sql/`` and ``migrations/`` directories; the
package links to them (``rls_tenancy/sql -> ../sql``), and the wheel carries
them inside the package. Either way they are ``rls_tenancy/sql`` and
``rls_tenancy/migrations``, which also makes the Alembic resource spelling
``rls_tenancy:migrations/versions`` work.
"""

from __future__ import annotations

from pathlib import Path

from rls_tenancy.errors import TenancyError

_PACKAGE = Path(__file__).resolve().parent.parent  # rls_tenancy/

UNINSTALL_SCRIPT = "uninstall.sql"


def data_dir(name: str) -> Path:
    """The directory ``name`` (``sql`` or ``migrations``) shipped with the library."""
    directory = _PACKAGE / name
    if directory.is_dir():
        return directory
    raise TenancyError(f"rls_tenancy is installed without its {name}/ directory; reinstall the package")


def install_scripts() -> list[str]:
    """Every install script (``NNN_*.sql``), in the order they run."""
    return sorted(path.name for path in data_dir("sql").glob("[0-9][0-9][0-9]_*.sql"))


def sql_script(name: str) -> str:
    """The text of one script from ``sql/``, exactly as a DBA reads it."""
    return (data_dir("sql") / name).read_text(encoding="utf-8")
