-- rls_tenancy: tables shared by all tenants (reference data: currencies, plans).
--
--   SELECT rls_tenancy.share_table('public.currencies');
--   SELECT rls_tenancy.unshare_table('public.currencies');
--
-- share_table(t), idempotent:
--   * refuses a table with a tenant_id column: that one wants
--     enable_tenant_isolation(), not sharing;
--   * hands t to the owner role;
--   * the app role may only read it (SELECT): a table every tenant could
--     write would be a channel from one tenant to another;
--   * the bypass role may read and write it, for admin maintenance.
-- unshare_table(t) revokes both roles' privileges.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.share_table(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM rls_tenancy.require_plain_table(target, 'share_table');
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = 'tenant_id' AND NOT attisdropped) THEN
        RAISE EXCEPTION 'rls_tenancy: % has a tenant_id column; isolate it instead of sharing it', target
            USING HINT = pg_catalog.format('SELECT rls_tenancy.enable_tenant_isolation(%L);', target::text);
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %I', target, rls_tenancy.role_name('owner'));
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I', target, rls_tenancy.role_name('app'));
    EXECUTE pg_catalog.format('GRANT SELECT ON %s TO %I', target, rls_tenancy.role_name('app'));
    EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', target, rls_tenancy.role_name('bypass'));
    PERFORM rls_tenancy.grant_sequence_usage(target, rls_tenancy.role_name('bypass'));
END
$fn$;

CREATE OR REPLACE FUNCTION rls_tenancy.unshare_table(target regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM rls_tenancy.require_plain_table(target, 'unshare_table');
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I, %I', target, rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$fn$;

COMMENT ON FUNCTION rls_tenancy.share_table(regclass) IS
    'Make a table without tenant_id readable by every tenant (app role: SELECT only).';
COMMENT ON FUNCTION rls_tenancy.unshare_table(regclass) IS
    'Undo share_table: revoke the app and bypass roles'' privileges.';

REVOKE ALL ON FUNCTION rls_tenancy.share_table(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.unshare_table(regclass) FROM PUBLIC;

RESET ROLE;
