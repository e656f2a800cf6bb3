-- One plain insert per transaction, each pgbench client as a tenant of its own.
\set t :client_id + 1
BEGIN;
SELECT set_config('app.current_tenant', :t::text, true);
INSERT INTO public.bench_plain_audit (action, message, data) VALUES ('bench.event', 'a plain event', '{"n": 1}');
COMMIT;
