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
--
-- Also which of PostgreSQL's built-in functions (oid under 16384, from initdb) are LEAKPROOF, as 'leakproof
-- <oid>' with the server's major version as digest: the planner runs a LEAKPROOF function on rows before the
-- policies filter them, and a superuser may mark any built-in one so (ALTER FUNCTION pg_catalog.to_date(text,
-- text) LEAKPROOF, whose error quotes the text it fails on). The doctor reports a built-in LEAKPROOF that is not
-- in this record. Recorded once per major version: a reinstall keeps the record, so that a built-in marked since
-- is not taken for one PostgreSQL ships; one marked before the first install is not caught.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE TABLE IF NOT EXISTS rls_tenancy.library_definitions (
    object text PRIMARY KEY,  -- 'function <signature>' or 'trigger <name> on <table>'
    digest text NOT NULL      -- md5 of its definition
);
-- For a function: the roles other than its owner that may EXECUTE it as installed ('PUBLIC' for every role).
ALTER TABLE rls_tenancy.library_definitions ADD COLUMN IF NOT EXISTS executors text[];
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
      FROM (SELECT d.* FROM rls_tenancy.library_definitions d WHERE d.object NOT LIKE 'leakproof %') recorded
      FULL JOIN rls_tenancy.library_definition_digests() now USING (object)
     WHERE recorded.digest IS DISTINCT FROM now.digest
       -- A guard's trigger gone is reported by its own check (audit_trigger_disabled, users_ or overrides_grant_trigger_disabled),
       -- with the same fix: one cause, one finding. Named there '<table> <trigger>'.
       AND NOT (now.object IS NULL AND recorded.object LIKE 'trigger %'
                AND EXISTS (SELECT 1
                              FROM (SELECT a.object_name FROM rls_tenancy.audit_findings() a
                                     WHERE a.check_name = 'audit_trigger_disabled'
                                    UNION ALL
                                    SELECT g.object_name FROM rls_tenancy.signing_findings() g
                                     WHERE g.check_name IN ('users_grant_trigger_disabled',
                                                            'overrides_grant_trigger_disabled')) specific
                             WHERE recorded.object = format('trigger %s on %s', split_part(specific.object_name, ' ', 2),
                                                            split_part(specific.object_name, ' ', 1))))
    UNION ALL
    -- EXECUTE on one of the library's functions granted since it was installed to PUBLIC or to a role the
    -- application role can become: the bypass role's functions (audit_chain_heads(), purge_audit_log(), ...) run
    -- as the owner role across tenants. An error for a SECURITY DEFINER one, else a warning (it runs with the
    -- caller's rights). A REVOKE, per grantor, takes it back; the install scripts would not.
    SELECT CASE WHEN f.prosecdef THEN 'error' ELSE 'warning' END, 'library_function_granted',
           format('%s', f.oid::regprocedure),
           format('%s may run the library''s %sfunction %s, which the library did not grant them%s',
                  string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, ', '),
                  CASE WHEN f.prosecdef THEN 'SECURITY DEFINER ' ELSE '' END, f.oid::regprocedure,
                  CASE WHEN f.prosecdef
                       THEN format(': it runs as the owner role %I, and what it reads or changes across tenants (the '
                                   'bypass role''s functions: every tenant''s audit chains, the purge of every tenant''s '
                                   'events) is then within reach of SQL run for any tenant', pg_get_userbyid(f.proowner))
                       ELSE ' (it runs with the caller''s rights)' END),
           E'\x1e' || jsonb_build_array('EXECUTE', format('FUNCTION %s', f.oid::regprocedure),
                                        coalesce(f.proacl, acldefault('f', f.proowner)), f.proowner, ARRAY['EXECUTE'],
                                        array_agg(DISTINCT a.grantee), false,
                                        format('REVOKE EXECUTE ON FUNCTION %s FROM %s;', f.oid::regprocedure,
                                               string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                                        ELSE quote_ident(pg_get_userbyid(a.grantee)) END, ', ')))::text
           || E'\x1e'
      FROM rls_tenancy.library_definitions recorded
      JOIN pg_proc f ON recorded.object = 'function ' || f.oid::regprocedure::text
      CROSS JOIN LATERAL aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a
     WHERE recorded.executors IS NOT NULL AND f.pronamespace = 'rls_tenancy'::regnamespace
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
       AND (a.grantee = 0 OR pg_has_role(rls_tenancy.role_name('app'), a.grantee, 'MEMBER'))
       AND NOT (CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END = ANY (recorded.executors))
     GROUP BY f.oid, f.prosecdef, f.proacl, f.proowner
    UNION ALL
    -- A built-in function marked LEAKPROOF since the library recorded them (only where it did, for this major
    -- version: otherwise there is nothing to compare with).
    SELECT 'error', 'leakproof_function', format('%s', f.oid::regprocedure),
           format('built-in function %s is marked LEAKPROOF, which PostgreSQL does not ship it as, and the application '
                  'role may call it: PostgreSQL may run it on rows before the policies filter them, so whatever it '
                  'lets out (an error quoting its argument, say) shows other tenants'' rows', f.oid::regprocedure),
           format('ALTER FUNCTION %s NOT LEAKPROOF;', f.oid::regprocedure)
      FROM pg_proc f
     WHERE f.proleakproof AND f.oid < 16384
       AND EXISTS (SELECT 1 FROM rls_tenancy.library_definitions d
                    WHERE d.object LIKE 'leakproof %' AND d.digest = (current_setting('server_version_num')::integer / 10000)::text)
       AND NOT EXISTS (SELECT 1 FROM rls_tenancy.library_definitions d WHERE d.object = 'leakproof ' || f.oid::text)
       AND EXISTS (SELECT 1 FROM pg_roles r
                    WHERE pg_has_role(rls_tenancy.role_name('app'), r.oid, 'MEMBER')
                      AND has_function_privilege(r.oid, f.oid, 'EXECUTE'))
