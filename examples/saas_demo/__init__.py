"""A small multi-tenant app built on rls_tenancy: the demo, and the schema the tests run against."""
