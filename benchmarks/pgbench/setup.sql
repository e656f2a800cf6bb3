-- The audit log under pgbench: run with psql as a superuser on a database
-- migrated with `rls-tenancy migrate`. Eight tenants (ids 1 to 8 on a fresh
-- install) and the plain baseline table.
INSERT INTO rls_tenancy.tenants (slug, name)
SELECT 'pgbench-' || n, 'pgbench ' || n FROM generate_series(1, 8) AS n;
\ir plain_table.sql
