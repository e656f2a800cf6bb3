-- rls_tenancy: turning tenant isolation on and off for an application table.
--
--   SELECT rls_tenancy.enable_tenant_isolation('public.projects');
--   SELECT rls_tenancy.disable_tenant_isolation('public.projects');
--
-- enable_tenant_isolation(t), idempotent:
--   * checks t has a NOT NULL bigint column tenant_id and no other permissive
--     policy (permissive policies are OR-ed, so a second one would widen access);
--   * hands t to the owner role, so the application role never owns it;
--   * ENABLE and FORCE row level security (FORCE: the owner obeys it too);
--   * one policy, tenant_isolation, with USING and WITH CHECK on
--     rls_tenancy.tenant_condition(), the tenant bound to the transaction:
--     rows of other tenants can be neither seen nor written, and rows cannot
--     be moved to another tenant;
--   * tenant_id defaults to the bound tenant, so INSERTs may omit it;
--   * SELECT, INSERT, UPDATE, DELETE to the app and bypass roles, and
--     explicitly no TRUNCATE, REFERENCES or TRIGGER for the app role;
--   * an index on (tenant_id) when no index leads with tenant_id.
--
-- disable_tenant_isolation(t) drops the policy, disables row level security
-- and revokes the app role's privileges on t: a table without isolation is
-- closed to the application rather than open to every tenant. The index and
-- the owner are left as they are.
--
-- Both run with the caller's rights (SECURITY INVOKER) and so need a caller
-- that may act as the owner role: a superuser or the migration role.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

-- The condition of every tenant policy: what current_tenant_id() returns,
-- spelled out (rls_tenancy.tenant_condition_on(), sql/002_context.sql). A
-- policy calling that SQL function makes the planner inline it again for
-- each table of each query it plans (about 30 µs each, measured in
-- benchmarks/); this expression it uses as it is. The id still reaches the
-- index as a value computed once per scan. sql/016_signed_context.sql
-- replaces this definition with one that adds the signed check when it is
-- required.
CREATE OR REPLACE FUNCTION rls_tenancy.tenant_condition()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN rls_tenancy.tenant_condition_on('tenant_id', false);
COMMENT ON FUNCTION rls_tenancy.tenant_condition() IS
    'The condition of the tenant_isolation policies: tenant_id equals the tenant bound to the transaction.';

-- enable_tenant_isolation() works on ordinary and partitioned tables; share_table() on ordinary ones only.
CREATE OR REPLACE FUNCTION rls_tenancy.require_table(target regclass, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: % needs a table, got NULL', caller;
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = target) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'rls_tenancy: % is not a table', target;
    END IF;
