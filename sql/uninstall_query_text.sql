-- rls_tenancy: give PUBLIC back what sql/017_query_text.sql took (PostgreSQL's defaults).

GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM pg_read_all_stats;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM pg_read_all_stats;

-- pg_stat_statements, where installed: PUBLIC gets back what the extension gave it when it was created
-- (pg_init_privs, or the default of a function it granted nothing on), and pg_read_all_stats loses what
-- sql/017_query_text.sql granted it beyond that. pg_stat_statements_reset() stays closed to PUBLIC, as the
-- extension creates it.
DO $statements$
DECLARE
    member record;
BEGIN
    FOR member IN
        SELECT pg_catalog.format('TABLE %I.%I', n.nspname, c.relname) AS object, 'SELECT' AS privilege,
               coalesce(i.initprivs, pg_catalog.acldefault('r', c.relowner)) AS initial
          FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                     AND d.refobjid = e.oid AND d.deptype = 'e'
                                     AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind = 'v'
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = c.oid AND i.classoid = d.classid AND i.objsubid = 0
         WHERE e.extname = 'pg_stat_statements'
        UNION ALL
        SELECT pg_catalog.format('FUNCTION %s', f.oid::pg_catalog.regprocedure), 'EXECUTE',
               coalesce(i.initprivs, pg_catalog.acldefault('f', f.proowner))
          FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                     AND d.refobjid = e.oid AND d.deptype = 'e'
                                     AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
          JOIN pg_catalog.pg_proc f ON f.oid = d.objid AND f.proname <> 'pg_stat_statements_reset'
          LEFT JOIN pg_catalog.pg_init_privs i ON i.objoid = f.oid AND i.classoid = d.classid AND i.objsubid = 0
         WHERE e.extname = 'pg_stat_statements'
    LOOP
        IF EXISTS (SELECT FROM pg_catalog.aclexplode(member.initial) a
                    WHERE a.grantee = 0 AND a.privilege_type = member.privilege) THEN
            EXECUTE pg_catalog.format('GRANT %s ON %s TO PUBLIC', member.privilege, member.object);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(member.initial) a
                        WHERE a.grantee = 'pg_read_all_stats'::pg_catalog.regrole AND a.privilege_type = member.privilege) THEN
            EXECUTE pg_catalog.format('REVOKE %s ON %s FROM pg_read_all_stats', member.privilege, member.object);
        END IF;
    END LOOP;
END
$statements$;
