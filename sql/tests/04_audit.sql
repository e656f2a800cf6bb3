-- pgTAP: the audit log's rights: read your own, write only through log_event().
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);

SELECT ok(has_table_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.audit_log', 'SELECT'),
          'the application role reads the audit log (its tenant''s rows, by policy)');
SELECT ok(NOT has_table_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.audit_log', 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'),
          'the application role has no write privilege on the audit log');
SELECT ok(NOT has_table_privilege(rls_tenancy.role_name('bypass'), 'rls_tenancy.audit_log', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'neither has the bypass role');
SELECT ok((SELECT prosecdef FROM pg_proc WHERE oid = 'rls_tenancy.log_event(text, text, jsonb, inet, text)'::regprocedure),
          'log_event() is SECURITY DEFINER');
SELECT ok(has_function_privilege(rls_tenancy.role_name('app'), 'rls_tenancy.log_event(text, text, jsonb, inet, text)', 'EXECUTE'),
          'the application role may call log_event()');
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = 'rls_tenancy.audit_log'::regclass),
          'the audit log forces row level security');
SELECT set_eq($$SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'rls_tenancy.audit_log'::regclass AND tgenabled = 'O'$$,
              ARRAY['audit_log_stamp', 'audit_log_append_only', 'audit_log_content_fixed', 'audit_log_no_delete', 'audit_log_no_truncate', 'audit_log_seal'],
              'the audit log''s guard triggers are all enabled');
SELECT lives_ok($$SELECT rls_tenancy.log_event('pgtap.check', 'written inside a rolled-back test')$$,
                'log_event() writes an event');
SELECT throws_ok($$UPDATE rls_tenancy.audit_log SET message = 'changed' WHERE action = 'pgtap.check'$$,
                 '42501', NULL, 'even a superuser''s UPDATE is refused by the append-only triggers, before the event is sealed too');
SELECT throws_ok($$DELETE FROM rls_tenancy.audit_log WHERE action = 'pgtap.check'$$,
                 '42501', NULL, 'and so is a DELETE');

SELECT * FROM finish();
ROLLBACK;
