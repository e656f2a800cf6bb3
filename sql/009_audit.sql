-- rls_tenancy: the security audit log.
--
-- Append-only and tamper-evident:
--   * Events are written only through rls_tenancy.log_event(), a SECURITY
--     DEFINER function. It takes the tenant and the user from the settings
--     bound to the transaction (app.current_tenant, app.current_user_id), the
--     time from the server clock and the writing role from session_user; the
--     caller supplies only what happened.
--   * The application role may SELECT its own tenant's events (row level
--     security) and nothing else: no INSERT, UPDATE, DELETE or TRUNCATE.
--   * A trigger refuses UPDATE, DELETE and TRUNCATE even for the owner. Old
--     events leave only through rls_tenancy.purge_audit_log(retention),
--     which records what it removed as an event of its own.
--   * Each tenant's events form a hash chain (events without a tenant form
--     one more chain). An event is sealed when its transaction commits, by a
--     deferred trigger that takes the chain's head row lock: writers of one
--     tenant serialize only while committing, writers of different tenants
--     never wait for each other, and an event rolled back leaves no gap.
--     rls_tenancy.verify_audit_chain(tenant) finds the first broken link.
--
-- The hash of an event is SHA-256 over the UTF-8 bytes of
--     'rls_tenancy.audit.v1'
-- followed by twelve fields, each as a 4-byte big-endian length and its
-- bytes, or the length -1 (ff ff ff ff) and no bytes for NULL:
--     id, tenant_id, seq, user_id (decimal text), db_role, action, message,
--     ip (host address text, no mask), request_id, data (jsonb text form),
--     created_at (microseconds since 1970-01-01 UTC, decimal text),
--     prev_hash (the 32 raw bytes of the previous event's hash).
-- Nothing in it depends on the session's time zone or settings, so a
-- verifier outside the database can recompute it.
--
-- What it does not protect against: a superuser (or the owner role) can
-- disable the triggers and rewrite a whole chain consistently. Anchor chain
-- heads outside the database (rls_tenancy.audit_chain_heads(), exported
-- regularly to write-once storage) to detect that.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

-- Chain 0 is the chain of events without a tenant, so no tenant may have id 0.
DO $positive$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'rls_tenancy.tenants'::regclass AND conname = 'tenants_id_positive') THEN
        ALTER TABLE rls_tenancy.tenants ADD CONSTRAINT tenants_id_positive CHECK (id > 0);
    END IF;
END
$positive$;

CREATE TABLE IF NOT EXISTS rls_tenancy.audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint,
    user_id    bigint,
    db_role    text NOT NULL,
    action     text NOT NULL,
    message    text,
    ip         inet,
    request_id text,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    -- Filled when the event's transaction commits.
    seq        bigint,
    prev_hash  bytea,
    hash       bytea,
    CONSTRAINT audit_log_user_needs_tenant CHECK (user_id IS NULL OR tenant_id IS NOT NULL),
    CONSTRAINT audit_log_sealed CHECK ((seq IS NULL) = (hash IS NULL))
) WITH (fillfactor = 90);  -- room for the seal to be a HOT update
-- What an event may hold is checked once, by the INSERT trigger
-- (audit_log_stamp below): its content never changes afterwards, and CHECK
-- constraints would be evaluated again by the seal's UPDATE.
CREATE INDEX IF NOT EXISTS audit_log_tenant_id_id_idx ON rls_tenancy.audit_log (tenant_id, id);
COMMENT ON TABLE rls_tenancy.audit_log IS
    'Security audit events, append-only, one hash chain per tenant; written only through log_event().';

-- One row per chain: the last sealed event, and where purging cut the chain.
CREATE TABLE IF NOT EXISTS rls_tenancy.audit_chain_heads (
    chain       bigint PRIMARY KEY,          -- the tenant id; 0 for events without a tenant
    seq         bigint NOT NULL DEFAULT 0,   -- seq of the last sealed event
    hash        bytea,                       -- its hash
    last_id     bigint,                      -- its id
    anchor_seq  bigint NOT NULL DEFAULT 0,   -- events up to this seq were purged
    anchor_hash bytea                        -- hash of the last purged event
);
COMMENT ON TABLE rls_tenancy.audit_chain_heads IS
    'Head of each audit hash chain; the row lock serializes sealing within one chain.';
