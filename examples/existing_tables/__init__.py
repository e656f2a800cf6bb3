"""An app that had tables, rows and an Alembic chain before adopting rls_tenancy (docs/adopting.md).

``migrations/versions/inv_0001_before_tenancy.py`` is what the app had;
``inv_0002_tenancy.py`` converts those tables; ``models.py`` is what the
models look like afterwards. ``tests/schema/test_converting_existing_tables.py``
runs the conversion on tables holding rows.
"""
