-- rls_tenancy: remove the coverage report, the doctor's findings and the
-- tenant foreign key helper (the downgrade of 011_tenant_keys.sql and
-- 012_doctor.sql). Foreign keys the helper added stay: they are the tables'.

DROP FUNCTION IF EXISTS rls_tenancy.findings();
DROP FUNCTION IF EXISTS rls_tenancy.findings(boolean);
DROP FUNCTION IF EXISTS rls_tenancy.distribution_findings(boolean);
DROP FUNCTION IF EXISTS rls_tenancy.grantee_name(oid);
DROP FUNCTION IF EXISTS rls_tenancy.body_split(text);
DROP FUNCTION IF EXISTS rls_tenancy.signing_findings();
DROP FUNCTION IF EXISTS rls_tenancy.library_definition_findings();
DROP FUNCTION IF EXISTS rls_tenancy.audit_findings();
DROP FUNCTION IF EXISTS rls_tenancy.library_owner_findings(name, name);
DROP VIEW IF EXISTS rls_tenancy.coverage;
DROP FUNCTION IF EXISTS rls_tenancy.policy_is_tenant_keyed("char", text, text, boolean);
DROP FUNCTION IF EXISTS rls_tenancy.is_tenant_conjunction(text, boolean);
DROP FUNCTION IF EXISTS rls_tenancy.is_tenant_condition(text);
DROP FUNCTION IF EXISTS rls_tenancy.tenant_expression_normalized(text);
DROP TABLE IF EXISTS rls_tenancy.doctor_exemptions;
DO $revoke$
BEGIN
    EXECUTE pg_catalog.format('REVOKE SELECT ON rls_tenancy.roles FROM %I', rls_tenancy.role_name('bypass'));
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION rls_tenancy.role_name(text) FROM %I', rls_tenancy.role_name('bypass'));
END
$revoke$;
DROP FUNCTION IF EXISTS rls_tenancy.add_tenant_foreign_key(regclass, name, regclass, name, name, text);
