-- rls_tenancy: the database reports its own isolation coverage and gaps.
--
--   SELECT * FROM rls_tenancy.coverage;     -- one row per table with a tenant_id column
--   SELECT * FROM rls_tenancy.findings();   -- one row per problem, with a fix
--   SELECT * FROM rls_tenancy.findings(true);   -- the same, the distribution checks (Citus) as warnings
--
-- A "tenant table" is any ordinary or partitioned table outside the system
-- schemas with a column named tenant_id. Findings have a severity:
--   error    a leak, or a way around the policies: fix before deploying;
--   warning  a weakness (an existence oracle, a slow policy) or an unusual setup;
--   info     an exemption recorded in rls_tenancy.doctor_exemptions, or a distribution check (whether
--            the schema could be sharded by tenant_id in Citus) unless asked for as warnings.
-- Exemptions name an object and a check, with the reason it is fine; the
-- library records its own (its audit log and feature overrides are shaped on
-- purpose), and a DBA may add theirs. An exempted finding is reported as info.
--
-- Read-only: it inspects the catalogs and changes nothing. Owned by the
-- owner role, executable by the bypass role and by whoever the DBA grants.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE TABLE IF NOT EXISTS rls_tenancy.doctor_exemptions (
    object_name text NOT NULL,   -- as findings() names it: a table, 'table policy name', an index, a function
    check_name  text NOT NULL,   -- e.g. 'policy_not_tenant_keyed'
    reason      text NOT NULL CHECK (pg_catalog.length(reason) BETWEEN 1 AND 500),
    PRIMARY KEY (object_name, check_name)
);
COMMENT ON TABLE rls_tenancy.doctor_exemptions IS
    'Findings of rls_tenancy.findings() that are fine on purpose, with the reason; reported as info.';
REVOKE ALL ON rls_tenancy.doctor_exemptions FROM PUBLIC;

INSERT INTO rls_tenancy.doctor_exemptions (object_name, check_name, reason) VALUES
    ('rls_tenancy.audit_log', 'tenant_id_nullable',
     'events without a tenant (failed logins for unknown tenants, bypass use) form their own chain'),
    ('rls_tenancy.feature_overrides', 'tenant_id_nullable',
     'rows without a tenant are global overrides, written by the bypass role only'),
    ('rls_tenancy.feature_overrides policy global_overrides_read', 'policy_not_tenant_keyed',
     'policy global_overrides_read lets every tenant read the global overrides (FOR SELECT only)'),
    ('rls_tenancy.users_pkey', 'unique_without_tenant',
     'user ids come from the identity column; the library never lets a caller choose one'),
    ('rls_tenancy.feature_overrides_pkey', 'unique_without_tenant',
     'override ids come from the identity column; the library never lets a caller choose one'),
    ('rls_tenancy.audit_log policy audit_owner', 'owner_policy_opens_table',
     'the audit log''s own functions (log_event, the seal at commit) run as the owner and pick the chain '
     'themselves; none returns another tenant''s events to its caller')
ON CONFLICT (object_name, check_name) DO NOTHING;

-- The library's primary keys on id alone. Its ids come from identity columns
-- that every tenant draws from, so a tenant's own ids already show how many
-- rows the others added between them; EXPLAIN ANALYZE over an id range adds
-- how many of those still exist (docs/threat-model.md).
INSERT INTO rls_tenancy.doctor_exemptions (object_name, check_name, reason)
SELECT index_name, 'index_not_leading_with_tenant',
       'ids come from an identity every tenant draws from: the gaps in a tenant''s own ids already tell how many rows '
       'the others added; EXPLAIN ANALYZE over an id range adds how many of them still exist'
  FROM unnest(ARRAY['rls_tenancy.users_pkey', 'rls_tenancy.api_tokens_pkey', 'rls_tenancy.audit_log_pkey',
                    'rls_tenancy.feature_overrides_pkey']) AS index_name
ON CONFLICT (object_name, check_name) DO NOTHING;

-- The library's tables are not distributed when the database moves to Citus: they stay on the coordinator
-- as Citus local tables (citus_add_local_table_to_metadata), since their keys are on id alone and the audit
-- log and feature overrides hold rows without a tenant (docs/citus.md).
INSERT INTO rls_tenancy.doctor_exemptions (object_name, check_name, reason)
SELECT index_name, 'distribution_key_without_tenant',
       'the library''s tables stay on the coordinator as Citus local tables, not distributed: its ids come from '
       'an identity and are keyed on id alone (docs/citus.md)'
  FROM unnest(ARRAY['rls_tenancy.users_pkey', 'rls_tenancy.api_tokens_pkey', 'rls_tenancy.audit_log_pkey',
                    'rls_tenancy.feature_overrides_pkey']) AS index_name
UNION ALL
SELECT table_name, 'distribution_tenant_id_nullable',
       'the library''s tables stay on the coordinator as Citus local tables, not distributed: rows without a '
       'tenant are part of its design (events of no tenant, global overrides) (docs/citus.md)'
  FROM unnest(ARRAY['rls_tenancy.audit_log', 'rls_tenancy.feature_overrides']) AS table_name
ON CONFLICT (object_name, check_name) DO NOTHING;

