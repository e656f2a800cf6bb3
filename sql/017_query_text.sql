-- rls_tenancy: another session's query text, taken back from PUBLIC.
--
-- PostgreSQL shows a role the current (or last) query of every session of
-- the same role: pg_stat_activity.query, pg_stat_get_activity() and
-- pg_stat_get_backend_activity(). Every tenant's requests run as the one
-- application role, so SQL run for one tenant would read the statements of
-- the others' requests in flight, with whatever literals they carry (bound
-- parameters show as $1, and the library binds its own). This revokes both
-- functions from PUBLIC in this database and grants them to
-- pg_read_all_stats: monitoring roles (pg_monitor) keep pg_stat_activity;
-- other roles of this database lose it (the views pg_stat_activity,
-- pg_stat_ssl, pg_stat_gssapi and pg_stat_replication call the first) unless
-- granted it:
--   GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO reporting;
-- rls_tenancy.findings() reports the application role if it gets them back
-- (app_role_cross_tenant_function) or is a member of pg_read_all_stats
-- (app_role_member_of_privileged).
--
-- Idempotent. Needs a superuser. sql/uninstall_query_text.sql restores
-- PostgreSQL's defaults.

REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO pg_read_all_stats;
