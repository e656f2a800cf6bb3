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
--   * What the other sessions of the role are doing (timings, wait events,
--     client addresses, progress) and every session's locks (pg_locks): the
--     block at the end, granted to pg_read_all_stats.
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

-- What every other session of the role is doing, and every session's locks. With pg_stat_get_activity()
-- closed (sql/017_query_text.sql), PostgreSQL still shows a role, for every session of the same role, that
-- is every other tenant's request in flight: when its session, transaction and statement started, what it
-- waits on, its client address and port (the pg_stat_get_backend_*() functions, and pg_stat_get_backend_pid(),
-- _userid(), _dbid() and _idset() for every session of every role), and the progress of its COPY, VACUUM,
-- ANALYZE or index build (pg_stat_get_progress_info(), behind the pg_stat_progress_* views). And pg_locks
-- (pg_lock_status()) shows every role the locks of every session of the database: the tables, indexes and
-- sequences another tenant's open transaction writes, and the keys of its advisory locks;
-- pg_blocking_pids(), pg_safe_snapshot_blocking_pids() and pg_isolation_test_session_is_blocked() which
-- session waits on which. This revokes them from PUBLIC in this database and grants them to
-- pg_read_all_stats: monitoring roles (pg_monitor) keep pg_locks, the pg_stat_progress_* views and the
-- functions; other roles of this database lose them unless granted them:
--   GRANT EXECUTE ON FUNCTION pg_catalog.pg_lock_status() TO reporting;
-- The set is read from pg_proc (pg_stat_get_backend_activity() is sql/017_query_text.sql's), so functions a
-- later PostgreSQL adds under the same names (pg_stat_get_backend_subxact(), _io(), _wal()) are closed too
-- when the specification runs on it. A REVOKE on a pg_catalog function lasts: pg_dump writes it (it dumps
-- what differs from pg_init_privs), so it survives dump and restore and pg_upgrade; it is per database.
DO $backends$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT pg_catalog.format('%I.%I(%s)', 'pg_catalog', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS name
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
           AND (p.proname LIKE 'pg\_stat\_get\_backend\_%' AND p.proname <> 'pg_stat_get_backend_activity'
                OR p.proname IN ('pg_stat_get_progress_info', 'pg_lock_status', 'pg_blocking_pids',
                                 'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked'))
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.name);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO pg_read_all_stats', f.name);
    END LOOP;
END
$backends$;