-- Whether a policy expression is exactly the isolation condition (no OR, no
-- other terms), signed or not: anything else may widen access. Either spelling counts: the
-- one tenant_condition() writes, or a call of current_tenant_id() (policies
-- written by hand). Schema prefixes
-- are optional because pg_get_expr() leaves out those on the search_path.
-- The spellings of the tenant condition that mean the same as the ones below, rewritten to them:
-- current_tenant_id() as an InitPlan, ( SELECT current_tenant_id() AS current_tenant_id), a common
-- idiom that evaluates it once per statement, and either side of the = first (a reversed comparison,
-- parenthesised whole by pg_get_expr()). Each rewrite replaces an expression by an equal one wherever it
-- stands, so no expression that widens access becomes the condition. The setting read without missing_ok
-- (current_setting('app.current_tenant')::bigint, a common hand-written spelling) is rewritten to the
-- library's: where both return a value it is the same one, and where the library's gives NULL (no tenant
-- bound) it raises an error instead, which shows no row either.
CREATE OR REPLACE FUNCTION rls_tenancy.tenant_expression_normalized(expression text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN regexp_replace(
           regexp_replace(
               regexp_replace(expression,
                              '\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text(, false)?\)\)::bigint',
                              '(NULLIF(current_setting(''app.current_tenant''::text, true), ''''::text))::bigint', 'g'),
               '\( SELECT ((rls_tenancy\.)?current_tenant_id\(\)) AS current_tenant_id\)', '\1', 'g'),
           '\(((rls_tenancy\.)?current_tenant_id\(\)|\(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint) = tenant_id\)',
           '(tenant_id = \1)', 'g');
REVOKE ALL ON FUNCTION rls_tenancy.tenant_expression_normalized(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION rls_tenancy.is_tenant_condition(expression text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN coalesce(rls_tenancy.tenant_expression_normalized(expression) ~ '^\(tenant_id = (rls_tenancy\.)?current_tenant_id\(\)\)$'
                OR rls_tenancy.tenant_expression_normalized(expression) ~ '^\(tenant_id = \(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint\)$'
                -- signed (sql/016_signed_context.sql): the same condition, then each row's tenant equal to the
                -- proved one (the earlier "proved, so not NULL" form let SQL switch the setting mid-statement)
                OR rls_tenancy.tenant_expression_normalized(expression) ~ '^\(\(tenant_id = \(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint\) AND \(tenant_id OPERATOR\(rls_tenancy\.===\) \( SELECT (rls_tenancy\.)?verified_tenant\(\) AS verified_tenant\)\)\)$',
                false);
REVOKE ALL ON FUNCTION rls_tenancy.is_tenant_condition(text) FROM PUBLIC;

-- Whether a policy expression is the isolation condition, or that condition AND more at its top level
-- (pg_get_expr() writes a top-level AND as "((first) AND ...)"; an OR above it, or around the condition,
-- starts otherwise): such a permissive policy can only narrow what the tenant sees. Signed, the condition
-- is the signed one (two conjuncts) or current_tenant_id(), which then answers the verified tenant only.
CREATE OR REPLACE FUNCTION rls_tenancy.is_tenant_conjunction(expression text, signed boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN coalesce((rls_tenancy.is_tenant_condition(expression)
                 -- signed, the bare setting proves nothing: SQL may set it
                 AND NOT (signed AND rls_tenancy.tenant_expression_normalized(expression) ~ '^\(tenant_id = \(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint\)$'))
                OR rls_tenancy.tenant_expression_normalized(expression) ~ '^\(\(tenant_id = (rls_tenancy\.)?current_tenant_id\(\)\) AND '
                OR (NOT signed AND rls_tenancy.tenant_expression_normalized(expression) ~ '^\(\(tenant_id = \(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint\) AND ')
                OR rls_tenancy.tenant_expression_normalized(expression) ~ '^\(\(tenant_id = \(NULLIF\((pg_catalog\.)?current_setting\(''app\.current_tenant''::text, true\), ''''::text\)\)::bigint\) AND \(tenant_id OPERATOR\(rls_tenancy\.===\) \( SELECT (rls_tenancy\.)?verified_tenant\(\) AS verified_tenant\)\) AND ',
                false);
REVOKE ALL ON FUNCTION rls_tenancy.is_tenant_conjunction(text, boolean) FROM PUBLIC;

-- A SQL or PL/pgSQL body split into its code and its string literals, for the checks that read bodies for
-- names: {code, literals}. code is the body with its comments (--, and /* */, nested) blanked and each string
-- literal ('...', E'...', $tag$...$tag$, the dollar-quoted ones a PL/pgSQL body holds) replaced by '';
-- quoted identifiers are kept. literals holds the literals' contents, one a line: dynamic SQL (EXECUTE text)
-- is one of them, and a message (RAISE ... 'tenants never see ...') another, so those who read it look for
-- SQL's shape there (FROM name), not for a word.
CREATE OR REPLACE FUNCTION rls_tenancy.body_split(src text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $split$
DECLARE
    rest text := src;
    code text := '';
    literals text := '';
    m text[];
    q text[];
    depth integer;
    stop integer;
BEGIN
    LOOP
        -- the first comment, literal or quoted identifier ("(.*?)": the shortest code before it)
        m := regexp_match(rest, '^(.*?)(--|/\*|[eE]''|''|"|\$(?:[[:alpha:]_][[:alnum:]_]*)?\$)');
        IF m IS NULL THEN
            RETURN ARRAY[code || rest, literals];
        END IF;
        code := code || m[1];
        rest := substr(rest, length(m[1]) + length(m[2]) + 1);
        IF m[2] = '--' THEN
            stop := strpos(rest, E'\n');
            code := code || ' ';
            IF stop = 0 THEN
                RETURN ARRAY[code, literals];
            END IF;
            rest := substr(rest, stop);
        ELSIF m[2] = '/*' THEN
            depth := 1;
            WHILE depth > 0 LOOP
                q := regexp_match(rest, '^(.*?)(/\*|\*/)');
                IF q IS NULL THEN
                    RETURN ARRAY[code || ' ', literals];
                END IF;
                rest := substr(rest, length(q[1]) + 3);
                depth := depth + CASE WHEN q[2] = '/*' THEN 1 ELSE -1 END;
            END LOOP;
            code := code || ' ';
        ELSIF m[2] = '"' THEN
            q := regexp_match(rest, '^((?:[^"]|"")*)"');
            IF q IS NULL THEN
                RETURN ARRAY[code || '"' || rest, literals];
            END IF;
            code := code || '"' || q[1] || '"';
            rest := substr(rest, length(q[1]) + 2);
        ELSIF m[2] IN ('''', 'e''', 'E''') THEN
            q := regexp_match(rest, CASE WHEN m[2] = '''' THEN '^((?:[^'']|'''')*)'''
                                         ELSE '^((?:[^''\\]|\\.|'''')*)''' END);
            IF q IS NULL THEN
                RETURN ARRAY[code || ' '''' ', literals || E'\n' || rest];
            END IF;
            literals := literals || E'\n' || replace(q[1], '''''', '''');
            code := code || ' '''' ';
            rest := substr(rest, length(q[1]) + 2);
        ELSE
            stop := strpos(rest, m[2]);
            IF stop = 0 THEN
                RETURN ARRAY[code || ' '''' ', literals || E'\n' || rest];
            END IF;
            literals := literals || E'\n' || substr(rest, 1, stop - 1);
            code := code || ' '''' ';
            rest := substr(rest, stop + length(m[2]));
        END IF;
    END LOOP;
END
$split$;
REVOKE ALL ON FUNCTION rls_tenancy.body_split(text) FROM PUBLIC;

-- Whether a permissive policy keeps to the bound tenant, for the command it serves: SELECT and DELETE by
-- their USING, INSERT by its WITH CHECK, UPDATE and ALL by both (a missing WITH CHECK reuses USING).
CREATE OR REPLACE FUNCTION rls_tenancy.policy_is_tenant_keyed(command "char", using_expr text, check_expr text,
                                                               signed boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN CASE command
           WHEN 'a' THEN coalesce(rls_tenancy.is_tenant_conjunction(check_expr, signed), false)
           WHEN 'r' THEN coalesce(rls_tenancy.is_tenant_conjunction(using_expr, signed), false)
           WHEN 'd' THEN coalesce(rls_tenancy.is_tenant_conjunction(using_expr, signed), false)
           ELSE coalesce(rls_tenancy.is_tenant_conjunction(using_expr, signed)
                         AND (check_expr IS NULL OR rls_tenancy.is_tenant_conjunction(check_expr, signed)), false)
       END;
REVOKE ALL ON FUNCTION rls_tenancy.policy_is_tenant_keyed("char", text, text, boolean) FROM PUBLIC;

-- One row per tenant table: how it is protected.
CREATE OR REPLACE VIEW rls_tenancy.coverage AS
WITH app AS (SELECT rls_tenancy.role_name('app') AS role_name),
-- The app role and every role it can SET ROLE to: their privileges are its privileges.
app_roles AS (SELECT r.oid FROM pg_catalog.pg_roles r, app WHERE pg_catalog.pg_has_role(app.role_name, r.oid, 'MEMBER')),
tenant_tables AS (
    SELECT c.oid, c.relkind, n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
           pg_catalog.pg_get_userbyid(c.relowner) AS owner, a.attnum AS tenant_attnum, a.attnotnull
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND NOT (n.nspname = 'information_schema' AND c.oid < 16384)
       AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
)
SELECT pg_catalog.format('%I.%I', t.nspname, t.relname) AS table_name,
       t.relkind = 'p' AS partitioned,
       t.relrowsecurity AS rls_enabled,
       t.relforcerowsecurity AS rls_forced,
       t.attnotnull AS tenant_id_not_null,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = t.oid)::integer AS policies,
       (SELECT pg_catalog.string_agg(p.polname, ', ' ORDER BY p.polname) FROM pg_catalog.pg_policy p
         WHERE p.polrelid = t.oid
           AND rls_tenancy.is_tenant_condition(pg_catalog.pg_get_expr(p.polqual, p.polrelid))
           AND (p.polwithcheck IS NULL
                OR rls_tenancy.is_tenant_condition(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))))
           AS tenant_policies,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                WHERE i.indrelid = t.oid AND i.indkey[0] = t.tenant_attnum) AS tenant_index,
       t.owner,
       -- Column grants count: a grant on one column is enough to act.
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_any_column_privilege(r.oid, t.oid, 'SELECT')) AS app_select,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_any_column_privilege(r.oid, t.oid, 'INSERT')) AS app_insert,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_any_column_privilege(r.oid, t.oid, 'UPDATE')) AS app_update,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_table_privilege(r.oid, t.oid, 'DELETE')) AS app_delete,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_table_privilege(r.oid, t.oid, 'TRUNCATE')) AS app_truncate,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_any_column_privilege(r.oid, t.oid, 'REFERENCES')) AS app_references,
       EXISTS (SELECT 1 FROM app_roles r WHERE pg_catalog.has_table_privilege(r.oid, t.oid, 'TRIGGER')) AS app_trigger,
       t.oid AS table_oid
  FROM tenant_tables t, app
 ORDER BY 1;
COMMENT ON VIEW rls_tenancy.coverage IS
    'Every table with a tenant_id column and how row level security covers it.';

-- What the doctor reports of the signed tenant context (signing_findings(), sql/016_signed_context.sql)
-- and of the library's definitions changed since they were installed (library_definition_findings(),
-- sql/018_library_definitions.sql): these stubs, created only where one is missing, keep findings()
-- whole before those scripts run (and after their removal).
DO $stub$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['signing_findings', 'library_definition_findings'] LOOP
        IF pg_catalog.to_regprocedure(pg_catalog.format('rls_tenancy.%I()', name)) IS NULL THEN
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION rls_tenancy.%I() '
                'RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text) '
                'LANGUAGE sql STABLE '
                'AS %L', name, 'SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text WHERE false');
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION rls_tenancy.%I() FROM PUBLIC', name);
        END IF;
    END LOOP;
END
$stub$;

-- A grantee as GRANT and REVOKE spell it: PUBLIC for 0, else the role's quoted name.
CREATE OR REPLACE FUNCTION rls_tenancy.grantee_name(grantee oid)
RETURNS text
LANGUAGE sql STABLE
RETURN CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(grantee)) END;
REVOKE ALL ON FUNCTION rls_tenancy.grantee_name(oid) FROM PUBLIC;

-- A REVOKE fix made from an ACL: a check (here or in signing_findings()) writes, where the statement goes,
--     E'\x1e' || jsonb_build_array(privileges, on_object, acl, owner_oid, privilege_types, grantees, skip_owner,
--                                   otherwise)::text || E'\x1e'
-- and findings() writes the statements in its place, from the ACL's entries of privilege_types to grantees.
-- A superuser's REVOKE acts as the object's owner and takes back only the grants the owner made; a grant
-- made by a role that holds the privilege WITH GRANT OPTION is its grantor's (aclexplode's grantor), and
-- only that grantor takes it back. So: one statement per grantor, the owner's plain, another's as
-- SET ROLE <grantor>; REVOKE <what it granted> ON ...; RESET ROLE; CASCADE where a grantee may grant it on,
-- so that what it granted goes too; a grantor that is one of the grantees first (its grantor's CASCADE would take
-- its right to revoke). An optional ninth element maps a grantor (its oid as text) to the privileges it granted on
-- columns only ('SELECT (a, b)'): its REVOKE at the table's level would be refused. owner_oid: the object's owner (for parameters the bootstrap superuser,
-- 10, as which a superuser grants them); skip_owner leaves out the owner's own grants (a fix that revokes
-- them otherwise); otherwise (or nothing): the text when no entry matches. Written out once, in findings(),
-- rather than as a function of its own: the doctor adds no object its uninstall script does not drop.

-- Ready to shard by tenant (docs/citus.md): whether every tenant table could be distributed by tenant_id
-- in Citus, every shared table made a reference table, and the library's own tables kept on the
-- coordinator as Citus local tables. Citus is not needed to run it: it reads this database's catalogs for
-- what Citus would refuse, or would keep only while every write goes through the coordinator.
--
--   distribution_key_without_tenant           a primary key, unique or exclusion constraint without tenant_id
--   distribution_foreign_key_without_tenant   a foreign key between tenant tables not paired on tenant_id
--   distribution_foreign_key_to_local         a foreign key from a tenant table to a table that stays local
--   distribution_shared_references_tenant     a foreign key from a shared (reference) table to a tenant table
--   distribution_reference_too_large          a shared table over the size a reference table should have
--   distribution_sequence_unique_across_shards  an integer or smallint sequence a key needs unique across tenants
--   distribution_tenant_id_nullable           a tenant_id that may be NULL (no shard holds such a row)
--
-- Tenant tables are those of rls_tenancy.coverage; partitions follow their parent (Citus distributes a
-- partitioned table whole), so an index, a constraint or a table that is a partition of another is left out.
-- Shared tables are those rls_tenancy.share_table() leaves: ordinary tables without tenant_id or row level
-- security, owned by the owner role, that the application role may read; rls_tenancy.tenants (one row per
-- tenant, the parent of every tenant_id) is the other reference table. The library's tables stay on the
-- coordinator: a tenant table of the schema rls_tenancy is reported (and exempt, see below), but what it
-- references is its own business, since a local table may reference local and reference tables.
--
-- The size of a reference table: at most 100 MB (pg_total_relation_size: heap, TOAST and indexes). Every
-- node holds a whole copy, every node added is sent one before it takes shards, and every join of a
-- distributed table with it reads the worker's copy; 100 MB stays within PostgreSQL's default
-- shared_buffers (128 MB) of an untuned worker. A larger table may still work as one: record an exemption
-- saying why (docs/citus.md).
--
-- Severity: info, unless as_warnings (findings(true), rls-tenancy doctor --distributed); exemptions in
-- rls_tenancy.doctor_exemptions apply as to every other check (findings() applies them).
CREATE OR REPLACE FUNCTION rls_tenancy.distribution_findings(as_warnings boolean)
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
WITH
roles AS (SELECT rls_tenancy.role_name('app') AS app, rls_tenancy.role_name('owner') AS owner),
level AS (SELECT CASE WHEN as_warnings THEN 'warning' ELSE 'info' END AS severity),
-- Tenant tables, less partitions: what create_distributed_table would be given.
tenant AS (
    SELECT c.table_oid AS oid, c.table_name, n.nspname = 'rls_tenancy' AS library, c.tenant_id_not_null,
           (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.table_oid AND a.attname = 'tenant_id') AS tenant_att
      FROM rls_tenancy.coverage c
      JOIN pg_class t ON t.oid = c.table_oid
      JOIN pg_namespace n ON n.oid = t.relnamespace
     WHERE NOT t.relispartition
),
shared AS (
    SELECT t.oid
      FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace, roles
     WHERE t.relkind = 'r' AND NOT t.relrowsecurity
       AND n.nspname NOT IN ('pg_catalog', 'pg_toast', 'rls_tenancy') AND NOT (n.nspname = 'information_schema' AND t.oid < 16384)
       AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
       AND t.relowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = roles.owner)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_class'::regclass AND x.objid = t.oid AND x.deptype = 'e')
       AND has_table_privilege(roles.app, t.oid, 'SELECT')
),
-- Unique and exclusion indexes of tenant tables (an index attached to a partitioned parent's is the parent's).
keys AS (
    SELECT i.indexrelid, i.indrelid, i.indisunique, i.indisexclusion, i.indisprimary, i.indpred, k.oid AS con_oid,
           k.conname, k.contype, t.table_name, t.tenant_att,
           (i.indkey::int2[])[0:i.indnkeyatts - 1] AS key_atts,
           (SELECT string_agg(pg_get_indexdef(i.indexrelid, n, true), ', ' ORDER BY n)
              FROM generate_series(1, i.indnkeyatts) n) AS columns
      FROM pg_index i
      JOIN tenant t ON t.oid = i.indrelid
      LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')
     WHERE (i.indisunique OR i.indisexclusion)
       AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
),
keys_without_tenant AS (
    SELECT * FROM keys
     WHERE (indisunique AND NOT (tenant_att = ANY (key_atts)))
        OR (indisexclusion AND NOT EXISTS (
                SELECT 1 FROM pg_constraint x
                  CROSS JOIN LATERAL unnest(x.conkey, x.conexclop) AS pair(att, op)
                  JOIN pg_operator o ON o.oid = pair.op
                 WHERE x.oid = keys.con_oid AND pair.att = keys.tenant_att AND o.oprname = '='))
),
-- Foreign keys from the tenant tables that would be distributed (the library's stay local).
references_out AS (
    SELECT k.oid, k.conname, k.conrelid, k.confrelid, k.conkey, k.confkey, k.confdeltype, t.table_name,
           parent.oid IS NOT NULL AND NOT parent.library AS to_distributed,
           parent.library AS to_library,
           parent.oid IS NULL AND k.confrelid <> 'rls_tenancy.tenants'::regclass
               AND NOT EXISTS (SELECT 1 FROM shared s WHERE s.oid = k.confrelid) AS to_plain,
           EXISTS (SELECT 1 FROM unnest(k.conkey, k.confkey) AS pair(child_att, parent_att)
                     JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = pair.child_att
                     JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = pair.parent_att
                    WHERE ca.attname = 'tenant_id' AND pa.attname = 'tenant_id') AS paired
      FROM pg_constraint k
      JOIN tenant t ON t.oid = k.conrelid AND NOT t.library
      LEFT JOIN tenant parent ON parent.oid = k.confrelid
     WHERE k.contype = 'f' AND k.conparentid = 0
),
-- Columns a sequence fills: serial (OWNED BY, or a default calling nextval) and identity columns.
sequence_columns AS (
    SELECT DISTINCT s.oid AS seq, q.seqtypid, t.oid AS table_oid, t.table_name, t.tenant_att, a.attnum, a.attname,
           a.attidentity <> '' AS identity
      FROM tenant t
      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = t.oid AND ad.adnum = a.attnum
      JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass
                      AND ((d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                            AND d.refobjid = t.oid AND d.refobjsubid = a.attnum)
                           OR (d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid))
      JOIN pg_class s ON s.oid = CASE WHEN d.classid = 'pg_class'::regclass THEN d.objid ELSE d.refobjid END
                     AND s.relkind = 'S'
      JOIN pg_sequence q ON q.seqrelid = s.oid
)
SELECT level.severity, 'distribution_key_without_tenant', format('%s', k.indexrelid::regclass),
       format('%s %s: Citus distributes %s by tenant_id and refuses a primary key, unique or exclusion '
              'constraint that could hold only across shards (each shard checks its own rows)',
              pg_get_indexdef(k.indexrelid),
              CASE WHEN k.indisexclusion THEN 'does not compare tenant_id with =' ELSE 'does not include tenant_id' END,
              k.table_name),
       CASE WHEN k.contype = 'p'
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (tenant_id, %s); '
                            '-- foreign keys that point at it first point at (tenant_id, %s)',
                            k.table_name, k.conname, k.conname, k.columns, k.columns)
            WHEN k.contype = 'u'
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I UNIQUE (tenant_id, %s); '
                            '-- foreign keys that point at it first point at (tenant_id, %s)',
                            k.table_name, k.conname, k.conname, k.columns, k.columns)
            WHEN k.contype = 'x'
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I EXCLUDE USING ... (tenant_id WITH =, ...); '
                            '-- btree_gist gives = to GiST', k.table_name, k.conname, k.conname)
            ELSE format('DROP INDEX %s; CREATE UNIQUE INDEX %I ON %s (tenant_id, %s)%s;',
                        k.indexrelid::regclass, (SELECT relname FROM pg_class WHERE oid = k.indexrelid), k.table_name,
                        k.columns, CASE WHEN k.indpred IS NOT NULL THEN ' WHERE ' || pg_get_expr(k.indpred, k.indrelid) ELSE '' END)
       END
  FROM keys_without_tenant k, level
UNION ALL
SELECT level.severity, 'distribution_foreign_key_without_tenant', format('%s constraint %I', r.conrelid::regclass, r.conname),
       format('foreign key %I from %s to %s does not pair tenant_id with tenant_id: Citus refuses a foreign key '
              'between distributed tables that does not include the distribution column on both sides',
              r.conname, r.conrelid::regclass, r.confrelid::regclass),
       CASE WHEN cardinality(r.conkey) = 1 AND r.confdeltype IN ('a', 'r', 'c')
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I; SELECT rls_tenancy.add_tenant_foreign_key(%L, %L, %L, %L, %L, %L);',
                            r.conrelid::regclass, r.conname, r.conrelid::regclass::text,
                            (SELECT attname FROM pg_attribute WHERE attrelid = r.conrelid AND attnum = r.conkey[1]),
                            r.confrelid::regclass::text,
                            (SELECT attname FROM pg_attribute WHERE attrelid = r.confrelid AND attnum = r.confkey[1]),
                            r.conname,
                            CASE r.confdeltype WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE' ELSE 'NO ACTION' END)
            ELSE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (tenant_id, ...) REFERENCES %s (tenant_id, ...);',
                        r.conrelid::regclass, r.conname, r.conname, r.confrelid::regclass)
       END
  FROM references_out r, level
 WHERE r.to_distributed AND NOT r.paired
UNION ALL
SELECT level.severity, 'distribution_foreign_key_to_local', format('%s constraint %I', r.conrelid::regclass, r.conname),
       format('foreign key %I from %s points at %s, which %s: Citus refuses a foreign key from a distributed table '
              'to a local one', r.conname, r.conrelid::regclass, r.confrelid::regclass,
              CASE WHEN r.to_library THEN 'is one of the library''s tables and stays on the coordinator (a Citus local table)'
                   ELSE 'has no tenant_id and is not shared, so it would stay on the coordinator' END),
       CASE WHEN r.to_library
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I; -- the application checks the reference instead, '
                            'or %s stays on the coordinator too (docs/citus.md)', r.conrelid::regclass, r.conname, r.conrelid::regclass)
            ELSE format('SELECT rls_tenancy.share_table(%L); -- reference data, a reference table in Citus; or give %s a tenant_id and isolate it',
                        r.confrelid::regclass::text, r.confrelid::regclass)
       END
  FROM references_out r, level
 WHERE r.to_library OR r.to_plain
UNION ALL
SELECT level.severity, 'distribution_shared_references_tenant', format('%s constraint %I', k.conrelid::regclass, k.conname),
       format('shared table %s has foreign key %I into tenant table %s: a reference table is copied whole to every '
              'node, and Citus refuses a foreign key from it into a distributed (or local) table',
              k.conrelid::regclass, k.conname, k.confrelid::regclass),
       format('ALTER TABLE %s DROP CONSTRAINT %I; -- or give %s a tenant_id and isolate it: its rows belong to tenants',
              k.conrelid::regclass, k.conname, k.conrelid::regclass)
  FROM pg_constraint k
  JOIN shared s ON s.oid = k.conrelid
  JOIN rls_tenancy.coverage parent ON parent.table_oid = k.confrelid,
       level
 WHERE k.contype = 'f'
UNION ALL
SELECT level.severity, 'distribution_reference_too_large', format('%s', t.oid::regclass),
       format('%s is %s: as a reference table every node holds all of it, and every node added is sent a copy; '
              'the limit for a reference table here is 100 MB (docs/citus.md)',
              t.oid::regclass, pg_size_pretty(pg_total_relation_size(t.oid))),
       format('if its rows belong to tenants, give %s a tenant_id and distribute it; else keep it on the coordinator '
              '(SELECT citus_add_local_table_to_metadata(%L);), where no distributed table may reference it, or '
              'record an exemption saying why every node should hold it', t.oid::regclass, t.oid::regclass::text)
  FROM pg_class t, level
 WHERE (t.oid IN (SELECT oid FROM shared) OR t.oid = 'rls_tenancy.tenants'::regclass)
   AND pg_total_relation_size(t.oid) > 100 * 1024 * 1024
UNION ALL
(SELECT DISTINCT ON (c.seq) level.severity, 'distribution_sequence_unique_across_shards', format('%s', c.seq::regclass),
       format('%s (%s) fills %s.%I, which %s requires unique across all tenants: distributed by tenant_id no key can '
              'hold that, and then only the sequence keeps the values apart; Citus gives a bigint sequence a range '
              'of its own on each node, but an integer or smallint one works on the coordinator alone (nextval() '
              'on a worker is refused), so every insert would have to go through the coordinator',
              c.seq::regclass, format_type(c.seqtypid, NULL), c.table_name, c.attname, k.indexrelid::regclass),
       CASE WHEN c.identity
                THEN format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint; -- its identity sequence follows; and every column that references it',
                            c.table_name, c.attname)
            ELSE format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint; ALTER SEQUENCE %s AS bigint; -- and every column that references it',
                        c.table_name, c.attname, c.seq::regclass)
       END
  FROM sequence_columns c
  JOIN keys_without_tenant k ON k.indrelid = c.table_oid AND k.indisunique AND c.attnum = ANY (k.key_atts),
       level
 WHERE c.seqtypid IN ('smallint'::regtype, 'integer'::regtype)
 ORDER BY c.seq, k.indexrelid::regclass::text)
UNION ALL
SELECT level.severity, 'distribution_tenant_id_nullable', t.table_name,
       format('%s.tenant_id allows NULL: a distributed table''s rows are placed by tenant_id, and Citus refuses a '
              'row without one', t.table_name),
       format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL; -- after moving the rows without a tenant elsewhere',
              t.table_name)
  FROM tenant t, level
 WHERE NOT t.tenant_id_not_null
$fn$;
COMMENT ON FUNCTION rls_tenancy.distribution_findings(boolean) IS
    'What would keep a tenant table from being distributed by tenant_id in Citus; info, or warnings when asked.';
REVOKE ALL ON FUNCTION rls_tenancy.distribution_findings(boolean) FROM PUBLIC;

-- The audit log's guards (sql/009_audit.sql): a trigger missing, disabled, or firing only in replica mode
-- lets events be edited, deleted or truncated, or written unchecked or unsealed, and the chains then prove
-- nothing. ENABLE ALWAYS ('A') still guards; a DISABLE left behind by hand is what this catches.
CREATE OR REPLACE FUNCTION rls_tenancy.audit_findings()
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT 'error', 'audit_trigger_disabled', 'rls_tenancy.audit_log ' || expected.name,
       format('the audit log''s trigger %I is %s: %s', expected.name,
              CASE WHEN tg.oid IS NULL THEN 'missing' WHEN tg.tgenabled = 'D' THEN 'disabled'
                   ELSE 'set to fire only in replica mode' END,
              expected.guards),
       CASE WHEN tg.oid IS NULL
            THEN 'install the library again: rls-tenancy migrate --reinstall, or its --sql output through psql -1, as a superuser'
            ELSE format('ALTER TABLE rls_tenancy.audit_log ENABLE TRIGGER %I;', expected.name) END
  FROM (VALUES ('audit_log_stamp', 'events are written without their time, role and checks'),
               ('audit_log_content_fixed', 'a sealed event''s content can be changed'),
               ('audit_log_append_only', 'a sealed event''s chain fields can be changed'),
               ('audit_log_no_delete', 'events can be deleted outside purge_audit_log'),
               ('audit_log_no_truncate', 'the whole log can be truncated'),
               ('audit_log_seal', 'events are committed unsealed, outside every chain')) AS expected (name, guards)
  LEFT JOIN pg_trigger tg ON tg.tgrelid = to_regclass('rls_tenancy.audit_log') AND tg.tgname = expected.name
 WHERE to_regclass('rls_tenancy.audit_log') IS NOT NULL AND (tg.oid IS NULL OR tg.tgenabled NOT IN ('O', 'A'))
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.audit_findings() FROM PUBLIC;

-- The library's objects in the hands of another role than the owner role: the library's functions run
-- as the owner role and rely on what these are; whoever owns one may change, drop or re-grant it. An
-- error when the application role has that role's rights (then it can, say, turn off row level security
-- on rls_tenancy.tenants, or read the context key), else a warning. Sequences that belong to a table's
-- column follow that table's owner and are left out. app_role NULL: the roles are unknown (the doctor
-- could not read rls_tenancy.roles), every one an error.
CREATE OR REPLACE FUNCTION rls_tenancy.library_owner_findings(owner_role name, app_role name)
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT CASE WHEN app_role IS NULL OR pg_has_role(app_role, o.owner_oid, 'MEMBER') THEN 'error' ELSE 'warning' END,
       'library_object_owner', o.object_name,
       format('%s %s is owned by %I, not the owner role %I: %s', lower(o.kind), o.object_name,
              pg_get_userbyid(o.owner_oid), owner_role,
              CASE WHEN app_role IS NULL THEN 'the owner role, as which the library''s functions and this report run, may not read it'
                   WHEN pg_has_role(app_role, o.owner_oid, 'MEMBER')
                   THEN 'the application role has that role''s rights, and may change, drop or re-grant it (row level security, policies, the context key and the library''s functions included)'
                   ELSE 'whoever has that role''s rights may change, drop or re-grant what the library''s functions rely on' END),
       -- The old owner's grants move to the new one: the install scripts, run again, grant what they granted.
       format('ALTER %s %s OWNER TO %I;', o.kind, o.object_name, owner_role)
       || CASE WHEN o.kind IN ('FUNCTION', 'PROCEDURE', 'ROUTINE')
               THEN ' -- then the library''s install scripts again (rls-tenancy migrate --reinstall, or its --sql output through psql -1, as a superuser), '
                    'which grant what the old owner''s grants no longer do'
               ELSE '' END
  FROM (SELECT format('%s', c.oid::regclass) AS object_name, c.relowner AS owner_oid,
               CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
          FROM pg_class c
         WHERE c.relnamespace = 'rls_tenancy'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
           -- an extension's, reported once as extension_in_library_schema
           AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_class'::regclass AND x.objid = c.oid AND x.deptype = 'e')
        UNION ALL
        SELECT format('%s', f.oid::regprocedure), f.proowner, 'ROUTINE'
          FROM pg_proc f
         WHERE f.pronamespace = 'rls_tenancy'::regnamespace AND f.prokind IN ('f', 'p')
           AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e')) o
 WHERE o.owner_oid IS DISTINCT FROM (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_role)
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.library_owner_findings(name, name) FROM PUBLIC;

-- findings(true) reports the distribution checks as warnings; findings() is findings(false).
CREATE OR REPLACE FUNCTION rls_tenancy.findings(distributed boolean)
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE plpgsql STABLE
-- It only reads the catalogs; as the owner it needs no grant but EXECUTE on itself.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Its one query is large and its estimates high: compiling it (JIT) took seconds, where running it takes less
-- than one.
SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    app_role    name;
    bypass_role name;
    owner_role  name;
    -- Signed (sql/016): a condition on the bare setting is no longer enough, even ANDed with more.
    signing_required boolean := false;
    -- A fix holding REVOKE requests (see grantee_name() above), written out row by row below.
    requested text;
BEGIN
    -- The library's schema in another role's hands: the owner role, as which this runs, may not even look
    -- in it (and whoever owns it may drop and replace any of its functions). Nothing else can be checked.
    IF NOT has_schema_privilege('rls_tenancy', 'USAGE') THEN
        RETURN QUERY
            SELECT 'error'::text, 'library_object_owner'::text, 'rls_tenancy'::text,
                   format('schema rls_tenancy is owned by %I, not the owner role %I, which may not use it: the library''s '
                          'functions and this report run as the owner role, and whoever owns the schema may drop and '
                          'replace any function in it (nothing else could be checked)', pg_get_userbyid(n.nspowner), current_user),
                   format('ALTER SCHEMA rls_tenancy OWNER TO %I;', current_user)
              FROM pg_namespace n WHERE n.nspname = 'rls_tenancy';
        RETURN;
    END IF;
    -- Likewise a table or sequence of the library the owner role may no longer read (handed to another
    -- role): report whose it is, and nothing that would read it.
    IF EXISTS (SELECT 1 FROM pg_class c
                WHERE c.relnamespace = 'rls_tenancy'::regnamespace AND c.relkind IN ('r', 'S')
                  AND NOT has_table_privilege(c.oid, 'SELECT')) THEN
        RETURN QUERY SELECT * FROM rls_tenancy.library_owner_findings(current_user, NULL);
        RETURN;
    END IF;
    app_role := rls_tenancy.role_name('app');
    bypass_role := rls_tenancy.role_name('bypass');
    owner_role := rls_tenancy.role_name('owner');
    -- The doctor's inputs: a roles table naming roles that do not exist is a tampered one, and no report
    -- made from it can be trusted.
    IF (SELECT count(*) FROM pg_roles r WHERE r.rolname IN (app_role, bypass_role, owner_role)) < 3 THEN
        RAISE EXCEPTION 'rls_tenancy doctor: rls_tenancy.roles names roles that do not exist (owner %, app %, bypass %)',
                        owner_role, app_role, bypass_role
            USING HINT = 'restore rls_tenancy.roles before trusting any report: as a superuser, DELETE FROM rls_tenancy.roles, '
                          'then rls-tenancy migrate --reinstall with the role names the library was installed with';
    END IF;
    -- A superuser application role is one cause: row level security does not apply to it at all, and every
    -- other check would report a consequence of it (one finding, not thirty).
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = app_role) THEN
        RETURN QUERY SELECT 'error'::text, 'app_role_superuser'::text, app_role::text,
               format('the application role %I is a superuser: row level security does not apply to it (fix this '
                      'first: other findings are not reported until then)', app_role),
               format('ALTER ROLE %I NOSUPERUSER;', app_role);
        RETURN;
    END IF;
    IF pg_catalog.to_regprocedure('rls_tenancy.context_signing_required()') IS NOT NULL THEN  -- sql/016
        EXECUTE 'SELECT coalesce(rls_tenancy.context_signing_required(), false)' INTO signing_required;
    END IF;
    FOR severity, check_name, object_name, message, fix IN
    WITH RECURSIVE
    -- The app role and every role it can SET ROLE to: their privileges are its privileges.
    app_roles AS (SELECT r.oid FROM pg_roles r WHERE pg_has_role(app_role, r.oid, 'MEMBER')),
    -- The tenant tables (rls_tenancy.coverage's), read once: the checks added since ask it many times.
    tenant_oids (oid) AS (SELECT c.table_oid FROM rls_tenancy.coverage c),
    -- What calls a function from text to an integer type outside pg_catalog and rls_tenancy without naming it
    -- (text_cast_to_integer, cast_function_called): a policy on a tenant table or on the library's, or a function
    -- of the library, that depends on one its printed text does not name. That is a cast's function: the
    -- catalogs print its call as the built-in ::bigint. With the statement that makes the caller again from its
    -- own text, which, the cast gone, reads ::bigint as PostgreSQL does (ALTER POLICY; CREATE OR REPLACE for a
    -- function, whose owner and grants stay).
    cast_callers (func, object, fix) AS (
        SELECT DISTINCT f.oid, format('%s policy %I', p.polrelid::regclass, p.polname),
               format('ALTER POLICY %I ON %s%s%s;', p.polname, p.polrelid::regclass,
                      ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                      ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')')
          FROM pg_policy p
          JOIN pg_class t ON t.oid = p.polrelid
          JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_proc'::regclass
          JOIN pg_proc f ON f.oid = d.refobjid
         WHERE (t.oid IN (SELECT o.oid FROM tenant_oids o) OR t.relnamespace = 'rls_tenancy'::regnamespace)
           AND f.pronamespace NOT IN ('pg_catalog'::regnamespace, 'rls_tenancy'::regnamespace)
           AND f.prorettype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
           AND f.proargtypes[0] IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
           AND strpos(concat(pg_get_expr(p.polqual, p.polrelid), ' ', pg_get_expr(p.polwithcheck, p.polrelid)),
                      quote_ident(f.proname) || '(') = 0
        UNION ALL
        SELECT DISTINCT f.oid, format('%s', g.oid::regprocedure), rtrim(pg_get_functiondef(g.oid), E'\n') || ';'
          FROM pg_proc g
          JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = g.oid AND d.refclassid = 'pg_proc'::regclass
          JOIN pg_proc f ON f.oid = d.refobjid
         WHERE g.pronamespace = 'rls_tenancy'::regnamespace
           AND f.pronamespace NOT IN ('pg_catalog'::regnamespace, 'rls_tenancy'::regnamespace)
           AND f.prorettype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
           AND f.proargtypes[0] IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
           AND strpos(pg_get_functiondef(g.oid), quote_ident(f.proname) || '(') = 0
    ),
    -- The casts of text_cast_to_integer: from text (varchar, char) to an integer type, created in this database
    -- with a function (WITH INOUT is what PostgreSQL does without a cast: no finding).
    integer_casts (oid, func, name, drop_sql) AS (
        SELECT k.oid, k.castfunc, format('cast (%s AS %s)', k.castsource::regtype, k.casttarget::regtype),
               format('DROP CAST IF EXISTS (%s AS %s);', k.castsource::regtype, k.casttarget::regtype)
          FROM pg_cast k
         WHERE k.oid >= 16384 AND k.castmethod = 'f'
           AND k.castsource IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
           AND k.casttarget IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
    ),
    -- Every role the app role is a member of, by each chain of memberships (the first hop is the one it holds).
    memberships (role_oid, chain, first_hop, names) AS (
        SELECT m.roleid, ARRAY[m.member, m.roleid], m.roleid, quote_ident(a.rolname) || ' -> ' || quote_ident(r.rolname)
          FROM pg_auth_members m JOIN pg_roles a ON a.oid = m.member JOIN pg_roles r ON r.oid = m.roleid
         WHERE a.rolname = app_role
        UNION ALL
        SELECT m.roleid, ms.chain || m.roleid, ms.first_hop, ms.names || ' -> ' || quote_ident(r.rolname)
          FROM memberships ms JOIN pg_auth_members m ON m.member = ms.role_oid JOIN pg_roles r ON r.oid = m.roleid
         WHERE m.roleid <> ALL (ms.chain)
    ),
    -- The tables the doctor trusts that PUBLIC or a role the app role can become may write: by a grant on the
    -- table, or on one of its columns (INSERT or UPDATE of a column is enough to add or change an exemption).
    input_writers (table_oid, relname, grantee, acl, owner_oid) AS (
        SELECT DISTINCT t.oid, t.relname, acl.grantee,
               coalesce(t.relacl, acldefault('r', t.relowner))
               || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item WHERE a.attrelid = t.oid),
                           '{}'::aclitem[]),
               t.relowner
          FROM pg_class t
          CROSS JOIN LATERAL (SELECT * FROM aclexplode(coalesce(t.relacl, acldefault('r', t.relowner)))
                              UNION ALL
                              SELECT c.* FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) c
                               WHERE a.attrelid = t.oid AND a.attacl IS NOT NULL) acl
         WHERE t.oid IN ('rls_tenancy.roles'::regclass, 'rls_tenancy.doctor_exemptions'::regclass,
                         coalesce(to_regclass('rls_tenancy.context_signing'), 0),
                         coalesce(to_regclass('rls_tenancy.library_definitions'), 0))
           AND acl.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') AND acl.grantee <> t.relowner
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
    ),
    -- Exemptions count only while the application role cannot write them (else it could exempt any error).
    exemptions_trusted (trusted) AS (
        SELECT NOT EXISTS (SELECT 1 FROM input_writers w WHERE w.table_oid = 'rls_tenancy.doctor_exemptions'::regclass)
               AND NOT pg_has_role(app_role, t.relowner, 'MEMBER')
          FROM pg_class t WHERE t.oid = 'rls_tenancy.doctor_exemptions'::regclass
    ),
    -- Roles whose rights read or write around row level security, and why.
    privileged (oid, rolname, why) AS (
        SELECT r.oid, r.rolname,
               CASE WHEN r.rolsuper THEN 'is a superuser'
                    WHEN r.rolbypassrls THEN 'has BYPASSRLS'
                    WHEN r.rolcreaterole THEN 'has CREATEROLE'
                    WHEN r.rolreplication THEN 'has REPLICATION (logical decoding reads every tenant''s changes)'
                    WHEN r.rolname = owner_role THEN 'owns the tenant tables'
                    WHEN r.rolname = bypass_role THEN 'is the bypass role'
                    WHEN r.rolname = 'pg_read_all_data'
                        THEN 'reads every table and sequence (the context key''s included)'
                    WHEN r.rolname = 'pg_write_all_data'
                        THEN 'writes every table and sequence (the context key''s included)'
                    WHEN r.rolname = 'pg_read_server_files' THEN 'reads the server''s files, its data directory included'
                    WHEN r.rolname = 'pg_write_server_files' THEN 'writes the server''s files'
                    WHEN r.rolname = 'pg_read_all_stats'
                        THEN 'reads every session''s query text (other tenants'' requests in flight, their literals included)'
                    ELSE 'runs programs on the server as its operating system user (COPY ... PROGRAM)' END
          FROM pg_roles r
         WHERE r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolreplication
            OR r.rolname IN (owner_role, bypass_role, 'pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                             'pg_write_server_files', 'pg_execute_server_program', 'pg_read_all_stats')
    ),
    -- SECURITY DEFINER functions outside pg_catalog and not initdb's (information_schema's own: oid below
    -- FirstNormalObjectId, 16384; one created there later counts), with their search_path entries and the word
    -- a fix names them by (ALTER FUNCTION fails on a procedure). An extension's only where it reads a tenant
    -- table (by a dependency, BEGIN ATOMIC, or by name in its body): ALTER EXTENSION ... ADD FUNCTION hides no
    -- definer, while the definers an extension ships are its own business.
    definers_raw AS (
        SELECT f.oid, f.proowner, f.proacl, n.nspname,
               (SELECT substr(setting, 13) FROM unnest(f.proconfig) setting WHERE setting LIKE 'search\_path=%') AS path,
               CASE f.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END AS kind,
               x.extension
          FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
          LEFT JOIN LATERAL (SELECT e.extname AS extension FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                              WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid AND d.deptype = 'e'
                                AND d.refclassid = 'pg_extension'::regclass LIMIT 1) x ON true
         WHERE f.prosecdef AND n.nspname <> 'pg_catalog' AND f.oid >= 16384
           AND (x.extension IS NULL
                OR EXISTS (SELECT 1 FROM pg_class t
                            WHERE (t.oid IN (SELECT c.table_oid FROM rls_tenancy.coverage c)
                                   OR t.oid = 'rls_tenancy.tenants'::regclass)
                              AND (EXISTS (SELECT 1 FROM pg_depend d
                                            WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid
                                              AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid)
                                   OR (strpos(lower(f.prosrc), lower(t.relname)) > 0
                                       AND f.prosrc ~* ('\m' || regexp_replace(t.relname, '([^[:alnum:]_])', '\\\1', 'g') || '\M')))))
    ),
    -- Whether the app role, or a role it can become, may create schemas in this database (CREATE on it):
    -- then a schema that a search_path names but nobody has created yet is as good as its own.
    schema_creators (any_creator) AS (
        SELECT EXISTS (SELECT 1 FROM app_roles ar WHERE has_database_privilege(ar.oid, current_database(), 'CREATE'))
    ),
    -- What app_role_database_create reports: CREATE on this database granted to PUBLIC or a role the app
    -- role can become (the owner's own grant is the owner's).
    database_creates (grantee, acl, owner_oid, datname) AS (
        SELECT acl.grantee, coalesce(d.datacl, acldefault('d', d.datdba)), d.datdba, d.datname
          FROM pg_database d CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) acl
         WHERE d.datname = current_database() AND acl.privilege_type = 'CREATE' AND acl.grantee <> d.datdba
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
    ),
    -- What app_role_schema_create reports: CREATE on a schema granted to PUBLIC or a role the app role can
    -- become, and a schema owned by such a role (its owner creates there whatever the grants say). Not the
    -- library's schema (library_schema_create, library_object_owner), not a schema holding tenant tables
    -- owned by one (app_role_owns_schema), nor one whose owner is a privileged role the app role can become
    -- (app_role_member_of_privileged): each is its own finding.
    schema_creates (nsp, grantee, owned) AS (
        SELECT n.oid, acl.grantee, false
          FROM pg_namespace n CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) acl
         WHERE n.nspname <> 'rls_tenancy'
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
           AND acl.privilege_type = 'CREATE' AND acl.grantee <> n.nspowner
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
        UNION ALL
        SELECT n.oid, n.nspowner, true
          FROM pg_namespace n
         WHERE n.nspname <> 'rls_tenancy'
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
           AND pg_has_role(app_role, n.nspowner, 'MEMBER')
           AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = n.nspowner)
           AND NOT EXISTS (SELECT 1 FROM rls_tenancy.coverage c JOIN pg_class t ON t.oid = c.table_oid
                            WHERE t.relnamespace = n.oid)
    ),
    -- Each entry of a definer's search_path: the schema it names ("$user": the function's owner, as which
    -- it runs), whether that exists, and whether the app role can put objects there: CREATE on it, or, for
    -- one not created yet, CREATE on the database. pg_catalog is searched first whatever the path says, so
    -- leaving it out changes nothing: CREATE on it is app_role_schema_create's alone. covered: the cause is
    -- reported already, by app_role_schema_create (the schema) or app_role_database_create (one not created
    -- yet), whose REVOKE closes it for every definer at once; the path then keeps that schema (dropping it
    -- breaks a function that works).
    definer_paths AS (
        SELECT d.oid, e.n, e.element, e.name, to_regnamespace(quote_ident(e.name)) IS NULL AS missing,
               e.name <> 'pg_catalog' AND e.element NOT IN ('pg_temp', '')
               AND CASE WHEN to_regnamespace(quote_ident(e.name)) IS NULL
                        THEN (SELECT sc.any_creator FROM schema_creators sc)
                        ELSE EXISTS (SELECT 1 FROM app_roles ar
                                      WHERE has_schema_privilege(ar.oid, to_regnamespace(quote_ident(e.name)), 'CREATE')) END
                   AS writable,
               CASE WHEN to_regnamespace(quote_ident(e.name)) IS NULL
                    THEN EXISTS (SELECT 1 FROM database_creates dc)
                    ELSE EXISTS (SELECT 1 FROM schema_creates sc WHERE sc.nsp = to_regnamespace(quote_ident(e.name))) END
                   AS covered
          FROM definers_raw d
          CROSS JOIN LATERAL unnest(CASE WHEN d.path IS NULL THEN ARRAY['pg_catalog', d.nspname]
                                         ELSE ARRAY['pg_catalog'] || string_to_array(d.path, ',') END)
               WITH ORDINALITY AS raw_element (element, n)
          CROSS JOIN LATERAL (SELECT btrim(raw_element.element, ' "') AS element, raw_element.n) trimmed
          CROSS JOIN LATERAL (SELECT trimmed.element,
                                     CASE WHEN trimmed.element = '$user' THEN pg_get_userbyid(d.proowner)::text
                                          ELSE trimmed.element END AS name,
                                     trimmed.n) e
    ),
    -- With the search_path a fix should give it: its own schemas (or, without any, pg_catalog and the
    -- function's schema), less pg_temp, "$user" and those the app role can put objects in, then pg_temp
    -- last, so that the names it uses still resolve and none resolves to a temporary object. pg_catalog is
    -- always kept: the path is never empty.
    definers AS (
        SELECT d.oid, d.proowner, d.proacl, d.path, d.kind, d.extension,
               (SELECT string_agg(quote_ident(kept.name), ', ' ORDER BY kept.n)
                  FROM (SELECT DISTINCT ON (e.name) e.name, e.n
                          FROM definer_paths e
                         WHERE e.oid = d.oid AND e.element NOT IN ('pg_temp', '$user', '')
                           AND NOT (e.writable AND NOT e.covered)
                         ORDER BY e.name, e.n) kept) || ', pg_temp' AS safe_path
          FROM definers_raw d
    ),
    -- Functions whose bodies name what they call as text (PL/pgSQL, EXECUTE text: no dependency records it):
    -- SECURITY DEFINER functions, trigger and event-trigger functions, in a language with a body to read.
    callers_by_name (oid) AS (
        SELECT g.oid FROM pg_proc g
         WHERE g.prolang NOT IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('internal', 'c'))
           AND (g.prosecdef OR EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgfoid = g.oid AND NOT tg.tgisinternal)
                            OR EXISTS (SELECT 1 FROM pg_event_trigger et WHERE et.evtfoid = g.oid))
    ),
    -- Each word such a body spells (lower-cased, double quotes dropped), with the word written before it and
    -- a dot, if any: read once per body, then matched to function names by a hash join, not a regular
    -- expression per pair of functions.
    body_words (caller, qualifier, word) AS (
        SELECT DISTINCT g.oid, m[1], m[2]
          FROM callers_by_name g JOIN pg_proc p ON p.oid = g.oid
          CROSS JOIN LATERAL regexp_matches(replace(lower(p.prosrc), '"', ''),
                                            '(?:([[:alnum:]_]+)\s*\.\s*)?([[:alnum:]_]+)', 'g') m
    ),
    -- The search_paths an unqualified name in such a body is looked up in: its own (SET search_path), else
    -- the default one ("$user", public) and any set for this database or a role (ALTER DATABASE / ROLE ...
    -- SET search_path), each of which may be the caller's. pg_catalog is searched first unless a path names it.
    default_paths (path_id, path) AS (
        SELECT 0, '"$user", public'
        UNION ALL
        SELECT row_number() OVER (), substr(c.setting, 13)
          FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) c (setting)
         WHERE s.setdatabase IN (0, (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()))
           AND c.setting ILIKE 'search\_path=%'  -- setting names are case-insensitive
    ),
    caller_paths (caller, path_id, element, n) AS (
        SELECT g.oid, coalesce(own.path_id, dp.path_id), btrim(e.element, ' "'), e.n
          FROM callers_by_name g JOIN pg_proc p ON p.oid = g.oid
          LEFT JOIN LATERAL (SELECT -1 AS path_id, substr(setting, 13) AS path FROM unnest(p.proconfig) setting
                              WHERE setting LIKE 'search\_path=%' LIMIT 1) own ON true
          LEFT JOIN default_paths dp ON own.path IS NULL
          CROSS JOIN LATERAL unnest(string_to_array(coalesce(own.path, dp.path), ',')) WITH ORDINALITY AS e (element, n)
    ),
    -- A caller naming a function, as far as the catalogs can tell: the word is its name, and either written
    -- after its schema (schema.name), or alone where a search_path of the caller holds its schema ("$user":
    -- a role's name) before pg_catalog holds a function of the same name and argument types (format(text),
    -- now(): a word every body writes names pg_catalog's, not a function of the same name elsewhere). Only
    -- the functions that matter: SECURITY DEFINER ones (and the chains through them), and those of roles the
    -- app role can become. A name built from pieces at run time stays unseen.
    named_calls (caller, target) AS (
        SELECT DISTINCT w.caller, f.oid
          FROM body_words w
          JOIN pg_proc f ON lower(f.proname) = w.word AND f.oid <> w.caller
          JOIN pg_namespace fn ON fn.oid = f.pronamespace
         WHERE fn.nspname <> 'pg_catalog' AND f.oid >= 16384
           AND (f.prosecdef OR pg_has_role(app_role, f.proowner, 'MEMBER'))
           AND (w.qualifier = lower(fn.nspname)
                OR (w.qualifier IS NULL
                    AND EXISTS (SELECT 1 FROM caller_paths cp
                                 WHERE cp.caller = w.caller
                                   AND (lower(cp.element) = lower(fn.nspname)
                                        OR (cp.element = '$user'
                                            AND EXISTS (SELECT 1 FROM pg_roles r WHERE lower(r.rolname) = lower(fn.nspname))))
                                   AND NOT (EXISTS (SELECT 1 FROM pg_proc c
                                                     WHERE c.pronamespace = 'pg_catalog'::regnamespace
                                                       AND c.proname = f.proname AND c.proargtypes = f.proargtypes)
                                            AND coalesce((SELECT min(q.n) FROM caller_paths q
                                                           WHERE q.caller = cp.caller AND q.path_id = cp.path_id
                                                             AND lower(q.element) = 'pg_catalog'), 0) < cp.n))))
        UNION
        -- A name with characters a word does not hold (created quoted): the regular expression, after a
        -- cheaper test, and wherever it stands.
        SELECT g.oid, f.oid
          FROM pg_proc f
          JOIN pg_namespace fn ON fn.oid = f.pronamespace
          CROSS JOIN callers_by_name g
          JOIN pg_proc gp ON gp.oid = g.oid
         WHERE lower(f.proname) !~ '^[[:alnum:]_]+$' AND f.oid <> g.oid
           AND fn.nspname <> 'pg_catalog' AND f.oid >= 16384
           AND (f.prosecdef OR pg_has_role(app_role, f.proowner, 'MEMBER'))
           AND strpos(lower(gp.prosrc), lower(f.proname)) > 0
           AND gp.prosrc ~* ('\m' || regexp_replace(f.proname, '([^[:alnum:]_])', '\\\1', 'g') || '\M')
    ),
    -- Who calls whom: a dependency (BEGIN ATOMIC) or a name in the body.
    calls (caller, target) AS (
        SELECT d.objid, d.refobjid FROM pg_depend d
         WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.objid <> d.refobjid
        UNION
        SELECT nc.caller, nc.target FROM named_calls nc
    ),
    -- Foreign servers, and whether each may be this database: its dbname this one's, or none (libpq's
    -- default, or a service's), and some host it may connect to this server, with why. A host counts as
    -- another server only where it is written as a literal address (IPv4 dotted, or IPv6) that is not this
    -- machine's (127.0.0.0/8, ::1, 0.0.0.0, ::, the address this session came in on, one listen_addresses
    -- names), or where its port is given and differs from this server's. Anything else may be this server:
    -- no host (libpq's default socket, or what a service in pg_service.conf says), a socket directory (an
    -- absolute path, or @ for an abstract socket), and any name (localhost, the machine's own hostname, an
    -- address written as a number, 2130706433 or 0x7f000001), which the doctor cannot resolve. libpq
    -- connects to hostaddr where it is given (host then only names the server for authentication), else to
    -- host; with a list, to each in turn, with the port of the same place in the port list (or the one port).
    -- Only a wrapper that connects with libpq (postgres_fdw's, dblink's) connects to a database at all: file_fdw
    -- reads a file (or a program's output) on the server, another wrapper another kind of source (reads says
    -- which, for the messages).
    servers (oid, srvname, srvowner, srvacl, loopback, why, reads) AS (
        SELECT s.oid, s.srvname, s.srvowner, s.srvacl,
               w.libpq AND coalesce(o.dbname, current_database()) = current_database() AND near.why IS NOT NULL,
               near.why,
               CASE WHEN w.libpq THEN 'database'
                    WHEN w.handler = 'file_fdw_handler' THEN 'file'
                    ELSE format('wrapper %I', w.fdwname) END
          FROM pg_foreign_server s
          CROSS JOIN LATERAL (
              SELECT fdw.fdwname, h.proname AS handler,
                     fdw.fdwname IN ('postgres_fdw', 'dblink_fdw')
                     OR h.proname = 'postgres_fdw_handler'
                     OR v.proname IN ('postgres_fdw_validator', 'dblink_fdw_validator', 'postgresql_fdw_validator') AS libpq
                FROM pg_foreign_data_wrapper fdw
                LEFT JOIN pg_proc h ON h.oid = fdw.fdwhandler
                LEFT JOIN pg_proc v ON v.oid = fdw.fdwvalidator
               WHERE fdw.oid = s.srvfdw) w
          CROSS JOIN LATERAL (
              SELECT max(substr(opt, 8)) FILTER (WHERE opt LIKE 'dbname=%') AS dbname,
                     max(substr(opt, 9)) FILTER (WHERE opt LIKE 'service=%') AS service,
                     coalesce(string_to_array(max(substr(opt, 6)) FILTER (WHERE opt LIKE 'host=%'), ','), '{}') AS hosts,
                     coalesce(string_to_array(max(substr(opt, 10)) FILTER (WHERE opt LIKE 'hostaddr=%'), ','), '{}')
                         AS hostaddrs,
                     coalesce(string_to_array(max(substr(opt, 6)) FILTER (WHERE opt LIKE 'port=%'), ','), '{}') AS ports
                FROM unnest(s.srvoptions) AS opt) o
          CROSS JOIN LATERAL (
              SELECT (array_agg(reason.why ORDER BY h.i) FILTER (WHERE reason.why IS NOT NULL))[1] AS why
                FROM generate_series(1, greatest(cardinality(o.hostaddrs), cardinality(o.hosts), 1)) AS h (i)
                CROSS JOIN LATERAL (
                    SELECT coalesce(nullif(btrim(o.hostaddrs[h.i]), ''), btrim(o.hosts[h.i]), '') AS address,
                           nullif(btrim(CASE WHEN cardinality(o.ports) > 1 THEN o.ports[h.i] ELSE o.ports[1] END), '')
                               AS port) a
                CROSS JOIN LATERAL (SELECT rtrim(lower(a.address), '.') AS name) e
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN e.name ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
                                THEN e.name::inet
                                WHEN (e.name ~ '^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}$'
                                      OR e.name ~ '^(([0-9a-f]{1,4}:)*[0-9a-f]{1,4})?::(([0-9a-f]{1,4}:)*[0-9a-f]{1,4})?$')
                                     AND cardinality(array_remove(string_to_array(e.name, ':'), '')) <= 7
                                THEN e.name::inet END AS ip) lit
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN a.port IS NOT NULL AND a.port <> current_setting('port') THEN NULL
                                WHEN lit.ip IS NOT NULL
                                     AND NOT (lit.ip << '127.0.0.0/8'::inet OR lit.ip IN ('0.0.0.0'::inet, '::1'::inet, '::'::inet)
                                              OR host(lit.ip) = coalesce(host(inet_server_addr()), '')
                                              OR host(lit.ip) = ANY (string_to_array(replace(current_setting('listen_addresses'),
                                                                                             ' ', ''), ',')))
                                THEN NULL
                                WHEN lit.ip IS NOT NULL THEN format('%s is this machine', a.address)
                                WHEN e.name = '' AND o.service IS NOT NULL
                                THEN format('no host: service %s, which pg_service.conf may point at this server', o.service)
                                WHEN e.name = '' THEN 'no host: libpq''s default socket, on this machine'
                                WHEN e.name ~ '^[/@]' THEN format('%s is a socket directory of this machine', a.address)
                                WHEN e.name IN ('localhost', 'localhost.localdomain') THEN format('%s is this machine', a.address)
                                ELSE format('host %s is a name, or an address not written as one, which may be this '
                                            'machine: its own hostname, 0.0.0.0 and 2130706433 are', a.address)
                           END AS why) reason) near
    ),
    -- Every ancestor (by INHERITS, not partitioning) of a table with tenant_id, with the edge a fix cuts: the
    -- first on the way up into a table without tenant_id (a child has all its parent's columns, so every
    -- ancestor above that one lacks tenant_id too).
    tenant_ancestors (tenant, node, cut_child, cut_parent) AS (
        SELECT i.inhrelid, i.inhparent,
               CASE WHEN NOT up.keyed THEN i.inhrelid END, CASE WHEN NOT up.keyed THEN i.inhparent END
          FROM pg_inherits i
          JOIN pg_class ch ON ch.oid = i.inhrelid AND NOT ch.relispartition AND ch.relkind IN ('r', 'p')
          CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.inhparent
                                                AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS keyed) up
         WHERE EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.inhrelid AND a.attname = 'tenant_id'
                          AND NOT a.attisdropped)
        UNION ALL
        SELECT t.tenant, i.inhparent,
               coalesce(t.cut_child, CASE WHEN NOT up.keyed THEN i.inhrelid END),
               coalesce(t.cut_parent, CASE WHEN NOT up.keyed THEN i.inhparent END)
          FROM tenant_ancestors t
          JOIN pg_inherits i ON i.inhrelid = t.node
          CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.inhparent
                                                AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS keyed) up
    ),
    -- Functions a materialized view calls, in its query or in a view it reads (however deep; security_invoker
    -- or not, its refresh reads them as its owner): they run as its owner whenever it is refreshed.
    matview_reads (mv, rel) AS (
        SELECT m.oid, m.oid FROM pg_class m WHERE m.relkind = 'm'
        UNION
        SELECT r.mv, d.refobjid
          FROM matview_reads r
          JOIN pg_rewrite rw ON rw.ev_class = r.rel
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_class'::regclass
          JOIN pg_class v ON v.oid = d.refobjid AND v.relkind = 'v'
    ),
    -- The tables whose rows are tenants' (the tenant tables, rls_tenancy.tenants, the audit chain heads, the
    -- tables keyed to a tenant by another column) that a role reads past the bound tenant although it is no
    -- superuser and has no BYPASSRLS: no row level security, its own table not FORCEd, or a permissive policy
    -- for it (not one the app role has as well on a table it reads whole: global_overrides_read) that is not
    -- keyed on the bound tenant (a BI role's USING (true); the library's owner_lookup on rls_tenancy.tenants and
    -- audit_owner on audit_log, for the owner role), as view_not_security_invoker judges a view's owner. For
    -- the roles that own a SECURITY DEFINER function or a materialized view, and the owner role.
    open_reads (role_oid, table_oid, why) AS (
        SELECT r.oid, b.oid,
               CASE WHEN NOT b.relrowsecurity THEN 'which has no row level security'
                    WHEN NOT b.relforcerowsecurity AND pg_has_role(r.oid, b.relowner, 'USAGE')
                    THEN 'its own table, which does not FORCE row level security'
                    ELSE format('policy %I gives it USING (%s)', pol.polname, pol.using_expr) END
          FROM pg_roles r
          CROSS JOIN pg_class b
          LEFT JOIN LATERAL (
              SELECT p.polname, pg_get_expr(p.polqual, p.polrelid) AS using_expr
                FROM pg_policy p
               WHERE p.polrelid = b.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
                 AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(oid) WHERE pr.oid = 0 OR pg_has_role(r.oid, pr.oid, 'USAGE'))
                 AND NOT (EXISTS (SELECT 1 FROM unnest(p.polroles) AS pa(oid)
                                   WHERE pa.oid = 0 OR pg_has_role(app_role, pa.oid, 'MEMBER'))
                          AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_table_privilege(ar.oid, b.oid, 'SELECT')))
                 -- (rls_tenancy.tenants is keyed by id: spelled as tenant_id)
                 AND NOT rls_tenancy.is_tenant_conjunction(
                         CASE WHEN b.oid = 'rls_tenancy.tenants'::regclass
                              THEN regexp_replace(regexp_replace(pg_get_expr(p.polqual, p.polrelid), '^\((\(?)id = ', '(\1tenant_id = '),
                                                  '\) AND \(id OPERATOR\(rls_tenancy\.===\) ', ') AND (tenant_id OPERATOR(rls_tenancy.===) ')
                              ELSE pg_get_expr(p.polqual, p.polrelid) END,
                         signing_required)
               ORDER BY p.polname LIMIT 1) pol ON true
         WHERE NOT r.rolsuper AND NOT r.rolbypassrls
           AND (r.rolname = owner_role
                OR r.oid IN (SELECT d.proowner FROM definers_raw d UNION SELECT m.relowner FROM pg_class m WHERE m.relkind = 'm'))
           AND (b.oid IN (SELECT tt.oid FROM tenant_oids tt) OR b.oid = 'rls_tenancy.tenants'::regclass
                OR b.oid = to_regclass('rls_tenancy.audit_chain_heads') OR b.oid IN (SELECT kn.oid FROM keyed_by_another_name kn))
           AND (NOT b.relrowsecurity OR (NOT b.relforcerowsecurity AND pg_has_role(r.oid, b.relowner, 'USAGE'))
                OR pol.polname IS NOT NULL)
    ),
    -- The bodies of the definers outside rls_tenancy, lower-cased and split (rls_tenancy.body_split) into code,
    -- comments and string literals left out, and literals (EXECUTE text among them): a name in a comment or a
    -- message is no read. SQL and PL/pgSQL only (a BEGIN ATOMIC body as PostgreSQL prints it); another
    -- language's body is read whole, as code. writes: its code writes (or it is a trigger or event trigger
    -- function), so that SECURITY INVOKER would need the caller to hold those rights.
    definer_bodies (oid, code, literals, writes) AS MATERIALIZED (
        SELECT d.oid, lower(b.parts[1]), lower(b.parts[2]),
               lower(b.parts[1] || b.parts[2]) ~ '\m(insert|update|delete|merge|truncate|copy)\M'
               OR p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
          FROM definers_raw d
          JOIN pg_proc p ON p.oid = d.oid
          CROSS JOIN LATERAL (SELECT CASE WHEN p.prolang IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('sql', 'plpgsql'))
                                          THEN rls_tenancy.body_split(CASE WHEN p.prosqlbody IS NOT NULL
                                                                           THEN pg_get_function_sqlbody(p.oid) ELSE p.prosrc END)
                                          ELSE ARRAY[p.prosrc, ''] END AS parts) b
         WHERE d.nspname <> 'rls_tenancy'
    ),
    -- Definers of a superuser's or a BYPASSRLS role's (not the owner role's) that read no tenant's rows as far
    -- as their body tells: SQL or PL/pgSQL (another language's body is not read), no EXECUTE text, no
    -- dependency on a relation or a function outside pg_catalog but harmless tables, and no name in their code
    -- of a relation other than a harmless table (a plain table outside rls_tenancy, with no row level security,
    -- no tenant_id, no trigger and no rule, that is no tenant table: a DDL log), nor of a function outside
    -- pg_catalog, nor of pg_catalog's that read SQL text or the server's files. A DDL audit writing tg_tag to
    -- ops.ddl_log, a status function returning version(): definer_escapes_rls is a warning for them.
    harmless_tables (oid, word, schema_word) AS (
        SELECT t.oid, lower(t.relname), lower(n.nspname)
          FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE t.relkind = 'r' AND NOT t.relrowsecurity AND NOT t.relhastriggers AND NOT t.relhasrules
           AND n.nspname NOT IN ('rls_tenancy', 'pg_catalog', 'information_schema', 'pg_toast')
           AND t.oid NOT IN (SELECT tt.oid FROM tenant_oids tt)
           AND t.oid NOT IN (SELECT kn.oid FROM keyed_by_another_name kn)
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           AND EXISTS (SELECT 1 FROM definers_raw d JOIN pg_roles o ON o.oid = d.proowner
                        WHERE (o.rolsuper OR o.rolbypassrls) AND o.rolname <> owner_role)
    ),
    quiet_definers (oid) AS (
        SELECT d.oid
          FROM definers_raw d
          JOIN pg_roles o ON o.oid = d.proowner AND (o.rolsuper OR o.rolbypassrls) AND o.rolname <> owner_role
          JOIN pg_proc p ON p.oid = d.oid
          JOIN definer_bodies b ON b.oid = d.oid
         WHERE p.prolang IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('sql', 'plpgsql'))
           AND b.code !~ '\mexecute\M'
           AND NOT EXISTS (SELECT 1 FROM pg_depend x
                            WHERE x.classid = 'pg_proc'::regclass AND x.objid = d.oid AND x.deptype = 'n'
                              AND ((x.refclassid = 'pg_class'::regclass
                                    AND x.refobjid NOT IN (SELECT h.oid FROM harmless_tables h))
                                   OR (x.refclassid = 'pg_proc'::regclass
                                       AND NOT EXISTS (SELECT 1 FROM pg_proc c WHERE c.oid = x.refobjid
                                                         AND c.pronamespace = 'pg_catalog'::regnamespace))))
           AND NOT EXISTS (
                SELECT 1 FROM regexp_matches(replace(b.code, '"', ''), '(?:([[:alnum:]_]+)\s*\.\s*)?([[:alnum:]_]+)', 'g') w
                 WHERE EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace cn ON cn.oid = c.relnamespace
                                WHERE lower(c.relname) = w[2] AND (w[1] IS NULL OR lower(cn.nspname) = w[1])
                                  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                                  AND c.oid NOT IN (SELECT h.oid FROM harmless_tables h))
                    OR EXISTS (SELECT 1 FROM pg_proc c
                                WHERE lower(c.proname) = w[2]
                                  AND (c.pronamespace <> 'pg_catalog'::regnamespace
                                       OR c.proname ~ '^((query|cursor|table|schema|database)_to_xml(schema|_and_xmlschema)?|pg_read_file|pg_read_binary_file|lo_import|lo_export|lo_get|lo_put|pg_ls_dir|pg_stat_file)$')))
    ),
    -- The names of those tables, lower-cased as body_words spells words.
    open_words (table_oid, word, schema_word) AS (
        SELECT DISTINCT o.table_oid, lower(t.relname), lower(tn.nspname)
          FROM open_reads o JOIN pg_class t ON t.oid = o.table_oid JOIN pg_namespace tn ON tn.oid = t.relnamespace
    ),
    -- Which of those tables a SECURITY DEFINER function (not the library's own, in rls_tenancy: they read its
    -- tables by design) reads, as far as the catalogs tell: a dependency (BEGIN ATOMIC), or the table's name
    -- as a word of its body, after its schema's or alone (as body_words reads words, for the few bodies that
    -- hold the name at all). Only the tables its owner, or the owner role, reads past.
    definer_reads (oid, table_oid) AS (
        SELECT DISTINCT d.oid, o.table_oid
          FROM definers_raw d
          JOIN definer_bodies b ON b.oid = d.oid
          JOIN open_reads o ON o.role_oid = d.proowner OR o.role_oid = (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_role)
          JOIN open_words ow ON ow.table_oid = o.table_oid
         WHERE d.nspname <> 'rls_tenancy'
           AND (strpos(b.code, ow.word) > 0 OR strpos(b.literals, ow.word) > 0)
           AND EXISTS (SELECT 1
                         FROM (SELECT m FROM regexp_matches(replace(b.code, '"', ''),
                                                            '(?:([[:alnum:]_]+)\s*\.\s*)?([[:alnum:]_]+)', 'g') m
                               UNION ALL
                               SELECT m FROM regexp_matches(replace(b.literals, '"', ''),
                                                            '\m(?:from|join|update|into|table|only|using)\s+(?:([[:alnum:]_]+)\s*\.\s*)?([[:alnum:]_]+)',
                                                            'g') m) w
                        WHERE w.m[2] = ow.word
                          AND (w.m[1] = ow.schema_word
                               -- unqualified: only where its search_path may find that schema (unpinned: any)
                               OR (w.m[1] IS NULL
                                   AND (d.path IS NULL
                                        OR EXISTS (SELECT 1 FROM definer_paths e
                                                    WHERE e.oid = d.oid AND lower(e.name) = ow.schema_word)))))
        UNION
        SELECT d.oid, o.table_oid
          FROM definers_raw d
          JOIN pg_depend x ON x.classid = 'pg_proc'::regclass AND x.objid = d.oid AND x.refclassid = 'pg_class'::regclass
          JOIN open_reads o ON o.table_oid = x.refobjid
                           AND (o.role_oid = d.proowner OR o.role_oid = (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_role))
         WHERE d.nspname <> 'rls_tenancy'
    ),
    -- SECURITY DEFINER functions that read past the bound tenant whoever calls them: owned by a superuser or a
    -- BYPASSRLS role (not the owner role: owner_role_escapes_rls), whatever they read; or reading a table their
    -- owner reads past (open_reads), the owner role's included (a definer of its own over rls_tenancy.tenants
    -- or audit_log). why: what their owner is or reads; invoker: they read a table the owner role reads past
    -- too, so that handing them to the owner role closes nothing (the fix makes them SECURITY INVOKER instead).
    escaping_definers (oid, why, invoker, quiet) AS (
        SELECT d.oid,
               CASE WHEN d.oid IN (SELECT q.oid FROM quiet_definers q)
                    THEN format('%s: it names no tenant table, view or function outside pg_catalog (comments and '
                                'strings aside) and runs no EXECUTE text, so it reads no tenant''s rows as written; '
                                'whatever it is changed to read, it reads whole',
                                CASE WHEN o.rolsuper THEN 'is a superuser' ELSE 'has BYPASSRLS' END)
                    WHEN o.rolsuper THEN 'is a superuser: whatever tenant tables it reads, it reads them whole'
                    ELSE 'has BYPASSRLS: whatever tenant tables it reads, it reads them whole' END,
               EXISTS (SELECT 1 FROM definer_reads r JOIN open_reads ow ON ow.table_oid = r.table_oid
                        JOIN pg_roles orr ON orr.oid = ow.role_oid AND orr.rolname = owner_role
                        WHERE r.oid = d.oid),
               d.oid IN (SELECT q.oid FROM quiet_definers q)
          FROM definers_raw d JOIN pg_roles o ON o.oid = d.proowner
         WHERE (o.rolsuper OR o.rolbypassrls) AND o.rolname <> owner_role
        UNION ALL
        SELECT d.oid,
               format('reads %s past the bound tenant: every tenant''s rows of it',
                      string_agg(format('%s (%s)', r.table_oid::regclass, o.why), ', ' ORDER BY r.table_oid::regclass::text)),
               bool_or(EXISTS (SELECT 1 FROM open_reads ow JOIN pg_roles orr ON orr.oid = ow.role_oid AND orr.rolname = owner_role
                                WHERE ow.table_oid = r.table_oid)),
               false
          FROM definers_raw d
          JOIN pg_roles dr ON dr.oid = d.proowner
          JOIN definer_reads r ON r.oid = d.oid
          JOIN open_reads o ON o.role_oid = d.proowner AND o.table_oid = r.table_oid
         WHERE NOT dr.rolsuper AND NOT dr.rolbypassrls
         GROUP BY d.oid
    ),
    -- Who calls a SECURITY DEFINER function that reads past the bound tenant (escaping_definers) on another
    -- role's behalf: a SECURITY DEFINER function whose owner may execute it
    -- and whose body calls it (calls: a dependency, BEGIN ATOMIC, or its name, named_calls), and who calls that
    -- one, and so on. From the few such definers up, so that a database without any spends nothing here.
    escaping_callers (target, caller, path) AS (
        SELECT f.oid, g.oid, ARRAY[f.oid, g.oid]
          FROM escaping_definers f
          JOIN calls c ON c.target = f.oid
          JOIN pg_proc g ON g.oid = c.caller AND g.prosecdef AND g.oid <> f.oid
         WHERE has_function_privilege(g.proowner, f.oid, 'EXECUTE')
        UNION ALL
        SELECT ec.target, g.oid, ec.path || g.oid
          FROM escaping_callers ec
          JOIN calls c ON c.target = ec.caller
          JOIN pg_proc g ON g.oid = c.caller AND g.prosecdef AND g.oid <> ALL (ec.path)
         WHERE has_function_privilege(g.proowner, ec.caller, 'EXECUTE')
    ),
    -- Aggregates the app role may run, with each of their support functions: PostgreSQL checks EXECUTE on
    -- those against the aggregate's owner alone, so whoever may run the aggregate runs them.
    aggregates_over (aggregate, support) AS (
        SELECT ag.aggfnoid::oid, s.support
          FROM pg_aggregate ag
          CROSS JOIN LATERAL unnest(ARRAY[ag.aggtransfn, ag.aggfinalfn, ag.aggcombinefn, ag.aggserialfn,
                                          ag.aggdeserialfn, ag.aggmtransfn, ag.aggminvtransfn, ag.aggmfinalfn]::oid[])
               AS s (support)
         WHERE s.support <> 0 AND ag.aggfnoid::oid >= 16384
           AND EXISTS (SELECT 1 FROM pg_proc sp WHERE sp.oid = s.support AND sp.prosecdef)
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_function_privilege(ar.oid, ag.aggfnoid, 'EXECUTE'))
    ),
    -- SECURITY DEFINER functions the app role runs: those it may execute (or an aggregate over them), those a trigger fires on a table it
    -- writes, and those of an enabled event trigger (whatever their EXECUTE grants say): ddl_command_start
    -- fires before a command's permission checks, for any role's DDL, and the app role runs DDL of its own
    -- (CREATE TEMP TABLE fires ddl_command_end, DROP sql_drop).
    app_runs (oid) AS (
        SELECT f.oid FROM pg_proc f
         WHERE f.oid IN (SELECT c.caller FROM escaping_callers c
                         UNION
                         SELECT e.oid FROM escaping_definers e)
           AND (EXISTS (SELECT 1 FROM app_roles ar WHERE has_function_privilege(ar.oid, f.oid, 'EXECUTE'))
                OR EXISTS (SELECT 1 FROM aggregates_over ag WHERE ag.support = f.oid)
                OR EXISTS (SELECT 1 FROM pg_trigger tg, app_roles ar
                            WHERE tg.tgfoid = f.oid AND NOT tg.tgisinternal
                              AND (has_table_privilege(ar.oid, tg.tgrelid, 'INSERT')
                                   OR has_table_privilege(ar.oid, tg.tgrelid, 'UPDATE')
                                   OR has_table_privilege(ar.oid, tg.tgrelid, 'DELETE')))
                OR EXISTS (SELECT 1 FROM pg_event_trigger et WHERE et.evtfoid = f.oid AND et.evtenabled <> 'D'))
    ),
    -- pg_stat_statements, where the extension is installed (in whichever schema the app role may use): its
    -- view, and the function under it, which the view calls with the caller's rights; with the grantees
    -- through which the app role holds SELECT on the one (or on a column of it) or EXECUTE on the other:
    -- PUBLIC or a role it is a member of, other than the owner and the roles with pg_read_all_stats' rights
    -- (app_role_member_of_privileged reports the membership in those).
    statement_texts (extension, kind, oid, name, grantees, acl, owner_oid) AS (
        SELECT e.oid, 'view', c.oid, format('%s', c.oid::regclass),
               ARRAY(SELECT DISTINCT g.grantee
                       FROM (SELECT acl.grantee FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) acl
                              WHERE acl.privilege_type = 'SELECT'
                             UNION
                             SELECT acl.grantee FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl
                              WHERE a.attrelid = c.oid AND acl.privilege_type = 'SELECT') g
                      WHERE g.grantee <> c.relowner
                        AND (g.grantee = 0 OR (pg_has_role(app_role, g.grantee, 'MEMBER')
                                               AND NOT pg_has_role(g.grantee, 'pg_read_all_stats', 'MEMBER')))
                      ORDER BY g.grantee),
               coalesce(c.relacl, acldefault('r', c.relowner))
               || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item WHERE a.attrelid = c.oid),
                           '{}'::aclitem[]),
               c.relowner
          FROM pg_extension e
          JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
                          AND d.classid = 'pg_class'::regclass
          JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'v' AND c.relname = 'pg_stat_statements'
         WHERE e.extname = 'pg_stat_statements'
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_schema_privilege(ar.oid, c.relnamespace, 'USAGE'))
        UNION ALL
        SELECT e.oid, 'function', f.oid, format('%s', f.oid::regprocedure),
               ARRAY(SELECT DISTINCT acl.grantee
                       FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
                      WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee <> f.proowner
                        AND (acl.grantee = 0 OR (pg_has_role(app_role, acl.grantee, 'MEMBER')
                                                 AND NOT pg_has_role(acl.grantee, 'pg_read_all_stats', 'MEMBER')))
                      ORDER BY acl.grantee),
               coalesce(f.proacl, acldefault('f', f.proowner)), f.proowner
          FROM pg_extension e
          JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
                          AND d.classid = 'pg_proc'::regclass
          JOIN pg_proc f ON f.oid = d.objid AND f.proname = 'pg_stat_statements'
         WHERE e.extname = 'pg_stat_statements'
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_schema_privilege(ar.oid, f.pronamespace, 'USAGE'))
    ),
    -- The library's own policies, as its install scripts create them (sql/003_tenants.sql, 006_users.sql,
    -- 007_tokens.sql, 009_audit.sql, 010_features.sql): to whom, and on what condition; the shape of each
    -- expression ('tenant': the tenant condition, 'true', 'global': tenant_id IS NULL) says what a policy's
    -- own must be to match it, and create_sql is the statement that makes it again.
    library_policies (table_oid, polname, command, to_role, role_oid, using_expr, check_expr, using_shape, check_shape,
                      purpose, create_sql) AS (
        SELECT to_regclass(v.table_name), v.polname, v.command, v.to_role,
               CASE WHEN v.to_role = 'PUBLIC' THEN 0::oid ELSE (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_role) END,
               v.using_expr, v.check_expr, v.using_shape, v.check_shape, v.purpose,
               format('CREATE POLICY %I ON %s%s TO %s USING (%s)%s;', v.polname, v.table_name,
                      CASE WHEN v.command = 'r' THEN ' FOR SELECT' ELSE '' END, v.to_role, v.using_expr,
                      CASE WHEN v.check_expr IS NOT NULL THEN format(' WITH CHECK (%s)', v.check_expr) ELSE '' END)
          FROM (SELECT w.*,
                       CASE WHEN w.using_expr = 'true' THEN 'true' WHEN w.using_expr = 'tenant_id IS NULL' THEN 'global'
                            ELSE 'tenant' END AS using_shape,
                       CASE WHEN w.check_expr = 'true' THEN 'true' WHEN w.check_expr IS NOT NULL THEN 'tenant' END AS check_shape
                  FROM (VALUES
                ('rls_tenancy.tenants', 'tenant_self', 'r', 'PUBLIC', rls_tenancy.tenant_condition_on('id', signing_required),
                 NULL, 'the application role no longer sees its own tenant'),
                ('rls_tenancy.tenants', 'owner_lookup', 'r', quote_ident(owner_role), 'true', NULL,
                 'the library''s lookups (tenant_id_for_slug(), which resolves a login''s or a subdomain''s tenant) find no tenant'),
                ('rls_tenancy.audit_log', 'audit_tenant_read', 'r', 'PUBLIC',
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required), NULL,
                 'a tenant no longer reads its own audit events'),
                ('rls_tenancy.audit_log', 'audit_owner', '*', quote_ident(owner_role), 'true', 'true',
                 'log_event() and the seal at commit, which run as the owner role, write and chain no event'),
                ('rls_tenancy.feature_overrides', 'tenant_overrides', '*', 'PUBLIC',
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 'a tenant no longer reads or writes its own feature overrides'),
                ('rls_tenancy.feature_overrides', 'global_overrides_read', 'r', 'PUBLIC', 'tenant_id IS NULL', NULL,
                 'no tenant reads the global feature overrides'),
                ('rls_tenancy.users', 'tenant_isolation', '*', 'PUBLIC',
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 'the application role no longer reads or writes its tenant''s users'),
                ('rls_tenancy.api_tokens', 'tenant_isolation', '*', 'PUBLIC',
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                 'the application role no longer reads its tenant''s tokens'))
               AS w (table_name, polname, command, to_role, using_expr, check_expr, purpose)) v
         WHERE to_regclass(v.table_name) IS NOT NULL
    ),
    -- Every policy on the library's tables: the library's policy of its name (named), and the one whose
    -- definition it has (same_as: command, permissive, roles, USING and WITH CHECK), if any. A library policy
    -- is compared by what it says, not by its name: renamed, it is still the library's; widened under its own
    -- name, it no longer is (and the library's exemptions for it no longer hold).
    library_table_policies (policy_oid, table_oid, polname, polcmd, named, same_as) AS (
        SELECT p.oid, p.polrelid, p.polname, p.polcmd,
               (SELECT lp.polname FROM library_policies lp WHERE lp.table_oid = p.polrelid AND lp.polname = p.polname),
               (SELECT min(lp.polname) FROM library_policies lp
                 WHERE lp.table_oid = p.polrelid AND lp.command = p.polcmd::text AND p.polpermissive
                   AND p.polroles = ARRAY[lp.role_oid]
                   AND (SELECT bool_and(CASE shape.kind
                                             WHEN 'true' THEN shape.expression = 'true'
                                             WHEN 'global' THEN shape.expression = '(tenant_id IS NULL)'
                                             WHEN 'tenant' THEN rls_tenancy.is_tenant_condition(shape.expression)
                                                                AND rls_tenancy.is_tenant_conjunction(shape.expression, signing_required)
                                             ELSE shape.expression IS NULL END)
                          -- (rls_tenancy.tenants is keyed by id: spelled as tenant_id)
                          FROM (SELECT k.kind,
                                       CASE WHEN p.polrelid = 'rls_tenancy.tenants'::regclass
                                            THEN regexp_replace(regexp_replace(k.expression, '^\((\(?)id = ', '(\1tenant_id = '),
                                                                '\) AND \(id OPERATOR\(rls_tenancy\.===\) ',
                                                                ') AND (tenant_id OPERATOR(rls_tenancy.===) ')
                                            ELSE k.expression END AS expression
                                  FROM (VALUES (lp.using_shape, pg_get_expr(p.polqual, p.polrelid)),
                                               (lp.check_shape, pg_get_expr(p.polwithcheck, p.polrelid))) AS k (kind, expression)) shape))
          FROM pg_policy p
         WHERE p.polrelid IN (SELECT lp.table_oid FROM library_policies lp)
    ),
    -- A library policy gone by its name, and the policy of the same command on its table that may be it renamed
    -- (one not named as any of the library's; one with its definition first): renamed unchanged, a warning; renamed
    -- and changed, the check that reports the change names the policy to make again.
    library_policy_renames (table_oid, library_name, policy_oid, policy_name, same) AS (
        SELECT DISTINCT ON (lp.table_oid, lp.polname) lp.table_oid, lp.polname, tp.policy_oid, tp.polname,
               tp.same_as IS NOT DISTINCT FROM lp.polname
          FROM library_policies lp
          JOIN library_table_policies tp ON tp.table_oid = lp.table_oid AND tp.polcmd::text = lp.command AND tp.named IS NULL
         WHERE NOT EXISTS (SELECT 1 FROM library_table_policies named
                            WHERE named.table_oid = lp.table_oid AND named.polname = lp.polname)
         ORDER BY lp.table_oid, lp.polname, tp.same_as IS NOT DISTINCT FROM lp.polname DESC, tp.polname
    ),
    -- The fix for a policy on a library table that opens it: the library's own, back to what its install script
    -- made (ALTER POLICY; DROP and CREATE where its command changed, which ALTER cannot); any other, dropped (and
    -- the library's policy it may have been, made again), never enable_tenant_isolation(), which refuses the
    -- library's tables (a nullable tenant_id, their other policies) or grants what the library never grants.
    library_policy_fixes (policy_oid, fix) AS (
        SELECT tp.policy_oid,
               CASE WHEN lp.polname IS NOT NULL AND lp.command = tp.polcmd::text
                    THEN format('ALTER POLICY %I ON %s TO %s USING (%s)%s;', lp.polname, lp.table_oid::regclass,
                                lp.to_role, lp.using_expr,
                                CASE WHEN lp.check_expr IS NOT NULL THEN format(' WITH CHECK (%s)', lp.check_expr) ELSE '' END)
                    WHEN lp.polname IS NOT NULL
                    THEN format('DROP POLICY %I ON %s; %s', lp.polname, lp.table_oid::regclass, lp.create_sql)
                    ELSE format('DROP POLICY %I ON %s;', tp.polname, tp.table_oid::regclass)
                         || coalesce(' ' || (SELECT gone.create_sql FROM library_policy_renames r
                                               JOIN library_policies gone ON gone.table_oid = r.table_oid
                                                                         AND gone.polname = r.library_name
                                              WHERE r.policy_oid = tp.policy_oid), '') END
          FROM library_table_policies tp
          LEFT JOIN library_policies lp ON lp.table_oid = tp.table_oid AND lp.polname = tp.named
    ),
    -- What the library's install scripts grant the application role on its tables: a privilege on the table
    -- (columns_but NULL), or on every column but those (signed, users' password_hash is read through
    -- password_hash_of() only; api_tokens' token_hash never); as the GRANT that gives it back.
    library_table_grants (table_oid, privilege_type, columns_but, privileges) AS (
        SELECT to_regclass(v.table_name), v.privilege_type, v.columns_but,
               CASE WHEN v.columns_but IS NULL THEN v.privilege_type
                    ELSE format('%s (%s)', v.privilege_type,
                                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                   FROM pg_attribute a
                                  WHERE a.attrelid = to_regclass(v.table_name) AND a.attnum > 0 AND NOT a.attisdropped
                                    AND NOT (a.attname = ANY (v.columns_but)))) END
          FROM (VALUES ('rls_tenancy.tenants', 'SELECT', NULL::name[]),
                       ('rls_tenancy.audit_log', 'SELECT', NULL),
                       ('rls_tenancy.feature_overrides', 'SELECT', NULL),
                       ('rls_tenancy.feature_overrides', 'INSERT', NULL),
                       ('rls_tenancy.feature_overrides', 'UPDATE', NULL),
                       ('rls_tenancy.feature_overrides', 'DELETE', NULL),
                       ('rls_tenancy.users', 'SELECT', CASE WHEN signing_required THEN ARRAY['password_hash']::name[] END),
                       ('rls_tenancy.users', 'INSERT', NULL),
                       ('rls_tenancy.users', 'UPDATE', NULL),
                       ('rls_tenancy.users', 'DELETE', NULL),
                       ('rls_tenancy.api_tokens', 'SELECT', ARRAY['token_hash']::name[]))
               AS v (table_name, privilege_type, columns_but)
         WHERE to_regclass(v.table_name) IS NOT NULL
    ),
    -- The types of the tenant tables' columns (rls_tenancy.tenants' too), and the ones under them: a domain's
    -- base type, however many domains deep, an array's element type, a composite type's attributes' types, a
    -- range's subtype and a multirange's range. nested: reached through a composite or a range, where its owner
    -- may not add a constraint (PostgreSQL refuses it) but may still DROP ... CASCADE it.
    column_types (table_oid, attname, type_oid, nested) AS (
        SELECT a.attrelid, a.attname, a.atttypid, false
          FROM pg_attribute a
         WHERE a.attnum > 0 AND NOT a.attisdropped
           AND (a.attrelid IN (SELECT c.table_oid FROM rls_tenancy.coverage c)
                OR a.attrelid = 'rls_tenancy.tenants'::regclass)
           AND a.atttypid >= 16384
        UNION
        SELECT u.table_oid, u.attname, under.type_oid, u.nested OR under.nested
          FROM column_types u JOIN pg_type t ON t.oid = u.type_oid
          CROSS JOIN LATERAL (SELECT t.typbasetype, false WHERE t.typtype = 'd'
                              UNION ALL
                              SELECT t.typelem, false WHERE t.typsubscript = 'array_subscript_handler'::regproc
                              UNION ALL
                              SELECT a.atttypid, true FROM pg_attribute a
                               WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
                              UNION ALL
                              SELECT r.rngsubtype, true FROM pg_range r WHERE t.typtype = 'r' AND r.rngtypid = t.oid
                              UNION ALL
                              SELECT r.rngtypid, true FROM pg_range r WHERE t.typtype = 'm' AND r.rngmultitypid = t.oid)
               AS under (type_oid, nested)
         WHERE under.type_oid >= 16384
    ),
    -- Tenant tables by another name (tenant_table_by_another_name): no tenant_id, no row level security, and
    -- a foreign key into rls_tenancy.tenants or into a tenant table.
    keyed_by_another_name (oid) AS (
        SELECT DISTINCT t.oid
          FROM pg_class t
          JOIN pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'f'
         WHERE t.relkind IN ('r', 'p') AND NOT t.relrowsecurity
           AND n.nspname NOT IN ('pg_catalog', 'pg_toast', 'rls_tenancy') AND NOT (n.nspname = 'information_schema' AND t.oid < 16384)
           AND NOT EXISTS (SELECT 1 FROM pg_attribute x WHERE x.attrelid = t.oid AND x.attname = 'tenant_id' AND NOT x.attisdropped)
           AND (k.confrelid = 'rls_tenancy.tenants'::regclass
                OR EXISTS (SELECT 1 FROM rls_tenancy.coverage c WHERE c.table_oid = k.confrelid))
    ),
    reaching (base, rel) AS (
        -- Every view or materialized view that reads a tenant table (or rls_tenancy.tenants, every tenant's
        -- name and slug, or rls_tenancy.audit_chain_heads, or a tenant table by another name), however many
        -- views deep.
        SELECT t.oid, rw.ev_class
          FROM pg_class t
          JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite rw ON rw.oid = d.objid
         WHERE rw.ev_class <> t.oid
           AND (t.oid IN (SELECT c.table_oid FROM rls_tenancy.coverage c) OR t.oid = 'rls_tenancy.tenants'::regclass
                OR t.oid IN (SELECT kn.oid FROM keyed_by_another_name kn)
                -- every tenant's audit chain (its id, event count, last event), with no row level security
                OR t.oid = to_regclass('rls_tenancy.audit_chain_heads'))
        UNION
        -- Not up through a security_invoker view: it checks what it reads as the current user even when a
        -- view with its owner's rights reads it, so that view reads no tenant table with its owner's rights
        -- through it. A materialized view does: its refresh runs as its owner.
        SELECT r.base, rw.ev_class
          FROM reaching r
          JOIN pg_class inner_rel ON inner_rel.oid = r.rel
          JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = r.rel AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite rw ON rw.oid = d.objid
          JOIN pg_class outer_rel ON outer_rel.oid = rw.ev_class
         WHERE rw.ev_class <> r.rel
           AND (outer_rel.relkind = 'm' OR inner_rel.relkind <> 'v'
                OR NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(inner_rel.reloptions) o
                                  WHERE o.option_name = 'security_invoker'), false))
    ),
    -- Sequences that fill a column of a tenant table outside the library's schema: owned by it (serial,
    -- identity), or called by a column's default (nextval('...')); filled names the column.
    tenant_sequences (seq, filled) AS (
        SELECT d.objid, format('%s.%I', d.refobjid::regclass, a.attname)
          FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
           AND d.refobjid IN (SELECT tt.oid FROM tenant_oids tt)
        UNION
        SELECT d.refobjid, format('%s.%I', ad.adrelid::regclass, a.attname)
          FROM pg_attrdef ad
          JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
          JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
         WHERE ad.adrelid IN (SELECT tt.oid FROM tenant_oids tt)
    ),
    -- What each policy on a tenant table (or on rls_tenancy.tenants) depends on, however deep: the functions,
    -- operators, types and collations its expressions use, what those depend on in turn (an operator's
    -- function, a domain's base type, a function's argument types), and the other tables they read. DROP ...
    -- CASCADE of any of them drops the policy. Not followed: schemas (app_role_schema_create and
    -- app_role_owns_schema judge those), extensions, languages, and what another table depends on.
    policy_reaches (policy_oid, classid, objid) AS (
        SELECT p.oid, d.refclassid, d.refobjid
          FROM pg_policy p
          JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
         WHERE (p.polrelid IN (SELECT tt.oid FROM tenant_oids tt) OR p.polrelid = 'rls_tenancy.tenants'::regclass)
           AND d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_type'::regclass,
                                'pg_collation'::regclass, 'pg_class'::regclass)
           AND d.refobjid <> p.polrelid
        UNION
        SELECT r.policy_oid, d.refclassid, d.refobjid
          FROM policy_reaches r
          JOIN pg_depend d ON d.classid = r.classid AND d.objid = r.objid AND d.deptype IN ('n', 'a', 'i')
         WHERE r.classid <> 'pg_class'::regclass
           AND d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_type'::regclass,
                                'pg_collation'::regclass, 'pg_class'::regclass)
    ),
    -- The restrictive policies that keep a tenant table to the bound tenant while a permissive one for the app
    -- role does not (USING (true), say, for the same command): dropping such a guard opens the table.
    tenant_guards (policy_oid) AS (
        SELECT r.oid
          FROM pg_policy r
         WHERE NOT r.polpermissive
           AND (r.polrelid IN (SELECT tt.oid FROM tenant_oids tt) OR r.polrelid = 'rls_tenancy.tenants'::regclass)
           AND EXISTS (SELECT 1 FROM unnest(r.polroles) AS pr(oid) WHERE pr.oid = 0 OR pg_has_role(app_role, pr.oid, 'MEMBER'))
           AND EXISTS (SELECT 1 FROM pg_policy p
                          -- the command both serve
                          CROSS JOIN LATERAL (SELECT CASE WHEN r.polcmd = '*' THEN p.polcmd ELSE r.polcmd END AS cmd) c
                        WHERE p.polrelid = r.polrelid AND p.polpermissive
                          AND (p.polcmd = r.polcmd OR '*' IN (p.polcmd, r.polcmd))
                          AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pa(oid)
                                       WHERE pa.oid = 0 OR pg_has_role(app_role, pa.oid, 'MEMBER'))
                          AND NOT rls_tenancy.policy_is_tenant_keyed(c.cmd, pg_get_expr(p.polqual, p.polrelid),
                                                                    pg_get_expr(p.polwithcheck, p.polrelid), signing_required)
                          -- (without WITH CHECK, its USING checks new rows)
                          AND rls_tenancy.policy_is_tenant_keyed(c.cmd, pg_get_expr(r.polqual, r.polrelid),
                                                                coalesce(pg_get_expr(r.polwithcheck, r.polrelid),
                                                                         pg_get_expr(r.polqual, r.polrelid)),
                                                                signing_required))
    ),
    raw (severity, check_name, object_name, message, fix) AS (
        -- The application role itself.
        SELECT 'error', 'app_role_bypassrls', app_role::text,
               format('the application role %I has BYPASSRLS: every policy is ignored', app_role),
               format('ALTER ROLE %I NOBYPASSRLS;', app_role)
          FROM pg_roles r WHERE r.rolname = app_role AND r.rolbypassrls
        UNION ALL
        SELECT 'error', 'app_role_createrole', app_role::text,
               format('the application role %I has CREATEROLE and can grant itself other roles', app_role),
               format('ALTER ROLE %I NOCREATEROLE;', app_role)
          FROM pg_roles r WHERE r.rolname = app_role AND r.rolcreaterole
        UNION ALL
        SELECT 'error', 'app_role_replication', app_role::text,
               format('the application role %I has REPLICATION: logical decoding reads every tenant''s changes',
                      app_role),
               format('ALTER ROLE %I NOREPLICATION;', app_role)
          FROM pg_roles r WHERE r.rolname = app_role AND r.rolreplication
        UNION ALL
        -- One finding per privileged role, naming a shortest chain; the fix revokes the memberships the app
        -- role holds that lead to it (revoking the privileged role from the app role does nothing to a chain).
        SELECT 'error', 'app_role_member_of_privileged', app_role::text,
               format('the application role %I is a member of %I (%s), which %s', app_role, p.rolname,
                      (array_agg(ms.names ORDER BY cardinality(ms.chain), ms.names))[1], p.why),
               (SELECT string_agg(format('REVOKE %I FROM %I;', h.rolname, app_role), ' ' ORDER BY h.rolname)
                  FROM pg_roles h WHERE h.oid = ANY (array_agg(DISTINCT ms.first_hop)))
          FROM privileged p JOIN memberships ms ON ms.role_oid = p.oid
         GROUP BY p.oid, p.rolname, p.why
        UNION ALL
        -- Tenant tables.
        SELECT 'error', 'app_role_owns_table', c.table_name,
               CASE WHEN c.owner = app_role
                    THEN format('%s is owned by the application role, which can therefore drop its policies', c.table_name)
                    ELSE format('%s is owned by %I, whose rights the application role has: it can drop the policies', c.table_name, c.owner) END,
               -- The app keeps the access it had as (a member of) the owner, now through grants the policies bind.
               format('ALTER TABLE %s OWNER TO %I; GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I;',
                      c.table_name, owner_role, c.table_name, app_role)
          FROM rls_tenancy.coverage c WHERE pg_has_role(app_role, c.owner, 'MEMBER')
        UNION ALL
        -- A warning where the app role cannot reach the table at all (no role it can become holds both USAGE on
        -- its schema and a privilege on it or a column of it: CREATE TABLE archive.projects_2020 AS ... before a
        -- migration), the library's tables aside: nothing of it is read or written by the application until a
        -- grant opens it. Its fix then grants nothing: row level security on, and the tenant policy, as
        -- enable_tenant_isolation() would make it, but without its grants (nor its change of owner).
        SELECT CASE WHEN reach.app OR c.table_name LIKE 'rls\_tenancy.%' THEN 'error' ELSE 'warning' END,
               'rls_disabled', c.table_name,
               format('%s has a tenant_id but row level security is off: %s', c.table_name,
                      CASE WHEN reach.app OR c.table_name LIKE 'rls\_tenancy.%' THEN 'every tenant sees every row'
                           ELSE 'the application role may not use it now, but every tenant would see every row of '
                                'it once granted (a grant on the table and USAGE on its schema)' END),
               -- The library's own tables keep their policies and grants: row level security on again is all they
               -- need (enable_tenant_isolation() would refuse their nullable tenant_id and other policies, or grant
               -- the app role what the library never gave it: writes to api_tokens).
               CASE WHEN c.table_name LIKE 'rls\_tenancy.%'
                    THEN format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY%s;', c.table_name,
                                CASE WHEN c.rls_forced THEN '' ELSE ', FORCE ROW LEVEL SECURITY' END)
                    -- A partitioned table's partitions too: enable_tenant_isolation() isolates every one of them.
                    WHEN reach.app
                    THEN not_null.fix || format('SELECT rls_tenancy.enable_tenant_isolation(%L);', c.table_name)
                    ELSE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;%s -- nothing '
                                'granted: when the application needs it, SELECT rls_tenancy.enable_tenant_isolation(%L);',
                                c.table_name,
                                CASE WHEN c.policies > 0 THEN ''
                                     ELSE format(' CREATE POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s);',
                                                 c.table_name, rls_tenancy.tenant_condition_on('tenant_id', signing_required),
                                                 rls_tenancy.tenant_condition_on('tenant_id', signing_required)) END,
                                c.table_name) END
          FROM rls_tenancy.coverage c
          CROSS JOIN LATERAL (SELECT CASE WHEN c.tenant_id_not_null THEN ''
                                          ELSE format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL; ', c.table_name)
                                     END AS fix) not_null
          -- (the same role must hold both: the app role is NOINHERIT, and has one role's rights at a time).
          -- A partition counts as reached: its rows are its parent's, and its fix makes it as its siblings are.
          CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM app_roles ar JOIN pg_class t ON t.oid = c.table_oid
                                              WHERE has_schema_privilege(ar.oid, t.relnamespace, 'USAGE')
                                                AND (has_table_privilege(ar.oid, t.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                                                     OR has_any_column_privilege(ar.oid, t.oid, 'SELECT, INSERT, UPDATE, REFERENCES')))
                                     OR EXISTS (SELECT 1 FROM pg_class t WHERE t.oid = c.table_oid AND t.relispartition)
                                  AS app) reach
         WHERE NOT c.rls_enabled
        UNION ALL
        SELECT 'error', 'rls_not_forced', c.table_name,
               format('%s does not FORCE row level security: its owner (and code running as it) sees every tenant', c.table_name),
               format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', c.table_name)
          FROM rls_tenancy.coverage c WHERE c.rls_enabled AND NOT c.rls_forced
        UNION ALL
        SELECT 'error', 'no_policy', c.table_name,
               format('%s has row level security but no policy: nobody but its owner can use it', c.table_name),
               -- (enable_tenant_isolation() refuses a nullable tenant_id: the fix reads top to bottom)
               CASE WHEN c.tenant_id_not_null THEN ''
                    ELSE format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL; ', c.table_name) END
               || format('SELECT rls_tenancy.enable_tenant_isolation(%L);', c.table_name)
          FROM rls_tenancy.coverage c WHERE c.rls_enabled AND c.policies = 0
           -- the library's tables: library_policy_missing names each policy gone, with the statement that restores it
           AND c.table_name NOT LIKE 'rls\_tenancy.%'
        UNION ALL
        -- The library's own policies (sql/003, 006, 007, 009, 010), each as its install script creates it: one
        -- dropped breaks the library's functions (owner_lookup: tenant_id_for_slug() finds no tenant; audit_owner:
        -- log_event() and the seal write nothing) or leaves a table closed to the application.
        -- Gone by its name only, renamed with its definition unchanged: library_policy_renamed below. Renamed and
        -- changed so that another check reports it, that check's fix makes it again (findings() then leaves this
        -- one out: two fixes making the same policy would not both apply).
        SELECT 'error', 'library_policy_missing', format('%s policy %I', lp.table_oid::regclass, lp.polname),
               format('the library''s policy %I on %s is gone: %s', lp.polname, lp.table_oid::regclass, lp.purpose),
               lp.create_sql
          FROM library_policies lp
         WHERE NOT EXISTS (SELECT 1 FROM library_table_policies tp WHERE tp.table_oid = lp.table_oid AND tp.polname = lp.polname)
           AND NOT EXISTS (SELECT 1 FROM library_policy_renames r
                            WHERE r.table_oid = lp.table_oid AND r.library_name = lp.polname AND r.same)
        UNION ALL
        -- A library policy under another name, its definition unchanged: the library works, but the doctor's
        -- exemptions and a reinstall know it by its name.
        SELECT 'warning', 'library_policy_renamed', format('%s policy %I', r.table_oid::regclass, r.policy_name),
               format('policy %I on %s is the library''s policy %I renamed: it still does what the library''s does, but '
                      'the library''s scripts and the doctor''s exemptions know it as %I', r.policy_name,
                      r.table_oid::regclass, r.library_name, r.library_name),
               format('ALTER POLICY %I ON %s RENAME TO %I;', r.policy_name, r.table_oid::regclass, r.library_name)
          FROM library_policy_renames r WHERE r.same
        UNION ALL
        -- A warning when a restrictive policy for PUBLIC, keyed on the bound tenant, covers the same command
        -- (FOR ALL, or this one): restrictive policies are AND-ed with the permissive ones, so nothing of another
        -- tenant is reached while it holds; the permissive one only stops saying anything.
        SELECT CASE WHEN narrowed.by IS NULL THEN 'error' ELSE 'warning' END,
               'policy_not_tenant_keyed', format('%s policy %I', p.polrelid::regclass, p.polname),
               -- the expression that opens it: its USING, or, where that keeps to the tenant, its WITH CHECK
               format('policy %I on %s is not keyed on the bound tenant (%s): %s%s', p.polname, p.polrelid::regclass,
                      rls_tenancy.tenant_condition(),
                      CASE WHEN p.polcmd <> 'a' AND p.polqual IS NOT NULL
                                AND rls_tenancy.is_tenant_conjunction(pg_get_expr(p.polqual, p.polrelid), signing_required)
                           THEN 'WITH CHECK ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '(none)')
                           WHEN p.polcmd = 'a' THEN 'WITH CHECK ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '(none)')
                           ELSE coalesce(pg_get_expr(p.polqual, p.polrelid), '(no USING)') END,
                      CASE WHEN narrowed.by IS NOT NULL
                           THEN format('; the restrictive policy %I keeps it to the bound tenant, but dropping or '
                                       'altering that one opens the table', narrowed.by) ELSE '' END),
               -- on the library's tables: library_policy_fixes (the library's policy restored, any other dropped)
               CASE WHEN lf.fix IS NOT NULL AND narrowed.by IS NULL THEN lf.fix
                    WHEN narrowed.by IS NULL
                    THEN format('DROP POLICY %I ON %s; ', p.polname, p.polrelid::regclass)
                         || CASE WHEN c.tenant_id_not_null THEN ''
                                 ELSE format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL; ', c.table_name) END
                         || format('SELECT rls_tenancy.enable_tenant_isolation(%L);', p.polrelid::regclass::text)
                    ELSE format('DROP POLICY %I ON %s; -- if what it allows is meant, the restrictive policy %I '
                                'already allows it within the bound tenant only', p.polname, p.polrelid::regclass,
                                narrowed.by) END
          FROM pg_policy p JOIN rls_tenancy.coverage c ON c.table_oid = p.polrelid
          LEFT JOIN library_policy_fixes lf ON lf.policy_oid = p.oid
          CROSS JOIN LATERAL (
              SELECT min(r.polname) AS by FROM pg_policy r
               WHERE r.polrelid = p.polrelid AND NOT r.polpermissive AND 0::oid = ANY (r.polroles)
                 AND (r.polcmd = '*' OR r.polcmd = p.polcmd)
                 AND rls_tenancy.policy_is_tenant_keyed(p.polcmd, pg_get_expr(r.polqual, r.polrelid),
                                                       -- without WITH CHECK, its USING checks new rows
                                                       coalesce(pg_get_expr(r.polwithcheck, r.polrelid),
                                                                pg_get_expr(r.polqual, r.polrelid)),
                                                       signing_required)) narrowed
         WHERE p.polpermissive
           AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS r(oid) WHERE r.oid = 0 OR pg_has_role(app_role, r.oid, 'MEMBER'))
           AND NOT rls_tenancy.policy_is_tenant_keyed(p.polcmd, pg_get_expr(p.polqual, p.polrelid),
                                                     pg_get_expr(p.polwithcheck, p.polrelid), signing_required)
           -- a library policy renamed, unchanged: library_policy_renamed
           AND NOT EXISTS (SELECT 1 FROM library_policy_renames r WHERE r.policy_oid = p.oid AND r.same)
        UNION ALL
        -- A cast from text to an integer type made in this database (PostgreSQL has none: text reaches bigint
        -- through bigint's input function). Every ::bigint on text parsed while it exists calls its function: the
        -- tenant condition of each policy made since (enable_tenant_isolation()'s, the library's own on a
        -- reinstall), the library's functions installed since (current_tenant_id()), and PL/pgSQL, which looks
        -- casts up as it runs. The catalogs print the call as the built-in ::bigint, so no check that reads the
        -- text sees it: a function answering a tenant for an empty setting (CASE WHEN $1 = '' THEN 202) binds every
        -- unbound request to that tenant. An error whatever the function does now: its owner may replace it. The
        -- fix drops the cast, then makes each caller again from its own text (cast_callers above).
        SELECT 'error', 'text_cast_to_integer', k.name,
               format('%s, made in this database, runs %s (owned by %I): every ::%s on text parsed since calls it, '
                      'though the catalogs print it as the built-in cast; the tenant condition of each policy made '
                      'since (enable_tenant_isolation()''s among them) and the library''s functions installed since '
                      'read the tenant setting through it%s',
                      k.name, k.func::regprocedure, pg_get_userbyid(f.proowner), f.prorettype::regtype,
                      coalesce('; called now by ' || (SELECT string_agg(c.object, ', ' ORDER BY c.object)
                                                         FROM cast_callers c WHERE c.func = k.func), '')),
               concat_ws(' ', k.drop_sql, (SELECT string_agg(c.fix, ' ' ORDER BY c.object) FROM cast_callers c WHERE c.func = k.func))
          FROM integer_casts k JOIN pg_proc f ON f.oid = k.func
        UNION ALL
        -- What such a cast left behind once dropped: a policy or a library function made while it existed still
        -- calls its function where its text says ::bigint.
        SELECT 'error', 'cast_function_called', c.object,
               format('%s calls %s where its text says ::%s (the function of a cast dropped since): what it reads '
                      'as an integer there (a setting such as the tenant''s) is whatever that function answers, for an empty or '
                      'unset setting too',
                      c.object, c.func::regprocedure, f.prorettype::regtype),
               c.fix
          FROM cast_callers c JOIN pg_proc f ON f.oid = c.func
         WHERE c.func NOT IN (SELECT k.func FROM integer_casts k)
        UNION ALL
        SELECT 'warning', 'policy_without_with_check', format('%s policy %I', p.polrelid::regclass, p.polname),
               format('policy %I on %s has no WITH CHECK: new rows are checked against its USING, which is easy to widen by accident',
                      p.polname, p.polrelid::regclass),
               -- Spelled out as the USING it reuses: the fix changes nothing the policy allows, business rules included.
               format('ALTER POLICY %I ON %s WITH CHECK (%s);', p.polname, p.polrelid::regclass,
                      pg_get_expr(p.polqual, p.polrelid))
          FROM pg_policy p JOIN rls_tenancy.coverage c ON c.table_oid = p.polrelid
         -- A restrictive policy only narrows: reusing its USING for new rows narrows them too.
         WHERE p.polwithcheck IS NULL AND p.polcmd IN ('*', 'w') AND p.polpermissive
        UNION ALL
        SELECT 'warning', 'no_tenant_index', c.table_name,
               format('no index of %s leads with tenant_id: every policy check scans the table', c.table_name),
               format('CREATE INDEX ON %s (tenant_id);', c.table_name)
          FROM rls_tenancy.coverage c WHERE NOT c.tenant_index
        UNION ALL
        SELECT 'warning', 'tenant_id_nullable', c.table_name,
               format('%s.tenant_id allows NULL: such rows belong to no tenant and no policy shows them', c.table_name),
               format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL;', c.table_name)
          FROM rls_tenancy.coverage c WHERE NOT c.tenant_id_not_null
        UNION ALL
        SELECT 'error', 'app_role_dangerous_privilege', c.table_name,
               format('the application role holds %s on %s (TRUNCATE ignores row level security; REFERENCES and TRIGGER let it observe or act on other tenants'' rows)',
                      concat_ws(', ', CASE WHEN c.app_truncate THEN 'TRUNCATE' END,
                                      CASE WHEN c.app_references THEN 'REFERENCES' END,
                                      CASE WHEN c.app_trigger THEN 'TRIGGER' END), c.table_name),
               -- from every grantee the app role has the rights of (a group role's grant is not the app role's)
               -- (and by every grantor: a role holding them WITH GRANT OPTION takes back its own grants)
               (SELECT E'\x1e' || jsonb_build_array('TRUNCATE, REFERENCES, TRIGGER', c.table_name, g.acl, t.relowner,
                                                     ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER'],
                                                     ARRAY(SELECT r.oid FROM pg_roles r WHERE pg_has_role(app_role, r.oid, 'MEMBER'))
                                                     || 0::oid, false,
                                                     format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON %s FROM %I;',
                                                            c.table_name, app_role))::text || E'\x1e'
                  FROM pg_class t
                 CROSS JOIN LATERAL (SELECT coalesce(t.relacl, '{}'::aclitem[])
                                            || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item
                                                          WHERE a.attrelid = t.oid), '{}'::aclitem[]) AS acl) g
                 WHERE t.oid = c.table_oid)
          FROM rls_tenancy.coverage c WHERE c.app_truncate OR c.app_references OR c.app_trigger
        UNION ALL
        -- Views and materialized views reading tenant tables, directly or through other views.
        -- A warning where the view's owner is bound by the policies of every table it reads: row level security
        -- on, FORCEd or owned by another role, and no permissive policy for the owner that reads past the bound
        -- tenant (the library's owner_lookup on rls_tenancy.tenants and audit_owner on rls_tenancy.audit_log are
        -- USING (true), for the library's own functions: a view the owner role owns reads every tenant's rows). A
        -- policy the app role has too, on a table it reads whole, shows it nothing more through the view.
        SELECT DISTINCT ON (v.oid)
               CASE WHEN v.relkind = 'v' AND NOT vo.rolsuper AND NOT vo.rolbypassrls
                         AND NOT EXISTS (SELECT 1 FROM reaching r2 JOIN pg_class b ON b.oid = r2.base
                                          WHERE r2.rel = v.oid
                                            AND NOT (b.relrowsecurity AND (b.relforcerowsecurity OR b.relowner <> v.relowner)
                                                     AND NOT EXISTS (
                                                         SELECT 1 FROM pg_policy p
                                                          WHERE p.polrelid = b.oid AND p.polpermissive
                                                            AND p.polcmd IN ('r', '*')
                                                            AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(oid)
                                                                         WHERE pr.oid = 0 OR pg_has_role(v.relowner, pr.oid, 'USAGE'))
                                                            -- one the app role has as well, on a table it reads whole,
                                                            -- shows through the view only what it reads itself
                                                            -- (global_overrides_read; policy_not_tenant_keyed judges it)
                                                            AND NOT (EXISTS (SELECT 1 FROM unnest(p.polroles) AS pa(oid)
                                                                              WHERE pa.oid = 0 OR pg_has_role(app_role, pa.oid, 'MEMBER'))
                                                                     AND EXISTS (SELECT 1 FROM app_roles ar
                                                                                  WHERE has_table_privilege(ar.oid, b.oid, 'SELECT')))
                                                            -- (rls_tenancy.tenants is keyed by id: spelled as tenant_id)
                                                            AND NOT rls_tenancy.is_tenant_conjunction(
                                                                    CASE WHEN b.oid = 'rls_tenancy.tenants'::regclass
                                                                         THEN regexp_replace(regexp_replace(
                                                                                  pg_get_expr(p.polqual, p.polrelid),
                                                                                  '^\((\(?)id = ', '(\1tenant_id = '),
                                                                                  '\) AND \(id OPERATOR\(rls_tenancy\.===\) ',
                                                                                  ') AND (tenant_id OPERATOR(rls_tenancy.===) ')
                                                                         ELSE pg_get_expr(p.polqual, p.polrelid) END,
                                                                    signing_required))))
                    THEN 'warning'  -- its owner is bound by the policies, which filter on the session's tenant
                    WHEN EXISTS (SELECT 1 FROM app_roles ar WHERE has_table_privilege(ar.oid, v.oid, 'SELECT'))
                    THEN 'error' ELSE 'warning' END,
               CASE WHEN v.relkind = 'm' THEN 'materialized_view_over_tenant_table' ELSE 'view_not_security_invoker' END,
               format('%s', v.oid::regclass),
               CASE WHEN v.relkind = 'm'
                    THEN format('materialized view %s stores rows of %s with no row level security of its own', v.oid::regclass, r.base::regclass)
                    ELSE format('view %s reads %s with its owner''s rights (no security_invoker), past the policies', v.oid::regclass, r.base::regclass) END,
               CASE WHEN v.relkind = 'm'
                    THEN format('DROP MATERIALIZED VIEW %s; -- or a table isolated with enable_tenant_isolation', v.oid::regclass)
                    ELSE format('ALTER VIEW %s SET (security_invoker = true);', v.oid::regclass) END
          FROM reaching r
          JOIN pg_class v ON v.oid = r.rel
          JOIN pg_roles vo ON vo.oid = v.relowner
         WHERE v.relkind = 'm'
            OR (v.relkind = 'v' AND NOT coalesce(
                   (SELECT o.option_value::boolean FROM pg_options_to_table(v.reloptions) o
                     WHERE o.option_name = 'security_invoker'), false))
        UNION ALL
        -- A materialized view the app role may read that calls a function (not a built-in one, nor an
        -- extension's): whatever the function reads (by a query, or by EXECUTE text the catalogs cannot follow),
        -- the refresh reads as the view's owner and stores for every reader. An error when that owner escapes
        -- row level security (a superuser, BYPASSRLS), or when a function it calls reads a table its owner reads
        -- past the bound tenant (open_reads: a BI role's policy USING (true), the owner role's on
        -- rls_tenancy.tenants), as far as the catalogs tell (a dependency, or the table's name in its body);
        -- else a warning: the owner's policies filter on whichever tenant the refreshing session had bound. One
        -- that reads a tenant table itself is reported above.
        SELECT CASE WHEN mv.rolsuper OR mv.rolbypassrls OR past.tables IS NOT NULL THEN 'error' ELSE 'warning' END,
               'materialized_view_calls_function', format('%s', mv.oid::regclass),
               format('materialized view %s calls %s: its refresh runs %s as its owner %I%s, and stores what %s '
                      'for every role that may read it, the application role included',
                      mv.oid::regclass, mv.names, CASE WHEN cardinality(mv.called) > 1 THEN 'them' ELSE 'it' END, mv.rolname,
                      CASE WHEN mv.rolsuper THEN ', a superuser: whatever tenant tables they read, they read whole'
                           WHEN mv.rolbypassrls THEN ', which has BYPASSRLS: whatever tenant tables they read, they read whole'
                           WHEN past.tables IS NOT NULL
                           THEN format(', which reads %s past the bound tenant: every tenant''s rows of it', past.tables)
                           ELSE ' (where the policies bind it: the rows of whichever tenant the refreshing session had bound)' END,
                      CASE WHEN cardinality(mv.called) > 1 THEN 'they return' ELSE 'it returns' END),
               E'\x1e' || jsonb_build_array('SELECT', format('%s', mv.oid::regclass),
                                            coalesce(mv.relacl, acldefault('r', mv.relowner)), mv.relowner, ARRAY['SELECT'],
                                            ARRAY(SELECT r.oid FROM pg_roles r WHERE pg_has_role(app_role, r.oid, 'MEMBER'))
                                            || 0::oid, false,
                                            format('REVOKE SELECT ON %s FROM PUBLIC, %I;', mv.oid::regclass, app_role))::text
               || E'\x1e' || format(' -- or DROP MATERIALIZED VIEW %s;', mv.oid::regclass)
          FROM (
                SELECT m.oid, m.relacl, m.relowner, o.rolname, o.rolsuper, o.rolbypassrls,
                       string_agg(DISTINCT format('%s', f.oid::regprocedure), ', ') AS names, array_agg(DISTINCT f.oid) AS called
                  FROM matview_reads mr
                  JOIN pg_class m ON m.oid = mr.mv
                  JOIN pg_roles o ON o.oid = m.relowner
                  JOIN pg_rewrite rw ON rw.ev_class = mr.rel
                  -- (a call of a pinned function, pg_catalog's, is recorded in no pg_depend row: read from the rule's tree)
                  CROSS JOIN LATERAL (SELECT d.refobjid AS oid FROM pg_depend d
                                       WHERE d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_proc'::regclass
                                      UNION
                                      SELECT p.oid FROM pg_proc p
                                       WHERE p.pronamespace = 'pg_catalog'::regnamespace
                                         AND p.proname ~ '^(query|cursor|table|schema|database)_to_xml(schema|_and_xmlschema)?$'
                                         AND rw.ev_action::text ~ (':funcid ' || p.oid || '\M')) called
                  JOIN pg_proc f ON f.oid = called.oid
                 WHERE ((f.pronamespace <> 'pg_catalog'::regnamespace AND f.oid >= 16384
                         AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e'))
                        -- The system's and extensions' functions that run SQL text, or read a table, given as an argument:
                        -- query_to_xml('SELECT ... FROM projects', ...), tablefunc's crosstab() and connectby(), dblink().
                        OR (f.pronamespace = 'pg_catalog'::regnamespace
                            AND f.proname ~ '^(query|cursor|table|schema|database)_to_xml(schema|_and_xmlschema)?$')
                        OR (f.proname ~ '^(crosstab[0-9]*|connectby|dblink|dblink_exec|dblink_open|dblink_fetch|dblink_send_query|dblink_get_result)$'
                            AND EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e')))
                   AND NOT EXISTS (SELECT 1 FROM reaching r WHERE r.rel = m.oid)
                   AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_table_privilege(ar.oid, m.oid, 'SELECT'))
                 GROUP BY m.oid, m.relacl, m.relowner, o.rolname, o.rolsuper, o.rolbypassrls) mv
          CROSS JOIN LATERAL (
              SELECT string_agg(format('%s (%s)', r.table_oid::regclass, r.why), ', ' ORDER BY r.table_oid::regclass::text)
                         AS tables
                FROM open_reads r JOIN pg_class t ON t.oid = r.table_oid
               WHERE r.role_oid = mv.relowner
                 AND EXISTS (SELECT 1 FROM pg_proc g
                              WHERE g.oid = ANY (mv.called)
                                AND (EXISTS (SELECT 1 FROM pg_depend x
                                              WHERE x.classid = 'pg_proc'::regclass AND x.objid = g.oid
                                                AND x.refclassid = 'pg_class'::regclass AND x.refobjid = t.oid)
                                     OR (strpos(lower(g.prosrc), lower(t.relname)) > 0
                                         AND EXISTS (
                                             SELECT 1
                                               FROM (SELECT CASE WHEN g.prolang IN (SELECT l.oid FROM pg_language l
                                                                                      WHERE l.lanname IN ('sql', 'plpgsql'))
                                                                 THEN rls_tenancy.body_split(g.prosrc)
                                                                 ELSE ARRAY[g.prosrc, ''] END AS parts) gb
                                              -- its code (comments and strings aside), or SQL text in a literal
                                              WHERE gb.parts[1] ~* ('\m' || regexp_replace(t.relname, '([^[:alnum:]_])', '\\\1', 'g') || '\M')
                                                 OR gb.parts[2] ~* ('\m(from|join|update|into|table|only|using)\s+("?[[:alnum:]_]+"?\s*\.\s*)?"?'
                                                                    || regexp_replace(t.relname, '([^[:alnum:]_])', '\\\1', 'g') || '\M')))))) past
        UNION ALL
        -- SECURITY DEFINER functions.
        SELECT 'error', 'definer_without_search_path', format('%s', f.oid::regprocedure),
               format('SECURITY DEFINER function %s has no search_path ending in pg_temp: a caller can plant objects it will use (pg_temp is searched first unless it is named last)',
                      f.oid::regprocedure),
               format('ALTER %s %s SET search_path = %s; -- then qualify the names it uses',
                      f.kind, f.oid::regprocedure, f.safe_path)
          FROM definers f
         WHERE btrim(reverse(split_part(reverse(f.path), ',', 1)), ' "') IS DISTINCT FROM 'pg_temp'
        UNION ALL
        SELECT 'error', 'definer_executable_by_public', format('%s', f.oid::regprocedure),
               format('SECURITY DEFINER function %s can be run by every role (PUBLIC)', f.oid::regprocedure),
               E'\x1e' || jsonb_build_array('EXECUTE', format('%s %s', f.kind, f.oid::regprocedure),
                                            coalesce(f.proacl, acldefault('f', f.proowner)), f.proowner,
                                            ARRAY['EXECUTE'], ARRAY[0::oid], false,
                                            format('REVOKE EXECUTE ON %s %s FROM PUBLIC;', f.kind, f.oid::regprocedure))::text
               || E'\x1e'
          FROM definers f
         WHERE (f.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(f.proacl) acl
                                             WHERE acl.grantee = 0 AND acl.privilege_type = 'EXECUTE'))
        UNION ALL
        -- Foreign keys between tenant tables that let a row point into another tenant.
        SELECT 'error', 'foreign_key_without_tenant', format('%s', k.conrelid::regclass),
               format('foreign key %I from %s to %s does not include tenant_id on both sides: a row can reference another tenant''s row (foreign key checks ignore row level security)',
                      k.conname, k.conrelid::regclass, k.confrelid::regclass),
               format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I FOREIGN KEY (tenant_id, ...) REFERENCES %s (tenant_id, ...); -- see rls_tenancy.tenant_foreign_key',
                      k.conrelid::regclass, k.conname, k.conname, k.confrelid::regclass)
          FROM pg_constraint k
          JOIN rls_tenancy.coverage child ON child.table_oid = k.conrelid
          JOIN rls_tenancy.coverage parent ON parent.table_oid = k.confrelid
         WHERE k.contype = 'f'
           AND NOT EXISTS (
                SELECT 1 FROM unnest(k.conkey, k.confkey) AS pair(child_att, parent_att)
                  JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = pair.child_att
                  JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = pair.parent_att
                 WHERE ca.attname = 'tenant_id' AND pa.attname = 'tenant_id')
        UNION ALL
        -- A definer's search_path naming a schema the app role can create objects in, or one it can create
        -- ("$user" among them) while nobody has.
        SELECT DISTINCT 'error', 'definer_search_path_writable', format('%s', f.oid::regprocedure),
               CASE WHEN NOT e.missing
                    THEN format('SECURITY DEFINER function %s searches schema %s, where the application role can create objects it will then use',
                                f.oid::regprocedure,
                                CASE WHEN e.element = '$user' THEN format('$user (%I)', e.name) ELSE quote_ident(e.name) END)
                    ELSE format('SECURITY DEFINER function %s searches schema %s, which does not exist yet: the application '
                                'role may create schemas in database %I, and the functions it puts in one of that name run '
                                'as %I, the function''s owner, with every tenant''s rows and the signed context within reach',
                                f.oid::regprocedure,
                                CASE WHEN e.element = '$user' THEN format('$user (%I, its owner''s name)', e.name)
                                     ELSE quote_ident(e.name) END,
                                current_database(), pg_get_userbyid(f.proowner)) END,
               format('ALTER %s %s SET search_path = %s; -- then qualify the names it uses',
                      f.kind, f.oid::regprocedure, f.safe_path)
          FROM definers f
          JOIN definer_paths e ON e.oid = f.oid
         WHERE f.path IS NOT NULL AND e.n > 1 AND e.writable AND NOT e.covered
        UNION ALL
        -- The owner role must stay bound by FORCE ROW LEVEL SECURITY: the library's SECURITY DEFINER functions
        -- run as it and rely on the policies to see the bound tenant only.
        SELECT 'error', 'owner_role_escapes_rls', owner_role::text,
               format('the owner role %I %s: FORCE ROW LEVEL SECURITY no longer binds it, so every SECURITY DEFINER '
                      'function it owns (the library''s own: audit log, tokens, users) reads and writes every tenant''s rows',
                      owner_role, CASE WHEN r.rolsuper THEN 'is a superuser' ELSE 'has BYPASSRLS' END),
               concat_ws(' ', CASE WHEN r.rolsuper THEN format('ALTER ROLE %I NOSUPERUSER;', owner_role) END,
                              CASE WHEN r.rolbypassrls THEN format('ALTER ROLE %I NOBYPASSRLS;', owner_role) END)
          FROM pg_roles r WHERE r.rolname = owner_role AND (r.rolsuper OR r.rolbypassrls)
        UNION ALL
        -- A permissive policy for the owner role (and not the app role, which policy_not_tenant_keyed covers)
        -- that is not the tenant condition opens the table to everything that runs as the owner.
        SELECT 'error', 'owner_policy_opens_table', format('%s policy %I', p.polrelid::regclass, p.polname),
               format('policy %I on %s applies to the owner role %I and is not keyed on the bound tenant: every SECURITY '
                      'DEFINER function the owner role owns (the library''s own) reads that table across tenants',
                      p.polname, p.polrelid::regclass, owner_role),
               coalesce(lf.fix, format('DROP POLICY %I ON %s;', p.polname, p.polrelid::regclass))
          FROM pg_policy p JOIN rls_tenancy.coverage c ON c.table_oid = p.polrelid
          LEFT JOIN library_policy_fixes lf ON lf.policy_oid = p.oid
         WHERE p.polpermissive
           AND NOT EXISTS (SELECT 1 FROM library_policy_renames r WHERE r.policy_oid = p.oid AND r.same)
           AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS r(oid) WHERE r.oid <> 0 AND pg_has_role(owner_role, r.oid, 'USAGE'))
           AND NOT EXISTS (SELECT 1 FROM unnest(p.polroles) AS r(oid) WHERE r.oid = 0 OR pg_has_role(app_role, r.oid, 'MEMBER'))
           AND NOT rls_tenancy.policy_is_tenant_keyed(p.polcmd, pg_get_expr(p.polqual, p.polrelid),
                                                     pg_get_expr(p.polwithcheck, p.polrelid), signing_required)
        UNION ALL
        -- A definer that reads past the bound tenant (escaping_definers: its owner is a superuser or has
        -- BYPASSRLS, or a policy of its owner's opens a table it reads), which the app role runs: directly
        -- (EXECUTE, or a trigger on a table it writes: PostgreSQL checks no EXECUTE when a trigger fires, so only
        -- its owner changes that), or through other definers that call it (escaping_callers).
        SELECT CASE WHEN e.quiet THEN 'warning' ELSE 'error' END, 'definer_escapes_rls', format('%s', f.oid::regprocedure),
               format('SECURITY DEFINER function %s runs as %I, which %s, for the application role%s',
                      f.oid::regprocedure, o.rolname, e.why,
                      CASE WHEN f.oid IN (SELECT a.oid FROM app_runs a)
                           THEN coalesce((SELECT format(' (as a support function of aggregate %s, which the application role may run: '
                                                        'callers need EXECUTE on the aggregate only)',
                                                        string_agg(DISTINCT ag.aggregate::regprocedure::text, ', '))
                                            FROM aggregates_over ag WHERE ag.support = f.oid
                                          HAVING count(*) > 0), '')
                           ELSE (SELECT format(' (through SECURITY DEFINER function %s, which the application role runs and which calls it%s)',
                                               c.caller::regprocedure,
                                               CASE WHEN cardinality(c.path) > 2 THEN format(' by way of %s',
                                                   (SELECT string_agg(x.oid::regprocedure::text, ', ' ORDER BY x.n DESC)
                                                      FROM unnest(c.path[2:cardinality(c.path) - 1]) WITH ORDINALITY AS x (oid, n)))
                                                    ELSE '' END)
                                   FROM escaping_callers c
                                  WHERE c.target = f.oid AND c.caller IN (SELECT a.oid FROM app_runs a)
                                  ORDER BY cardinality(c.path) LIMIT 1) END),
               -- the owner role, bound by FORCE on the tenant tables; not where it reads past the tenant itself
               -- (rls_tenancy.tenants, audit_log): there it runs with the caller's rights, bound to its tenant
               -- (one that writes, or a trigger's: with the caller's rights it may fail where it works now, so
               -- the statement is left in a comment for review; and nothing to run for a quiet one, whose new
               -- owner would need the rights of what it does)
               CASE WHEN e.quiet
                    THEN format('-- nothing to run: it reads no tenant''s rows as written; review it whenever its body '
                                'changes (ALTER %s %s OWNER TO %I binds it by FORCE, once that role holds the rights of '
                                'all it does)', f.kind, f.oid::regprocedure, owner_role)
                    WHEN e.invoker AND coalesce(fb.writes, true)
                    THEN format('-- review first: it writes as well, and with the caller''s rights it fails where the '
                                'application role lacks the rights of what it writes; once it holds them: ALTER %s %s '
                                'SECURITY INVOKER; (or drop it)', f.kind, f.oid::regprocedure)
                    WHEN e.invoker
                    THEN format('ALTER %s %s SECURITY INVOKER; -- it then runs with the caller''s rights, bound to its '
                                'tenant (or drop it)', f.kind, f.oid::regprocedure)
                    ELSE format('ALTER %s %s OWNER TO %I;', f.kind, f.oid::regprocedure, owner_role) END
          FROM definers f
          JOIN pg_roles o ON o.oid = f.proowner
          JOIN escaping_definers e ON e.oid = f.oid
          LEFT JOIN definer_bodies fb ON fb.oid = f.oid
         WHERE (f.oid IN (SELECT a.oid FROM app_runs a)
                OR EXISTS (SELECT 1 FROM escaping_callers c
                            WHERE c.target = f.oid AND c.caller IN (SELECT a.oid FROM app_runs a)))
        UNION ALL
        -- Tables without tenant_id that every tenant can write: shared by all, isolated from none.
        SELECT 'warning', 'table_not_isolated', format('%s', t.oid::regclass),
               format('%s has no tenant_id and no row level security, and the application role can write it: every tenant shares its rows%s',
                      t.oid::regclass,
                      -- its cause, when the grant came with the table: default privileges of its owner
                      (SELECT format(' (granted at creation by the default privileges of %I%s)', pg_get_userbyid(d.defaclrole),
                                     CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %I', n.nspname) ELSE '' END)
                         FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
                        WHERE d.defaclobjtype = 'r' AND d.defaclrole = t.relowner
                          AND d.defaclnamespace IN (0, t.relnamespace)
                          AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
                          AND acl.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
                        ORDER BY d.defaclnamespace DESC LIMIT 1)),
               -- The writes taken back (PUBLIC's and those of every role the app role can become, on the table
               -- and its columns, per grantor; from the owner role first where the app role owns it); what to do
               -- instead, where the application needs it, is the table designer's choice: in a comment.
               concat_ws(' ',
                   CASE WHEN pg_has_role(app_role, t.relowner, 'MEMBER')
                        THEN format('ALTER TABLE %s OWNER TO %I;', t.oid::regclass, owner_role) END,
                   E'\x1e' || jsonb_build_array('INSERT, UPDATE, DELETE, TRUNCATE', format('%s', t.oid::regclass),
                                                coalesce(t.relacl, acldefault('r', t.relowner))
                                                || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item
                                                              WHERE a.attrelid = t.oid), '{}'::aclitem[]),
                                                t.relowner, ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'],
                                                ARRAY(SELECT ar.oid FROM app_roles ar) || 0::oid, false, NULL)::text || E'\x1e',
                   format('-- its rows stay readable to every tenant: SELECT rls_tenancy.share_table(%L); records that '
                          'as meant (reference data); if they belong to tenants, add tenant_id (NOT NULL, a key to '
                          'rls_tenancy.tenants) and SELECT rls_tenancy.enable_tenant_isolation(%L); instead',
                          t.oid::regclass::text, t.oid::regclass::text))
          FROM pg_class t
          JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE t.relkind IN ('r', 'p') AND NOT t.relrowsecurity
           AND n.nspname NOT IN ('pg_catalog', 'pg_toast', 'rls_tenancy') AND NOT (n.nspname = 'information_schema' AND t.oid < 16384)
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_class'::regclass AND x.objid = t.oid AND x.deptype = 'e')
           -- reported as tenant_table_by_another_name, its cause
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'f'
                              AND (k.confrelid = 'rls_tenancy.tenants'::regclass
                                   OR EXISTS (SELECT 1 FROM rls_tenancy.coverage c WHERE c.table_oid = k.confrelid)))
           AND EXISTS (SELECT 1 FROM app_roles ar
                        WHERE (has_any_column_privilege(ar.oid, t.oid, 'INSERT') OR has_any_column_privilege(ar.oid, t.oid, 'UPDATE')
                              OR has_table_privilege(ar.oid, t.oid, 'DELETE') OR has_table_privilege(ar.oid, t.oid, 'TRUNCATE')))
        UNION ALL
        -- Unique keys across tenants: inserting another tenant's value fails, which tells that it exists.
        SELECT 'warning', 'unique_without_tenant', format('%s', i.indexrelid::regclass),
               format('%s on %s is unique across all tenants: writing a value another tenant holds fails with a duplicate key error, which tells that it exists',
                      pg_get_indexdef(i.indexrelid), c.table_name),
               format('make it unique per tenant, e.g. (tenant_id, ...); for a primary key: PRIMARY KEY (tenant_id, id), or never let the application choose ids')
          FROM pg_index i
          JOIN rls_tenancy.coverage c ON c.table_oid = i.indrelid
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'tenant_id'
         WHERE i.indisunique
           AND NOT (a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))  -- key columns, not INCLUDE ones
           AND (c.app_insert OR c.app_update)
        UNION ALL
        -- A GENERATED ALWAYS id the application role may choose: INSERT ... OVERRIDING SYSTEM VALUE writes it.
        -- enable_tenant_isolation() grants INSERT on the other columns of such a table only.
        SELECT 'warning', 'generated_id_insertable', format('%s.%I', c.table_name, a.attname),
               format('the application role may choose %I of %s (INSERT ... OVERRIDING SYSTEM VALUE): ids stop '
                      'being unique across tenants in fact, and a chosen id probes for another tenant''s wherever '
                      'a key or a lookup spans tenants', a.attname, c.table_name),
               format('SELECT rls_tenancy.enable_tenant_isolation(%L);', c.table_name)
          FROM rls_tenancy.coverage c
          JOIN pg_attribute a ON a.attrelid = c.table_oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = 'a'
         WHERE c.tenant_policies IS NOT NULL
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_column_privilege(ar.oid, c.table_oid, a.attnum, 'INSERT'))
        UNION ALL
        -- Exclusion constraints across tenants: a range another tenant's row overlaps is refused, which tells
        -- that one is there (the error leaves the other row's values out under row level security, but a few
        -- tries narrow the range down). Across tenants unless tenant_id is a key column compared with =.
        SELECT 'warning', 'exclusion_without_tenant', format('%s', i.indexrelid::regclass),
               format('exclusion constraint %I on %s spans tenants: a row that conflicts with another tenant''s row is refused, which tells that one is there',
                      k.conname, c.table_name),
               format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I EXCLUDE USING ... (tenant_id WITH =, ...); -- btree_gist gives = to GiST',
                      c.table_name, k.conname, k.conname)
          FROM pg_index i
          JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.contype = 'x'
          JOIN rls_tenancy.coverage c ON c.table_oid = i.indrelid
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'tenant_id'
         WHERE i.indisexclusion
           AND NOT EXISTS (SELECT 1 FROM unnest(k.conkey, k.conexclop) AS pair(att, op)
                             JOIN pg_operator o ON o.oid = pair.op
                            WHERE pair.att = a.attnum AND o.oprname = '=')
           AND (c.app_insert OR c.app_update)
        UNION ALL
        -- Indexes that do not lead with tenant_id. When one serves a query's condition, the policy is
        -- checked as a Filter after it, and EXPLAIN ANALYZE's "Rows Removed by Filter" counts the other
        -- tenants' rows in whatever range the caller asks for. An index on (tenant_id, c) beside it does
        -- not help: the planner switches and cost settings any role may SET steer the plan onto this one.
        SELECT 'warning', 'index_not_leading_with_tenant', format('%s', i.indexrelid::regclass),
               format('%s does not lead with tenant_id: a query it serves checks the tenant after the index, and EXPLAIN ANALYZE (Rows Removed by Filter) then counts other tenants'' rows in any range of its columns',
                      pg_get_indexdef(i.indexrelid)),
               CASE am.amname
                    WHEN 'btree'
                    THEN format('lead it with tenant_id, e.g. (tenant_id, %s); for a primary key: PRIMARY KEY (tenant_id, id)',
                                pg_get_indexdef(i.indexrelid, 1, true))
                    -- tenant_id (bigint) has no operator class of its own for GIN or GiST: btree_gin / btree_gist
                    WHEN 'gin'
                    THEN format('CREATE EXTENSION IF NOT EXISTS btree_gin; -- GIN has no operator class for tenant_id '
                                'without it; then lead it with tenant_id: USING gin (tenant_id, %s)', keyed.columns)
                    WHEN 'gist'
                    THEN format('CREATE EXTENSION IF NOT EXISTS btree_gist; -- GiST has no operator class for tenant_id '
                                'without it; then lead it with tenant_id: USING gist (tenant_id, %s)', keyed.columns)
                    WHEN 'brin'
                    THEN format('lead it with tenant_id: USING brin (tenant_id, %s)', keyed.columns)
                    ELSE format('a %s index has one column: use a btree, GIN (with btree_gin) or GiST (with btree_gist) '
                                'index led by tenant_id instead, e.g. (tenant_id, %s)', am.amname,
                                pg_get_indexdef(i.indexrelid, 1, true)) END
          FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam
          -- its key columns with their operator classes where not the default (gin_trgm_ops)
          CROSS JOIN LATERAL (
              SELECT string_agg(pg_get_indexdef(i.indexrelid, k.n, true)
                                || CASE WHEN opc.opcdefault THEN '' ELSE ' ' || quote_ident(opc.opcname) END,
                                ', ' ORDER BY k.n) AS columns
                FROM generate_series(1, i.indnkeyatts) AS k (n)
                JOIN pg_opclass opc ON opc.oid = i.indclass[k.n - 1]) keyed
          JOIN rls_tenancy.coverage c ON c.table_oid = i.indrelid
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'tenant_id'
         WHERE i.indkey[0] <> a.attnum
           AND c.app_select
        UNION ALL
        -- What the application role may do outside any table.
        -- TEMPORARY (granted to PUBLIC by default): temporary tables, views and functions outlive the
        -- transaction, and pg_temp is searched first for tables, so a request can leave state, or a table
        -- named like a tenant table, for whichever request uses the connection next.
        SELECT 'warning', 'app_role_temporary', format('%I', current_database()),
               format('the application role %I may create temporary objects in database %I%s: they outlive the transaction and act in the next request on the same connection. '
                      'The library''s session reset (rls_tenancy.reset_session(), DISCARD TEMP) already drops them before a connection '
                      'serves another tenant (and, with a context key, another user); an app that uses temporary tables in its requests '
                      'may keep TEMPORARY and record an exemption instead: INSERT INTO rls_tenancy.doctor_exemptions '
                      '(object_name, check_name, reason) VALUES (%L, ''app_role_temporary'', ''<why>'');',
                      app_role, current_database(),
                      CASE WHEN has_database_privilege('public', current_database(), 'TEMPORARY') THEN ' (granted to PUBLIC)' ELSE '' END,
                      format('%I', current_database())),
               concat_ws(' ', format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I;', current_database(), app_role),
                         (SELECT (E'\x1e' || jsonb_build_array('TEMPORARY', format('DATABASE %I', d.datname), d.datacl, d.datdba,
                                                        ARRAY['TEMPORARY'],
                                                        ARRAY(SELECT r.oid FROM pg_roles r WHERE pg_has_role(app_role, r.oid, 'MEMBER'))
                                                        || 0::oid, true, NULL)::text || E'\x1e')
                            FROM pg_database d WHERE d.datname = current_database()),
                         format('-- then GRANT TEMPORARY ON DATABASE %I TO the roles that need it', current_database()))
         WHERE EXISTS (SELECT 1 FROM app_roles ar WHERE has_database_privilege(ar.oid, current_database(), 'TEMPORARY'))
        UNION ALL
        -- Defaults applied at login (ALTER ROLE / ALTER DATABASE ... SET): the app role may set its own
        -- for any ordinary parameter, and no privilege stops it. Names compared lower-cased: PostgreSQL's are
        -- case-insensitive, so "App.Current_Tenant" sets app.current_tenant. One for the tenant or the user would bind
        -- work that binds nothing itself; others can break every later login, or change how queries run.
        SELECT CASE WHEN lower(split_part(setting, '=', 1)) IN ('app.current_tenant', 'app.current_user_id') THEN 'error'
                    -- replica mode: the audit log's guards (and foreign key checks) do not fire
                    WHEN lower(split_part(setting, '=', 1)) = 'session_replication_role'
                         AND lower(split_part(setting, '=', 2)) <> 'origin' THEN 'error'
                    -- every large object readable and writable by every role, past its grants
                    WHEN lower(split_part(setting, '=', 1)) = 'lo_compat_privileges'
                         AND lower(split_part(setting, '=', 2)) IN ('on', 'true', 'yes', '1') THEN 'error'
                    ELSE 'warning' END,
               'app_role_setting',
               concat_ws(' ', CASE WHEN s.setrole <> 0 THEN format('role %I', app_role) ELSE 'every role' END,
                         CASE WHEN s.setdatabase <> 0 THEN format('in database %I', current_database()) END,
                         'setting', split_part(setting, '=', 1)),
               format('%s applies to the application role %I at login: %s',
                      CASE WHEN s.setrole <> 0 THEN 'a role default' WHEN s.setdatabase <> 0 THEN 'a database default'
                           ELSE 'a default for every role' END, app_role,
                      CASE WHEN lower(split_part(setting, '=', 1)) IN ('app.current_tenant', 'app.current_user_id')
                           THEN format('%s, so work that binds no tenant or user of its own runs as that one', setting)
                           ELSE setting END),
               -- the name as stored, quoted: unquoted, RESET folds it to lower case and leaves "APP.CURRENT_TENANT"
               CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN format('ALTER ROLE ALL RESET %I;', split_part(setting, '=', 1))
                    WHEN s.setrole = 0 THEN format('ALTER DATABASE %I RESET %I;', current_database(), split_part(setting, '=', 1))
                    WHEN s.setdatabase = 0 THEN format('ALTER ROLE %I RESET %I;', app_role, split_part(setting, '=', 1))
                    ELSE format('ALTER ROLE %I IN DATABASE %I RESET %I;', app_role, current_database(), split_part(setting, '=', 1)) END
          FROM pg_db_role_setting s
          CROSS JOIN LATERAL unnest(s.setconfig) setting
         WHERE s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = app_role))
           AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
        UNION ALL
        -- The same settings for the whole server (ALTER SYSTEM, postgresql.conf, the server's command line): every
        -- session of every role starts with them. Only those that open another tenant's rows: a tenant or user
        -- bound for work that binds none itself, every large object readable and writable past its grants,
        -- replica mode (foreign keys and the library's triggers do not fire). As this session sees them: a value
        -- it set itself hides the server's. The library's settings are placeholders, which pg_settings does not
        -- list: their value in this session, where no role or database default for it (app_role_setting's, or
        -- this session's user's) sets them, is the server's (the doctor binds no tenant).
        SELECT 'error', 'server_setting', format('setting %s', v.name),
               format('the server sets %s = %s (ALTER SYSTEM, postgresql.conf or its command line): every session of '
                      'the application role starts bound to it, so work that binds no tenant or user of its own runs as that one',
                      v.name, quote_literal(v.value)),
               format('ALTER SYSTEM RESET %I; SELECT pg_reload_conf(); -- each on its own, outside a transaction '
                      '(where postgresql.conf or the command line sets it, remove it there, then reload or restart)', v.name)
          FROM (VALUES ('app.current_tenant'), ('app.current_user_id')) AS v0 (name)
          CROSS JOIN LATERAL (SELECT v0.name, current_setting(v0.name, true) AS value) v
         WHERE coalesce(v.value, '') <> ''
           AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) setting
                            WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
                              AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
                              AND lower(split_part(setting, '=', 1)) = v.name)
        UNION ALL
        SELECT 'error', 'server_setting', format('setting %s', st.name),
               format('the server sets %s = %s (%s): %s', st.name, quote_literal(st.setting),
                      CASE st.source WHEN 'configuration file' THEN 'ALTER SYSTEM or postgresql.conf'
                                     ELSE st.source END,
                      CASE WHEN lower(st.name) IN ('app.current_tenant', 'app.current_user_id')
                           THEN 'every session of the application role starts bound to it, so work that binds no tenant '
                                'or user of its own runs as that one'
                           WHEN st.name = 'lo_compat_privileges'
                           THEN 'every role reads and writes every large object, past its grants'
                           ELSE 'foreign keys and ordinary triggers (the library''s guards among them) do not fire, so a '
                                'row may point into another tenant' END),
               CASE WHEN st.source = 'configuration file'
                    THEN format('ALTER SYSTEM RESET %I; SELECT pg_reload_conf(); -- each on its own, outside a transaction '
                                '(where postgresql.conf sets it, remove it there, then reload)', st.name)
                    ELSE format('remove %s from the server''s %s, then restart it', st.name, st.source) END
          FROM pg_settings st
         WHERE st.source IN ('configuration file', 'command line', 'environment variable')
           AND ((lower(st.name) IN ('app.current_tenant', 'app.current_user_id') AND st.setting <> '')
                OR (st.name = 'session_replication_role' AND st.setting <> 'origin')
                OR (st.name = 'lo_compat_privileges' AND st.setting = 'on'))
        UNION ALL
        -- A function (or procedure) that sets the tenant or the user for its own run (CREATE FUNCTION ... SET
        -- app.current_tenant = ...), which the application role runs: by EXECUTE, through an aggregate over it,
        -- or as a trigger on a table it writes. Whoever calls it reads as that tenant, or user.
        SELECT 'error', 'function_sets_tenant', format('%s', f.oid::regprocedure),
               format('%s %s sets %s for its own run: the application role runs it, and reads and writes as that %s, '
                      'whatever tenant it bound', CASE f.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
                      f.oid::regprocedure, setting,
                      CASE WHEN lower(split_part(setting, '=', 1)) = 'app.current_tenant' THEN 'tenant' ELSE 'user' END),
               format('ALTER %s %s RESET %I;', CASE f.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                      f.oid::regprocedure, split_part(setting, '=', 1))
          FROM pg_proc f
          CROSS JOIN LATERAL unnest(f.proconfig) setting
         WHERE f.proconfig IS NOT NULL
           AND lower(split_part(setting, '=', 1)) IN ('app.current_tenant', 'app.current_user_id')
           AND (EXISTS (SELECT 1 FROM app_roles ar WHERE has_function_privilege(ar.oid, f.oid, 'EXECUTE'))
                OR EXISTS (SELECT 1 FROM pg_aggregate ag, app_roles ar
                            WHERE f.oid IN (ag.aggtransfn, ag.aggfinalfn, ag.aggcombinefn, ag.aggserialfn, ag.aggdeserialfn,
                                            ag.aggmtransfn, ag.aggminvtransfn, ag.aggmfinalfn)
                              AND has_function_privilege(ar.oid, ag.aggfnoid, 'EXECUTE'))
                OR EXISTS (SELECT 1 FROM pg_trigger tg, app_roles ar
                            WHERE tg.tgfoid = f.oid AND NOT tg.tgisinternal
                              AND (has_table_privilege(ar.oid, tg.tgrelid, 'INSERT')
                                   OR has_table_privilege(ar.oid, tg.tgrelid, 'UPDATE')
                                   OR has_table_privilege(ar.oid, tg.tgrelid, 'DELETE'))))
        UNION ALL
        -- Functions PUBLIC may run that reach past a tenant: signalling another session of the same role
        -- (any other tenant's request), and creating large objects (owned by the role, so every tenant
        -- can read them; row level security does not apply). sql/014_side_channels.sql revokes them, and
        -- what the other sessions of the role are doing (pg_stat_get_backend_*, progress) and every
        -- session's locks (pg_locks); sql/017_query_text.sql the query text of other sessions.
        -- Query text is an error where a signed context is required (SET LOCAL texts carry proofs), as for
        -- query_text_readable; the rest tells what other requests do, never their values.
        SELECT CASE WHEN signing_required AND f.proname IN ('pg_stat_get_activity', 'pg_stat_get_backend_activity')
                    THEN 'error' ELSE 'warning' END,
               'app_role_cross_tenant_function', format('%s', f.oid::regprocedure),
               format('the application role may run %s%s: %s', f.oid::regprocedure,
                      (SELECT format(' (through %s)', string_agg(DISTINCT quote_ident(g.rolname), ', '))
                         FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
                         JOIN pg_roles g ON g.oid = acl.grantee
                        WHERE acl.privilege_type = 'EXECUTE' AND g.rolname <> app_role
                          AND pg_has_role(app_role, acl.grantee, 'MEMBER')),
                      CASE WHEN f.proname IN ('pg_stat_get_activity', 'pg_stat_get_backend_activity')
                               THEN 'it shows the query text of every session of its own role, i.e. other tenants'' requests in flight'
                           WHEN f.proname IN ('pg_lock_status', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids',
                                              'pg_isolation_test_session_is_blocked')
                               THEN 'it reads the locks of every session (pg_locks): which tables other tenants'' requests '
                                    'in flight write, the keys of their advisory locks, which of them waits on which'
                           WHEN f.proname LIKE 'pg\_stat\_%'
                               THEN 'it shows, for every session of its own role, when its transaction and statement '
                                    'started, what it waits on, its client address, its progress: what other tenants'' '
                                    'requests in flight are doing'
                           -- pg_signal_backend signals any role's sessions but a superuser's (PostgreSQL's own check)
                           WHEN f.proname LIKE 'pg\_%' AND pg_has_role(app_role, 'pg_signal_backend', 'MEMBER')
                               THEN 'as pg_signal_backend, it cancels or ends any session but a superuser''s: another '
                                    'tenant''s request, and the sessions of every other role, the owner role''s and the '
                                    'bypass role''s (migrations, administration) among them'
                           WHEN f.proname LIKE 'pg\_%' THEN 'it cancels or ends any session of its own role, i.e. another tenant''s request'
                           ELSE 'a large object belongs to the role that creates it, so every tenant can read it' END),
               -- what PUBLIC or the app role holds, and each membership the app role holds on the way to a role
               -- that holds it (REVOKE ... FROM PUBLIC leaves pg_signal_backend's grant and the membership)
               concat_ws(' ',
                   CASE WHEN EXISTS (SELECT 1 FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
                                      JOIN pg_roles a ON a.rolname = app_role
                                     WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee IN (0, a.oid))
                        THEN format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC, %I;', f.oid::regprocedure, app_role) END,
                   -- those granted by another grantor than the owner (who held it WITH GRANT OPTION)
                   (E'\x1e' || jsonb_build_array('EXECUTE', format('FUNCTION %s', f.oid::regprocedure),
                                          coalesce(f.proacl, acldefault('f', f.proowner)), f.proowner, ARRAY['EXECUTE'],
                                          ARRAY[0::oid, (SELECT a.oid FROM pg_roles a WHERE a.rolname = app_role)], true, NULL)::text || E'\x1e'),
                   (SELECT string_agg(DISTINCT format('REVOKE %I FROM %I;', h.rolname, app_role), ' ')
                      FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
                      JOIN memberships ms ON ms.role_oid = acl.grantee
                      JOIN pg_roles h ON h.oid = ms.first_hop
                     WHERE acl.privilege_type = 'EXECUTE'))
          FROM pg_proc f
         WHERE f.pronamespace = 'pg_catalog'::regnamespace
           AND (f.oid = ANY (ARRAY['pg_catalog.pg_cancel_backend(integer)', 'pg_catalog.pg_terminate_backend(integer, bigint)',
                                   'pg_catalog.lo_creat(integer)', 'pg_catalog.lo_create(oid)',
                                   'pg_catalog.lo_from_bytea(oid, bytea)',
                                   'pg_catalog.pg_stat_get_activity(integer)']::regprocedure[])
                -- by name: a later PostgreSQL adds functions under these names (sql/014_side_channels.sql)
                OR f.proname LIKE 'pg\_stat\_get\_backend\_%'
                OR f.proname IN ('pg_stat_get_progress_info', 'pg_lock_status', 'pg_blocking_pids',
                                 'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked'))
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_function_privilege(ar.oid, f.oid, 'EXECUTE'))
           -- Granted to pg_read_all_stats: through that membership it is the membership's finding
           -- (app_role_member_of_privileged).
           AND NOT (f.proname NOT IN ('pg_cancel_backend', 'pg_terminate_backend') AND f.proname NOT LIKE 'lo\_%'
                    AND EXISTS (SELECT 1 FROM memberships ms JOIN pg_roles s ON s.oid = ms.role_oid
                                 WHERE s.rolname = 'pg_read_all_stats'))
        UNION ALL
        -- The functions that read or write the server's files, or connect without a password, which PostgreSQL
        -- (and adminpack, dblink) grant no one: their EXECUTE is what pg_read_server_files, pg_write_server_files
        -- and pg_execute_server_program (app_role_member_of_privileged) exist to gate. Granted back to PUBLIC, to
        -- the app role or to a role it can become, a table's own file (pg_relation_filepath()) is every tenant's
        -- rows, postgresql.auto.conf binds a tenant for every session at the next reload, and dblink_connect_u()
        -- logs in as whatever pg_hba.conf trusts (a local superuser, peer). Listing files (names, sizes) is a
        -- warning: it shows no row. One statement per grantor, as for every REVOKE printed from an ACL.
        SELECT CASE WHEN f.proname IN ('pg_ls_dir', 'pg_stat_file', 'pg_logdir_ls', 'pg_file_length') THEN 'warning'
                    ELSE 'error' END,
               'app_role_server_function', format('%s', f.oid::regprocedure),
               format('%s may run %s, which %s', (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g)
                                                     FROM unnest(x.grantees) g),
                      f.oid::regprocedure,
                      CASE WHEN f.proname IN ('pg_read_file', 'pg_read_binary_file', 'pg_file_read')
                           THEN 'reads any file of the data directory (with pg_read_server_files any file of the server): '
                                'a table''s own file (pg_relation_filepath()) holds every tenant''s rows'
                           WHEN f.proname = 'lo_import'
                           THEN 'copies any file the server may read into a large object of the caller''s: a table''s '
                                'own file (pg_relation_filepath()) holds every tenant''s rows'
                           WHEN f.proname = 'lo_export'
                           THEN 'writes a large object into any file the server may write: its configuration '
                                '(postgresql.auto.conf binds a tenant for every session at the next reload), a table''s files'
                           WHEN f.proname = 'pg_file_write'
                           THEN 'writes any file of the data directory: postgresql.auto.conf (a tenant bound for every '
                                'session at the next reload), a table''s own files'
                           WHEN f.proname IN ('pg_file_rename', 'pg_file_unlink')
                           THEN 'renames or removes any file of the data directory: a table''s own files, every tenant''s rows'
                           WHEN f.proname LIKE 'dblink%'
                           THEN 'connects without a password, as whatever pg_hba.conf lets the server''s operating system '
                                'user log in as (peer or trust: a superuser, on this very database), and reads every tenant'
                           ELSE 'lists the server''s files (names, sizes, times; not their contents)' END),
               E'\x1e' || jsonb_build_array('EXECUTE', format('FUNCTION %s', f.oid::regprocedure),
                                            coalesce(f.proacl, acldefault('f', f.proowner)), f.proowner, ARRAY['EXECUTE'],
                                            x.grantees, false,
                                            format('REVOKE EXECUTE ON FUNCTION %s FROM %s;', f.oid::regprocedure,
                                                   (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g)
                                                      FROM unnest(x.grantees) g)))::text || E'\x1e'
          FROM pg_proc f
          CROSS JOIN LATERAL (
              SELECT array_agg(DISTINCT acl.grantee) AS grantees
                FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
               WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee <> f.proowner
                 AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
                 -- through a privileged role: that membership is its own finding
                 AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = acl.grantee)) x
         WHERE cardinality(x.grantees) > 0
           -- the C functions themselves: a wrapper in SQL (adminpack's pg_file_rename(text, text), PUBLIC's) runs
           -- with its caller's rights, and calls one of these, which checks EXECUTE for the caller again
           AND f.prolang IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('internal', 'c'))
           AND ((f.pronamespace = 'pg_catalog'::regnamespace AND f.oid < 16384
                 AND f.proname IN ('pg_read_file', 'pg_read_binary_file', 'lo_import', 'lo_export', 'pg_ls_dir', 'pg_stat_file'))
                OR ((f.proname IN ('pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_read', 'pg_file_length',
                                   'pg_logdir_ls')
                     OR f.proname ~ '^dblink_[a-z_]*_u$')
                    AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = f.oid AND d.deptype = 'e'
                                   AND d.refclassid = 'pg_extension'::regclass AND e.extname IN ('adminpack', 'dblink'))))
        UNION ALL
        -- pg_stat_statements readable by the app role: the text of every statement its role ran, i.e. every
        -- tenant's (sql/017_query_text.sql closes it; an extension created later reopens it). The view's fix
        -- closes the function under it too; the function is reported on its own when granted separately.
        SELECT CASE WHEN signing_required THEN 'error' ELSE 'warning' END, 'query_text_readable', t.name,
               format('%s may %s %s: it shows the application role %I the text of every statement '
                      'its role ran, that is every tenant''s requests, %s',
                      (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g) FROM unnest(t.grantees) g),
                      CASE t.kind WHEN 'view' THEN 'read' ELSE 'run' END, t.name, app_role,
                      CASE WHEN signing_required
                           THEN 'and, where an engine is bound with set_local=True, the SET LOCAL statements that bind '
                                'each request, kept verbatim: another tenant''s signed context proof, which SQL run for '
                                'this tenant replays within its lifetime on the backend it names'
                           ELSE 'normalised (their shape, how often and how long they ran), but SET LOCAL and other '
                                'utility statements verbatim' END),
               concat_ws(' ',
                   format('REVOKE %s ON %s%s FROM %s;', CASE t.kind WHEN 'view' THEN 'SELECT' ELSE 'EXECUTE' END,
                          CASE t.kind WHEN 'view' THEN '' ELSE 'FUNCTION ' END, t.name,
                          (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g)
                             FROM (SELECT 0::oid UNION SELECT unnest(t.grantees)) AS revoked (g))),
                   -- a grant made by another grantor than the owner goes only at its grantor's REVOKE
                   (E'\x1e' || jsonb_build_array(CASE t.kind WHEN 'view' THEN 'SELECT' ELSE 'EXECUTE' END,
                                          CASE t.kind WHEN 'view' THEN t.name ELSE 'FUNCTION ' || t.name END, t.acl,
                                          t.owner_oid, ARRAY['SELECT', 'EXECUTE'], t.grantees, true, NULL)::text || E'\x1e'),
                   (SELECT string_agg(concat_ws(' ',
                                          format('REVOKE EXECUTE ON FUNCTION %s FROM %s;', f.name,
                                                 (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g)
                                                    FROM (SELECT 0::oid UNION SELECT unnest(f.grantees)) AS revoked (g))),
                                          (E'\x1e' || jsonb_build_array('EXECUTE', 'FUNCTION ' || f.name, f.acl, f.owner_oid,
                                                                 ARRAY['EXECUTE'], f.grantees, true, NULL)::text || E'\x1e')),
                                      ' ' ORDER BY f.name)
                      FROM statement_texts f WHERE t.kind = 'view' AND f.kind = 'function' AND f.extension = t.extension),
                   format('GRANT %s ON %s%s TO pg_read_all_stats;', CASE t.kind WHEN 'view' THEN 'SELECT' ELSE 'EXECUTE' END,
                          CASE t.kind WHEN 'view' THEN '' ELSE 'FUNCTION ' END, t.name),
                   (SELECT string_agg(format('GRANT EXECUTE ON FUNCTION %s TO pg_read_all_stats;', f.name), ' ' ORDER BY f.name)
                      FROM statement_texts f WHERE t.kind = 'view' AND f.kind = 'function' AND f.extension = t.extension))
          FROM statement_texts t
         WHERE cardinality(t.grantees) > 0
           AND (t.kind = 'view' OR NOT EXISTS (SELECT 1 FROM statement_texts v
                                                WHERE v.kind = 'view' AND v.extension = t.extension
                                                  AND cardinality(v.grantees) > 0))
        UNION ALL
        -- Rules run their actions with the rights of the owner of the table or view they are on. A rule on a
        -- tenant table, or one whose actions reach a tenant table, acts past the caller's policies. On a view
        -- too: security_invoker covers what its SELECT reads, not its rules' actions (its _RETURN rule is
        -- view_not_security_invoker's).
        -- A warning when that owner is bound by the policies, as for view_not_security_invoker: not a superuser,
        -- no BYPASSRLS, not a role the app role can become, and every tenant table the rule is on or reaches
        -- under row level security that binds it (FORCEd, or owned by another role); its actions then see and
        -- change the bound tenant's rows only.
        SELECT DISTINCT ON (rw.oid)
               CASE WHEN rule_owner.bound THEN 'warning' ELSE 'error' END,
               'rule_reaches_tenant_table', format('%s rule %I', rw.ev_class::regclass, rw.rulename),
               format('rule %I on %s runs its actions with the rights of the %s''s owner, and it %s',
                      rw.rulename, rw.ev_class::regclass, CASE WHEN t.relkind = 'v' THEN 'view' ELSE 'table' END,
                      CASE WHEN on_tenant.table_oid IS NOT NULL THEN 'is on a tenant table'
                           ELSE format('reaches tenant table %s', reached.table_name) END)
               || CASE WHEN t.relkind = 'v' THEN ' (security_invoker does not change whose rights a view''s rules use)' ELSE '' END
               || CASE WHEN rule_owner.bound
                       THEN format('; its owner %I is bound by the policies of what it reaches, so they act on the bound '
                                   'tenant''s rows only', pg_get_userbyid(t.relowner))
                       ELSE '' END,
               format('DROP RULE %I ON %s; -- %s', rw.rulename, rw.ev_class::regclass,
                      CASE WHEN t.relkind = 'v' THEN 'an INSTEAD OF trigger (not SECURITY DEFINER) runs with the caller''s rights'
                           ELSE 'a trigger runs with the caller''s rights' END)
          FROM pg_rewrite rw
          JOIN pg_class t ON t.oid = rw.ev_class AND t.relkind IN ('r', 'p', 'v')
          LEFT JOIN rls_tenancy.coverage on_tenant ON on_tenant.table_oid = rw.ev_class
          LEFT JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                                AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
          LEFT JOIN rls_tenancy.coverage reached ON reached.table_oid = d.refobjid
          CROSS JOIN LATERAL (
              -- every relation it is on or acts on a tenant table outside the library's schema (whose tables'
              -- guards exempt the owner role) under row level security that binds the rule's owner
              SELECT NOT o.rolsuper AND NOT o.rolbypassrls AND NOT pg_has_role(app_role, o.oid, 'MEMBER')
                     AND NOT EXISTS (SELECT 1
                                       FROM pg_class b
                                      WHERE (b.oid = rw.ev_class AND b.relkind <> 'v'
                                             OR b.oid <> rw.ev_class
                                                AND EXISTS (SELECT 1 FROM pg_depend rd
                                                             WHERE rd.classid = 'pg_rewrite'::regclass AND rd.objid = rw.oid
                                                               AND rd.refclassid = 'pg_class'::regclass AND rd.refobjid = b.oid))
                                        AND NOT (b.relrowsecurity AND (b.relforcerowsecurity OR b.relowner <> o.oid)
                                                 AND b.relnamespace <> 'rls_tenancy'::regnamespace
                                                 AND EXISTS (SELECT 1 FROM rls_tenancy.coverage c WHERE c.table_oid = b.oid)))
                     AS bound
                FROM pg_roles o WHERE o.oid = t.relowner) rule_owner
         WHERE rw.rulename <> '_RETURN'
           AND (on_tenant.table_oid IS NOT NULL OR reached.table_oid IS NOT NULL)
        UNION ALL
        -- Foreign tables read another server as the user their user mapping names: that server's policies
        -- (if any) judge that user, not the application's tenant. Pointing back at this database, they are a
        -- way around its policies. A file_fdw table connects nowhere: it reads a file (or a program's output)
        -- on the server, a copy of whatever was written there (an export of a tenant table is every tenant's
        -- rows), which the catalogs cannot tell from reference data: a warning.
        SELECT CASE WHEN srv.loopback THEN 'error' ELSE 'warning' END, 'foreign_table_readable', format('%s', f.oid::regclass),
               CASE WHEN srv.reads = 'file'
                    THEN format('the application role may read foreign table %s of server %I (file_fdw), which reads %s '
                                'on the server with no row level security: whatever was written there, every tenant''s '
                                'rows if it is an export of a tenant table, is read whole by every role that may read it',
                                f.oid::regclass, srv.srvname,
                                coalesce((SELECT format('%s %s', split_part(o, '=', 1), quote_literal(substr(o, strpos(o, '=') + 1)))
                                            FROM unnest(ft.ftoptions) o
                                           WHERE o LIKE 'filename=%' OR o LIKE 'program=%' LIMIT 1), 'a file'))
                    ELSE format('the application role may read foreign table %s of server %I, which %s as the user of its user mapping, past the policies of this database',
                                f.oid::regclass, srv.srvname,
                                CASE WHEN srv.loopback THEN format('reads this very database, as far as the doctor can tell (%s)', srv.why)
                                     WHEN srv.reads = 'database' THEN 'reads another database'
                                     ELSE format('reads another source (%s)', srv.reads) END) END,
               concat_ws(' ', format('REVOKE ALL ON %s FROM PUBLIC, %I;', f.oid::regclass, app_role),
                         (E'\x1e' || jsonb_build_array('ALL', format('%s', f.oid::regclass), f.relacl, f.relowner,
                                                ARRAY['SELECT'],
                                                ARRAY(SELECT r.oid FROM pg_roles r WHERE pg_has_role(app_role, r.oid, 'MEMBER'))
                                                || 0::oid, true, NULL)::text || E'\x1e'),
                         format('-- or DROP FOREIGN TABLE %s;', f.oid::regclass))
          FROM pg_class f
          JOIN pg_foreign_table ft ON ft.ftrelid = f.oid
          JOIN servers srv ON srv.oid = ft.ftserver
         WHERE EXISTS (SELECT 1 FROM app_roles ar WHERE has_table_privilege(ar.oid, f.oid, 'SELECT'))
        UNION ALL
        -- Default privileges that grant the tables created later to the application role: a new table is
        -- open to it from its first moment, before anyone isolates it.
        SELECT 'warning', 'default_privileges_grant_app',
               format('default privileges of %I%s', pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %I', d.defaclnamespace::regnamespace::text) ELSE '' END),
               format('tables %I creates%s are granted %s to %s at creation, before anyone isolates them',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %I', d.defaclnamespace::regnamespace::text) ELSE '' END,
                      string_agg(DISTINCT acl.privilege_type, ', '),
                      rls_tenancy.grantee_name(acl.grantee)),
               format('ALTER DEFAULT PRIVILEGES FOR ROLE %I%s REVOKE ALL ON TABLES FROM %s; -- grant each table when it is isolated',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' IN SCHEMA %I', d.defaclnamespace::regnamespace::text) ELSE '' END,
                      rls_tenancy.grantee_name(acl.grantee))
          FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
         WHERE d.defaclobjtype = 'r'
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
         GROUP BY d.oid, d.defaclrole, d.defaclnamespace, acl.grantee
        UNION ALL
        -- The same for sequences, where they grant UPDATE (GRANT ALL ON SEQUENCES does): the serial of a tenant
        -- table created later is setval()-able by the application role from its first moment
        -- (tenant_sequence_settable once it exists), and the tables' fix above leaves it. USAGE and SELECT
        -- (nextval(), currval()) are what a serial needs for inserts: not reported. The schema's name as
        -- regnamespace prints it, quoted where it needs it.
        SELECT 'warning', 'default_privileges_grant_app',
               format('default privileges of %I%s on sequences', pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %s', d.defaclnamespace::regnamespace) ELSE '' END),
               format('sequences %I creates%s are granted UPDATE to %s at creation: the serial of a tenant table made '
                      'then may be moved back with setval(), which makes every tenant''s next inserts fail on a duplicate key',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %s', d.defaclnamespace::regnamespace) ELSE '' END,
                      rls_tenancy.grantee_name(acl.grantee)),
               format('ALTER DEFAULT PRIVILEGES FOR ROLE %I%s REVOKE UPDATE ON SEQUENCES FROM %s;',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' IN SCHEMA %s', d.defaclnamespace::regnamespace) ELSE '' END,
                      rls_tenancy.grantee_name(acl.grantee))
          FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
         WHERE d.defaclobjtype = 'S' AND acl.privilege_type = 'UPDATE'
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
        UNION ALL
        -- And for schemas, where they grant CREATE: the application role may create objects in each schema made
        -- later (app_role_schema_create once it exists), a table or function named like one a search_path then
        -- finds among them. USAGE alone opens nothing the objects' own grants do not.
        SELECT 'warning', 'default_privileges_grant_app',
               format('default privileges of %I on schemas', pg_get_userbyid(d.defaclrole)),
               format('schemas %I creates are granted CREATE to %s at creation: the application role may create '
                      'tables and functions in each, beside (or, for a search_path, before) what a migration puts there',
                      pg_get_userbyid(d.defaclrole), rls_tenancy.grantee_name(acl.grantee)),
               format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE CREATE ON SCHEMAS FROM %s;',
                      pg_get_userbyid(d.defaclrole), rls_tenancy.grantee_name(acl.grantee))
          FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
         WHERE d.defaclobjtype = 'n' AND acl.privilege_type = 'CREATE'
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
        UNION ALL
        -- Default privileges that grant EXECUTE on the functions a role creates later to the application role
        -- (PUBLIC's EXECUTE is every function's default, which the library's scripts revoke function by
        -- function). The owner role's, database-wide or in the library's schema, are an error: the library's
        -- functions are created under them, its SECURITY DEFINER ones (the bypass role's audit_chain_heads(),
        -- purge_audit_log()) included, and an installation made while they were set records those grants as its
        -- own. Another role's are a warning: a SECURITY DEFINER function it creates is the app role's to run
        -- before anyone has closed it.
        SELECT CASE WHEN pg_get_userbyid(d.defaclrole) = owner_role
                         AND (d.defaclnamespace = 0 OR d.defaclnamespace = 'rls_tenancy'::regnamespace)
                    THEN 'error' ELSE 'warning' END,
               'default_privileges_grant_app',
               format('default privileges of %I%s on functions', pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %I', d.defaclnamespace::regnamespace::text) ELSE '' END),
               format('functions %I creates%s are executable by %s at creation, SECURITY DEFINER ones included, before '
                      'anyone closes them%s',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' in schema %I', d.defaclnamespace::regnamespace::text) ELSE '' END,
                      rls_tenancy.grantee_name(acl.grantee),
                      CASE WHEN pg_get_userbyid(d.defaclrole) = owner_role
                                AND (d.defaclnamespace = 0 OR d.defaclnamespace = 'rls_tenancy'::regnamespace)
                           THEN ': the library''s own functions among them, which an installation made while they are set '
                                'records as granted by the library (library_function_granted then says nothing)'
                           ELSE '' END),
               format('ALTER DEFAULT PRIVILEGES FOR ROLE %I%s REVOKE EXECUTE ON FUNCTIONS FROM %s;',
                      pg_get_userbyid(d.defaclrole),
                      CASE WHEN d.defaclnamespace <> 0 THEN format(' IN SCHEMA %I', d.defaclnamespace::regnamespace::text) ELSE '' END,
                      rls_tenancy.grantee_name(acl.grantee))
               || CASE WHEN pg_get_userbyid(d.defaclrole) = owner_role
                            AND (d.defaclnamespace = 0 OR d.defaclnamespace = 'rls_tenancy'::regnamespace)
                       THEN format(' -- then, if the library was installed while they were set: REVOKE EXECUTE ON ALL '
                                   'FUNCTIONS IN SCHEMA rls_tenancy FROM %s; and run rls-tenancy migrate --reinstall '
                                   '(as a superuser), which grants again what the library grants',
                                   rls_tenancy.grantee_name(acl.grantee))
                       ELSE '' END
          FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) acl
         WHERE d.defaclobjtype = 'f' AND acl.privilege_type = 'EXECUTE'
           AND acl.grantee <> 0 AND pg_has_role(app_role, acl.grantee, 'MEMBER')
        UNION ALL
        -- Tenant tables by another name: rows keyed to a tenant by a column that is not tenant_id (the
        -- library's policies and these checks look for tenant_id), or by a key into a tenant table.
        SELECT 'error', 'tenant_table_by_another_name', format('%s', t.oid::regclass),
               format('%s belongs to tenants through %s, but has no tenant_id: no policy of the library covers it, and the application role may %s it',
                      t.oid::regclass,
                      (array_agg(CASE WHEN k.confrelid = 'rls_tenancy.tenants'::regclass
                                      THEN format('column %I (a key to rls_tenancy.tenants)', a.attname)
                                      ELSE format('foreign key %I into tenant table %s', k.conname, k.confrelid::regclass) END
                                 ORDER BY k.conname))[1],
                      CASE WHEN bool_or(EXISTS (SELECT 1 FROM app_roles ar WHERE has_table_privilege(ar.oid, t.oid, 'SELECT')))
                           THEN 'read' ELSE 'write' END),
               format('add tenant_id (filled from the key, with a composite foreign key), then SELECT rls_tenancy.enable_tenant_isolation(%L);',
                      t.oid::regclass::text)
          FROM pg_class t
          JOIN pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'f'
          JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.conkey[1]
         WHERE t.relkind IN ('r', 'p') AND NOT t.relrowsecurity
           AND n.nspname NOT IN ('pg_catalog', 'pg_toast', 'rls_tenancy') AND NOT (n.nspname = 'information_schema' AND t.oid < 16384)
           AND NOT EXISTS (SELECT 1 FROM pg_attribute x WHERE x.attrelid = t.oid AND x.attname = 'tenant_id' AND NOT x.attisdropped)
           AND (k.confrelid = 'rls_tenancy.tenants'::regclass
                OR EXISTS (SELECT 1 FROM rls_tenancy.coverage c WHERE c.table_oid = k.confrelid))
           AND EXISTS (SELECT 1 FROM app_roles ar
                        WHERE has_table_privilege(ar.oid, t.oid, 'SELECT') OR has_any_column_privilege(ar.oid, t.oid, 'INSERT')
                              OR has_any_column_privilege(ar.oid, t.oid, 'UPDATE') OR has_table_privilege(ar.oid, t.oid, 'DELETE'))
         GROUP BY t.oid
        UNION ALL
        -- A table without tenant_id that a tenant table inherits from (INHERITS, however many generations down):
        -- a query on a parent scans its children too, under the parent's grants and policies, not theirs. So
        -- SELECT on it reads every tenant's rows of the child, UPDATE and DELETE change them, and TRUNCATE (whose
        -- grant PostgreSQL checks on the parent alone) empties the child. SELECT, UPDATE and DELETE count unless
        -- the parent's own row level security binds the app role with no permissive policy for it.
        SELECT 'error', 'tenant_table_inherited', format('%s', p.oid::regclass),
               format('%s has no tenant_id but tenant table %s inherits from it, and the application role holds %s '
                      'on it: a query on a parent scans its children under the parent''s grants and policies, not '
                      'the children''s, so it %s every tenant''s rows of %s',
                      p.oid::regclass, string_agg(DISTINCT e.tenant::regclass::text, ', '), reach.privileges,
                      CASE WHEN reach.privileges = 'SELECT' THEN 'reads' ELSE 'reads or changes' END,
                      string_agg(DISTINCT e.tenant::regclass::text, ', ')),
               string_agg(DISTINCT format('ALTER TABLE %s NO INHERIT %s;', e.cut_child::regclass, e.cut_parent::regclass), ' ')
               || ' -- or give the parent tenant_id too and isolate it (its tenant policy then filters its children)'
          FROM tenant_ancestors e
          JOIN pg_class p ON p.oid = e.node AND p.relkind IN ('r', 'p')
          CROSS JOIN LATERAL (
              SELECT NOT p.relrowsecurity
                     OR (NOT p.relforcerowsecurity AND pg_has_role(app_role, p.relowner, 'MEMBER'))
                     OR EXISTS (SELECT 1 FROM pg_policy pp
                                 WHERE pp.polrelid = p.oid AND pp.polpermissive
                                   AND EXISTS (SELECT 1 FROM unnest(pp.polroles) AS r(oid)
                                                WHERE r.oid = 0 OR pg_has_role(app_role, r.oid, 'MEMBER'))) AS open) rls
          CROSS JOIN LATERAL (
              SELECT concat_ws(', ',
                         CASE WHEN rls.open AND EXISTS (SELECT 1 FROM app_roles ar
                                                         WHERE has_any_column_privilege(ar.oid, p.oid, 'SELECT')) THEN 'SELECT' END,
                         CASE WHEN rls.open AND EXISTS (SELECT 1 FROM app_roles ar
                                                         WHERE has_any_column_privilege(ar.oid, p.oid, 'UPDATE')) THEN 'UPDATE' END,
                         CASE WHEN rls.open AND EXISTS (SELECT 1 FROM app_roles ar
                                                         WHERE has_table_privilege(ar.oid, p.oid, 'DELETE')) THEN 'DELETE' END,
                         CASE WHEN EXISTS (SELECT 1 FROM app_roles ar
                                            WHERE has_table_privilege(ar.oid, p.oid, 'TRUNCATE')) THEN 'TRUNCATE' END)
                     AS privileges) reach
         WHERE e.cut_parent IS NOT NULL AND reach.privileges <> ''
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         GROUP BY p.oid, reach.privileges
        UNION ALL
        -- The doctor's own inputs and the library's schema, within the application role's reach.
        SELECT 'error', 'doctor_input_writable', format('%s', w.table_oid::regclass),
               format('%s, which the doctor trusts, may be changed by %s: %s', w.table_oid::regclass,
                      rls_tenancy.grantee_name(w.grantee),
                      CASE w.relname
                           WHEN 'roles' THEN 'naming another role as the application role would hide every finding about it'
                           WHEN 'context_signing' THEN 'turning the signed context''s requirement off in the doctor''s eyes hides unsigned policies'
                           WHEN 'library_definitions' THEN 'a digest written over hides a library function or trigger changed since it was installed'
                           ELSE 'an exemption turns any error into info (exemptions are ignored until this is fixed)' END),
               (E'\x1e' || jsonb_build_array('INSERT, UPDATE, DELETE, TRUNCATE', format('%s', w.table_oid::regclass), w.acl,
                                      w.owner_oid, ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'], ARRAY[w.grantee], false, NULL)::text || E'\x1e')
          FROM input_writers w
        UNION ALL
        SELECT 'error', 'library_schema_create', 'rls_tenancy',
               format('%s may create objects in the schema rls_tenancy, beside the functions the policies and the doctor call',
                      rls_tenancy.grantee_name(acl.grantee)),
               (E'\x1e' || jsonb_build_array('CREATE', 'SCHEMA rls_tenancy', n.nspacl, n.nspowner, ARRAY['CREATE'],
                                      ARRAY[acl.grantee], false, NULL)::text || E'\x1e')
          FROM pg_namespace n CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) acl
         WHERE n.nspname = 'rls_tenancy' AND acl.privilege_type = 'CREATE' AND acl.grantee <> n.nspowner
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
        UNION ALL
        SELECT * FROM rls_tenancy.library_owner_findings(owner_role, app_role)
        UNION ALL
        -- Privileges on the library's tables beyond what its install scripts grant the application role, held
        -- by it, PUBLIC or a role it can become, on a table or a column. audit_chain_heads has no row level
        -- security and no tenant_id: every tenant's id, event count and last event. api_tokens is written only
        -- through issue_token() and revoke_token() (INSERT mints a token of any scope), and its token_hash is
        -- never read. An error, but for reading the tables that hold no tenant's data (the roles, the
        -- exemptions, the signing switch, the definitions' digests: a warning). What other checks report is left
        -- to them: writing the doctor's inputs (doctor_input_writable), TRUNCATE, REFERENCES and TRIGGER on a
        -- tenant table (app_role_dangerous_privilege). A warning too where the only privileges are writes no
        -- permissive policy for the app role lets reach a row (UPDATE or DELETE on audit_log, INSERT or UPDATE on
        -- tenants): nothing of another tenant's is touched until such a policy is added. The fix revokes the
        -- privileges (another grantor's on the columns it granted), then grants again what the library grants on
        -- that table (a REVOKE on a table takes its column grants with it).
        SELECT CASE WHEN bool_and((x.privilege_type = 'SELECT'
                                   AND x.relname IN ('roles', 'doctor_exemptions', 'context_signing', 'library_definitions'))
                                  OR x.no_row)
                    THEN 'warning' ELSE 'error' END,
               'library_table_granted', format('%s', x.table_oid::regclass),
               format('%s may %s the library''s table %s, which the library does not grant: %s',
                      string_agg(DISTINCT rls_tenancy.grantee_name(x.grantee), ', '),
                      string_agg(DISTINCT x.privilege_type || CASE WHEN x.columns IS NOT NULL THEN format(' (%s)', x.columns) ELSE '' END, ', '),
                      x.table_oid::regclass,
                      CASE x.relname
                           WHEN 'audit_chain_heads'
                           THEN 'it has no row level security, and its rows are every tenant''s audit chain: the tenant''s '
                                'id, how many events it logged, its last event and the chain''s hash'
                           WHEN 'api_tokens'
                           THEN 'tokens are written only through issue_token() and revoke_token() (a row written '
                                'directly is a token of any scope, for any user), and their hashes are never read'
                           WHEN 'roles' THEN 'it names the roles every check judges'
                           WHEN 'doctor_exemptions' THEN 'it says which findings the doctor reports as info'
                           WHEN 'context_signing' THEN 'it says whether the signed context is required'
                           WHEN 'library_definitions' THEN 'it holds the digests the library''s definitions are checked against'
                           ELSE 'the library''s functions rely on what only they write there, and on who reads it' END)
               || CASE WHEN bool_and(x.no_row) THEN ' (no policy lets the application role reach a row with it yet)' ELSE '' END,
               (E'\x1e' || jsonb_build_array(string_agg(DISTINCT x.privilege_type, ', '), format('%s', x.table_oid::regclass),
                                             min(x.acl::text)::aclitem[], min(x.owner_oid),
                                             array_agg(DISTINCT x.privilege_type), array_agg(DISTINCT x.grantee), false,
                                             NULL,
                                             -- another grantor's privileges, on the columns it granted where it granted
                                             -- no more (its REVOKE at the table's level is refused)
                                             (SELECT jsonb_object_agg(per.grantor::text, per.privileges)
                                                FROM (SELECT g.grantor,
                                                             string_agg(g.privilege_type || CASE WHEN g.whole THEN ''
                                                                                                 ELSE format(' (%s)', g.columns) END,
                                                                        ', ' ORDER BY g.privilege_type) AS privileges
                                                        FROM (SELECT c.grantor, c.privilege_type, bool_or(c.attname IS NULL) AS whole,
                                                                     string_agg(DISTINCT quote_ident(c.attname), ', ') AS columns
                                                                FROM (SELECT NULL::name AS attname, acl.grantor, acl.grantee, acl.privilege_type
                                                                        FROM pg_class t, aclexplode(t.relacl) acl
                                                                       WHERE t.oid = x.table_oid
                                                                      UNION ALL
                                                                      SELECT a.attname, acl.grantor, acl.grantee, acl.privilege_type
                                                                        FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl
                                                                       WHERE a.attrelid = x.table_oid AND a.attacl IS NOT NULL) c
                                                               WHERE c.grantor <> min(x.owner_oid)
                                                                 AND c.grantee = ANY (array_agg(x.grantee))
                                                                 AND c.privilege_type = ANY (array_agg(x.privilege_type))
                                                               GROUP BY c.grantor, c.privilege_type) g
                                                       GROUP BY g.grantor
                                                      HAVING NOT bool_and(g.whole)) per))::text || E'\x1e')
               || coalesce(' ' || (SELECT string_agg(format('GRANT %s ON %s TO %I;', g.privileges, x.table_oid::regclass, app_role),
                                                     ' ')
                                     FROM library_table_grants g
                                    WHERE g.table_oid = x.table_oid AND g.privilege_type = ANY (array_agg(x.privilege_type))), '')
          FROM (SELECT t.oid AS table_oid, t.relname, t.relowner AS owner_oid, e.grantee, e.privilege_type,
                       string_agg(quote_ident(e.attname), ', ' ORDER BY e.attname) AS columns,
                       -- a write no permissive policy for the app role (PUBLIC, or a role it can become) serves
                       bool_and(e.privilege_type IN ('INSERT', 'UPDATE', 'DELETE') AND t.relrowsecurity
                                AND NOT EXISTS (SELECT 1 FROM pg_policy p
                                                 WHERE p.polrelid = t.oid AND p.polpermissive
                                                   AND p.polcmd IN ('*', CASE e.privilege_type WHEN 'INSERT' THEN 'a'
                                                                                               WHEN 'UPDATE' THEN 'w'
                                                                                               ELSE 'd' END)
                                                   AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(oid)
                                                                WHERE pr.oid = 0 OR pg_has_role(app_role, pr.oid, 'MEMBER'))))
                           AS no_row,
                       coalesce(t.relacl, acldefault('r', t.relowner))
                       || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item WHERE a.attrelid = t.oid),
                                   '{}'::aclitem[]) AS acl
                  FROM pg_class t
                  CROSS JOIN LATERAL (SELECT NULL::name AS attname, acl.grantee, acl.privilege_type
                                        FROM aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) acl
                                      UNION ALL
                                      SELECT a.attname, acl.grantee, acl.privilege_type
                                        FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl
                                       WHERE a.attrelid = t.oid AND a.attacl IS NOT NULL) e
                 WHERE t.relnamespace = 'rls_tenancy'::regnamespace AND t.relkind IN ('r', 'p')
                   AND e.grantee <> t.relowner AND (e.grantee = 0 OR pg_has_role(app_role, e.grantee, 'MEMBER'))
                   AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = e.grantee)
                   -- what the library grants: a whole privilege, or one on every column but those named
                   AND NOT EXISTS (SELECT 1 FROM library_table_grants g
                                    WHERE g.table_oid = t.oid AND g.privilege_type = e.privilege_type
                                      AND (e.attname IS NULL AND g.columns_but IS NULL
                                           OR e.attname IS NOT NULL AND NOT (e.attname = ANY (coalesce(g.columns_but, '{}')))))
                   -- reported by their own checks
                   AND NOT (t.relname IN ('roles', 'doctor_exemptions', 'context_signing', 'library_definitions')
                            AND e.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
                   AND NOT (e.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
                            AND EXISTS (SELECT 1 FROM rls_tenancy.coverage c WHERE c.table_oid = t.oid))
                 GROUP BY t.oid, t.relname, t.relowner, t.relacl, e.grantee, e.privilege_type) x
         GROUP BY x.table_oid, x.relname
        UNION ALL
        -- The library's sequences (users_id_seq, api_tokens_id_seq, audit_log_id_seq, ...), which the install grants
        -- no one: every tenant's rows draw from them. UPDATE (setval) moves one back, and every tenant's next insert
        -- into that table fails on a duplicate key: an error. SELECT (its last value) and USAGE (nextval) tell how
        -- many rows every tenant has added: a warning. The context keys' are context_key_readable's.
        SELECT CASE WHEN bool_or(acl.privilege_type = 'UPDATE') THEN 'error' ELSE 'warning' END,
               'library_sequence_granted', format('%s', s.oid::regclass),
               format('%s holds %s on the library''s sequence %s, which the library does not grant: %s',
                      string_agg(DISTINCT rls_tenancy.grantee_name(acl.grantee), ', '),
                      string_agg(DISTINCT acl.privilege_type, ', '), s.oid::regclass,
                      CASE WHEN bool_or(acl.privilege_type = 'UPDATE')
                           THEN 'setval() moves it for every tenant, whose next inserts then fail on a duplicate key'
                           ELSE 'its values tell how many rows every tenant has added' END),
               (E'\x1e' || jsonb_build_array(string_agg(DISTINCT acl.privilege_type, ', '), format('SEQUENCE %s', s.oid::regclass),
                                             coalesce(s.relacl, acldefault('s', s.relowner)), s.relowner,
                                             array_agg(DISTINCT acl.privilege_type), array_agg(DISTINCT acl.grantee), false,
                                             NULL)::text || E'\x1e')
          FROM pg_class s CROSS JOIN LATERAL aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) acl
         WHERE s.relnamespace = 'rls_tenancy'::regnamespace AND s.relkind = 'S' AND s.relname NOT LIKE 'context\_key\_%'
           AND acl.grantee <> s.relowner AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
           AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = acl.grantee)
           -- signed, UPDATE on users' is users_id_sequence_settable's (sql/016_signed_context.sql)
           AND NOT (signing_required AND acl.privilege_type = 'UPDATE'
                    AND s.oid = pg_get_serial_sequence('rls_tenancy.users', 'id')::regclass)
         GROUP BY s.oid, s.relacl, s.relowner
        UNION ALL
        -- The sequence of a tenant table's column (serial or identity, or a default calling nextval()), outside the
        -- library's schema (library_sequence_granted): every tenant draws from it. UPDATE lets setval() move it
        -- back, and every tenant's next inserts then fail on a duplicate key (or repeat ids where none is unique).
        -- The fix revokes UPDATE (per grantor) and gives USAGE (nextval(), which UPDATE also allowed) to the
        -- grantees that hold no USAGE of their own, so that the application still inserts.
        SELECT 'error', 'tenant_sequence_settable', format('%s', s.oid::regclass),
               format('%s may setval() sequence %s, which fills %s: moved back, it makes every tenant''s next inserts '
                      'fail on a duplicate key',
                      (SELECT string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g) FROM unnest(x.grantees) g),
                      s.oid::regclass, (SELECT string_agg(DISTINCT ts.filled, ', ') FROM tenant_sequences ts WHERE ts.seq = s.oid)),
               concat_ws(' ',
                   E'\x1e' || jsonb_build_array('UPDATE', format('SEQUENCE %s', s.oid::regclass),
                                                coalesce(s.relacl, acldefault('s', s.relowner)), s.relowner, ARRAY['UPDATE'],
                                                x.grantees, false, NULL)::text || E'\x1e',
                   (SELECT format('GRANT USAGE ON SEQUENCE %s TO %s;', s.oid::regclass,
                                  string_agg(rls_tenancy.grantee_name(g), ', ' ORDER BY g))
                      FROM unnest(x.grantees) g
                     WHERE NOT EXISTS (SELECT 1 FROM aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) u
                                        WHERE u.grantee = g AND u.privilege_type = 'USAGE')
                    HAVING count(*) > 0))
          FROM pg_class s
          CROSS JOIN LATERAL (
              SELECT array_agg(DISTINCT acl.grantee) AS grantees
                FROM aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) acl
               WHERE acl.privilege_type = 'UPDATE' AND acl.grantee <> s.relowner
                 AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
                 AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = acl.grantee)) x
         WHERE s.relkind = 'S' AND s.relnamespace <> 'rls_tenancy'::regnamespace
           AND s.oid IN (SELECT ts.seq FROM tenant_sequences ts) AND cardinality(x.grantees) > 0
        UNION ALL
        -- rls_tenancy.tenants (keyed by id, not tenant_id, so no tenant table above): the app role sees only
        -- the bound tenant's row (tenant_self), the owner role every row (owner_lookup).
        SELECT 'error', 'tenants_not_isolated', 'rls_tenancy.tenants',
               'rls_tenancy.tenants has row level security off: every tenant sees every tenant''s name and slug',
               'ALTER TABLE rls_tenancy.tenants ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;'
          FROM pg_class t
         WHERE t.oid = 'rls_tenancy.tenants'::regclass AND NOT t.relrowsecurity
        UNION ALL
        SELECT 'error', 'policy_not_tenant_keyed', format('rls_tenancy.tenants policy %I', p.polname),
               format('policy %I on rls_tenancy.tenants is not keyed on the bound tenant (%s): %s', p.polname,
                      rls_tenancy.tenant_condition_on('id', signing_required),
                      coalesce(pg_get_expr(p.polqual, p.polrelid), '(no USING)')),
               -- the library's own (tenant_self, owner_lookup): back to what sql/003_tenants.sql made; dropping
               -- owner_lookup would leave tenant_id_for_slug() finding no tenant (library_policy_fixes)
               coalesce(lf.fix, format('DROP POLICY %I ON rls_tenancy.tenants;', p.polname))
          FROM pg_policy p
          LEFT JOIN library_policy_fixes lf ON lf.policy_oid = p.oid
         WHERE p.polrelid = 'rls_tenancy.tenants'::regclass AND p.polpermissive
           AND NOT EXISTS (SELECT 1 FROM library_policy_renames r WHERE r.policy_oid = p.oid AND r.same)
           AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS r(oid) WHERE r.oid = 0 OR pg_has_role(app_role, r.oid, 'MEMBER'))
           -- the id column spelled as tenant_id, so that the tenant tables' test applies
           AND NOT rls_tenancy.policy_is_tenant_keyed(
                   p.polcmd, regexp_replace(regexp_replace(pg_get_expr(p.polqual, p.polrelid), '^\((\(?)id = ', '(\1tenant_id = '),
                                            '\) AND \(id OPERATOR\(rls_tenancy\.===\) ', ') AND (tenant_id OPERATOR(rls_tenancy.===) '),
                   regexp_replace(regexp_replace(pg_get_expr(p.polwithcheck, p.polrelid), '^\((\(?)id = ', '(\1tenant_id = '),
                                  '\) AND \(id OPERATOR\(rls_tenancy\.===\) ', ') AND (tenant_id OPERATOR(rls_tenancy.===) '),
                   signing_required)
        UNION ALL
        -- The signed context's key: whoever reads a key slot's sequences signs any tenant and user.
        SELECT 'error', 'context_key_readable', format('%s', s.oid::regclass),
               format('%s holds %s on %s, which holds the signed context''s key: with it, SQL run as the application '
                      'role signs any tenant and user as its own (and UPDATE sets a key of its choosing)',
                      rls_tenancy.grantee_name(acl.grantee), string_agg(DISTINCT acl.privilege_type, ', '), s.oid::regclass),
               (E'\x1e' || jsonb_build_array('ALL', format('SEQUENCE %s', s.oid::regclass),
                                      coalesce(s.relacl, acldefault('s', s.relowner)), s.relowner,
                                      ARRAY['SELECT', 'USAGE', 'UPDATE'], ARRAY[acl.grantee], false, NULL)::text || E'\x1e')
          FROM pg_class s CROSS JOIN LATERAL aclexplode(coalesce(s.relacl, acldefault('s', s.relowner))) acl
         WHERE s.relnamespace = 'rls_tenancy'::regnamespace AND s.relkind = 'S' AND s.relname LIKE 'context\_key\_%'
           AND acl.grantee <> s.relowner AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
         GROUP BY s.oid, acl.grantee
        UNION ALL
        -- System catalogs that hold other tenants' values or credentials, closed to all but superusers by default.
        SELECT 'error', 'app_role_reads_catalog', format('%s', t.oid::regclass),
               format('%s may read %s, %s', rls_tenancy.grantee_name(g.grantee), t.oid::regclass,
                      CASE t.relname
                           WHEN 'pg_statistic' THEN 'whose most common values and histograms are every tenant''s column values (pg_stats leaves out tables under row level security; pg_statistic does not)'
                           WHEN 'pg_statistic_ext_data' THEN 'whose extended statistics hold every tenant''s most common value combinations'
                           WHEN 'pg_largeobject' THEN 'the contents of every large object'
                           ELSE CASE WHEN t.relkind = 'v'
                                     THEN 'a view reading pg_authid''s passwords, pg_user_mapping''s options or the '
                                          'statistics'' sampled values (pg_statistic, pg_statistic_ext_data) with its '
                                          'owner''s rights: it shows other roles'' passwords (the bypass role''s '
                                          'included) or every tenant''s column values'
                                     ELSE 'which holds other roles'' passwords (the bypass role''s included)' END END),
               (E'\x1e' || jsonb_build_array('ALL', format('%s', t.oid::regclass),
                                      coalesce(t.relacl, '{}'::aclitem[])
                                      || coalesce((SELECT array_agg(item) FROM pg_attribute a, unnest(a.attacl) item
                                                    WHERE a.attrelid = t.oid), '{}'::aclitem[]),
                                      t.relowner, ARRAY['SELECT'], ARRAY[g.grantee], false, NULL)::text || E'\x1e')
          FROM pg_class t
          CROSS JOIN LATERAL (SELECT acl.grantee FROM aclexplode(t.relacl) acl WHERE acl.privilege_type = 'SELECT'
                              UNION
                              SELECT acl.grantee FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl
                               WHERE a.attrelid = t.oid AND acl.privilege_type = 'SELECT') g
         WHERE (t.oid IN ('pg_catalog.pg_statistic'::regclass, 'pg_catalog.pg_statistic_ext_data'::regclass,
                          'pg_catalog.pg_largeobject'::regclass, 'pg_catalog.pg_authid'::regclass,
                          'pg_catalog.pg_user_mapping'::regclass,
                          -- initdb's view over pg_authid with its passwords (pg_user and pg_roles hide them)
                          'pg_catalog.pg_shadow'::regclass)
                -- a view made later over those columns, with its owner's rights (a superuser's): initdb's own
                -- views record no dependencies, a later one does
                OR (t.relkind = 'v' AND t.oid >= 16384
                    AND NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(t.reloptions) o
                                       WHERE o.option_name = 'security_invoker'), false)
                    AND EXISTS (SELECT 1 FROM pg_rewrite rw
                                  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                                  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                 WHERE rw.ev_class = t.oid AND d.refclassid = 'pg_class'::regclass
                                   AND ((d.refobjid = 'pg_catalog.pg_authid'::regclass AND a.attname = 'rolpassword')
                                        OR (d.refobjid = 'pg_catalog.pg_user_mapping'::regclass AND a.attname = 'umoptions')
                                        OR (d.refobjid = 'pg_catalog.pg_statistic'::regclass AND a.attname LIKE 'stavalues%')
                                        OR (d.refobjid = 'pg_catalog.pg_statistic_ext_data'::regclass
                                            AND a.attname IN ('stxdmcv', 'stxdexpr')))
                                   AND has_column_privilege(t.relowner, d.refobjid, a.attnum, 'SELECT'))
                    -- system catalogs are pinned: a view records no dependency on them, so its text is read
                    OR (t.relkind = 'v' AND t.oid >= 16384
                        AND NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(t.reloptions) o
                                           WHERE o.option_name = 'security_invoker'), false)
                        AND ((pg_get_viewdef(t.oid) ~ '\mpg_statistic\M'
                              AND has_table_privilege(t.relowner, 'pg_catalog.pg_statistic', 'SELECT'))
                             OR (pg_get_viewdef(t.oid) ~ '\mpg_statistic_ext_data\M'
                                 AND has_table_privilege(t.relowner, 'pg_catalog.pg_statistic_ext_data', 'SELECT'))))))
           AND g.grantee <> t.relowner AND (g.grantee = 0 OR pg_has_role(app_role, g.grantee, 'MEMBER'))
        UNION ALL
        -- A tenant table's TOAST table: its chunks are the table's long values, every tenant's, and row level
        -- security does not apply to it. Nobody but superusers reads one unless granted (and USAGE on pg_toast).
        SELECT 'error', 'toast_table_readable', format('%s', toast.oid::regclass),
               format('%s may read %s, the TOAST table of %s: its chunks are every tenant''s long values, read '
                      'around row level security', rls_tenancy.grantee_name(acl.grantee), toast.oid::regclass,
                      c.table_name),
               (E'\x1e' || jsonb_build_array('ALL', format('%s', toast.oid::regclass), toast.relacl, toast.relowner,
                                      ARRAY['SELECT'], ARRAY[acl.grantee], false, NULL)::text || E'\x1e')
          FROM rls_tenancy.coverage c
          JOIN pg_class t ON t.oid = c.table_oid
          JOIN pg_class toast ON toast.oid = t.reltoastrelid
          CROSS JOIN LATERAL aclexplode(toast.relacl) acl
         WHERE acl.privilege_type = 'SELECT' AND acl.grantee <> toast.relowner
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
        UNION ALL
        -- LEAKPROOF lets the planner run a function on rows before the policies have filtered them. Every
        -- function created after initdb (oid from FirstNormalObjectId, 16384, on) counts, whatever schema it
        -- is in (pg_catalog included) and whichever extension it belongs to: where a function lives says
        -- nothing of who wrote it (a superuser may create one in pg_catalog, or ALTER EXTENSION ... ADD it).
        SELECT 'error', 'leakproof_function', format('%s', f.oid::regprocedure),
               format('%s is marked LEAKPROOF and the application role may call it: PostgreSQL may run it on rows '
                      'before the policies filter them, so whatever it lets out (an error, a notice, a write) shows '
                      'other tenants'' rows%s', f.oid::regprocedure,
                      (SELECT format(' (it belongs to extension %I; its scripts may mark it LEAKPROOF again on an '
                                     'update)', e.extname)
                         FROM pg_depend x JOIN pg_extension e ON e.oid = x.refobjid
                        WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e'
                          AND x.refclassid = 'pg_extension'::regclass)),
               format('ALTER FUNCTION %s NOT LEAKPROOF;', f.oid::regprocedure)
          FROM pg_proc f
         WHERE f.proleakproof AND f.oid >= 16384
           AND EXISTS (SELECT 1 FROM app_roles ar WHERE has_function_privilege(ar.oid, f.oid, 'EXECUTE'))
        UNION ALL
        -- A type (a domain above all) of a tenant table's column, owned by the app role or a role it can become:
        -- its owner may ALTER DOMAIN ... ADD CONSTRAINT, whose validation reads every row of every column of it
        -- (a domain over it, an array of it) past row level security, and whose error quotes the value that
        -- fails (CHECK (VALUE::int > 0) tells another tenant's text, row by row); or change what an enum
        -- means (RENAME VALUE) for every tenant. Using a type needs no ownership: USAGE, PUBLIC's by default.
        SELECT 'error', 'app_role_owns_type', format('%s', ty.oid::regtype),
               format('%s %s, %s %s, is owned by %s: its owner may %s',
                      CASE ty.typtype WHEN 'd' THEN 'domain' WHEN 'e' THEN 'enum' WHEN 'c' THEN 'composite type'
                                      WHEN 'r' THEN 'range type' ELSE 'type' END, ty.oid::regtype,
                      CASE WHEN bool_and(used.nested) THEN 'within the type of' ELSE 'the type of' END,
                      string_agg(DISTINCT format('%s.%I', used.table_oid::regclass, used.attname), ', '),
                      CASE WHEN ty.typowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = app_role)
                           THEN 'the application role'
                           ELSE format('%I, whose rights the application role has', pg_get_userbyid(ty.typowner)) END,
                      CASE WHEN ty.typtype = 'd' AND NOT bool_and(used.nested)
                           THEN 'add a constraint to it, whose check reads every tenant''s rows of that column past row '
                                'level security and whose error shows the value it fails on; or DROP it with CASCADE, '
                                'which takes that column from every tenant''s rows'
                           WHEN ty.typtype = 'e'
                           THEN 'rename its values (ALTER TYPE ... RENAME VALUE), which changes what every tenant''s rows '
                                'say, or DROP it with CASCADE, which takes that column from every tenant''s rows'
                           ELSE 'DROP it with CASCADE, which takes that column (or its values of this type) from every '
                                'tenant''s rows' END),
               format('ALTER %s %s OWNER TO %I;', CASE ty.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                      ty.oid::regtype, owner_role)
          FROM column_types used
          JOIN pg_type ty ON ty.oid = used.type_oid
         WHERE pg_has_role(app_role, ty.typowner, 'MEMBER')
           AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = ty.typowner)
           -- an array type follows its element type's owner: the element's finding
           AND ty.typsubscript <> 'array_subscript_handler'::regproc
         GROUP BY ty.oid, ty.typtype, ty.typowner
        UNION ALL
        -- A trigger on a tenant table that sends a notification: LISTEN needs no privilege, so any session of the
        -- app role, bound to any tenant, receives what every tenant's writes send. tcn's
        -- triggered_change_notification() sends the table, the operation and the primary key's values; a
        -- function whose body calls pg_notify() or NOTIFY sends whatever it was written to send (the row as
        -- JSON, often), as far as the catalogs tell: a body is read for the word, not for what it sends.
        SELECT 'error', 'trigger_notifies_rows', format('%s trigger %I', tg.tgrelid::regclass, tg.tgname),
               format('trigger %I on %s runs %s, which %s on every tenant''s writes: any session may LISTEN (no '
                      'privilege is needed), so a session of the application role bound to one tenant receives '
                      'what the others write', tg.tgname, tg.tgrelid::regclass, f.oid::regprocedure,
                      CASE WHEN f.proname = 'triggered_change_notification'
                           THEN 'sends the table, the operation and each row''s primary key (tcn) on a channel'
                           ELSE 'calls pg_notify() or NOTIFY' END),
               format('DROP TRIGGER %I ON %s; -- a notification reaches every listener: send none that carries a '
                      'tenant''s values (or record an exemption for this trigger where it sends none)',
                      tg.tgname, tg.tgrelid::regclass)
          FROM pg_trigger tg
          JOIN pg_proc f ON f.oid = tg.tgfoid
         WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D'
           AND (tg.tgrelid IN (SELECT tt.oid FROM tenant_oids tt) OR tg.tgrelid = 'rls_tenancy.tenants'::regclass)
           AND ((f.proname = 'triggered_change_notification'
                 AND EXISTS (SELECT 1 FROM pg_depend x JOIN pg_extension e ON e.oid = x.refobjid
                              WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e'
                                AND x.refclassid = 'pg_extension'::regclass AND e.extname = 'tcn'))
                -- SQL and PL/pgSQL: a call of pg_notify(), or a NOTIFY statement, in its code (comments and
                -- strings left out: "-- do not notify", 'we notify the assignee', a column named notify send
                -- nothing), or in EXECUTE text (a literal that is such a statement)
                OR (f.prolang IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('sql', 'plpgsql'))
                    AND f.prosrc ~* 'notify'
                    AND EXISTS (SELECT 1 FROM (SELECT rls_tenancy.body_split(f.prosrc) AS parts) b
                                 WHERE b.parts[1] ~* '\mpg_notify"?\s*\('
                                    OR b.parts[1] ~* '(^|;|\mbegin|\mthen|\melse|\mloop|\mexception)\s*notify\s+[[:alpha:]_"]'
                                    OR b.parts[2] ~* '\mpg_notify\s*\('
                                    OR b.parts[2] ~* '(^|\n)\s*notify\s+[[:alpha:]_"]'))
                -- another language's body: the word, its comments left out
                OR (f.prolang NOT IN (SELECT l.oid FROM pg_language l WHERE l.lanname IN ('internal', 'c', 'sql', 'plpgsql'))
                    AND regexp_replace(regexp_replace(f.prosrc, '/\*.*?\*/', '', 'g'), '--[^\n]*', '', 'g')
                        ~* '\m(pg_notify|notify)\M'))
        UNION ALL
        -- An operator, collation, type or table that a tenant guard depends on (policy_reaches: directly, or
        -- through what it depends on), owned by the app role or a role it can become (not a privileged one:
        -- app_role_member_of_privileged): its owner may DROP it with CASCADE, which drops the guard, and the
        -- permissive policies left show every tenant's rows. Functions are app_role_owns_function's, the types
        -- of a tenant table's columns app_role_owns_type's, tenant tables app_role_owns_table's; extension members
        -- drop only with their extension.
        SELECT 'error', 'app_role_owns_policy_dependency', format('%s %s', obj.kind, obj.name),
               format('%s %s is owned by %s, and a restrictive policy that keeps a tenant table to the bound tenant, '
                      'while the permissive policies there do not, depends on it (%s): DROP %s ... CASCADE drops that '
                      'policy, and the application role then reads every tenant''s rows',
                      obj.kind, obj.name,
                      CASE WHEN obj.owner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = app_role) THEN 'the application role'
                           ELSE format('%I, whose rights the application role has', pg_get_userbyid(obj.owner)) END,
                      string_agg(DISTINCT format('policy %I on %s', p.polname, p.polrelid::regclass), ', '), obj.alter),
               format('ALTER %s %s OWNER TO %I;', obj.alter, obj.name, owner_role)
               -- a table's old owner keeps its use of it, as app_role_owns_table's fix does
               || CASE WHEN obj.kind = 'table'
                       THEN format(' GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I;', obj.name, pg_get_userbyid(obj.owner))
                       ELSE '' END
          FROM policy_reaches pr
          JOIN tenant_guards g ON g.policy_oid = pr.policy_oid
          JOIN pg_policy p ON p.oid = pr.policy_oid
          CROSS JOIN LATERAL (
              SELECT op.oprowner, op.oprnamespace, format('%s', op.oid::regoperator), 'operator', 'OPERATOR'
                FROM pg_operator op WHERE pr.classid = 'pg_operator'::regclass AND op.oid = pr.objid
              UNION ALL
              SELECT co.collowner, co.collnamespace, format('%s', co.oid::regcollation), 'collation', 'COLLATION'
                FROM pg_collation co WHERE pr.classid = 'pg_collation'::regclass AND co.oid = pr.objid
              UNION ALL
              -- (an array type follows its element type, which the guard depends on too)
              SELECT ty.typowner, ty.typnamespace, format('%s', ty.oid::regtype),
                     CASE ty.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, CASE ty.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END
                FROM pg_type ty
               WHERE pr.classid = 'pg_type'::regclass AND ty.oid = pr.objid
                 AND ty.typsubscript <> 'array_subscript_handler'::regproc
                 AND NOT EXISTS (SELECT 1 FROM column_types ct WHERE ct.type_oid = ty.oid)
              UNION ALL
              SELECT t.relowner, t.relnamespace, format('%s', t.oid::regclass),
                     CASE t.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'table' END,
                     CASE t.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                    ELSE 'TABLE' END
                FROM pg_class t
               WHERE pr.classid = 'pg_class'::regclass AND t.oid = pr.objid AND t.relkind IN ('r', 'p', 'v', 'm', 'f')
                 AND t.oid NOT IN (SELECT tt.oid FROM tenant_oids tt)) obj (owner, nsp, name, kind, alter)
         WHERE pg_has_role(app_role, obj.owner, 'MEMBER')
           AND NOT EXISTS (SELECT 1 FROM privileged pv WHERE pv.oid = obj.owner)
           AND obj.nsp NOT IN ('pg_catalog'::regnamespace, 'rls_tenancy'::regnamespace)
           AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = pr.classid AND x.objid = pr.objid AND x.deptype = 'e')
         GROUP BY obj.owner, obj.name, obj.kind, obj.alter
        UNION ALL
        -- A function owned by the app role (or a role it can become, not a privileged one: that membership is
        -- app_role_member_of_privileged's). Its owner may DROP it with CASCADE, taking with it every policy,
        -- trigger and view that calls it, and ALTER it (its search_path, SECURITY INVOKER); where it may still
        -- create in the schema, CREATE OR REPLACE its body. An error where something runs it on others' behalf:
        -- a policy (on every row, every tenant's, before the other policies have filtered them; directly, or
        -- through an operator or a type of a tenant table's policy: policy_reaches), a trigger or event trigger
        -- (fired by every tenant's writes, and by the owner role's functions), a tenant table's column default or
        -- generation expression, CHECK constraint or index (every tenant's writes run it; DROP ... CASCADE takes
        -- a generated column, with its values, from every tenant's rows), a view or materialized view, a
        -- SECURITY DEFINER function whose body depends on it, or when it is SECURITY DEFINER itself (ALTER ... SECURITY INVOKER runs it with the rights of whoever calls it). Else a
        -- warning: what calls it by name as text (a migration, a PL/pgSQL body) cannot be read here. The
        -- library's functions are library_object_owner's, extensions' are left out.
        SELECT CASE WHEN used.by IS NOT NULL OR f.prosecdef THEN 'error' ELSE 'warning' END,
               'app_role_owns_function', format('%s', f.oid::regprocedure),
               format('%s is owned by %s%s: its owner may drop it (DROP ... CASCADE drops whatever calls it) and '
                      'change it (ALTER: its search_path, SECURITY INVOKER; CREATE OR REPLACE its body wherever it '
                      'may create in schema %I)%s',
                      f.oid::regprocedure,
                      CASE WHEN o.rolname = app_role THEN 'the application role'
                           ELSE format('%I, whose rights the application role has', o.rolname) END,
                      CASE WHEN f.prosecdef THEN ' and is SECURITY DEFINER' ELSE '' END,
                      n.nspname,
                      CASE WHEN used.by IS NOT NULL
                           THEN format(', and %s runs it: the application''s SQL then runs there, on other tenants'' '
                                       'rows (a policy calls it before the other policies have filtered them; a cheap '
                                       'COST runs it first), and DROP ... CASCADE takes that from every tenant', used.by)
                           WHEN f.prosecdef
                           THEN ': SECURITY INVOKER makes it run with the rights of whoever calls it'
                           ELSE ': whatever calls it runs the application''s SQL with the caller''s rights' END),
               concat_ws(' ',
                   format('ALTER %s %s OWNER TO %I;',
                          CASE f.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                          f.oid::regprocedure, owner_role),
                   -- the old owner's own EXECUTE moves to the new owner: given back where nothing else gives it
                   CASE WHEN NOT EXISTS (SELECT 1 FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) acl
                                          WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee <> f.proowner
                                            AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER')))
                        THEN format('GRANT EXECUTE ON %s %s TO %I;', CASE f.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                                    f.oid::regprocedure, o.rolname) END)
          FROM pg_proc f
          JOIN pg_namespace n ON n.oid = f.pronamespace
          JOIN pg_roles o ON o.oid = f.proowner
          LEFT JOIN (SELECT nc.target,
                            array_agg(format('%s %s (naming it in its body)',
                                             CASE WHEN g.prosecdef THEN 'SECURITY DEFINER function' ELSE 'trigger function' END,
                                             g.oid::regprocedure)) AS callers
                       FROM named_calls nc JOIN pg_proc g ON g.oid = nc.caller JOIN pg_proc t ON t.oid = nc.target
                      WHERE g.proowner <> t.proowner
                      GROUP BY nc.target) nb ON nb.target = f.oid
          CROSS JOIN LATERAL (
              SELECT string_agg(u.what, ', ' ORDER BY u.what) AS by
                FROM (SELECT format('policy %I on %s', p.polname, p.polrelid::regclass) AS what
                        FROM pg_depend d JOIN pg_policy p ON p.oid = d.objid
                       WHERE d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                      UNION
                      -- through what a tenant table's policy depends on: an operator of it, a type it casts to
                      SELECT format('policy %I on %s', p.polname, p.polrelid::regclass)
                        FROM policy_reaches pr JOIN pg_policy p ON p.oid = pr.policy_oid
                       WHERE pr.classid = 'pg_proc'::regclass AND pr.objid = f.oid
                      UNION
                      -- A column default or generation expression, a CHECK constraint or an index of a tenant table:
                      -- every tenant's writes run it (a generated column's function sees each row's values), and
                      -- DROP ... CASCADE takes it from every tenant (a generated column with its values).
                      SELECT format(CASE WHEN a.attgenerated = 's' THEN 'the generated column %s.%I'
                                         ELSE 'the default of %s.%I' END, ad.adrelid::regclass, a.attname)
                        FROM pg_depend d
                        JOIN pg_attrdef ad ON ad.oid = d.objid
                        JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                       WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                         AND (ad.adrelid IN (SELECT tt.oid FROM tenant_oids tt)
                              OR ad.adrelid = 'rls_tenancy.tenants'::regclass)
                      UNION
                      SELECT format('constraint %I on %s', k.conname, k.conrelid::regclass)
                        FROM pg_depend d JOIN pg_constraint k ON k.oid = d.objid
                       WHERE d.classid = 'pg_constraint'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                         AND (k.conrelid IN (SELECT tt.oid FROM tenant_oids tt)
                              OR k.conrelid = 'rls_tenancy.tenants'::regclass)
                      UNION
                      SELECT format('index %s', i.indexrelid::regclass)
                        FROM pg_depend d JOIN pg_index i ON i.indexrelid = d.objid
                       WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                         AND (i.indrelid IN (SELECT tt.oid FROM tenant_oids tt)
                              OR i.indrelid = 'rls_tenancy.tenants'::regclass)
                      UNION
                      SELECT format('trigger %I on %s', tg.tgname, tg.tgrelid::regclass)
                        FROM pg_trigger tg WHERE tg.tgfoid = f.oid AND NOT tg.tgisinternal
                      UNION
                      SELECT format('event trigger %I', et.evtname) FROM pg_event_trigger et WHERE et.evtfoid = f.oid
                      UNION
                      SELECT format('%s %s', CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, v.oid::regclass)
                        FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid JOIN pg_class v ON v.oid = rw.ev_class
                       WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                      UNION
                      SELECT format('SECURITY DEFINER function %s', g.oid::regprocedure)
                        FROM pg_depend d JOIN pg_proc g ON g.oid = d.objid
                       WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
                         AND g.prosecdef AND g.oid <> f.oid
                      UNION
                      -- A body names what it calls as text (PL/pgSQL, EXECUTE): no dependency records it. A
                      -- definer or trigger function of another owner naming this one (named_calls) calls it, as far
                      -- as the catalogs can tell.
                      SELECT unnest(nb.callers)) u) used
         WHERE pg_has_role(app_role, f.proowner, 'MEMBER')
           AND NOT EXISTS (SELECT 1 FROM privileged p WHERE p.oid = f.proowner)
           AND n.nspname NOT IN ('pg_catalog', 'rls_tenancy') AND NOT (n.nspname = 'information_schema' AND f.oid < 16384)
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.objid = f.oid AND x.deptype = 'e')
        UNION ALL
        -- A foreign server the app role may use, with a user mapping for it: dblink('server', ...) or a foreign
        -- table of its own runs queries there as the mapping's user.
        SELECT CASE WHEN srv.loopback THEN 'error' ELSE 'warning' END, 'foreign_server_usable', format('%I', srv.srvname),
               format('the application role may use foreign server %I (USAGE granted to %s), which has a user mapping for it: '
                      'through dblink or a foreign table of its own it runs queries on %s as the mapping''s user, past the policies',
                      srv.srvname, string_agg(DISTINCT rls_tenancy.grantee_name(acl.grantee), ', '),
                      CASE WHEN srv.loopback THEN format('this very database, as far as the doctor can tell (%s)', srv.why)
                           WHEN srv.reads = 'database' THEN 'another database'
                           ELSE format('another source (%s)', srv.reads) END),
               (E'\x1e' || jsonb_build_array('USAGE', format('FOREIGN SERVER %I', srv.srvname),
                                      (SELECT fs.srvacl FROM pg_foreign_server fs WHERE fs.oid = srv.oid), srv.srvowner,
                                      ARRAY['USAGE'], array_agg(acl.grantee), false, NULL)::text || E'\x1e')
          FROM servers srv CROSS JOIN LATERAL aclexplode(srv.srvacl) acl
         WHERE acl.privilege_type = 'USAGE' AND acl.grantee <> srv.srvowner
           AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
           -- file_fdw's validator lets only pg_read_server_files (pg_execute_server_program for a program) name
           -- the file of a foreign table: membership in those is app_role_member_of_privileged's
           AND srv.reads <> 'file'
           AND EXISTS (SELECT 1 FROM pg_user_mappings um
                        WHERE um.srvid = srv.oid AND (um.umuser = 0 OR pg_has_role(app_role, um.umuser, 'MEMBER')))
         GROUP BY srv.oid, srv.srvname, srv.loopback, srv.why, srv.reads, srv.srvowner
        UNION ALL
        -- Schemas that hold tenant tables (the library's too): their owner may drop any table in them and put
        -- its own in its place, and whoever may create there plants functions that privileged sessions call.
        SELECT 'error', 'app_role_owns_schema', format('%I', n.nspname),
               format('schema %I holds tenant tables and is owned by %s, whose rights the application role has: a '
                      'schema''s owner may drop any table in it, and create one of its own under the same name, '
                      'without row level security', n.nspname,
                      CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                           THEN format('pg_database_owner (the owner of database %I, %I)', current_database(),
                                       (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = current_database()))
                           ELSE quote_ident(pg_get_userbyid(n.nspowner)) END),
               CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                    THEN format('ALTER DATABASE %I OWNER TO CURRENT_USER; -- as the DBA, or another role the application role is not',
                                current_database())
                    ELSE format('ALTER SCHEMA %I OWNER TO %s;', n.nspname,
                                CASE WHEN n.nspname = 'public' THEN 'pg_database_owner' ELSE quote_ident(owner_role) END) END
          FROM pg_namespace n
         WHERE EXISTS (SELECT 1 FROM rls_tenancy.coverage c JOIN pg_class t ON t.oid = c.table_oid WHERE t.relnamespace = n.oid)
           AND pg_has_role(app_role, n.nspowner, 'MEMBER')
        UNION ALL
        -- Any schema, tenant tables or not: the application role never needs to create schema objects
        -- (sql/001_roles.sql), and which schemas privileged code calls into cannot be read from the catalogs
        -- whole (policies and views record the functions they call, but a PL/pgSQL body, a migration or a
        -- role's search_path name theirs as text). pg_catalog is searched first by every session.
        SELECT 'error', 'app_role_schema_create', format('%I', n.nspname),
               CASE WHEN sc.owned
                    THEN format('%s owns schema %I, and the application role has its rights: a schema''s owner creates '
                                'objects in it whatever its grants say, and a function it creates or replaces there runs '
                                'with the rights, and sees the rows, of whatever calls it: a policy calling a function of '
                                'that schema (on every tenant''s rows), a SECURITY DEFINER function searching it, a '
                                'migration, or the owner or bypass role with the schema on its search_path. The '
                                'application role never needs to create schema objects', quote_ident(pg_get_userbyid(sc.grantee)),
                                n.nspname)
                    WHEN n.nspname = 'pg_catalog'
                    THEN format('%s may create objects in schema pg_catalog, which every session searches first, '
                                'whatever its search_path: a function or operator it creates there runs with the rights '
                                'of whoever makes the call: a migration, the owner role, every SECURITY DEFINER function, '
                                'a superuser', rls_tenancy.grantee_name(sc.grantee))
                    WHEN EXISTS (SELECT 1 FROM rls_tenancy.coverage c JOIN pg_class t ON t.oid = c.table_oid
                                  WHERE t.relnamespace = n.oid)
                    THEN format('%s may create objects in schema %I, which holds tenant tables: a function or operator it '
                                'creates there that fits a call better than the built-in one (lower(varchar) beside '
                                'lower(text)) runs with the rights of whoever makes the call: a migration, the owner role, '
                                'a superuser', rls_tenancy.grantee_name(sc.grantee), n.nspname)
                    ELSE format('%s may create objects in schema %I: a function it creates or replaces there runs with the '
                                'rights, and sees the rows, of whatever calls it: a policy calling a function of that schema '
                                '(on every tenant''s rows), a SECURITY DEFINER function, a migration, or the owner or bypass '
                                'role with the schema on its search_path. The application role never needs to create '
                                'schema objects', rls_tenancy.grantee_name(sc.grantee), n.nspname) END,
               -- Owned: to the owner role, the old owner keeping USAGE, so that the app still uses what is in it
               -- (it can no longer create or replace anything there; what it owns there it may still drop or alter: app_role_owns_function).
               CASE WHEN sc.owned AND n.nspowner = 'pg_database_owner'::regrole
                    THEN format('ALTER DATABASE %I OWNER TO CURRENT_USER; -- as the DBA, or another role the application role is not',
                                current_database())
                    WHEN sc.owned
                    THEN format('ALTER SCHEMA %I OWNER TO %I; GRANT USAGE ON SCHEMA %I TO %I;', n.nspname, owner_role,
                                n.nspname, pg_get_userbyid(sc.grantee))
                    ELSE (E'\x1e' || jsonb_build_array('CREATE', format('SCHEMA %I', n.nspname),
                                                coalesce(n.nspacl, acldefault('n', n.nspowner)), n.nspowner,
                                                ARRAY['CREATE'], ARRAY[sc.grantee], false, NULL)::text || E'\x1e') END
          FROM schema_creates sc JOIN pg_namespace n ON n.oid = sc.nsp
        UNION ALL
        -- CREATE on the database: the app role creates schemas, under any name not taken yet: one a SECURITY
        -- DEFINER function's search_path names but nobody created ("$user", the owner role's name, among
        -- them), or one privileged sessions search. The REVOKE closes it for every definer at once, so no
        -- definer_search_path_writable is reported for such a schema.
        SELECT 'error', 'app_role_database_create', format('%I', dc.datname),
               format('%s may create schemas in database %I (CREATE on the database): under a name a SECURITY DEFINER '
                      'function''s search_path, a privileged role''s search_path or a policy names but nobody has '
                      'created yet ("$user" is the owner role''s name inside its functions), with functions of its own '
                      'that then run with the caller''s rights%s', rls_tenancy.grantee_name(dc.grantee), dc.datname,
                      (SELECT format(' (SECURITY DEFINER functions searching one: %s)',
                                     string_agg(DISTINCT format('%s', dp.oid::regprocedure), ', '))
                         FROM definer_paths dp WHERE dp.missing AND dp.writable AND dp.n > 1
                                                 AND dp.element NOT IN ('pg_temp', ''))),
               (E'\x1e' || jsonb_build_array('CREATE', format('DATABASE %I', dc.datname), dc.acl, dc.owner_oid, ARRAY['CREATE'],
                                      ARRAY[dc.grantee], false, NULL)::text || E'\x1e')
          FROM database_creates dc
        UNION ALL
        -- SET or ALTER SYSTEM on a superuser's parameter (PostgreSQL 15: GRANT ... ON PARAMETER). An error for
        -- those that turn off a guard or a check, for ALTER SYSTEM on those that run programs or load
        -- libraries as the server, and for ALTER SYSTEM on the library's own settings (from the next reload
        -- every session starts bound to the tenant or user it names); a warning for the rest (no role of the
        -- application needs one).
        SELECT CASE WHEN p.parname IN ('session_replication_role', 'lo_compat_privileges') THEN 'error'
                    WHEN 'ALTER SYSTEM' = ANY (array_agg(acl.privilege_type))
                         AND p.parname IN ('archive_command', 'archive_library', 'restore_command', 'archive_cleanup_command',
                                           'recovery_end_command', 'ssl_passphrase_command', 'shared_preload_libraries',
                                           'session_preload_libraries', 'local_preload_libraries', 'dynamic_library_path',
                                           'app.current_tenant', 'app.current_user_id')
                    THEN 'error' ELSE 'warning' END,
               'app_role_sets_parameter', format('parameter %s', p.parname),
               format('%s may %s parameter %s, which only superusers set otherwise: %s',
                      string_agg(DISTINCT rls_tenancy.grantee_name(acl.grantee), ', '),
                      string_agg(DISTINCT CASE acl.privilege_type WHEN 'SET' THEN 'SET' ELSE 'ALTER SYSTEM SET' END, ' and '),
                      p.parname,
                      CASE p.parname
                           WHEN 'session_replication_role'
                               THEN 'in replica mode no trigger fires, so the library''s guards (the users'' grants, the '
                                    'audit log''s) and foreign key checks are off for its session: a user makes itself an '
                                    'administrator'
                           WHEN 'lo_compat_privileges'
                               THEN 'on, it turns off the privilege checks of large objects: it reads and writes every '
                                    'large object, every tenant''s'
                           WHEN 'app.current_tenant'
                               THEN 'set for the whole server, it binds every session to that tenant: work that binds no '
                                    'tenant of its own reads and writes as that one'
                           WHEN 'app.current_user_id'
                               THEN 'set for the whole server, it names that user for every session: work that binds no '
                                    'user of its own acts as that one'
                           ELSE 'no role of the application needs it' END
                      || CASE WHEN 'ALTER SYSTEM' = ANY (array_agg(acl.privilege_type))
                              THEN ' (ALTER SYSTEM sets it for every session of the server from the next reload on)'
                              ELSE '' END),
               -- a superuser grants them as the bootstrap superuser (10), their owner as far as REVOKE goes
               (E'\x1e' || jsonb_build_array(string_agg(DISTINCT acl.privilege_type, ', '), format('PARAMETER %s', p.parname),
                                      p.paracl, 10::oid, array_agg(acl.privilege_type), array_agg(acl.grantee), false, NULL)::text || E'\x1e')
          FROM pg_parameter_acl p CROSS JOIN LATERAL aclexplode(p.paracl) acl
         WHERE acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER')
         GROUP BY p.oid, p.parname
         -- SET on a parameter every role may set anyway (context 'user': work_mem, statement_timeout) gives
         -- nothing; ALTER SYSTEM on one still sets it for the whole server.
        HAVING p.parname IN ('session_replication_role', 'lo_compat_privileges')
            OR 'ALTER SYSTEM' = ANY (array_agg(acl.privilege_type))
            OR NOT EXISTS (SELECT 1 FROM pg_settings ps WHERE ps.name = p.parname AND ps.context = 'user')
        UNION ALL
        -- A large object belongs to its owner, who reads and writes it whatever its grants say.
        SELECT 'error', 'large_object_owned', format('large object %s', lo.oid),
               format('large object %s is owned by %I, whose rights the application role has: row level security does '
                      'not cover large objects, so every tenant reads and writes it', lo.oid, pg_get_userbyid(lo.lomowner)),
               format('ALTER LARGE OBJECT %s OWNER TO %I;', lo.oid, owner_role)
          FROM pg_largeobject_metadata lo
         WHERE pg_has_role(app_role, lo.lomowner, 'MEMBER')
        UNION ALL
        -- Large objects are outside row level security: one granted to PUBLIC or the app role is every tenant's.
        SELECT 'error', 'large_object_readable', format('large object %s', lo.oid),
               format('%s holds %s on large object %s, which row level security does not cover: every tenant reads it',
                      rls_tenancy.grantee_name(acl.grantee), string_agg(DISTINCT acl.privilege_type, ', '), lo.oid),
               (E'\x1e' || jsonb_build_array('ALL', format('LARGE OBJECT %s', lo.oid), lo.lomacl, lo.lomowner,
                                      ARRAY['SELECT', 'UPDATE'], ARRAY[acl.grantee], false, NULL)::text || E'\x1e')
          FROM pg_largeobject_metadata lo CROSS JOIN LATERAL aclexplode(lo.lomacl) acl
         WHERE acl.grantee <> lo.lomowner AND (acl.grantee = 0 OR pg_has_role(app_role, acl.grantee, 'MEMBER'))
         GROUP BY lo.oid, acl.grantee
        UNION ALL
        SELECT * FROM rls_tenancy.signing_findings()
        UNION ALL
        -- (an extension's functions in the library's schema: extension_in_library_schema, once)
        SELECT d.* FROM rls_tenancy.library_definition_findings() d
         WHERE NOT EXISTS (SELECT 1 FROM pg_depend x JOIN pg_proc f ON f.oid = x.objid
                            WHERE x.classid = 'pg_proc'::regclass AND x.deptype = 'e'
                              AND f.pronamespace = 'rls_tenancy'::regnamespace
                              AND d.object_name = 'function ' || f.oid::regprocedure::text)
        UNION ALL
        -- An extension created in the library's schema: its objects sit among the library's, each of them a
        -- definition the library did not install (and whoever may update the extension replaces them there).
        SELECT 'warning', 'extension_in_library_schema', format('extension %I', e.extname),
               format('extension %I is installed in the library''s schema rls_tenancy: its functions and tables sit '
                      'beside the library''s, where the doctor cannot tell them from the library''s own', e.extname),
               CASE WHEN e.extrelocatable THEN format('ALTER EXTENSION %I SET SCHEMA public;', e.extname)
                    ELSE format('DROP EXTENSION %I; CREATE EXTENSION %I SCHEMA public; -- what depends on it first', e.extname,
                                e.extname) END
          FROM pg_extension e WHERE e.extnamespace = 'rls_tenancy'::regnamespace
        UNION ALL
        SELECT * FROM rls_tenancy.audit_findings()
        UNION ALL
        SELECT * FROM rls_tenancy.distribution_findings(coalesce(distributed, false))
    )
    SELECT CASE WHEN e.check_name IS NULL THEN raw.severity ELSE 'info' END,
           raw.check_name, raw.object_name,
           CASE WHEN e.check_name IS NULL THEN raw.message ELSE raw.message || ' (exempt: ' || e.reason || ')' END,
           raw.fix
      FROM raw
      LEFT JOIN rls_tenancy.doctor_exemptions e
             ON e.object_name = raw.object_name AND e.check_name = raw.check_name
            AND (SELECT trusted FROM exemptions_trusted)
            -- a library policy's exemption holds while it is as the library made it, not for whatever bears its name
            AND NOT EXISTS (SELECT 1 FROM library_table_policies tp
                             WHERE tp.named IS NOT NULL AND tp.same_as IS DISTINCT FROM tp.named
                               AND raw.object_name = format('%s policy %I', tp.table_oid::regclass, tp.polname))
     -- a library policy renamed and changed: the check reporting the change makes the library's again in its fix
     WHERE NOT (raw.check_name = 'library_policy_missing'
                AND EXISTS (SELECT 1 FROM library_policy_renames r JOIN raw other
                                       ON other.object_name = format('%s policy %I', r.table_oid::regclass, r.policy_name)
                                      AND other.check_name IN ('policy_not_tenant_keyed', 'owner_policy_opens_table')
                             WHERE raw.object_name = format('%s policy %I', r.table_oid::regclass, r.library_name)))
     ORDER BY CASE CASE WHEN e.check_name IS NULL THEN raw.severity ELSE 'info' END
                   WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
              raw.object_name, raw.check_name, raw.message
    LOOP
        -- The REVOKE fixes made from ACLs (see above, at grantee_name()): each request between two E'\x1e', one
        -- statement per grantor in its place. A statement of its own, planned apart from the report's.
        IF strpos(fix, E'\x1e') > 0 THEN
            requested := fix;
            fix := (
                SELECT btrim(regexp_replace(string_agg(coalesce(statements.text, ''), '' ORDER BY part.n), ' {2,}', ' ', 'g'))
                  FROM unnest(string_to_array(requested, E'\x1e')) WITH ORDINALITY AS part (segment, n)
                  CROSS JOIN LATERAL (SELECT CASE WHEN part.n % 2 = 0 THEN part.segment::jsonb END AS request) r
                  CROSS JOIN LATERAL (
                      SELECT CASE WHEN r.request IS NULL THEN part.segment
                                  ELSE coalesce(
                                      -- a grantor that is itself a grantee here first, while it still holds what it
                                      -- passed on: its grantor's CASCADE would take that, and its own REVOKE would
                                      -- then fail (permission denied) and undo a fix run as one transaction
                                      (SELECT string_agg(by_grantor.statement, ' '
                                                         ORDER BY by_grantor.grantor::text IN (SELECT jsonb_array_elements_text(r.request -> 5)) DESC,
                                                                  by_grantor.grantor <> (r.request ->> 3)::oid, by_grantor.grantor_name)
                                         FROM (SELECT g.grantor, pg_get_userbyid(g.grantor) AS grantor_name,
                                                      CASE WHEN g.grantor = (r.request ->> 3)::oid THEN ''
                                                           ELSE format('SET ROLE %I; ', pg_get_userbyid(g.grantor)) END
                                                      || format('REVOKE %s ON %s FROM %s%s;',
                                                                -- another grantor's REVOKE names what it granted: a
                                                                -- privilege it never held fails on a table's columns;
                                                                -- one that granted columns only names them (request 8)
                                                                CASE WHEN g.grantor = (r.request ->> 3)::oid THEN r.request ->> 0
                                                                     ELSE coalesce(r.request -> 8 ->> g.grantor::text,
                                                                                   string_agg(DISTINCT g.privilege_type, ', ')) END,
                                                                r.request ->> 1,
                                                                string_agg(DISTINCT rls_tenancy.grantee_name(g.grantee), ', '),
                                                                CASE WHEN bool_or(g.is_grantable) THEN ' CASCADE' ELSE '' END)
                                                      || CASE WHEN g.grantor = (r.request ->> 3)::oid THEN '' ELSE ' RESET ROLE;' END
                                                          AS statement
                                                 FROM (SELECT ARRAY(SELECT jsonb_array_elements_text(
                                                                           CASE WHEN jsonb_typeof(r.request -> 2) = 'array'
                                                                                THEN r.request -> 2 ELSE '[]' END))::aclitem[]
                                                                   AS items) acl
                                                 -- (aclexplode refuses an empty array; NULL gives no row)
                                                CROSS JOIN LATERAL aclexplode(CASE WHEN cardinality(acl.items) > 0 THEN acl.items END) g
                                                WHERE g.privilege_type IN (SELECT jsonb_array_elements_text(r.request -> 4))
                                                  AND g.grantee IN (SELECT jsonb_array_elements_text(r.request -> 5)::oid)
                                                  AND NOT (coalesce((r.request ->> 6)::boolean, false)
                                                           AND g.grantor = (r.request ->> 3)::oid)
                                                GROUP BY g.grantor) by_grantor),
                                      r.request ->> 7) END AS text) statements);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.findings(boolean) IS
    'Every isolation gap found in the catalogs, with the distribution checks as warnings when distributed.';

-- The report as a DBA asks for it, and as every grant of it names it: findings(false), called with the
-- caller's rights (who may use the schema, having named this function in it), so that findings(boolean)
-- reports a schema its owner role may not use rather than fails before its first line.
CREATE OR REPLACE FUNCTION rls_tenancy.findings()
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SECURITY INVOKER
AS $fn$
    SELECT * FROM rls_tenancy.findings(false)
$fn$;
COMMENT ON FUNCTION rls_tenancy.findings() IS
    'Every isolation gap found in the catalogs: severity (error, warning, info), check, object, message, fix.';

REVOKE ALL ON FUNCTION rls_tenancy.findings() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.findings(boolean) FROM PUBLIC;
REVOKE ALL ON rls_tenancy.coverage FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format('GRANT SELECT ON rls_tenancy.coverage, rls_tenancy.doctor_exemptions TO %I',
                              rls_tenancy.role_name('bypass'));
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.findings(), rls_tenancy.findings(boolean), '
                              'rls_tenancy.is_tenant_condition(text), rls_tenancy.role_name(text) TO %I',
                              rls_tenancy.role_name('bypass'));
    -- Which roles the library uses is no secret, and the checks need it.
    EXECUTE pg_catalog.format('GRANT SELECT ON rls_tenancy.roles TO %I', rls_tenancy.role_name('bypass'));
END
$grant$;

RESET ROLE;
