-- The prototype's sealer (batched_sealer.sql): every 20 ms, chain what the
-- writers of audited_later.sql committed since.
SELECT public.bench_seal_pending(9);
\sleep 20 ms