REVOKE ALL ON rls_tenancy.audit_chain_heads FROM PUBLIC;

ALTER TABLE rls_tenancy.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE rls_tenancy.audit_log FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS audit_tenant_read ON rls_tenancy.audit_log;
DO $policy$
BEGIN
    EXECUTE pg_catalog.format('CREATE POLICY audit_tenant_read ON rls_tenancy.audit_log FOR SELECT USING (%s)',
                              rls_tenancy.tenant_condition_on('tenant_id', false));
END
$policy$;
-- The owner never logs in; this is for the functions below, which run as it.
DO $policy$
BEGIN
    EXECUTE 'DROP POLICY IF EXISTS audit_owner ON rls_tenancy.audit_log';
    EXECUTE pg_catalog.format('CREATE POLICY audit_owner ON rls_tenancy.audit_log TO %I USING (true) WITH CHECK (true)',
                              rls_tenancy.role_name('owner'));
END
$policy$;

-- One field of the encoding above.
CREATE OR REPLACE FUNCTION rls_tenancy.audit_field(value bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- value appears twice, not three times: the seal inlines this for twelve
-- fields, and each copy of an argument is executor state built per event.
RETURN coalesce(pg_catalog.int4send(pg_catalog.octet_length(value)) || value, '\xffffffff'::bytea);  -- -1 for NULL
COMMENT ON FUNCTION rls_tenancy.audit_field(bytea) IS
    'One field of an audit event''s canonical encoding: 4-byte length (-1 for NULL), then the bytes.';

-- The hash of one event: one expression, without a subquery, so that the
-- planner inlines it into the seal rather than calling it for each event.
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
COMMENT ON FUNCTION rls_tenancy.audit_event_hash(bigint, bigint, bigint, bigint, text, text, text, inet, text, jsonb, timestamptz, bytea) IS
    'SHA-256 of an audit event''s canonical encoding (rls_tenancy.audit.v1), chained through prev_hash.';

-- Every INSERT, log_event's or the owner's own: what the event holds is
-- checked here, once, and whatever the INSERT says, the server decides the
-- time and leaves the event unsealed.
CREATE OR REPLACE FUNCTION rls_tenancy.audit_log_stamp()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NEW.action IS NULL OR NEW.action !~ '^[a-z][a-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'rls_tenancy: invalid audit action %', pg_catalog.quote_nullable(pg_catalog.left(NEW.action, 80))
            USING ERRCODE = '22023',
                  HINT = 'An action is 1 to 64 characters: lower-case letters, digits, "_", ".", ":" or "-", starting with a letter.';
    END IF;
    IF pg_catalog.length(NEW.message) > 4000 THEN
        RAISE EXCEPTION 'rls_tenancy: audit message too long (% characters, at most 4000)', pg_catalog.length(NEW.message)
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.jsonb_typeof(NEW.data) <> 'object' THEN
        RAISE EXCEPTION 'rls_tenancy: audit data must be a JSON object, not %', pg_catalog.jsonb_typeof(NEW.data)
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.octet_length(NEW.data::text) > 16384 THEN
        RAISE EXCEPTION 'rls_tenancy: audit data too large (% bytes as JSON, at most 16384)', pg_catalog.octet_length(NEW.data::text)
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.masklen(NEW.ip) <> (CASE pg_catalog.family(NEW.ip) WHEN 4 THEN 32 ELSE 128 END) THEN
        RAISE EXCEPTION 'rls_tenancy: audit ip must be one host address, not the network %', NEW.ip
            USING ERRCODE = '22023';
    END IF;
    IF NEW.request_id !~ '^[!-~]{1,128}$' THEN
        RAISE EXCEPTION 'rls_tenancy: invalid audit request id'
            USING ERRCODE = '22023', HINT = 'A request id is 1 to 128 printable ASCII characters without spaces.';
    END IF;
    NEW.created_at := pg_catalog.clock_timestamp();
    NEW.seq := NULL;
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    RETURN NEW;
END
$fn$;

-- Append-only: every UPDATE, DELETE and TRUNCATE that reaches this is refused.
-- The triggers below let one UPDATE through without calling it: the seal.
CREATE OR REPLACE FUNCTION rls_tenancy.audit_log_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE EXCEPTION 'rls_tenancy: the audit log is append-only; % refused', TG_OP
        USING ERRCODE = '42501',
              HINT = 'Old events are removed only by rls_tenancy.purge_audit_log(retention).';
END
$fn$;

-- Seal one event at commit: next seq of its chain, link to the chain's head.
-- One statement: the head locked, the hash computed once, the event and the
-- head written (each statement a trigger runs starts an executor of its own).
-- Under READ COMMITTED, a concurrent seal of the same chain makes FOR UPDATE
-- wait and then read the head that seal left.
CREATE OR REPLACE FUNCTION rls_tenancy.seal_audit_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    chain_key bigint := coalesce(NEW.tenant_id, 0);
    sealed    bigint;
BEGIN
    FOR attempt IN 1..2 LOOP
        WITH head AS (
            SELECT h.seq + 1 AS seq, h.hash AS prev_hash
              FROM rls_tenancy.audit_chain_heads h WHERE h.chain = chain_key FOR UPDATE
        ), link AS (
            SELECT head.seq, head.prev_hash,
                   rls_tenancy.audit_event_hash(
                       NEW.id, NEW.tenant_id, head.seq, NEW.user_id, NEW.db_role, NEW.action, NEW.message,
                       NEW.ip, NEW.request_id, NEW.data, NEW.created_at, head.prev_hash) AS hash
              FROM head
        ), event AS (
            UPDATE rls_tenancy.audit_log l SET seq = link.seq, prev_hash = link.prev_hash, hash = link.hash
              FROM link WHERE l.id = NEW.id
            RETURNING l.seq, l.hash
        )
        UPDATE rls_tenancy.audit_chain_heads h SET seq = event.seq, hash = event.hash, last_id = NEW.id
          FROM event WHERE h.chain = chain_key;
        GET DIAGNOSTICS sealed = ROW_COUNT;
        IF sealed = 1 THEN
            RETURN NULL;
        END IF;
        -- The chain's first event: start its head, then seal again.
        INSERT INTO rls_tenancy.audit_chain_heads (chain) VALUES (chain_key) ON CONFLICT DO NOTHING;
    END LOOP;
    -- Its head was created by a concurrent transaction this snapshot cannot see.
    RAISE EXCEPTION 'rls_tenancy: audit chain % was started concurrently; retry the transaction', chain_key
        USING ERRCODE = '40001';
END
$fn$;

DROP TRIGGER IF EXISTS audit_log_stamp ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_stamp BEFORE INSERT ON rls_tenancy.audit_log
    FOR EACH ROW EXECUTE FUNCTION rls_tenancy.audit_log_stamp();
-- The one UPDATE let through is the seal: it fills the chain fields of an
-- event not yet sealed (so not yet committed, visible only to its own
-- transaction). An UPDATE naming any other column is refused whatever its
-- rows (audit_log_content_fixed: the server skips it for an UPDATE that does
-- not name them, at no cost per row); one that leaves an event unsealed, or
-- touches a sealed one, is refused by audit_log_append_only's WHEN condition.
DROP TRIGGER IF EXISTS audit_log_content_fixed ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_content_fixed
    BEFORE UPDATE OF id, tenant_id, user_id, db_role, action, message, ip, request_id, data, created_at
    ON rls_tenancy.audit_log
    FOR EACH ROW EXECUTE FUNCTION rls_tenancy.audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_append_only ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON rls_tenancy.audit_log
    FOR EACH ROW
    WHEN (OLD.hash IS NOT NULL OR NEW.hash IS NULL)
    EXECUTE FUNCTION rls_tenancy.audit_log_append_only();
-- DELETE is refused unless purge_audit_log runs it: as the owner role (its SECURITY DEFINER), with
-- rls_tenancy.purging set for its transaction. Whoever else could delete (a superuser, a role granted
-- DELETE by mistake) is refused whatever it sets; the owner could disable the trigger anyway. In the
-- WHEN condition, so a purge's deletes call no function, and no ALTER TABLE locks writers out.
DROP TRIGGER IF EXISTS audit_log_no_delete ON rls_tenancy.audit_log;
DO $trigger$
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON rls_tenancy.audit_log FOR EACH ROW '
        'WHEN (pg_catalog.current_setting(''rls_tenancy.purging'', true) IS DISTINCT FROM ''on'' '
        'OR CURRENT_USER <> %L) EXECUTE FUNCTION rls_tenancy.audit_log_append_only()',
        rls_tenancy.role_name('owner'));