END
$fn$;
CREATE OR REPLACE FUNCTION rls_tenancy.require_plain_table(target regclass, caller text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM rls_tenancy.require_table(target, caller);
    IF (SELECT relkind FROM pg_class WHERE oid = target) = 'p' THEN
        RAISE EXCEPTION 'rls_tenancy: % is a partitioned table, which % does not support', target, caller
            USING HINT = 'Reference data every tenant reads is rarely worth partitioning; share a plain table.';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.require_plain_table(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.require_table(regclass, text) FROM PUBLIC;

-- serial columns need USAGE on their sequence to insert (identity columns do not).
CREATE OR REPLACE FUNCTION rls_tenancy.grant_sequence_usage(target regclass, VARIADIC grantees name[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    sequence text;
    grantee  name;
BEGIN
    FOR sequence IN
        SELECT d.objid::regclass::text
          FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         WHERE d.refobjid = target AND d.deptype = 'a'
    LOOP
        FOREACH grantee IN ARRAY grantees LOOP
            EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO %I', sequence, grantee);
        END LOOP;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.grant_sequence_usage(regclass, name[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION rls_tenancy.enable_tenant_isolation(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owner_role  name := rls_tenancy.role_name('owner');
    app_role    name := rls_tenancy.role_name('app');
    bypass_role name := rls_tenancy.role_name('bypass');
    column_info record;
    others      text;
    insertable  text;
    generated_id boolean;
    partition   regclass;
    index_name  text;
BEGIN
    PERFORM rls_tenancy.require_table(target, 'enable_tenant_isolation');

    SELECT a.attnum, a.attnotnull, a.atttypid INTO column_info
      FROM pg_attribute a
     WHERE a.attrelid = target AND a.attname = 'tenant_id' AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rls_tenancy: table % has no tenant_id column', target
            USING HINT = 'Add tenant_id bigint NOT NULL REFERENCES rls_tenancy.tenants (id).';
    END IF;
    IF column_info.atttypid <> 'bigint'::regtype THEN
        RAISE EXCEPTION 'rls_tenancy: %.tenant_id is %, not bigint', target, column_info.atttypid::regtype
            USING HINT = 'A cast on the column would defeat the index; make the column bigint.';
    END IF;
    IF NOT column_info.attnotnull THEN
        RAISE EXCEPTION 'rls_tenancy: %.tenant_id is nullable', target
            USING HINT = 'Backfill it, then ALTER TABLE ... ALTER COLUMN tenant_id SET NOT NULL.';
    END IF;

    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(polname), ', ') INTO others
      FROM pg_policy
     WHERE polrelid = target AND polpermissive AND polname <> 'tenant_isolation';
    IF others IS NOT NULL THEN
        RAISE EXCEPTION 'rls_tenancy: % has other permissive policies (%), which would widen access', target, others
            USING HINT = 'Drop them, or recreate them AS RESTRICTIVE.';
    END IF;

    EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %I', target, owner_role);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE pg_catalog.format('DROP POLICY IF EXISTS tenant_isolation ON %s', target);
    EXECUTE pg_catalog.format(
        'CREATE POLICY tenant_isolation ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
        target, rls_tenancy.tenant_condition(), rls_tenancy.tenant_condition());
    EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN tenant_id SET DEFAULT rls_tenancy.current_tenant_id()', target);

    EXECUTE pg_catalog.format('GRANT SELECT, UPDATE, DELETE ON %s TO %I, %I', target, app_role, bypass_role);
    -- A GENERATED ALWAYS identity column is the database's to fill: OVERRIDING SYSTEM VALUE lets any role
    -- with INSERT on it choose a value, so ids would stop being unique in fact and a chosen id would probe
    -- for another tenant's. Such a table gets INSERT on its other columns only (run this again after
    -- adding a column); any other table, INSERT on the table.
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attidentity <> 'a'),
           pg_catalog.bool_or(a.attidentity = 'a')
      INTO insertable, generated_id
      FROM pg_attribute a
     WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped;
    IF generated_id THEN
        EXECUTE pg_catalog.format('REVOKE INSERT ON %s FROM %I, %I', target, app_role, bypass_role);
        EXECUTE pg_catalog.format('GRANT INSERT (%s) ON %s TO %I, %I', insertable, target, app_role, bypass_role);
    ELSE
        EXECUTE pg_catalog.format('GRANT INSERT ON %s TO %I, %I', target, app_role, bypass_role);
    END IF;
    EXECUTE pg_catalog.format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON %s FROM %I', target, app_role);
    PERFORM rls_tenancy.grant_sequence_usage(target, app_role, bypass_role);

    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = target AND i.indkey[0] = column_info.attnum) THEN
        index_name := pg_catalog.left((SELECT relname FROM pg_class WHERE oid = target), 48) || '_tenant_id_idx';
        EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (tenant_id)', index_name, target);
    END IF;

    -- A partitioned table's policy guards access through it only: each partition is a table of its own,
    -- which a query may name directly. Every partition gets the same isolation, at every level; those
    -- created or attached later get it from the event trigger below.
    FOR partition IN SELECT i.inhrelid::regclass FROM pg_inherits i WHERE i.inhparent = target ORDER BY 1 LOOP
        PERFORM rls_tenancy.enable_tenant_isolation(partition);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION rls_tenancy.disable_tenant_isolation(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    partition regclass;
BEGIN
    PERFORM rls_tenancy.require_table(target, 'disable_tenant_isolation');
    EXECUTE pg_catalog.format('REVOKE SELECT, INSERT, UPDATE, DELETE ON %s FROM %I', target, rls_tenancy.role_name('app'));
    EXECUTE pg_catalog.format('DROP POLICY IF EXISTS tenant_isolation ON %s', target);
    EXECUTE pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', target);
    EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', target);
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = 'tenant_id' AND NOT attisdropped) THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN tenant_id DROP DEFAULT', target);
    END IF;
    FOR partition IN SELECT i.inhrelid::regclass FROM pg_inherits i WHERE i.inhparent = target ORDER BY 1 LOOP
        PERFORM rls_tenancy.disable_tenant_isolation(partition);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION rls_tenancy.enable_tenant_isolation(regclass) IS
    'Protect a table with a tenant_id column: RLS enabled and forced, one USING + WITH CHECK policy, grants, index.';
COMMENT ON FUNCTION rls_tenancy.disable_tenant_isolation(regclass) IS
    'Undo enable_tenant_isolation; the app role loses access to the table.';

REVOKE ALL ON FUNCTION rls_tenancy.enable_tenant_isolation(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.tenant_condition() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.disable_tenant_isolation(regclass) FROM PUBLIC;

-- A partition created (CREATE TABLE ... PARTITION OF) or attached (ALTER TABLE ... ATTACH PARTITION) under
-- an isolated table is isolated in the same statement: nobody has to remember to. Runs as whoever ran
-- the DDL (a migration's superuser, or a member of the owner role, as enable_tenant_isolation needs).
CREATE OR REPLACE FUNCTION rls_tenancy.isolate_new_partitions()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    root   regclass;
    member regclass;
BEGIN
    IF pg_catalog.current_setting('rls_tenancy.isolating_partitions', true) = 'on' THEN
        RETURN;  -- the DDL enable_tenant_isolation() runs below fires this trigger again
    END IF;
    PERFORM pg_catalog.set_config('rls_tenancy.isolating_partitions', 'on', true);
    FOR root IN
        SELECT DISTINCT pg_catalog.pg_partition_root(c.objid)::regclass
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.object_type IN ('table', 'table column')
           AND pg_catalog.pg_partition_root(c.objid) IS NOT NULL
    LOOP
        -- Only under a root the library isolated: its policy, forced.
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_policy p JOIN pg_class r ON r.oid = p.polrelid
                                   WHERE p.polrelid = root AND p.polname = 'tenant_isolation' AND r.relforcerowsecurity);
        FOR member IN
            SELECT t.relid FROM pg_catalog.pg_partition_tree(root) t JOIN pg_class m ON m.oid = t.relid
             WHERE m.relkind IN ('r', 'p')
               AND (NOT m.relforcerowsecurity
                    OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.relid AND p.polname = 'tenant_isolation'))
             ORDER BY t.level
        LOOP
            PERFORM rls_tenancy.enable_tenant_isolation(member);
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.set_config('rls_tenancy.isolating_partitions', '', true);  -- the next DDL is watched again
END
$fn$;
REVOKE ALL ON FUNCTION rls_tenancy.isolate_new_partitions() FROM PUBLIC;

RESET ROLE;

-- Event triggers are a superuser's to create (managed services: their superuser role).

DROP EVENT TRIGGER IF EXISTS rls_tenancy_isolate_new_partitions;
CREATE EVENT TRIGGER rls_tenancy_isolate_new_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION rls_tenancy.isolate_new_partitions();
