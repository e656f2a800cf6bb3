-- rls_tenancy: a signed tenant context, checked by PostgreSQL.
--
-- Any SQL the application role runs may call set_config('app.current_tenant',
-- ...). With signing required, the policies and the functions that act for
-- "the bound tenant" or "the bound user" trust the settings only with a proof
-- beside them, app.context_proof, that the application made with a key the
-- application role cannot read:
--
--     <slot>:<issued, Unix ms, 13 digits>:<backend pid, or 0>:<hex of the MAC>
--     MAC = sha256(K || 0x01 || sha256(K || 0x00 || message))
--     message = '<app.current_tenant>|<app.current_user_id>|<issued>:<pid>'
--
-- A nested hash of core PostgreSQL (no contrib module), which resists length
-- extension as HMAC does. K is 128 bits in two sequences of the owner role
-- that no other role may read (pg_sequences shows them NULL and
-- pg_sequence_last_value() refuses): a function body, a SET clause or a
-- setting would show it to every role. Two slots, so that a key can be
-- rotated: install the new key in the free slot, move the applications to
-- it, retire the old one. A proof is worth five minutes around its issue
-- (against the server's clock, at the start of the transaction), and, when
-- it names a backend, on that backend only.
--
-- rls_tenancy.require_signed_context(true) makes it required: it rewrites
-- the isolation policies (the bound tenant's condition, then each row's
-- tenant compared with the tenant an InitPlan proved, once per statement:
-- the setting alone can be changed by SQL partway through its own
-- statement, after the proof was checked) and makes current_tenant_id()
-- and current_user_id() answer the verified ids only. false undoes it.
-- Idempotent; installs nothing that changes behaviour until then.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE SEQUENCE IF NOT EXISTS rls_tenancy.context_key_1a AS bigint MINVALUE -9223372036854775808;
CREATE SEQUENCE IF NOT EXISTS rls_tenancy.context_key_1b AS bigint MINVALUE -9223372036854775808;
CREATE SEQUENCE IF NOT EXISTS rls_tenancy.context_key_2a AS bigint MINVALUE -9223372036854775808;
CREATE SEQUENCE IF NOT EXISTS rls_tenancy.context_key_2b AS bigint MINVALUE -9223372036854775808;
REVOKE ALL ON SEQUENCE rls_tenancy.context_key_1a, rls_tenancy.context_key_1b,
                       rls_tenancy.context_key_2a, rls_tenancy.context_key_2b FROM PUBLIC;

CREATE TABLE IF NOT EXISTS rls_tenancy.context_signing (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    required boolean NOT NULL DEFAULT false
);
INSERT INTO rls_tenancy.context_signing DEFAULT VALUES ON CONFLICT DO NOTHING;
REVOKE ALL ON rls_tenancy.context_signing FROM PUBLIC;

-- Equality of a row's tenant with the proven tenant, for the signed policies: int8eq, estimated by
-- neqsel, which for an operator without a negator answers 0.995 ("nearly every row"). The condition on
-- the setting beside it then keeps the estimates custom plans fold from the bound tenant (the large
-- tenant's plans): with =, the InitPlan's unknown value would count as a second, independent equality
-- (1/n_distinct again). Neither an index key nor an equivalence class is made from it: it is a filter
-- of about 15 ns a row, as the IS NOT NULL check before it was.
DO $operator$
BEGIN
    IF pg_catalog.to_regoperator('rls_tenancy.===(bigint,bigint)') IS NULL THEN
        CREATE OPERATOR rls_tenancy.=== (
            LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pg_catalog.int8eq, RESTRICT = pg_catalog.neqsel);
    END IF;
END
$operator$;
COMMENT ON OPERATOR rls_tenancy.=== (bigint, bigint) IS
    'A row''s tenant equals the proven one (int8eq); estimated as nearly every row, so that the setting''s '
    'condition beside it keeps the plan''s estimates.';

-- The key in a slot; NULL while the slot holds none (a sequence never set reads NULL). VOLATILE, as
-- pg_sequence_last_value() is: a function declared more stable than its body is never inlined.
CREATE OR REPLACE FUNCTION rls_tenancy.context_key(slot integer)
RETURNS bytea
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
RETURN CASE slot
    WHEN 1 THEN pg_catalog.int8send(pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_1a'::pg_catalog.regclass))
                OPERATOR(pg_catalog.||)
                pg_catalog.int8send(pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_1b'::pg_catalog.regclass))
    WHEN 2 THEN pg_catalog.int8send(pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_2a'::pg_catalog.regclass))
                OPERATOR(pg_catalog.||)
                pg_catalog.int8send(pg_catalog.pg_sequence_last_value('rls_tenancy.context_key_2b'::pg_catalog.regclass))
END;

-- STABLE, as convert_to() is, so that it is inlined.
CREATE OR REPLACE FUNCTION rls_tenancy.context_mac(key bytea, message text)
RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.sha256(key OPERATOR(pg_catalog.||) '\x01'::pg_catalog.bytea OPERATOR(pg_catalog.||)
                         pg_catalog.sha256(key OPERATOR(pg_catalog.||) '\x00'::pg_catalog.bytea OPERATOR(pg_catalog.||)
                                           pg_catalog.convert_to(message, 'UTF8')));

-- The bound tenant when app.context_proof proves it (and the bound user), else NULL. Never an error:
-- a bare or forged setting is no tenant. Called once per statement, as an InitPlan of the policies.
-- Answers the tenant rather than a boolean (a boolean InitPlan is estimated to pass half the rows),
-- and is PARALLEL RESTRICTED (the leader runs it; UNSAFE would take parallel plans away). Few
-- statements, compared as text (no cast can fail on a forged proof): each statement of PL/pgSQL
-- costs about a microsecond here.
CREATE OR REPLACE FUNCTION rls_tenancy.verified_tenant()
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    proof text := current_setting('app.context_proof', true);
    -- <slot>:<13 digits>:<pid, 1 to 10 digits>:<64 hex digits>. A variable, so that context_mac() is
    -- inlined (an argument used twice is inlined only when cheap).
    key bytea := CASE WHEN length(proof) BETWEEN 82 AND 91
                      THEN rls_tenancy.context_key(CASE left(proof, 2) WHEN '1:' THEN 1 WHEN '2:' THEN 2 END) END;
BEGIN
    IF key IS NOT NULL  -- then proof has the length of one: no substr() below has a negative length
       AND encode(rls_tenancy.context_mac(key, current_setting('app.current_tenant', true) || '|'
                                               || coalesce(current_setting('app.current_user_id', true), '') || '|'
                                               || substr(proof, 3, length(proof) - 67)), 'hex') = right(proof, 64)
       AND substr(proof, 3, 13) BETWEEN ((date_part('epoch', now()) * 1000)::bigint - 300000)::pg_catalog.text
                                    AND ((date_part('epoch', now()) * 1000)::bigint + 300000)::pg_catalog.text
       AND substr(proof, 17, length(proof) - 81) IN ('0', pg_backend_pid()::pg_catalog.text) THEN
        RETURN nullif(current_setting('app.current_tenant', true), '')::bigint;  -- the application signs ids only
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.verified_tenant() IS
    'The bound tenant (app.current_tenant) when app.context_proof proves it and the bound user; NULL otherwise.';

CREATE OR REPLACE FUNCTION rls_tenancy.verified_user()
RETURNS bigint
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN CASE WHEN rls_tenancy.verified_tenant() IS NOT NULL
            THEN nullif(pg_catalog.current_setting('app.current_user_id', true), '')::bigint END;
COMMENT ON FUNCTION rls_tenancy.verified_user() IS
    'The bound user (app.current_user_id) when app.context_proof proves it with the tenant; NULL otherwise.';

-- Signs the settings bound now, for this backend: for the library's SECURITY DEFINER functions that
-- bind what they have proved themselves (a token's tenant and user). Granted to no role.
CREATE OR REPLACE FUNCTION rls_tenancy.sign_context()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    slot integer := CASE WHEN rls_tenancy.context_key(1) IS NOT NULL THEN 1 ELSE 2 END;
    issued text := (extract(epoch FROM now()) * 1000)::bigint || ':' || pg_backend_pid();
BEGIN
    IF rls_tenancy.context_key(slot) IS NULL THEN
        RETURN;  -- no key installed: nothing can be signed, nor verified
    END IF;
    PERFORM set_config('app.context_proof', slot || ':' || issued || ':' ||
        encode(rls_tenancy.context_mac(rls_tenancy.context_key(slot),
                   coalesce(current_setting('app.current_tenant', true), '') || '|'
                   || coalesce(current_setting('app.current_user_id', true), '') || '|' || issued), 'hex'), true);
END
$fn$;

-- A slot's key, for the application to check its own against at connect: 8 bytes of a hash, which
-- tell nothing of the key. NULL for an empty slot.
CREATE OR REPLACE FUNCTION rls_tenancy.context_key_fingerprint(slot integer)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
RETURN encode(substr(sha256(rls_tenancy.context_key(slot) || '\x02'::pg_catalog.bytea), 1, 8), 'hex');

CREATE OR REPLACE FUNCTION rls_tenancy.context_signing_required()
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN (SELECT s.required FROM rls_tenancy.context_signing s);

-- Big-endian 8 bytes as a bigint (PostgreSQL has int8send but no function for the way back).
CREATE OR REPLACE FUNCTION rls_tenancy.int8recv_bytes(bytes bytea)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ('x' OPERATOR(pg_catalog.||) pg_catalog.encode(bytes, 'hex'))::bit(64)::bigint;

-- The owner (or a superuser) installs and retires keys; no other role may. A NULL key empties the
-- slot: pg_sequence_last_value() then reads NULL (is_called false), as for a slot never set.
CREATE OR REPLACE FUNCTION rls_tenancy.install_context_key(slot integer, key bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF slot IS NULL OR slot NOT IN (1, 2) THEN
        RAISE EXCEPTION 'rls_tenancy: context key slots are 1 and 2, not %', slot;
    END IF;
    IF length(key) <> 16 THEN
        RAISE EXCEPTION 'rls_tenancy: a context key is 16 bytes (128 bits), got %', length(key);
    END IF;
    PERFORM setval(format('rls_tenancy.context_key_%sa', slot)::pg_catalog.regclass,
                   coalesce(rls_tenancy.int8recv_bytes(substr(key, 1, 8)), 1), key IS NOT NULL);
    PERFORM setval(format('rls_tenancy.context_key_%sb', slot)::pg_catalog.regclass,
                   coalesce(rls_tenancy.int8recv_bytes(substr(key, 9, 8)), 1), key IS NOT NULL);
END
$fn$;

CREATE OR REPLACE FUNCTION rls_tenancy.retire_context_key(slot integer)
RETURNS void
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT rls_tenancy.install_context_key(slot, NULL);
END;


CREATE OR REPLACE FUNCTION rls_tenancy.tenant_condition()
RETURNS text
LANGUAGE sql STABLE
RETURN rls_tenancy.tenant_condition_on('tenant_id', rls_tenancy.context_signing_required());
COMMENT ON FUNCTION rls_tenancy.tenant_condition() IS
    'The condition of the tenant_isolation policies: tenant_id equals the tenant bound to the transaction '
    '(and, when signing is required, the binding is proved).';

-- Require (or stop requiring) a signed context: every isolation policy of the owner's tables and of the
-- library's own, and the functions that answer the bound tenant and user. Run as the owner or a superuser.
CREATE OR REPLACE FUNCTION rls_tenancy.require_signed_context(required boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    target regclass;
BEGIN
    IF required IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: require_signed_context() takes true or false, not NULL';
    END IF;
    UPDATE rls_tenancy.context_signing SET required = require_signed_context.required;
    FOR target IN
        SELECT p.polrelid::pg_catalog.regclass
          FROM pg_policy p
          JOIN pg_class c ON c.oid = p.polrelid
         WHERE p.polname = 'tenant_isolation'
           AND c.relowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = rls_tenancy.role_name('owner'))
           AND rls_tenancy.is_tenant_condition(pg_get_expr(p.polqual, p.polrelid))
           AND rls_tenancy.is_tenant_condition(pg_get_expr(p.polwithcheck, p.polrelid))
         ORDER BY 1
    LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s)',
                       target, rls_tenancy.tenant_condition(), rls_tenancy.tenant_condition());
    END LOOP;
    EXECUTE format('ALTER POLICY tenant_self ON rls_tenancy.tenants USING (%s)',
                   rls_tenancy.tenant_condition_on('id', required));
    EXECUTE format('ALTER POLICY audit_tenant_read ON rls_tenancy.audit_log USING (%s)',
                   rls_tenancy.tenant_condition_on('tenant_id', required));
    EXECUTE format('ALTER POLICY tenant_overrides ON rls_tenancy.feature_overrides USING (%s) WITH CHECK (%s)',
                   rls_tenancy.tenant_condition_on('tenant_id', required),
                   rls_tenancy.tenant_condition_on('tenant_id', required));
    IF required THEN
        CREATE OR REPLACE FUNCTION rls_tenancy.current_tenant_id() RETURNS bigint
            LANGUAGE sql STABLE PARALLEL RESTRICTED RETURN rls_tenancy.verified_tenant();
        CREATE OR REPLACE FUNCTION rls_tenancy.current_user_id() RETURNS bigint
            LANGUAGE sql STABLE PARALLEL RESTRICTED RETURN rls_tenancy.verified_user();
        -- Every column of users but the password hash, which password_hash_of() reads with a grant.
        EXECUTE format('REVOKE SELECT ON rls_tenancy.users FROM %I', rls_tenancy.role_name('app'));
        EXECUTE format('GRANT SELECT (%s) ON rls_tenancy.users TO %I',
                       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                          FROM pg_attribute a
                         WHERE a.attrelid = 'rls_tenancy.users'::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname <> 'password_hash'),
                       rls_tenancy.role_name('app'));
    ELSE
        EXECUTE format('GRANT SELECT ON rls_tenancy.users TO %I', rls_tenancy.role_name('app'));
        CREATE OR REPLACE FUNCTION rls_tenancy.current_tenant_id() RETURNS bigint
            LANGUAGE sql STABLE PARALLEL SAFE
            RETURN nullif(pg_catalog.current_setting('app.current_tenant', true), '')::bigint;
        CREATE OR REPLACE FUNCTION rls_tenancy.current_user_id() RETURNS bigint
            LANGUAGE sql STABLE PARALLEL SAFE
            RETURN nullif(pg_catalog.current_setting('app.current_user_id', true), '')::bigint;
    END IF;
END
$fn$;

REVOKE ALL ON FUNCTION rls_tenancy.context_key(integer), rls_tenancy.context_mac(bytea, text),
                       rls_tenancy.verified_tenant(), rls_tenancy.verified_user(), rls_tenancy.sign_context(),
                       rls_tenancy.context_key_fingerprint(integer), rls_tenancy.context_signing_required(),
                       rls_tenancy.int8recv_bytes(bytea), rls_tenancy.install_context_key(integer, bytea),
                       rls_tenancy.retire_context_key(integer),
                       rls_tenancy.tenant_condition(), rls_tenancy.require_signed_context(boolean)
    FROM PUBLIC;
DO $grant$
BEGIN
    -- The policies call verified_tenant() as whoever queries.
    EXECUTE pg_catalog.format(
        'GRANT EXECUTE ON FUNCTION rls_tenancy.verified_tenant(), rls_tenancy.verified_user(), '
        'rls_tenancy.context_key_fingerprint(integer), rls_tenancy.context_signing_required() TO %I, %I',
        rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$grant$;


-- What the doctor reports of it (rls_tenancy.findings() includes these rows).
CREATE OR REPLACE FUNCTION rls_tenancy.signing_findings()
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'warning', 'context_not_signed', current_database()::pg_catalog.text,
           'the database does not require a signed tenant context: SQL run as the application role (injected, '
           'say) can set app.current_tenant itself and act as any tenant for the rest of its transaction',
           CASE WHEN rls_tenancy.context_key_fingerprint(1) IS NULL AND rls_tenancy.context_key_fingerprint(2) IS NULL
                THEN 'rls-tenancy context-key new; rls-tenancy context-key install --key <it>; give the apps '
                     'RLS_TENANCY_CONTEXT_KEY and deploy them; then rls-tenancy context-key require'
                ELSE 'deploy the apps with RLS_TENANCY_CONTEXT_KEY (a key is installed); then '
                     'rls-tenancy context-key require' END
     WHERE NOT rls_tenancy.context_signing_required()
    UNION ALL
    SELECT 'error', 'context_key_missing', current_database()::pg_catalog.text,
           'a signed tenant context is required but no key is installed: no binding can be proved, and every '
           'tenant sees nothing',
           'rls-tenancy context-key install --key <the apps'' key>'
     WHERE rls_tenancy.context_signing_required()
       AND rls_tenancy.context_key_fingerprint(1) IS NULL AND rls_tenancy.context_key_fingerprint(2) IS NULL
    UNION ALL
    SELECT 'error', 'tenant_policy_unsigned', format('%s', p.polrelid::pg_catalog.regclass),
           format('policy %I on %s trusts the bare app.current_tenant while a signed context is required: SQL '
                  'that sets it reaches that tenant''s rows', p.polname, p.polrelid::pg_catalog.regclass),
           format('ALTER POLICY %I ON %s USING (%s) WITH CHECK (%s);', p.polname, p.polrelid::pg_catalog.regclass,
                  rls_tenancy.tenant_condition(), rls_tenancy.tenant_condition())
      FROM pg_policy p
     WHERE rls_tenancy.context_signing_required()
       AND p.polname = 'tenant_isolation'
       AND (pg_get_expr(p.polqual, p.polrelid) NOT LIKE '%verified_tenant()%'
            OR pg_get_expr(p.polwithcheck, p.polrelid) NOT LIKE '%verified_tenant()%')
    UNION ALL
    -- The library's own tenant policies and the functions that answer the bound ids: a script of the
    -- specification run again on its own (not the whole, which ends by requiring it again) writes them unsigned.
    SELECT 'error', 'library_context_unsigned', object_name,
           format('%s trusts the bare app.current_tenant or app.current_user_id while a signed context is '
                  'required: SQL that sets them acts as that tenant or user there', object_name),
           'SELECT rls_tenancy.require_signed_context(true);'
      FROM (SELECT format('policy %I on %s', p.polname, p.polrelid::pg_catalog.regclass) AS object_name
              FROM pg_policy p
             WHERE (p.polrelid, p.polname) IN (('rls_tenancy.tenants'::pg_catalog.regclass, 'tenant_self'),
                                               ('rls_tenancy.audit_log'::pg_catalog.regclass, 'audit_tenant_read'),
                                               ('rls_tenancy.feature_overrides'::pg_catalog.regclass, 'tenant_overrides'))
               AND (pg_get_expr(p.polqual, p.polrelid) NOT LIKE '%verified_tenant()%'
                    OR coalesce(pg_get_expr(p.polwithcheck, p.polrelid), 'verified_tenant()')
                       NOT LIKE '%verified_tenant()%')
            UNION ALL
            SELECT format('function %s', f.oid::pg_catalog.regprocedure)
              FROM pg_proc f
             WHERE f.oid IN ('rls_tenancy.current_tenant_id()'::pg_catalog.regprocedure,
                             'rls_tenancy.current_user_id()'::pg_catalog.regprocedure)
               AND coalesce(pg_get_function_sqlbody(f.oid), f.prosrc) NOT LIKE '%verified_%') AS unsigned
     WHERE rls_tenancy.context_signing_required()
    UNION ALL
    -- The password hashes, read by the app role past password_hash_of(): a grant given back by hand on the
    -- table or the column, to the app role, a role it can become (it is NOINHERIT: SET ROLE) or PUBLIC.
    SELECT 'error', 'password_hash_readable', 'rls_tenancy.users password_hash',
           format('%s may read rls_tenancy.users.password_hash while a signed context is required (the app role '
                  'is or can become each of them): SQL run for a user reads its tenant''s password hashes and '
                  'tries passwords offline', string_agg(rls_tenancy.grantee_name(g.grantee), ', ' ORDER BY g.grantee)),
           -- by each grant's grantor (a REVOKE request that findings() writes out, sql/012_doctor.sql): a grant
           -- made WITH GRANT OPTION by another role than the owner goes only at its grantor's REVOKE
           string_agg(CASE WHEN g.table_wide
                           THEN (E'\x1e' || jsonb_build_array('SELECT', 'rls_tenancy.users',
                                                       (SELECT coalesce(u.relacl, acldefault('r', u.relowner)) FROM pg_class u
                                                         WHERE u.oid = 'rls_tenancy.users'::pg_catalog.regclass),
                                                       (SELECT u.relowner FROM pg_class u WHERE u.oid = 'rls_tenancy.users'::pg_catalog.regclass),
                                                       ARRAY['SELECT'], ARRAY[g.grantee], false, NULL)::pg_catalog.text || E'\x1e')
                           ELSE (E'\x1e' || jsonb_build_array('SELECT (password_hash)', 'rls_tenancy.users',
                                                       (SELECT a.attacl FROM pg_attribute a
                                                         WHERE a.attrelid = 'rls_tenancy.users'::pg_catalog.regclass
                                                           AND a.attname = 'password_hash'),
                                                       (SELECT u.relowner FROM pg_class u WHERE u.oid = 'rls_tenancy.users'::pg_catalog.regclass),
                                                       ARRAY['SELECT'], ARRAY[g.grantee], false, NULL)::pg_catalog.text || E'\x1e') END
                      || ' ', '' ORDER BY g.grantee)
           || 'SELECT rls_tenancy.require_signed_context(true);'
      FROM (SELECT acl.grantee, bool_or(acl.table_wide) AS table_wide
              FROM (SELECT t.grantee, true AS table_wide
                      FROM pg_class u CROSS JOIN LATERAL aclexplode(coalesce(u.relacl, acldefault('r', u.relowner))) t
                     WHERE u.oid = 'rls_tenancy.users'::pg_catalog.regclass AND t.privilege_type = 'SELECT' AND t.grantee <> u.relowner
                    UNION ALL
                    SELECT c.grantee, false
                      FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) c
                     WHERE a.attrelid = 'rls_tenancy.users'::pg_catalog.regclass AND a.attname = 'password_hash'
                       AND c.privilege_type = 'SELECT'
                       AND c.grantee <> (SELECT u.relowner FROM pg_class u WHERE u.oid = a.attrelid)) acl
             WHERE acl.grantee = 0 OR pg_has_role(rls_tenancy.role_name('app'), acl.grantee, 'MEMBER')
             GROUP BY acl.grantee) g
     WHERE rls_tenancy.context_signing_required()
    HAVING count(*) > 0
    UNION ALL
    -- The same hashes through a view that reads the column with its owner's rights (no security_invoker) and
    -- that the app role, a role it can become or PUBLIC may read. A materialized view holds them too.
    SELECT 'error', 'password_hash_readable', format('%s', v.oid::pg_catalog.regclass),
           format('%s %s reads rls_tenancy.users.password_hash with its owner''s rights and %s may read it while a '
                  'signed context is required: SQL run for a user reads its tenant''s password hashes through it and '
                  'tries passwords offline',
                  CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, v.oid::pg_catalog.regclass,
                  string_agg(DISTINCT rls_tenancy.grantee_name(g.grantee), ', ')),
           (E'\x1e' || jsonb_build_array('SELECT', format('%s', v.oid::pg_catalog.regclass),
                                  coalesce(v.relacl, acldefault('r', v.relowner))
                                  || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item
                                                WHERE a.attrelid = v.oid), '{}'::pg_catalog.aclitem[]),
                                  v.relowner, ARRAY['SELECT'], array_agg(g.grantee), false, NULL)::pg_catalog.text || E'\x1e')
           || CASE WHEN v.relkind = 'v'
                   THEN format(' -- or ALTER VIEW %s SET (security_invoker = true);', v.oid::pg_catalog.regclass) ELSE '' END
      FROM pg_class v
      CROSS JOIN LATERAL (SELECT acl.grantee FROM aclexplode(coalesce(v.relacl, acldefault('r', v.relowner))) acl
                           WHERE acl.privilege_type = 'SELECT'
                          UNION
                          SELECT acl.grantee FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl
                           WHERE a.attrelid = v.oid AND acl.privilege_type = 'SELECT') g
     WHERE rls_tenancy.context_signing_required()
       AND v.relkind IN ('v', 'm')
       AND EXISTS (SELECT 1
                     FROM pg_rewrite r
                     JOIN pg_depend d ON d.classid = 'pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                     JOIN pg_attribute h ON h.attrelid = d.refobjid AND h.attnum = d.refobjsubid
                    WHERE r.ev_class = v.oid AND d.refclassid = 'pg_class'::pg_catalog.regclass
                      AND d.refobjid = 'rls_tenancy.users'::pg_catalog.regclass AND h.attname = 'password_hash')
       AND (v.relkind = 'm'
            OR NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(v.reloptions) o
                              WHERE o.option_name = 'security_invoker'), false))
       AND has_column_privilege(v.relowner, 'rls_tenancy.users', 'password_hash', 'SELECT')
       AND g.grantee <> v.relowner
       AND (g.grantee = 0 OR pg_has_role(rls_tenancy.role_name('app'), g.grantee, 'MEMBER'))
     GROUP BY v.oid, v.relkind
    UNION ALL
    -- UPDATE on users' id sequence: setval() makes any id the one user_id_drawn() takes for drawn, and SQL
    -- that deletes its own user puts a granted administrator back under its own id.
    SELECT 'error', 'users_id_sequence_settable', format('%s', s.oid::pg_catalog.regclass),
           format('%s holds UPDATE on %s, the sequence of rls_tenancy.users.id, while a signed context is required: '
                  'setval() makes any id look drawn by an INSERT, so SQL run for a user deletes its own user and puts '
                  'a new user the application granted (an administrator, say) back under its own id',
                  string_agg(rls_tenancy.grantee_name(acl.grantee), ', ' ORDER BY acl.grantee), s.oid::pg_catalog.regclass),
           (E'\x1e' || jsonb_build_array('UPDATE', format('SEQUENCE %s', s.oid::pg_catalog.regclass),
                                  coalesce(s.relacl, acldefault('s', s.relowner)), s.relowner, ARRAY['UPDATE'],
                                  array_agg(acl.grantee), false, NULL)::pg_catalog.text || E'\x1e')
      FROM pg_class s CROSS JOIN LATERAL aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) acl
     WHERE rls_tenancy.context_signing_required()
       AND s.oid = pg_get_serial_sequence('rls_tenancy.users', 'id')::pg_catalog.regclass
       AND acl.privilege_type = 'UPDATE' AND acl.grantee <> s.relowner
       AND (acl.grantee = 0 OR pg_has_role(rls_tenancy.role_name('app'), acl.grantee, 'MEMBER'))
     GROUP BY s.oid
    UNION ALL
    -- Signing half off: context_signing.required set false by hand, the policies and current_tenant_id() left
    -- signed. The apps keep working, so nobody notices, while the users' grants guard and password_hash_of()
    -- check nothing, the app role reads password_hash again at the next require_signed_context(), and every
    -- check above is silent.
    SELECT 'error', 'context_signing_half_off', 'rls_tenancy.context_signing',
           format('a signed context is not required (rls_tenancy.context_signing.required is false), yet %s check '
                  'the signed context: the apps keep working signed, while SQL run for a user writes any user''s '
                  'email, roles and password hash without the application''s grant, reads password hashes through '
                  'password_hash_of(), and the doctor''s signed checks are silent. Require it again, or turn it off '
                  'wholly with SELECT rls_tenancy.require_signed_context(false);',
                  string_agg(signed.object_name, ', ' ORDER BY signed.object_name)),
           'SELECT rls_tenancy.require_signed_context(true); -- or (false), to turn signing off wholly'
      FROM (SELECT format('policy %I on %s', p.polname, p.polrelid::pg_catalog.regclass) AS object_name
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
             WHERE (p.polname = 'tenant_isolation'
                    AND c.relowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = rls_tenancy.role_name('owner'))
                    OR (p.polrelid, p.polname) IN (('rls_tenancy.tenants'::pg_catalog.regclass, 'tenant_self'),
                                                   ('rls_tenancy.audit_log'::pg_catalog.regclass, 'audit_tenant_read'),
                                                   ('rls_tenancy.feature_overrides'::pg_catalog.regclass, 'tenant_overrides')))
               AND (coalesce(pg_get_expr(p.polqual, p.polrelid), '') LIKE '%verified_tenant()%'
                    OR coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') LIKE '%verified_tenant()%')
            UNION ALL
            SELECT format('function %s', f.oid::pg_catalog.regprocedure)
              FROM pg_proc f
             WHERE f.oid IN ('rls_tenancy.current_tenant_id()'::pg_catalog.regprocedure,
                             'rls_tenancy.current_user_id()'::pg_catalog.regprocedure)
               AND coalesce(pg_get_function_sqlbody(f.oid), f.prosrc) LIKE '%verified_%') AS signed
     WHERE NOT rls_tenancy.context_signing_required()
    HAVING count(*) > 0
    UNION ALL
    -- The grants' guards: without one, SQL run for a user writes what the application's grant keeps for it
    -- (users: any user's roles and password; overrides: those kept for administrators, under any author's name).
    SELECT 'error', guard.check_name, format('rls_tenancy.%s %s', guard.table_name, guard.trigger_name),
           format('the trigger %s on rls_tenancy.%s is %s while a signed context is required: %s',
                  guard.trigger_name, guard.table_name,
                  CASE WHEN tg.oid IS NULL THEN 'missing' WHEN tg.tgenabled = 'D' THEN 'disabled'
                       ELSE 'set to fire only in replica mode' END, guard.lets),
           CASE WHEN tg.oid IS NULL
                THEN 'install the library again: rls-tenancy migrate --reinstall, or its --sql output through psql -1, as a superuser'
                ELSE format('ALTER TABLE rls_tenancy.%s ENABLE TRIGGER %s;', guard.table_name, guard.trigger_name) END
      FROM (VALUES ('users_grant_trigger_disabled', 'users', 'users_write_granted',
                    'SQL run for a user can give itself any role, or set another user''s password or email'),
                   ('overrides_grant_trigger_disabled', 'feature_overrides', 'feature_overrides_write_granted',
                    'SQL run for a user can set or clear the tenant''s feature overrides, those kept for administrators included'),
                   ('overrides_grant_trigger_disabled', 'feature_overrides', 'feature_overrides_set_by',
                    'SQL can name any user as an override''s author')) AS guard (check_name, table_name, trigger_name, lets)
      LEFT JOIN pg_trigger tg ON tg.tgrelid = pg_catalog.format('rls_tenancy.%s', guard.table_name)::pg_catalog.regclass
                             AND tg.tgname = guard.trigger_name
     WHERE rls_tenancy.context_signing_required() AND (tg.oid IS NULL OR tg.tgenabled NOT IN ('O', 'A'))
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.signing_findings() FROM PUBLIC;

