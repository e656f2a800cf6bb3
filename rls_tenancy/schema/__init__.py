"""The database side: the shipped SQL, the library's migration, and the Alembic operations.

Importing this package registers ``op.enable_tenant_isolation`` and the
other operations with Alembic, as ``import rls_tenancy.schema.alembic_ops``
does.
"""

from __future__ import annotations

from rls_tenancy.schema import alembic_ops  # noqa: F401 - registers the operations
from rls_tenancy.schema.alembic_branch import app_branch
from rls_tenancy.schema.migrate import downgrade, upgrade
from rls_tenancy.schema.reinstall import reinstall
from rls_tenancy.schema.roles import RoleNames

__all__ = ["RoleNames", "app_branch", "downgrade", "reinstall", "upgrade"]
