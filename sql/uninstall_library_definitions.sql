-- rls_tenancy: remove what sql/018_library_definitions.sql installed. The doctor's stub of
-- library_definition_findings() comes back with sql/012_doctor.sql, which the downgrade runs again.
DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

DROP FUNCTION IF EXISTS rls_tenancy.library_definition_findings();
DROP FUNCTION IF EXISTS rls_tenancy.library_definition_digests();
DROP TABLE IF EXISTS rls_tenancy.library_definitions;

RESET ROLE;
