-- pgTAP: the three roles are what rls_tenancy needs them to be.
-- Run: pg_prove -d <database> sql/tests/*.sql   (as a superuser; pgTAP is created and rolled back)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);

SELECT ok((SELECT NOT rolsuper AND NOT rolbypassrls AND rolcanlogin AND NOT rolcreaterole
             FROM pg_roles WHERE rolname = rls_tenancy.role_name('app')),
          'the application role logs in and is neither superuser, BYPASSRLS nor CREATEROLE');
SELECT ok((SELECT NOT rolsuper AND rolbypassrls AND rolcanlogin FROM pg_roles WHERE rolname = rls_tenancy.role_name('bypass')),
          'the bypass role logs in with BYPASSRLS and is not a superuser');
SELECT ok((SELECT NOT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls FROM pg_roles WHERE rolname = rls_tenancy.role_name('owner')),
          'the owner role cannot log in and cannot escape row level security');
SELECT ok(NOT pg_has_role(rls_tenancy.role_name('app'), rls_tenancy.role_name('owner'), 'MEMBER'),
          'the application role is not a member of the owner role');
SELECT ok(NOT pg_has_role(rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'), 'MEMBER'),
          'the application role is not a member of the bypass role');
SELECT is_empty($$SELECT r.rolname FROM pg_roles r
                   WHERE (r.rolsuper OR r.rolbypassrls) AND r.rolname <> rls_tenancy.role_name('app')
                     AND pg_has_role(rls_tenancy.role_name('app'), r.oid, 'MEMBER')$$,
                'the application role is a member of no superuser or BYPASSRLS role');
SELECT is((SELECT count(*)::int FROM rls_tenancy.roles), 3, 'three roles are recorded');
SELECT ok(has_schema_privilege(rls_tenancy.role_name('app'), 'rls_tenancy', 'USAGE')
          AND NOT has_schema_privilege(rls_tenancy.role_name('app'), 'rls_tenancy', 'CREATE'),
          'the application role may use the library schema and create nothing in it');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = 'rls_tenancy' AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = rls_tenancy.role_name('owner'))),
          'the owner role owns every library table, view and sequence');

SELECT * FROM finish();
ROLLBACK;
