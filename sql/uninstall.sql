-- rls_tenancy: remove the library schema (the downgrade of the install).
--
-- Refuses while any table still references rls_tenancy.tenants or uses a
-- tenant_isolation policy: dropping with CASCADE would silently remove the
-- policies and leave those tables open. Disable isolation and drop the
-- foreign keys first. Roles are cluster-wide and are left in place.

DO $check$
DECLARE
    dependents text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT p.polrelid::regclass::text, ', ') INTO dependents
      FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     WHERE p.polname = 'tenant_isolation' AND c.relnamespace <> 'rls_tenancy'::regnamespace;
    IF dependents IS NOT NULL THEN
        RAISE EXCEPTION 'rls_tenancy: tables still isolated: %', dependents
            USING HINT = 'Call rls_tenancy.disable_tenant_isolation() on each (or downgrade their migrations) first.';
    END IF;
END
$check$;

DROP FUNCTION IF EXISTS rls_tenancy.authenticate_token(bigint, bytea);
DROP FUNCTION IF EXISTS rls_tenancy.revoke_token(bigint);
DROP FUNCTION IF EXISTS rls_tenancy.issue_token(text, bytea, text[], bigint, timestamptz);
DROP TABLE IF EXISTS rls_tenancy.api_tokens;
DROP TABLE IF EXISTS rls_tenancy.users;
DROP FUNCTION IF EXISTS rls_tenancy.valid_scopes(text[]);
DROP FUNCTION IF EXISTS rls_tenancy.unshare_table(regclass);
DROP FUNCTION IF EXISTS rls_tenancy.share_table(regclass);
DROP FUNCTION IF EXISTS rls_tenancy.disable_tenant_isolation(regclass);
DROP EVENT TRIGGER IF EXISTS rls_tenancy_isolate_new_partitions;
DROP FUNCTION IF EXISTS rls_tenancy.isolate_new_partitions();
DROP FUNCTION IF EXISTS rls_tenancy.enable_tenant_isolation(regclass);
DROP FUNCTION IF EXISTS rls_tenancy.tenant_condition();
DROP FUNCTION IF EXISTS rls_tenancy.grant_sequence_usage(regclass, name[]);
DROP FUNCTION IF EXISTS rls_tenancy.require_plain_table(regclass, text);
DROP FUNCTION IF EXISTS rls_tenancy.require_table(regclass, text);
DROP FUNCTION IF EXISTS rls_tenancy.tenant_id_for_slug(text);
DROP TABLE IF EXISTS rls_tenancy.tenants;
DROP FUNCTION IF EXISTS rls_tenancy.current_tenant_id();
DROP FUNCTION IF EXISTS rls_tenancy.tenant_condition_on(name, boolean);
DROP FUNCTION IF EXISTS rls_tenancy.role_name(text);
DROP TABLE IF EXISTS rls_tenancy.roles;
DROP SCHEMA IF EXISTS rls_tenancy;
