-- rls_tenancy: remove what sql/016_signed_context.sql installed. Signing stops being required first,
-- which puts back the unsigned policies and functions; tenant_condition() goes with what it calls, and
-- the downgrade then runs sql/004_isolation.sql again for its unsigned definition, and
-- sql/012_doctor.sql for the doctor's stub of signing_findings(). tenant_condition_on() stays: it is
-- sql/002_context.sql's.
DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

DO $unsign$
BEGIN
    IF pg_catalog.to_regprocedure('rls_tenancy.require_signed_context(boolean)') IS NOT NULL THEN
        PERFORM rls_tenancy.require_signed_context(false);
    END IF;
END
$unsign$;

DROP TRIGGER IF EXISTS users_write_granted ON rls_tenancy.users;
DROP FUNCTION IF EXISTS rls_tenancy.user_write_granted();
DROP FUNCTION IF EXISTS rls_tenancy.user_id_drawn(bigint);
DROP FUNCTION IF EXISTS rls_tenancy.grant_field(text);
DROP FUNCTION IF EXISTS rls_tenancy.password_hash_of(bigint, text);
DROP FUNCTION IF EXISTS rls_tenancy.granted(text);
DROP FUNCTION IF EXISTS rls_tenancy.grant_valid(text, text);
DROP FUNCTION IF EXISTS rls_tenancy.signing_findings();
DROP FUNCTION IF EXISTS rls_tenancy.authenticate_token_user(bigint, bytea);
DROP FUNCTION IF EXISTS rls_tenancy.authenticate_token_binding(bigint, bytea);
DROP FUNCTION IF EXISTS rls_tenancy.require_signed_context(boolean);
DROP FUNCTION IF EXISTS rls_tenancy.tenant_condition();
DROP FUNCTION IF EXISTS rls_tenancy.retire_context_key(integer);
DROP FUNCTION IF EXISTS rls_tenancy.install_context_key(integer, bytea);
DROP FUNCTION IF EXISTS rls_tenancy.int8recv_bytes(bytea);
DROP FUNCTION IF EXISTS rls_tenancy.context_signing_required();
DROP FUNCTION IF EXISTS rls_tenancy.context_key_fingerprint(integer);
DROP FUNCTION IF EXISTS rls_tenancy.sign_context();
DROP FUNCTION IF EXISTS rls_tenancy.verified_user();
DROP FUNCTION IF EXISTS rls_tenancy.verified_tenant();
DROP OPERATOR IF EXISTS rls_tenancy.=== (bigint, bigint);
DROP FUNCTION IF EXISTS rls_tenancy.context_mac(bytea, text);
DROP FUNCTION IF EXISTS rls_tenancy.context_key(integer);
DROP TABLE IF EXISTS rls_tenancy.context_signing;
DROP SEQUENCE IF EXISTS rls_tenancy.context_key_1a, rls_tenancy.context_key_1b,
                        rls_tenancy.context_key_2a, rls_tenancy.context_key_2b;

RESET ROLE;
