-- rls_tenancy: a cheaper seal for the audit log, with the same hashes.
--
-- * audit_event_hash() builds the canonical encoding as one expression
--   (each field: its length as a 4-byte big-endian integer, -1 for NULL,
--   then its bytes), where 009_audit.sql aggregated over unnest(). A body
--   without a subquery is inlined by the planner into the seal, instead of
--   being run as a function call of its own for every event. The bytes, so
--   the hashes, are identical: chains written before and after verify alike.
-- * The append-only trigger checks an UPDATE in its WHEN condition, so the
--   one UPDATE ever allowed (the seal) no longer calls a PL/pgSQL function;
--   any other UPDATE still reaches the function and is refused. DELETE has a
--   trigger of its own, as a WHEN condition cannot name NEW for it.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.audit_field(value bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN value IS NULL THEN pg_catalog.int4send(-1)
            ELSE pg_catalog.int4send(pg_catalog.octet_length(value)) || value END;
COMMENT ON FUNCTION rls_tenancy.audit_field(bytea) IS
    'One field of an audit event''s canonical encoding: 4-byte length (-1 for NULL), then the bytes.';
REVOKE ALL ON FUNCTION rls_tenancy.audit_field(bytea) FROM PUBLIC;
DO $grant$
BEGIN  -- whoever may compute a hash (009_audit.sql grants audit_event_hash) needs its parts
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.audit_field(bytea) TO %I, %I',
                              rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$grant$;

CREATE OR REPLACE FUNCTION rls_tenancy.audit_event_hash(
    id bigint, tenant_id bigint, seq bigint, user_id bigint, db_role text, action text, message text,
    ip inet, request_id text, data jsonb, created_at timestamptz, prev_hash bytea
)
RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.sha256(
    pg_catalog.convert_to('rls_tenancy.audit.v1', 'UTF8')
    || rls_tenancy.audit_field(pg_catalog.convert_to(id::text, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(tenant_id::text, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(seq::text, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(user_id::text, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(db_role, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(action, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(message, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(pg_catalog.host(ip), 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(request_id, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to(data::text, 'UTF8'))
    || rls_tenancy.audit_field(pg_catalog.convert_to((EXTRACT(epoch FROM created_at) * 1000000)::bigint::text, 'UTF8'))
    || rls_tenancy.audit_field(prev_hash));

DROP TRIGGER IF EXISTS audit_log_append_only ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON rls_tenancy.audit_log
    FOR EACH ROW
    WHEN (NOT (OLD.hash IS NULL AND NEW.hash IS NOT NULL
               AND (NEW.id, NEW.tenant_id, NEW.user_id, NEW.db_role, NEW.action, NEW.message,
                    NEW.ip, NEW.request_id, NEW.data, NEW.created_at)
                   IS NOT DISTINCT FROM
                   (OLD.id, OLD.tenant_id, OLD.user_id, OLD.db_role, OLD.action, OLD.message,
                    OLD.ip, OLD.request_id, OLD.data, OLD.created_at)))
    EXECUTE FUNCTION rls_tenancy.audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_delete ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON rls_tenancy.audit_log
    FOR EACH ROW EXECUTE FUNCTION rls_tenancy.audit_log_append_only();

-- purge_audit_log() as in 009_audit.sql, lifting the DELETE trigger only (an
-- UPDATE stays refused while it runs).
-- Remove events older than retention (at least one day), chain by chain
-- from the start, and record each cut as an 'audit.purged' event of that
-- chain. Locks the log against writers while it runs.
CREATE OR REPLACE FUNCTION rls_tenancy.purge_audit_log(retention interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    cutoff  timestamptz;
    cut     record;
    cuts    jsonb := '[]';
    removed bigint;
    total   bigint := 0;
BEGIN
    IF retention IS NULL OR retention < interval '1 day' THEN
        RAISE EXCEPTION 'rls_tenancy: the audit retention must be at least one day, not %', retention
            USING ERRCODE = '22023';
    END IF;
    cutoff := pg_catalog.now() - retention;
    ALTER TABLE rls_tenancy.audit_log DISABLE TRIGGER audit_log_no_delete;
    -- Per chain, the longest prefix whose events are all older than the cutoff: seq is
    -- commit order and created_at insert time, so a newer event can sit below an older one.
    FOR cut IN
        SELECT h.chain,
               coalesce((SELECT min(l.seq) - 1 FROM rls_tenancy.audit_log l
                          WHERE (l.tenant_id = h.chain OR (h.chain = 0 AND l.tenant_id IS NULL))
                            AND l.seq IS NOT NULL AND l.created_at >= cutoff),
                        h.seq) AS through_seq,
               h.anchor_seq
          FROM rls_tenancy.audit_chain_heads h
         ORDER BY h.chain
    LOOP
        CONTINUE WHEN cut.through_seq <= cut.anchor_seq;
        UPDATE rls_tenancy.audit_chain_heads h
           SET anchor_seq = cut.through_seq,
               anchor_hash = (SELECT l.hash FROM rls_tenancy.audit_log l
                               WHERE (l.tenant_id = cut.chain OR (cut.chain = 0 AND l.tenant_id IS NULL))
                                 AND l.seq = cut.through_seq)
         WHERE h.chain = cut.chain;
        DELETE FROM rls_tenancy.audit_log l
         WHERE (l.tenant_id = cut.chain OR (cut.chain = 0 AND l.tenant_id IS NULL)) AND l.seq <= cut.through_seq;
        GET DIAGNOSTICS removed = ROW_COUNT;
        total := total + removed;
        cuts := cuts || pg_catalog.jsonb_build_object('chain', cut.chain, 'through_seq', cut.through_seq, 'removed', removed);
    END LOOP;
    ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER audit_log_no_delete;
    -- After re-enabling: ALTER TABLE refuses while this transaction has events waiting to be sealed.
    INSERT INTO rls_tenancy.audit_log (tenant_id, user_id, db_role, action, message, data)
    SELECT nullif((c ->> 'chain')::bigint, 0), NULL, session_user, 'audit.purged',
           pg_catalog.format('%s events older than %s removed', c ->> 'removed', cutoff),
           pg_catalog.jsonb_build_object('removed', (c ->> 'removed')::bigint,
                                         'through_seq', (c ->> 'through_seq')::bigint,
                                         'older_than', cutoff, 'retention', retention::text)
      FROM pg_catalog.jsonb_array_elements(cuts) AS c;
    RETURN total;
END
$fn$;

RESET ROLE;
