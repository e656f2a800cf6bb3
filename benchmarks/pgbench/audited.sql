-- One audit event per transaction, each pgbench client as a tenant of its own.
\set t :client_id + 1
BEGIN;
SELECT set_config('app.current_tenant', :t::text, true);
SELECT rls_tenancy.log_event('bench.event', 'an audited event', '{"n": 1}'::jsonb, NULL, NULL);
COMMIT;
