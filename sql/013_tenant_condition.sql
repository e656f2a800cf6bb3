-- rls_tenancy: tenant policies written before rls_tenancy_0005 called
-- rls_tenancy.current_tenant_id(); enable_tenant_isolation() now writes
-- rls_tenancy.tenant_condition(), the same test spelled out, which the
-- planner need not inline for each table of each query. This rewrites every
-- tenant_isolation policy still in the old spelling (on tables the owner role
-- owns; the doctor accepts both) to the new one. Idempotent.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

DO $refresh$
DECLARE
    target regclass;
BEGIN
    FOR target IN
        SELECT p.polrelid::regclass
          FROM pg_catalog.pg_policy p
          JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
         WHERE p.polname = 'tenant_isolation'
           AND c.relowner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = rls_tenancy.role_name('owner'))
           AND rls_tenancy.is_tenant_condition(pg_catalog.pg_get_expr(p.polqual, p.polrelid))
           AND rls_tenancy.is_tenant_condition(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
         ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('ALTER POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s)',
                                  target, rls_tenancy.tenant_condition(), rls_tenancy.tenant_condition());
    END LOOP;
END
$refresh$;

RESET ROLE;
