-- audited.sql for tenants 9 to 16, whose chains only the prototype of
-- batched_sealer.sql seals: one audit event per transaction, each pgbench
-- client as a tenant of its own.
\set t :client_id + 9
BEGIN;
SELECT set_config('app.current_tenant', :t::text, true);
SELECT rls_tenancy.log_event('bench.event', 'an audited event', '{"n": 1}'::jsonb, NULL, NULL);
COMMIT;
