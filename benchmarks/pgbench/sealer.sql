-- The prototype's sealer (batched_sealer.sql): every 20 ms, chain what the
-- writers committed since on the tenants from :first on (pgbench -D first=N).
SELECT public.bench_seal_pending(:first);
\sleep 20 ms
