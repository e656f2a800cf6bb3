-- rls_tenancy: the downgrade of 013_audit_seal.sql, run after 009_audit.sql
-- has put back its hash function and its single append-only trigger.

DROP TRIGGER IF EXISTS audit_log_no_delete ON rls_tenancy.audit_log;
DROP FUNCTION IF EXISTS rls_tenancy.audit_field(bytea);
