"""A real PostgreSQL for tests (and the demo), shipped as a pytest plugin.

Fixtures (registered automatically when ``rls-tenancy[testing]`` is installed):

``rls_postgres_url``
    Superuser URL of a server for the whole test session: the one named by
    ``$RLS_TENANCY_TEST_DATABASE_URL``, else a testcontainers PostgreSQL when a
    Docker engine answers, else a throwaway cluster from local PostgreSQL
    binaries, else one from the ``pgserver`` wheel. Never skips: with none of
    these it fails and says how to provide one.
``rls_alembic_config``
    ``None``: override it to return your application's Alembic ``Config``
    (with ``rls_tenancy:migrations/versions`` in its ``version_locations``).
``rls_database``
    A fresh database on that server, upgraded to ``heads`` (your migrations
    and the library's, or the library's alone), with the owner, application
    and bypass roles ready and passwords set, as a :class:`TenancyDatabase`.

The sabotage runs: ``--rls-break=policy`` (every policy in ``rls_database``
lets everything through), ``--rls-break=binding`` (the tenant bound
session-wide), ``--rls-break=orm`` (the ORM tenant filter off) or
``--rls-break=signing`` (the bound tenant taken without its proof) breaks one
layer on purpose and runs only the tests marked ``rls_policy``,
``rls_binding``, ``rls_orm`` or ``rls_signing`` respectively, as strict
xfails: a test that passes anyway does not rest on that layer, and fails the
run.
"""

from __future__ import annotations

from rls_tenancy.testing.database import TenancyDatabase, empty_database, tenancy_database
from rls_tenancy.testing.server import ENV_URL, NoPostgresError, postgres_server

__all__ = ["ENV_URL", "NoPostgresError", "TenancyDatabase", "empty_database", "postgres_server", "tenancy_database"]