-- A request's token check: authenticate_token(), and, when the token holds for the tenant bound to the
-- transaction (verified, when signing is required), its user bound and the context signed again for
-- this backend. It needs the token's hash: it signs what a token proves, never what its caller names.
CREATE OR REPLACE FUNCTION rls_tenancy.authenticate_token_binding(tenant_id bigint, token_hash bytea)
RETURNS TABLE (token_id bigint, user_id bigint, scopes text[], status text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    token record;
BEGIN
    SELECT f.token_id AS id, f.user_id AS who, f.scopes AS granted, f.status AS state INTO token
      FROM rls_tenancy.authenticate_token(authenticate_token_binding.tenant_id,
                                          authenticate_token_binding.token_hash) AS f;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF token.state = 'ok' AND rls_tenancy.current_tenant_id() = authenticate_token_binding.tenant_id THEN
        PERFORM set_config('app.current_user_id', coalesce(token.who::pg_catalog.text, ''), true);
        PERFORM rls_tenancy.sign_context();
    END IF;
    token_id := token.id;
    user_id := token.who;
    scopes := token.granted;
    status := token.state;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.authenticate_token_binding(bigint, bytea) FROM PUBLIC;

-- The same check with the row of the user it binds, read as the caller (row level security and the
-- caller's column grants hold, as for its own SELECT): a request that needs its user then costs no
-- statement of its own for it. The user's columns are NULL where the token is not valid, names no
-- user, or does not hold for the tenant bound. SECURITY INVOKER: it reads nothing its caller could
-- not; every name and operator is qualified, whatever search_path the session has.
-- ROWS 1: the planner's estimate for a function returning at most one row.
CREATE OR REPLACE FUNCTION rls_tenancy.authenticate_token_user(claimed_tenant bigint, token_hash bytea)
RETURNS TABLE (token_id bigint, user_id bigint, scopes text[], status text, id bigint, email text,
               roles text[], language text, created_at timestamptz, tenant_id bigint)
LANGUAGE plpgsql
VOLATILE
ROWS 1
AS $fn$
BEGIN
    SELECT f.token_id, f.user_id, f.scopes, f.status INTO token_id, user_id, scopes, status
      FROM rls_tenancy.authenticate_token_binding(authenticate_token_user.claimed_tenant,
                                                  authenticate_token_user.token_hash) AS f;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF status OPERATOR(pg_catalog.=) 'ok' AND user_id IS NOT NULL THEN
        SELECT u.id, u.email, u.roles, u.language, u.created_at, u.tenant_id
          INTO id, email, roles, language, created_at, tenant_id
          FROM rls_tenancy.users AS u
         WHERE u.id OPERATOR(pg_catalog.=) authenticate_token_user.user_id;
    END IF;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.authenticate_token_user(bigint, bytea) FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.authenticate_token_binding(bigint, bytea), '
                              'rls_tenancy.authenticate_token_user(bigint, bytea) TO %I', rls_tenancy.role_name('app'));
END
$grant$;
-- Grants: the application's consent to one write that the bound tenant and user alone do not cover.
-- Signed, SQL run for a user could otherwise make itself the tenant's administrator by a detour: give
-- its own user more roles, set another user's password or email (and log in as them later), add an
-- administrator, or issue a token of no user with any scopes. Such writes need a grant in
-- app.grants beside them, made with the context key by the application:
--
--     <slot>:<hex of the MAC>, comma-separated
--     MAC as for a proof, of 'grant|<the transaction's mark>|<the bound user, or nothing>|<what is granted>'
--     the transaction's mark: '<hex of timestamptz_send(now())>:<pg_backend_pid()>'
--
-- ('grant|' keeps it apart from every proof's message, which starts with a tenant id or '|'). The mark
-- is the transaction's start, to the microsecond, and its backend: the application reads it back from
-- the statement that binds the transaction (rls_tenancy.binding.settings.TRANSACTION_MARK, in the same
-- round trip), and SQL can change neither. So a grant is worth nothing outside the transaction it was
-- made for: a copy SQL makes of a pending grant (a prepared statement of the app's swapped for one
-- that copies app.grants, run in the same flush) replays in no later transaction, whether the write it
-- names was made or SQL made it fail. What is granted names each value written (below), and a grant is
-- used up by the write it grants, so SQL run in the transaction after it finds nothing to copy; one
-- the application added and did not use writes nothing but what the application was writing anyway,
-- for the same user, in that transaction. Granted to the application role: they answer whether a
-- grant is there, and sign nothing.
-- One grant, checked: made with a slot's key for what, for this transaction and its bound user.
CREATE OR REPLACE FUNCTION rls_tenancy.grant_valid(given text, what text)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key bytea := CASE WHEN length(given) = 66
                      THEN rls_tenancy.context_key(CASE left(given, 2) WHEN '1:' THEN 1 WHEN '2:' THEN 2 END) END;
BEGIN
    RETURN key IS NOT NULL
       AND encode(rls_tenancy.context_mac(key, 'grant|' || concat_ws(':', encode(timestamptz_send(now()), 'hex'), pg_backend_pid())
                                               || '|' || coalesce(rls_tenancy.verified_user()::pg_catalog.text, '') || '|' || what),
                  'hex') = right(given, 64);
END
$fn$;

-- Whether app.grants holds a grant of what; the grant is used up: taken out of app.grants, so that
-- SQL run later in the transaction finds nothing there to copy and replay.
CREATE OR REPLACE FUNCTION rls_tenancy.granted(what text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    given  text;
    others text[] := '{}';
    found  boolean := false;
BEGIN
    FOREACH given IN ARRAY coalesce(string_to_array(nullif(current_setting('app.grants', true), ''), ','), '{}') LOOP
        IF NOT found AND rls_tenancy.grant_valid(given, what) THEN
            found := true;
        ELSE
            others := others || given;
        END IF;
    END LOOP;
    IF found THEN
        PERFORM set_config('app.grants', array_to_string(others, ','), true);
    END IF;
    RETURN found;
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.granted(text) IS
    'Whether app.grants holds the application''s grant, made with the context key, for this write; uses it up.';

-- One value of what is granted: its length and itself ('-' for NULL), so that no value can end early.
CREATE OR REPLACE FUNCTION rls_tenancy.grant_field(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(pg_catalog.length(value)::pg_catalog.text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) value, '-');

-- Whether id is the last value this session drew from users' id sequence: the one a default drew for
-- the row being inserted. The owner's, since the application role need not hold USAGE on an identity
-- column's sequence; currval() is the session's whoever asks.
CREATE OR REPLACE FUNCTION rls_tenancy.user_id_drawn(id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN id = currval(pg_get_serial_sequence('rls_tenancy.users', 'id'));
EXCEPTION WHEN object_not_in_prerequisite_state THEN  -- nothing drawn yet in this session
    RETURN false;
END
$fn$;

-- A user's email, roles and password hash are what acting as them rests on: written by the
-- application role in a signed database only with a grant of the row's tenant, id (an update; an id
-- never changes) and those three values ('=' for one an update leaves as it was). Roles that bypass row level security, and the owner, write
-- as they like (the bypass role's admin paths, data migrations).
CREATE OR REPLACE FUNCTION rls_tenancy.user_write_granted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    emails text[];
    roles  text[];
    hashes text[];
    email  text;
    role   text;
    hash   text;
BEGIN
    IF NOT rls_tenancy.context_signing_required()
       OR EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname = current_user
                     AND (r.rolsuper OR r.rolbypassrls OR r.oid = (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID))) THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    -- A user deleted takes its tokens with it: SQL run for an intern would otherwise delete the tenant's
    -- administrators (and free their tokens' hashes for reuse).
    IF TG_OP = 'DELETE' THEN
        IF rls_tenancy.granted('users.delete|' || OLD.tenant_id || '|' || OLD.id || '|') THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'rls_tenancy: a user is deleted only with the application''s grant in a signed context'
            USING ERRCODE = '42501',
                  HINT = 'Delete users through the User model in an ORM Session (it adds the grant), or call '
                         'rls_tenancy.identity.users.grant_user_delete() on the connection first.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'rls_tenancy: a user''s id never changes' USING ERRCODE = '42501';
    END IF;
    -- A new user's id is the one its own INSERT drew: SQL could otherwise delete its own user and put
    -- the granted email and roles back under its own id (its session names that id).
    IF TG_OP = 'INSERT' AND NOT rls_tenancy.user_id_drawn(NEW.id) THEN
        RAISE EXCEPTION 'rls_tenancy: a new user''s id is drawn by its INSERT in a signed context, not chosen'
            USING ERRCODE = '42501', HINT = 'Leave users.id to its default.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        emails := ARRAY[rls_tenancy.grant_field(NEW.email)];
        roles := ARRAY[rls_tenancy.grant_field(array_to_string(NEW.roles, ',', '*'))];
        hashes := ARRAY[rls_tenancy.grant_field(NEW.password_hash)];
    ELSE  -- '=' for a value the update leaves as it was (the application need not know or read it), or the value
        emails := ARRAY[rls_tenancy.grant_field(NEW.email)]
                  || CASE WHEN NEW.email IS NOT DISTINCT FROM OLD.email THEN '{=}'::pg_catalog.text[] ELSE '{}' END;
        roles := ARRAY[rls_tenancy.grant_field(array_to_string(NEW.roles, ',', '*'))]
                 || CASE WHEN NEW.roles IS NOT DISTINCT FROM OLD.roles THEN '{=}'::pg_catalog.text[] ELSE '{}' END;
        hashes := ARRAY[rls_tenancy.grant_field(NEW.password_hash)]
                  || CASE WHEN NEW.password_hash IS NOT DISTINCT FROM OLD.password_hash THEN '{=}'::pg_catalog.text[] ELSE '{}' END;
    END IF;
    FOREACH email IN ARRAY emails LOOP
        FOREACH role IN ARRAY roles LOOP
            FOREACH hash IN ARRAY hashes LOOP
                IF rls_tenancy.granted('users.' || lower(TG_OP) || '|' || NEW.tenant_id || '|'
                                       || CASE WHEN TG_OP = 'UPDATE' THEN NEW.id::pg_catalog.text ELSE '' END || '|'
                                       || email || role || hash) THEN
                    RETURN NEW;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RAISE EXCEPTION 'rls_tenancy: a user''s email, roles and password are written only with the application''s grant in a signed context'
        USING ERRCODE = '42501',
              HINT = 'Write users through the User model in an ORM Session (it adds the grant), or call '
                     'rls_tenancy.identity.users.grant_user_write() on the connection first.';
END
$fn$;
-- A user's password hash, for the application's password check. Signed, the application role reads
-- every column of users but this one (require_signed_context() below), and this needs the application's
-- grant of 'password.read|<tenant>|<user id>' as its argument: SQL run for a user would otherwise read
-- the tenant's hashes and try passwords offline. The bound tenant's users only (FORCE: the owner too).
CREATE OR REPLACE FUNCTION rls_tenancy.password_hash_of(user_id bigint, given text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    hashed text;
BEGIN
    IF rls_tenancy.context_signing_required()
       AND NOT coalesce(rls_tenancy.grant_valid(given, 'password.read|' || rls_tenancy.current_tenant_id()
                                                       || '|' || password_hash_of.user_id), false) THEN
        RAISE EXCEPTION 'rls_tenancy: a user''s password hash is read only with the application''s grant in a signed context'
            USING ERRCODE = '42501', HINT = 'User.check_password() and load_password_hash() add it.';
    END IF;
    SELECT u.password_hash INTO hashed FROM rls_tenancy.users u WHERE u.id = password_hash_of.user_id;
    RETURN hashed;
END
$fn$;

DROP TRIGGER IF EXISTS users_write_granted ON rls_tenancy.users;
CREATE TRIGGER users_write_granted BEFORE INSERT OR UPDATE OF id, email, roles, password_hash OR DELETE ON rls_tenancy.users
    FOR EACH ROW EXECUTE FUNCTION rls_tenancy.user_write_granted();

REVOKE ALL ON FUNCTION rls_tenancy.grant_valid(text, text), rls_tenancy.granted(text), rls_tenancy.grant_field(text),
                       rls_tenancy.user_id_drawn(bigint), rls_tenancy.user_write_granted(),
                       rls_tenancy.password_hash_of(bigint, text)
    FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format(
        'GRANT EXECUTE ON FUNCTION rls_tenancy.grant_valid(text, text), rls_tenancy.granted(text), '
        'rls_tenancy.grant_field(text), rls_tenancy.user_id_drawn(bigint), rls_tenancy.user_write_granted(), '
        'rls_tenancy.password_hash_of(bigint, text) TO %I', rls_tenancy.role_name('app'));
END
$grant$;

-- The specification runs again on a database that requires a signed context (every later revision
-- re-runs it): the earlier scripts have just written the unsigned policies and functions again, in this
-- same transaction, so the requirement is applied again before anyone sees them.
SELECT rls_tenancy.require_signed_context(true) FROM rls_tenancy.context_signing WHERE required;

RESET ROLE;