END
$trigger$;
DROP TRIGGER IF EXISTS audit_log_no_truncate ON rls_tenancy.audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON rls_tenancy.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION rls_tenancy.audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_seal ON rls_tenancy.audit_log;
CREATE CONSTRAINT TRIGGER audit_log_seal AFTER INSERT ON rls_tenancy.audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rls_tenancy.seal_audit_event();

-- The only way in. Returns the new event's id.
CREATE OR REPLACE FUNCTION rls_tenancy.log_event(
    action text, message text DEFAULT NULL, data jsonb DEFAULT NULL, ip inet DEFAULT NULL, request_id text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant bigint := rls_tenancy.current_tenant_id();
    actor  bigint := rls_tenancy.current_user_id();
    logged bigint;
BEGIN
    -- What the event holds is checked by the INSERT's trigger (audit_log_stamp).
    IF actor IS NOT NULL AND tenant IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: a user (%) is bound without a tenant', actor USING ERRCODE = '42501';
    END IF;
    -- The bound tenant and user must exist, checked in the INSERT itself. users is
    -- under row level security (FORCE): as the owner, this sees the bound tenant's users only.
    INSERT INTO rls_tenancy.audit_log AS l (tenant_id, user_id, db_role, action, message, ip, request_id, data)
    SELECT tenant, actor, session_user, log_event.action, log_event.message, log_event.ip,
           log_event.request_id, coalesce(log_event.data, '{}')
     WHERE (tenant IS NULL OR EXISTS (SELECT 1 FROM rls_tenancy.tenants t WHERE t.id = tenant))
       AND (actor IS NULL OR EXISTS (SELECT 1 FROM rls_tenancy.users u WHERE u.id = actor AND u.tenant_id = tenant))
    RETURNING l.id INTO logged;
    IF logged IS NOT NULL THEN
        RETURN logged;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM rls_tenancy.tenants t WHERE t.id = tenant) THEN
        RAISE EXCEPTION 'rls_tenancy: the bound tenant % does not exist', tenant USING ERRCODE = '42501';
    END IF;
    RAISE EXCEPTION 'rls_tenancy: the bound user % is not a user of tenant %', actor, tenant USING ERRCODE = '42501';
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.log_event(text, text, jsonb, inet, text) IS
    'Write an audit event for the tenant and user bound to this transaction; returns its id.';

