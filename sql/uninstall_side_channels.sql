-- rls_tenancy: give PUBLIC back what sql/014_side_channels.sql took (PostgreSQL's defaults).

GRANT EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) FROM pg_signal_backend;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) FROM pg_signal_backend;

GRANT EXECUTE ON FUNCTION pg_catalog.lo_creat(integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.lo_from_bytea(oid, bytea) TO PUBLIC;

-- The per-backend statistics and lock functions: PUBLIC gets back what PostgreSQL gave it (pg_init_privs,
-- or a function's default), pg_read_all_stats loses what sql/014_side_channels.sql granted it beyond that.
DO $backends$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT pg_catalog.format('%I.%I(%s)', 'pg_catalog', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS name,
               coalesce(i.initprivs, pg_catalog.acldefault('f', p.proowner)) AS initial
          FROM pg_catalog.pg_proc p
          LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = p.oid AND i.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                              AND i.objsubid = 0
         WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
           AND (p.proname LIKE 'pg\_stat\_get\_backend\_%' AND p.proname <> 'pg_stat_get_backend_activity'
                OR p.proname IN ('pg_stat_get_progress_info', 'pg_lock_status', 'pg_blocking_pids',
                                 'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked'))
    LOOP
        IF EXISTS (SELECT FROM pg_catalog.aclexplode(f.initial) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.name);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(f.initial) a
                        WHERE a.grantee = 'pg_read_all_stats'::pg_catalog.regrole AND a.privilege_type = 'EXECUTE') THEN
            EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM pg_read_all_stats', f.name);
        END IF;
    END LOOP;
END
$backends$;
