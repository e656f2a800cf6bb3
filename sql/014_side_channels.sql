-- rls_tenancy: what PUBLIC may do by default that reaches from one tenant into another.
--
-- Every tenant's requests run as the one application role, so whatever that
-- role may do to its own sessions and objects, one tenant may do to
-- another's. PostgreSQL grants some of it to PUBLIC; in this database this
-- script takes back what an application has no need for:
--   * pg_cancel_backend() and pg_terminate_backend(): a role may cancel or end
--     any session of its own role, that is another tenant's request in flight.
--     Members of pg_signal_backend keep them (granted here); superusers are
--     never checked. The protocol's own cancel request (what a driver sends to
--     cancel its own query) needs no privilege and is not affected.
--   * Creating large objects (lo_creat, lo_create, lo_from_bytea; lo_import is
--     revoked from PUBLIC by PostgreSQL itself): a large object belongs to the
--     role that creates it and row level security does not apply to it, so
--     every tenant could read, change or unlink what another stored.
-- Other roles of this database lose these too unless granted them:
--   GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO reporting;
--
-- What stays open, and why PostgreSQL leaves no way to close it (NOTIFY,
-- advisory locks, planner statistics, sequence values, role defaults), is in
-- docs/threat-model.md; rls_tenancy.findings() reports these privileges if
-- they come back (app_role_cross_tenant_function).
--
-- Idempotent. Needs a superuser. sql/uninstall_side_channels.sql restores
-- PostgreSQL's defaults.

REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) TO pg_signal_backend;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) TO pg_signal_backend;

REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC;
