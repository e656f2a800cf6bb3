-- pgTAP: SECURITY DEFINER functions of the library are pinned and closed to PUBLIC.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(4);

SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'rls_tenancy' AND p.prosecdef
                     AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search\_path=%')$$,
                'every SECURITY DEFINER function of rls_tenancy fixes its search_path');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'rls_tenancy'
                     AND has_function_privilege('public', p.oid, 'EXECUTE')$$,
                'no rls_tenancy function is executable by PUBLIC');
SELECT ok(has_function_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.tenant_id_for_slug(text)', 'EXECUTE'),
          'the application role may look up one tenant by slug');
SELECT ok(NOT has_table_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.tenants', 'INSERT')
          AND NOT has_table_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.tenants', 'UPDATE')
          AND NOT has_table_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.tenants', 'DELETE'),
          'the application role cannot create, rename or delete tenants');

SELECT * FROM finish();
ROLLBACK;
