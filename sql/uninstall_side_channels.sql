-- rls_tenancy: give PUBLIC back what sql/014_side_channels.sql took (PostgreSQL's defaults).

GRANT EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) FROM pg_signal_backend;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) FROM pg_signal_backend;

GRANT EXECUTE ON FUNCTION pg_catalog.lo_creat(integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.lo_from_bytea(oid, bytea) TO PUBLIC;