-- The first broken link of one chain (tenant NULL: events without a tenant), or no row.
-- The application role may verify only the tenant bound to its transaction.
CREATE OR REPLACE FUNCTION rls_tenancy.verify_audit_chain(tenant bigint)
RETURNS TABLE (event_id bigint, chain_seq bigint, problem text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    head          record;
    event         record;
    expected_seq  bigint;
    expected_prev bytea;
BEGIN
    IF (tenant IS NULL OR tenant IS DISTINCT FROM rls_tenancy.current_tenant_id())
       AND NOT pg_catalog.pg_has_role(session_user, rls_tenancy.role_name('bypass'), 'USAGE')
       AND NOT pg_catalog.pg_has_role(session_user, rls_tenancy.role_name('owner'), 'USAGE') THEN
        RAISE EXCEPTION 'rls_tenancy: % may verify only the audit chain of the tenant bound to its transaction', session_user
            USING ERRCODE = '42501';
    END IF;
    SELECT * INTO head FROM rls_tenancy.audit_chain_heads h WHERE h.chain = coalesce(tenant, 0);
    IF NOT FOUND THEN
        SELECT l.id, l.seq INTO event FROM rls_tenancy.audit_log l
         WHERE (l.tenant_id = tenant OR (tenant IS NULL AND l.tenant_id IS NULL)) AND l.seq IS NOT NULL
         ORDER BY l.seq LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT event.id, event.seq, 'the chain has events but no recorded head'::text;
        END IF;
        RETURN;
    END IF;
    expected_seq := head.anchor_seq + 1;
    expected_prev := head.anchor_hash;
    FOR event IN
        SELECT l.* FROM rls_tenancy.audit_log l
         WHERE (l.tenant_id = tenant OR (tenant IS NULL AND l.tenant_id IS NULL)) AND l.seq IS NOT NULL
         ORDER BY l.seq, l.id
    LOOP
        IF event.seq <> expected_seq THEN
            RETURN QUERY SELECT event.id, event.seq,
                pg_catalog.format('expected event %s of the chain here: events were removed or added', expected_seq);
            RETURN;
        END IF;
        IF event.prev_hash IS DISTINCT FROM expected_prev THEN
            RETURN QUERY SELECT event.id, event.seq, 'does not link to the event before it'::text;
            RETURN;
        END IF;
        IF event.hash IS DISTINCT FROM rls_tenancy.audit_event_hash(
               event.id, event.tenant_id, event.seq, event.user_id, event.db_role, event.action, event.message,
               event.ip, event.request_id, event.data, event.created_at, event.prev_hash) THEN
            RETURN QUERY SELECT event.id, event.seq, 'its content does not match its hash: changed after it was written'::text;
            RETURN;
        END IF;
        expected_seq := expected_seq + 1;
        expected_prev := event.hash;
    END LOOP;
    IF expected_seq - 1 <> head.seq OR expected_prev IS DISTINCT FROM head.hash THEN
        RETURN QUERY SELECT head.last_id, head.seq,
            pg_catalog.format('the chain stops at event %s but its head records %s: events at the end were removed',
                              expected_seq - 1, head.seq);
    END IF;
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.verify_audit_chain(bigint) IS
    'First broken link of a tenant''s audit chain (NULL: events without a tenant), or no row when intact.';

-- Every chain: one row each, problem NULL when intact.
CREATE OR REPLACE FUNCTION rls_tenancy.verify_audit_chains()
RETURNS TABLE (tenant_id bigint, events bigint, event_id bigint, chain_seq bigint, problem text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH chains AS (
        SELECT h.chain FROM rls_tenancy.audit_chain_heads h
        UNION
        SELECT DISTINCT coalesce(l.tenant_id, 0) FROM rls_tenancy.audit_log l WHERE l.seq IS NOT NULL
    )
    SELECT nullif(c.chain, 0),
           (SELECT count(*) FROM rls_tenancy.audit_log l
             WHERE (l.tenant_id = c.chain OR (c.chain = 0 AND l.tenant_id IS NULL)) AND l.seq IS NOT NULL),
           v.event_id, v.chain_seq, v.problem
      FROM chains c
      LEFT JOIN LATERAL rls_tenancy.verify_audit_chain(nullif(c.chain, 0)) v ON true
     ORDER BY c.chain
$fn$;
COMMENT ON FUNCTION rls_tenancy.verify_audit_chains() IS
    'Verify every audit chain: one row per chain, problem NULL when intact.';

-- The head of every chain, to copy outside the database (anchoring).
CREATE OR REPLACE FUNCTION rls_tenancy.audit_chain_heads()
RETURNS TABLE (tenant_id bigint, seq bigint, hash bytea, last_id bigint, anchor_seq bigint, anchor_hash bytea)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT nullif(h.chain, 0), h.seq, h.hash, h.last_id, h.anchor_seq, h.anchor_hash
      FROM rls_tenancy.audit_chain_heads h ORDER BY h.chain
$fn$;
COMMENT ON FUNCTION rls_tenancy.audit_chain_heads() IS
    'Head of every audit chain (tenant NULL: events without a tenant); export these to anchor the chains.';

-- The hash of one sealed event of a chain, for checking an exported anchor;
-- for the event where purging cut the chain, its recorded hash; else NULL.
CREATE OR REPLACE FUNCTION rls_tenancy.audit_hash_at(tenant bigint, at_seq bigint)
RETURNS bytea
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(
        (SELECT l.hash FROM rls_tenancy.audit_log l
          WHERE (l.tenant_id = tenant OR (tenant IS NULL AND l.tenant_id IS NULL)) AND l.seq = at_seq),
        (SELECT h.anchor_hash FROM rls_tenancy.audit_chain_heads h
          WHERE h.chain = coalesce(tenant, 0) AND h.anchor_seq = at_seq))
$fn$;

-- Remove events older than retention (at least one day), chain by chain
-- from the start, and record each cut as an 'audit.purged' event of that
-- chain. Writers are not locked out: the cuts, their anchors and the events
-- to remove are read first, holding no lock a writer waits for; then the
-- heads are updated (a writer of a purged chain waits for that at its
-- commit, as for another writer's seal) and the events deleted by id, which
-- costs what is removed. Purges run one at a time (an advisory lock).
CREATE OR REPLACE FUNCTION rls_tenancy.purge_audit_log(retention interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cutoff  timestamptz;
    cuts    jsonb;
    doomed  bigint[];
    counts  jsonb;
    removed bigint;
BEGIN
    IF retention IS NULL OR retention < interval '1 day' THEN
        RAISE EXCEPTION 'rls_tenancy: the audit retention must be at least one day, not %', retention
            USING ERRCODE = '22023';
    END IF;
    cutoff := pg_catalog.now() - retention;
    -- Two purges at once would both cut a chain; the second would then anchor on an event the first removed.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('rls_tenancy.purge_audit_log'));
    -- Per chain, the longest prefix whose events are all older than the cutoff: seq is commit order and
    -- created_at insert time, so a newer event can sit below an older one. Sealed events never change,
    -- and an event sealed after this read gets a seq above the head read here: the cut stays true.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'chain', c.chain, 'from_seq', c.anchor_seq, 'through_seq', c.through_seq,
               'hash', pg_catalog.encode(c.hash, 'hex')) ORDER BY c.chain), '[]')
      INTO cuts
      FROM (SELECT h.chain, h.anchor_seq, t.through_seq,
                   (SELECT l.hash FROM rls_tenancy.audit_log l
                     WHERE (l.tenant_id = h.chain OR (h.chain = 0 AND l.tenant_id IS NULL))
                       AND l.seq = t.through_seq) AS hash
              FROM rls_tenancy.audit_chain_heads h
             CROSS JOIN LATERAL (
                   SELECT coalesce((SELECT min(l.seq) - 1 FROM rls_tenancy.audit_log l
                                     WHERE (l.tenant_id = h.chain OR (h.chain = 0 AND l.tenant_id IS NULL))
                                       AND l.seq IS NOT NULL AND l.created_at >= cutoff),
                                   h.seq) AS through_seq) AS t
             WHERE t.through_seq > h.anchor_seq) AS c;
    SELECT pg_catalog.array_agg(l.id) INTO doomed
      FROM pg_catalog.jsonb_array_elements(cuts) AS c
      JOIN rls_tenancy.audit_log l
        ON (l.tenant_id = (c ->> 'chain')::bigint OR ((c ->> 'chain')::bigint = 0 AND l.tenant_id IS NULL))
       AND l.seq > (c ->> 'from_seq')::bigint AND l.seq <= (c ->> 'through_seq')::bigint;
    IF doomed IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE rls_tenancy.audit_chain_heads h
       SET anchor_seq = (c ->> 'through_seq')::bigint, anchor_hash = pg_catalog.decode(c ->> 'hash', 'hex')
      FROM pg_catalog.jsonb_array_elements(cuts) AS c
     WHERE h.chain = (c ->> 'chain')::bigint;
    PERFORM pg_catalog.set_config('rls_tenancy.purging', 'on', true);
    WITH gone AS (
        DELETE FROM rls_tenancy.audit_log l WHERE l.id = ANY (doomed) RETURNING coalesce(l.tenant_id, 0) AS chain
    )
    SELECT coalesce(pg_catalog.jsonb_object_agg(g.chain, g.n), '{}') INTO counts
      FROM (SELECT gone.chain, count(*) AS n FROM gone GROUP BY gone.chain) AS g;
    PERFORM pg_catalog.set_config('rls_tenancy.purging', '', true);
    INSERT INTO rls_tenancy.audit_log (tenant_id, user_id, db_role, action, message, data)
    SELECT nullif((c ->> 'chain')::bigint, 0), NULL, session_user, 'audit.purged',
           pg_catalog.format('%s events older than %s removed', n, cutoff),
           pg_catalog.jsonb_build_object('removed', n, 'through_seq', (c ->> 'through_seq')::bigint,
                                         'older_than', cutoff, 'retention', retention::text)
      FROM pg_catalog.jsonb_array_elements(cuts) AS c
     CROSS JOIN LATERAL (SELECT coalesce((counts ->> (c ->> 'chain'))::bigint, 0) AS n) AS counted;
    SELECT coalesce(sum(value::bigint), 0) INTO removed FROM pg_catalog.jsonb_each_text(counts);
    RETURN removed;
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.purge_audit_log(interval) IS
    'Remove audit events older than retention (>= 1 day); each cut is recorded as an audit.purged event.';

