-- pgTAP: every table with a tenant_id is isolated, and the doctor finds no error.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);

SELECT is_empty($$SELECT table_name FROM rls_tenancy.coverage WHERE NOT rls_enabled$$,
                'row level security is enabled on every tenant table');
SELECT is_empty($$SELECT table_name FROM rls_tenancy.coverage WHERE NOT rls_forced$$,
                'row level security is forced on every tenant table (owners included)');
SELECT is_empty($$SELECT table_name FROM rls_tenancy.coverage WHERE tenant_policies IS NULL$$,
                'every tenant table has a policy keyed on the bound tenant');
SELECT is_empty($$SELECT table_name FROM rls_tenancy.coverage WHERE app_truncate OR app_references OR app_trigger$$,
                'the application role holds no TRUNCATE, REFERENCES or TRIGGER on tenant tables');
SELECT is_empty($$SELECT object_name || ': ' || message FROM rls_tenancy.findings() WHERE severity = 'error'$$,
                'rls_tenancy.findings() reports no error');
SELECT is((SELECT provolatile::text FROM pg_proc WHERE oid = 'rls_tenancy.current_tenant_id()'::regprocedure), 's',
          'current_tenant_id() is STABLE, so policies can use an index on tenant_id');
-- Fail closed: with no tenant bound the function is NULL, which no tenant_id equals.
SELECT is(rls_tenancy.current_tenant_id(), NULL, 'no tenant bound means no tenant');

SELECT * FROM finish();
ROLLBACK;
