-- rls_tenancy: what a session keeps, discarded before it serves another tenant.
--
-- A pooled connection's session outlives its transactions: temp tables and
-- views, WITH HOLD cursors, LISTEN, session settings, SET ROLE, advisory
-- locks, sequence values, random()'s seed and prepared statements stay until
-- the session ends.
-- Before a connection serves another tenant than its last, the binding calls
-- rls_tenancy.reset_session() in front of BEGIN, in the same round trip, and
-- commits it there, so nothing one tenant's SQL left acts in another's
-- transaction.
--
-- Prepared statements: those the driver prepared through the protocol (its
-- names are passed in `keep`) are kept while intact, so a tenant change does
-- not cost every statement its plan. SQL can only create statements with
-- from_sql = true, and can DEALLOCATE any name: every statement SQL prepared
-- goes, and if any of the driver's names is gone or was replaced, every
-- statement goes and the function returns false: the driver then forgets
-- its names too. Either way, no statement a tenant's SQL prepared survives.
--
-- DISCARD PLANS is left out on purpose: it makes every PL/pgSQL function
-- plan again (measured: +300 us on the next audited event), and plans hold
-- no tenant: the policies read the setting when they run.
--
-- SECURITY INVOKER: it only discards the caller's own session state; the
-- application and bypass roles may call it. RESET ALL comes first, so the
-- rest runs with the default search_path whatever the session had set.
-- Idempotent.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.reset_session(keep text[])
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    statement_name pg_catalog.text;
BEGIN
    RESET ALL;
    RESET ROLE;
    -- The session's own defaults again. SQL run as the app role may give its role defaults
    -- (ALTER ROLE CURRENT_USER SET) that silently change what every tenant reads or writes; the
    -- connect check refuses a session that starts with one, but behind a pooler a new server session
    -- starts unseen by it. Refused here as there: the transaction fails, its data is never changed.
    IF pg_catalog.current_setting('extra_float_digits')::pg_catalog.int4 < 1
       OR NOT pg_catalog.current_setting('array_nulls')::pg_catalog.bool
       OR pg_catalog.current_setting('gin_fuzzy_search_limit')::pg_catalog.int4 <> 0
       OR NOT pg_catalog.current_setting('standard_conforming_strings')::pg_catalog.bool
       OR pg_catalog.current_setting('transform_null_equals')::pg_catalog.bool THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = pg_catalog.format(
                'sessions of %s start with extra_float_digits = %s, array_nulls = %s, gin_fuzzy_search_limit = %s,'
                ' standard_conforming_strings = %s, transform_null_equals = %s'
                ' (a default set by ALTER ROLE or ALTER DATABASE ... SET, which the app role may run on itself:'
                ' every tenant''s values or statements would be read changed, silently; RESET it)',
                session_user, pg_catalog.current_setting('extra_float_digits'),
                pg_catalog.current_setting('array_nulls'), pg_catalog.current_setting('gin_fuzzy_search_limit'),
                pg_catalog.current_setting('standard_conforming_strings'),
                pg_catalog.current_setting('transform_null_equals'));
    END IF;
    EXECUTE 'CLOSE ALL';
    UNLISTEN *;
    PERFORM pg_catalog.pg_advisory_unlock_all();
    DISCARD TEMP;
    DISCARD SEQUENCES;
    -- random()'s seed is the session's and RESET ALL leaves it: seeded afresh from the strong random.
    PERFORM pg_catalog.setseed((('x' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()
        ::pg_catalog.text), 1, 13))::BIT(52)::BIGINT / 4503599627370496.0)::DOUBLE PRECISION);
    IF EXISTS (
        SELECT FROM pg_catalog.unnest(keep) AS kept (name)
        WHERE NOT EXISTS (
            SELECT FROM pg_catalog.pg_prepared_statements AS p
            WHERE p.name = kept.name AND NOT p.from_sql
        )
    ) THEN
        EXECUTE 'DEALLOCATE ALL';
        RETURN false;
    END IF;
    FOR statement_name IN
        SELECT p.name FROM pg_catalog.pg_prepared_statements AS p
        WHERE p.from_sql OR p.name <> ALL (keep)
    LOOP
        EXECUTE pg_catalog.format('DEALLOCATE %I', statement_name);
    END LOOP;
    RETURN true;
END
$$;

COMMENT ON FUNCTION rls_tenancy.reset_session(text[]) IS
    'Discards the session state one tenant''s transactions leave (temp objects, cursors, LISTEN, settings, role, '
    'advisory locks, sequence values, random()''s seed, prepared statements but the driver''s intact ones in keep); '
    'false when the driver must forget its statements too.';

REVOKE ALL ON FUNCTION rls_tenancy.reset_session(text[]) FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.reset_session(text[]) TO %I, %I',
                              rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$grant$;

RESET ROLE;