REVOKE ALL ON rls_tenancy.audit_log FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_event_hash(bigint, bigint, bigint, bigint, text, text, text, inet, text, jsonb, timestamptz, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_field(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_log_stamp() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_log_append_only() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.seal_audit_event() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.log_event(text, text, jsonb, inet, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.verify_audit_chain(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.verify_audit_chains() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_chain_heads() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.audit_hash_at(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.purge_audit_log(interval) FROM PUBLIC;

DO $grant$
DECLARE
    app_role    name := rls_tenancy.role_name('app');
    bypass_role name := rls_tenancy.role_name('bypass');
BEGIN
    EXECUTE pg_catalog.format('GRANT SELECT ON rls_tenancy.audit_log TO %I, %I', app_role, bypass_role);
    EXECUTE pg_catalog.format(
        'GRANT EXECUTE ON FUNCTION rls_tenancy.log_event(text, text, jsonb, inet, text), '
        'rls_tenancy.verify_audit_chain(bigint), '
        'rls_tenancy.audit_event_hash(bigint, bigint, bigint, bigint, text, text, text, inet, text, jsonb, timestamptz, bytea), '
        'rls_tenancy.audit_field(bytea) '
        'TO %I, %I', app_role, bypass_role);
    EXECUTE pg_catalog.format(
        'GRANT EXECUTE ON FUNCTION rls_tenancy.verify_audit_chains(), rls_tenancy.audit_chain_heads(), '
        'rls_tenancy.audit_hash_at(bigint, bigint), rls_tenancy.purge_audit_log(interval) TO %I', bypass_role);
END
$grant$;

RESET ROLE;
