-- pgTAP: the application role cannot signal other sessions or create large objects (sql/014_side_channels.sql).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(2);

SELECT is_empty($$SELECT f::regprocedure::text
                    FROM unnest(ARRAY['pg_catalog.pg_cancel_backend(integer)',
                                      'pg_catalog.pg_terminate_backend(integer, bigint)']::regprocedure[]) AS f
                   WHERE has_function_privilege(rls_tenancy.role_name('app'), f, 'EXECUTE')$$,
                'the application role may not cancel or end sessions of its own role (other tenants'' requests)');
SELECT is_empty($$SELECT f::regprocedure::text
                    FROM unnest(ARRAY['pg_catalog.lo_creat(integer)', 'pg_catalog.lo_create(oid)',
                                      'pg_catalog.lo_from_bytea(oid, bytea)']::regprocedure[]) AS f
                   WHERE has_function_privilege(rls_tenancy.role_name('app'), f, 'EXECUTE')$$,
                'the application role may not create large objects, which every tenant could read');

SELECT * FROM finish();
ROLLBACK;
