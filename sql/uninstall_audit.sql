-- rls_tenancy: remove the audit log and the bound-user function (the
-- downgrade of 008_current_user.sql and 009_audit.sql). Every audit event is
-- lost: export what must be kept first.

DROP FUNCTION IF EXISTS rls_tenancy.purge_audit_log(interval);
DROP FUNCTION IF EXISTS rls_tenancy.audit_hash_at(bigint, bigint);
DROP FUNCTION IF EXISTS rls_tenancy.audit_chain_heads();
DROP FUNCTION IF EXISTS rls_tenancy.verify_audit_chains();
DROP FUNCTION IF EXISTS rls_tenancy.verify_audit_chain(bigint);
DROP FUNCTION IF EXISTS rls_tenancy.log_event(text, text, jsonb, inet, text);
DROP TABLE IF EXISTS rls_tenancy.audit_log;
DROP TABLE IF EXISTS rls_tenancy.audit_chain_heads;
DROP FUNCTION IF EXISTS rls_tenancy.seal_audit_event();
DROP FUNCTION IF EXISTS rls_tenancy.audit_log_append_only();
DROP FUNCTION IF EXISTS rls_tenancy.audit_log_stamp();
DROP FUNCTION IF EXISTS rls_tenancy.audit_event_hash(bigint, bigint, bigint, bigint, text, text, text, inet, text, jsonb, timestamptz, bytea);
DROP FUNCTION IF EXISTS rls_tenancy.audit_field(bytea);
DROP FUNCTION IF EXISTS rls_tenancy.current_user_id();
ALTER TABLE rls_tenancy.tenants DROP CONSTRAINT IF EXISTS tenants_id_positive;
