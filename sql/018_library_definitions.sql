-- rls_tenancy: what the library installed, remembered, so that the doctor sees a definition changed since.
--
-- Every function of the schema rls_tenancy and every trigger on its tables, as a digest of its
-- definition (pg_get_functiondef, pg_get_triggerdef), recorded at the end of the specification (this
-- script runs last, and every revision runs the whole specification again). A function replaced by one
-- that always passes (granted(), verified_tenant()), a SECURITY DEFINER added to a trigger function, a
-- trigger made again with WHEN (false), or one added to a library table that rewrites a row after the
-- library's checks: each guard would be gone while its name and owner stay as they were. The doctor
-- reports any difference (library_definition_changed). current_tenant_id() and current_user_id() are left
-- out: require_signed_context() writes them, and library_context_unsigned checks them.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE TABLE IF NOT EXISTS rls_tenancy.library_definitions (
    object text PRIMARY KEY,  -- 'function <signature>' or 'trigger <name> on <table>'
    digest text NOT NULL      -- md5 of its definition
);
REVOKE ALL ON rls_tenancy.library_definitions FROM PUBLIC;
COMMENT ON TABLE rls_tenancy.library_definitions IS
    'Digests of the library''s functions and triggers as installed; the doctor compares them with the catalogs.';

-- The library's functions and triggers as the catalogs hold them now.
CREATE OR REPLACE FUNCTION rls_tenancy.library_definition_digests()
RETURNS TABLE (object text, digest text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'function ' || p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))
      FROM pg_proc p
     WHERE p.pronamespace = 'rls_tenancy'::regnamespace AND p.prokind IN ('f', 'p')
       AND p.oid NOT IN ('rls_tenancy.current_tenant_id()'::regprocedure, 'rls_tenancy.current_user_id()'::regprocedure)
    UNION ALL
    SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass), md5(pg_get_triggerdef(t.oid))
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'rls_tenancy'::regnamespace AND NOT t.tgisinternal
$fn$;

CREATE OR REPLACE FUNCTION rls_tenancy.library_definition_findings()
RETURNS TABLE (severity text, check_name text, object_name text, message text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'error', 'library_definition_changed', coalesce(now.object, recorded.object),
           CASE WHEN recorded.object IS NULL
                THEN format('%s was added to the library''s schema after it was installed: a trigger there runs on the '
                            'library''s rows after its checks, a function beside them may be called for one', now.object)
                WHEN now.object IS NULL
                THEN format('%s, which the library installed, is gone', recorded.object)
                ELSE format('%s differs from the definition the library installed: a guard of the library may no longer '
                            'do what its name says', recorded.object) END,
           CASE WHEN recorded.object IS NULL AND now.object LIKE 'trigger %'
                THEN format('DROP TRIGGER %s;', substr(now.object, 9))
                ELSE 'run the library''s install scripts again: rls-tenancy migrate --reinstall, or its --sql output through psql -1, as a superuser '
                     '(idempotent; they record the definitions again at the end)' END
      FROM rls_tenancy.library_definitions recorded
      FULL JOIN rls_tenancy.library_definition_digests() now USING (object)
     WHERE recorded.digest IS DISTINCT FROM now.digest
       -- A guard's trigger gone is reported by its own check (audit_trigger_disabled, users_grant_trigger_disabled),
       -- with the same fix: one cause, one finding. Named there '<table> <trigger>'.
       AND NOT (now.object IS NULL AND recorded.object LIKE 'trigger %'
                AND EXISTS (SELECT 1
                              FROM (SELECT a.object_name FROM rls_tenancy.audit_findings() a
                                     WHERE a.check_name = 'audit_trigger_disabled'
                                    UNION ALL
                                    SELECT g.object_name FROM rls_tenancy.signing_findings() g
                                     WHERE g.check_name = 'users_grant_trigger_disabled') specific
                             WHERE recorded.object = format('trigger %s on %s', split_part(specific.object_name, ' ', 2),
                                                            split_part(specific.object_name, ' ', 1))))
$fn$;

REVOKE ALL ON FUNCTION rls_tenancy.library_definition_digests(), rls_tenancy.library_definition_findings() FROM PUBLIC;

-- Recorded last, after every script before this one has installed its definitions.
DELETE FROM rls_tenancy.library_definitions;
INSERT INTO rls_tenancy.library_definitions (object, digest) SELECT * FROM rls_tenancy.library_definition_digests();

RESET ROLE;
