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

-- pg_stat_statements, where the extension is installed in this database (in
-- whichever schema): its view, and pg_stat_statements(boolean) under it,
-- show a role the text of every statement its role ran, that is every
-- tenant's. They are normalised, except utility statements: an engine bound
-- with set_local=True sends the tenant, the user and the signed context's
-- proof as literals of SET LOCAL statements, kept verbatim, and a proof
-- names its backend, where SQL run for another tenant would replay it. The
-- extension grants them to PUBLIC. This revokes SELECT on its views and
-- EXECUTE on its functions from PUBLIC, and grants the views and the
-- functions behind them to pg_read_all_stats (pg_monitor keeps them);
-- pg_stat_statements_reset() stays closed to pg_read_all_stats, as the
-- extension itself has it. An extension created after this ran is reported
-- by rls_tenancy.findings() (query_text_readable) until this runs again or
-- its fix is applied.
DO $statements$
DECLARE
    member record;
BEGIN
    FOR member IN
        SELECT pg_catalog.format('TABLE %I.%I', n.nspname, c.relname) AS object, 'SELECT' AS privilege, true AS monitored
          FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                     AND d.refobjid = e.oid AND d.deptype = 'e'
                                     AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind = 'v'
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE e.extname = 'pg_stat_statements'
        UNION ALL
        SELECT pg_catalog.format('FUNCTION %s', f.oid::pg_catalog.regprocedure), 'EXECUTE',
               f.proname <> 'pg_stat_statements_reset'
          FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                     AND d.refobjid = e.oid AND d.deptype = 'e'
                                     AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
          JOIN pg_catalog.pg_proc f ON f.oid = d.objid
         WHERE e.extname = 'pg_stat_statements'
    LOOP
        EXECUTE pg_catalog.format('REVOKE %s ON %s FROM PUBLIC', member.privilege, member.object);
        IF member.monitored THEN
            EXECUTE pg_catalog.format('GRANT %s ON %s TO pg_read_all_stats', member.privilege, member.object);
        END IF;
    END LOOP;
END
$statements$;
