-- rls_tenancy: the tenant a transaction is bound to.
--
-- The application sets app.current_tenant transaction-locally at the start of
-- every transaction (set_config('app.current_tenant', $1, true)). Unset or
-- empty means "no tenant": every policy then compares with NULL, so no row is
-- visible and no insert passes WITH CHECK. Fail closed.
--
-- STABLE and written as an SQL-standard body so the planner inlines it and
-- can use it in an index condition (a VOLATILE or SECURITY DEFINER function
-- here would be evaluated per row). The body is bound at creation time, so a
-- caller's search_path cannot redirect current_setting().

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.current_tenant_id()
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(pg_catalog.current_setting('app.current_tenant', true), '')::bigint;

COMMENT ON FUNCTION rls_tenancy.current_tenant_id() IS
    'Tenant bound to the current transaction (app.current_tenant), NULL when none.';

-- The isolation condition on a tenant column, written once: every tenant policy (the library's own and
-- enable_tenant_isolation()'s) is this text. The condition on the setting stays first and bare, so
-- custom plans fold the bound tenant into their estimates; signed (sql/016_signed_context.sql), each
-- row's tenant must also equal the tenant an InitPlan proved, once per statement. Equal, not merely
-- "proved, so not NULL": the setting is read again for every row and at every rescan, and SQL can
-- change it partway through its own statement, after the proof was checked (===: sql/016).
CREATE OR REPLACE FUNCTION rls_tenancy.tenant_condition_on(tenant_column name, signed boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.format('%I = (NULLIF(pg_catalog.current_setting(''app.current_tenant'', true), ''''))::bigint',
                         tenant_column)
       OPERATOR(pg_catalog.||)
       CASE WHEN signed
            THEN pg_catalog.format(' AND %I OPERATOR(rls_tenancy.===) (SELECT rls_tenancy.verified_tenant())',
                                   tenant_column)
            ELSE '' END;
COMMENT ON FUNCTION rls_tenancy.tenant_condition_on(name, boolean) IS
    'The isolation condition on a tenant column, as policies are written: unsigned, or with the signed check.';

REVOKE ALL ON FUNCTION rls_tenancy.current_tenant_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_tenancy.tenant_condition_on(name, boolean) FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.current_tenant_id() TO %I, %I',
                   rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$grant$;

RESET ROLE;