$fn$;

REVOKE ALL ON FUNCTION rls_tenancy.library_definition_digests(), rls_tenancy.library_definition_findings() FROM PUBLIC;

-- Default privileges of the owner role (database-wide, or in the library's schema) that give EXECUTE on the
-- functions it creates to the application role or a role it can become: every function the scripts created
-- just now, the bypass role's SECURITY DEFINER ones among them (audit_chain_heads(), purge_audit_log()), is the
-- app's to run, and the catalog cannot tell those grants from the scripts' own; recorded below, they would be
-- the library's. Refused instead (PUBLIC's EXECUTE, every function's default, the scripts revoke one by one).
DO $default_privileges$
DECLARE
    granted  text;
    grantees text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I%s REVOKE EXECUTE ON FUNCTIONS FROM %I;',
                                                            pg_catalog.pg_get_userbyid(d.defaclrole),
                                                            CASE WHEN d.defaclnamespace <> 0 THEN ' IN SCHEMA rls_tenancy' ELSE '' END,
                                                            pg_catalog.pg_get_userbyid(a.grantee)), ' '),
           pg_catalog.string_agg(DISTINCT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)), ', ')
      INTO granted, grantees
      FROM pg_catalog.pg_default_acl d CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
     WHERE d.defaclobjtype = 'f' AND a.privilege_type = 'EXECUTE'
       AND d.defaclrole = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = rls_tenancy.role_name('owner'))
       AND d.defaclnamespace IN (0, 'rls_tenancy'::pg_catalog.regnamespace)
       AND a.grantee <> 0 AND a.grantee <> d.defaclrole
       AND pg_catalog.pg_has_role(rls_tenancy.role_name('app'), a.grantee, 'MEMBER');
    IF granted IS NOT NULL THEN
        RAISE EXCEPTION 'rls_tenancy: default privileges give the application role EXECUTE on every function the owner role '
                        'creates, the library''s own among them (its bypass functions included): not installed'
            USING HINT = 'as a superuser: ' || granted || ' and, where the library is installed already, REVOKE EXECUTE ON '
                         'ALL FUNCTIONS IN SCHEMA rls_tenancy FROM ' || grantees || '; then install again '
                         '(rls-tenancy migrate --reinstall), which grants again what the library grants';
    END IF;
END
$default_privileges$;

-- Recorded last, after every script before this one has installed its definitions and made its grants.
-- (The built-in LEAKPROOF functions are kept: recorded once per major version, below.)
DELETE FROM rls_tenancy.library_definitions WHERE object NOT LIKE 'leakproof %';
-- With, for each function, who besides its owner may EXECUTE it ('PUBLIC' for every role): a grant made since
-- is library_function_granted's. A grant present when the scripts run again is recorded as the library's:
-- revoke one the doctor reported before running them again.
INSERT INTO rls_tenancy.library_definitions (object, digest, executors)
SELECT d.object, d.digest,
       (SELECT ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END
                       FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                      WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
                      ORDER BY 1)
          FROM pg_catalog.pg_proc p
         WHERE d.object = 'function ' || p.oid::pg_catalog.regprocedure::text
           AND p.pronamespace = 'rls_tenancy'::pg_catalog.regnamespace)
  FROM rls_tenancy.library_definition_digests() d;

-- The built-in LEAKPROOF functions, once per major version (a record of another, from before a pg_upgrade,
-- is replaced).
DELETE FROM rls_tenancy.library_definitions
 WHERE object LIKE 'leakproof %'
   AND digest <> (pg_catalog.current_setting('server_version_num')::integer / 10000)::text;
INSERT INTO rls_tenancy.library_definitions (object, digest)
SELECT 'leakproof ' || p.oid::text, (pg_catalog.current_setting('server_version_num')::integer / 10000)::text
  FROM pg_catalog.pg_proc p
 WHERE p.proleakproof AND p.oid < 16384
   AND NOT EXISTS (SELECT 1 FROM rls_tenancy.library_definitions d WHERE d.object LIKE 'leakproof %');

RESET ROLE;
