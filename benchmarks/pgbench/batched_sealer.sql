-- A prototype, for measurement only (python -m benchmarks.audit_parts); no
-- migration installs it. The alternative to sealing each event as its
-- transaction commits: events committed unsealed (the seal trigger
-- disabled), then chained in batches by this function, called by a sealer
-- beside the writers. It seals the chains numbered from first_chain on, in
-- id order, exactly as the shipped seal would (the same hash, seq and head),
-- so rls_tenancy.verify_audit_chain() checks what it wrote. Run as a
-- superuser on a database migrated with `rls-tenancy migrate`.
CREATE OR REPLACE FUNCTION public.bench_seal_pending(first_chain bigint) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r       record;
    v_chain bigint;
    v_seq   bigint;
    v_prev  bytea;
    v_last  bigint;
    v_hash  bytea;
    ids     bigint[] := '{}';
    seqs    bigint[] := '{}';
    prevs   bytea[] := '{}';
    hashes  bytea[] := '{}';
BEGIN
    -- One sealer at a time: another would chain the same events again.
    PERFORM pg_advisory_xact_lock(hashtext('bench_seal_pending'));
    FOR r IN SELECT * FROM rls_tenancy.audit_log l
              WHERE l.hash IS NULL AND l.tenant_id >= first_chain ORDER BY l.tenant_id, l.id LOOP
        IF v_chain IS DISTINCT FROM r.tenant_id THEN
            IF v_chain IS NOT NULL THEN
                UPDATE rls_tenancy.audit_chain_heads h SET seq = v_seq, hash = v_prev, last_id = v_last
                 WHERE h.chain = v_chain;
            END IF;
            v_chain := r.tenant_id;
            INSERT INTO rls_tenancy.audit_chain_heads (chain) VALUES (v_chain) ON CONFLICT DO NOTHING;
            SELECT h.seq, h.hash INTO v_seq, v_prev FROM rls_tenancy.audit_chain_heads h
             WHERE h.chain = v_chain FOR UPDATE;
        END IF;
        v_seq := v_seq + 1;
        v_hash := rls_tenancy.audit_event_hash(r.id, r.tenant_id, v_seq, r.user_id, r.db_role, r.action,
                                               r.message, r.ip, r.request_id, r.data, r.created_at, v_prev);
        ids := ids || r.id;
        seqs := seqs || v_seq;
        prevs := prevs || v_prev;
        hashes := hashes || v_hash;
        v_prev := v_hash;
        v_last := r.id;
    END LOOP;
    IF v_chain IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE rls_tenancy.audit_chain_heads h SET seq = v_seq, hash = v_prev, last_id = v_last WHERE h.chain = v_chain;
    UPDATE rls_tenancy.audit_log l SET seq = u.seq, prev_hash = u.prev, hash = u.hash
      FROM unnest(ids, seqs, prevs, hashes) AS u(id, seq, prev, hash) WHERE l.id = u.id;
    RETURN cardinality(ids);
END
$fn$;
-- It needs, while it runs, an index that finds what is left to seal without
-- reading the whole log (audit_parts creates it for its step, then drops it,
-- as the shipped seal pays for every index on the log):
--   CREATE INDEX bench_audit_log_unsealed ON rls_tenancy.audit_log (tenant_id, id) WHERE hash IS NULL;
