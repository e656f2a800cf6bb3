-- rls_tenancy: roles and the library schema.
--
-- Creates the three roles the library relies on (or checks roles that exist
-- already, refusing any unfit for their purpose rather than altering them)
-- and records their names in rls_tenancy.roles so the other scripts can find
-- them. Idempotent: running it again with the same names changes nothing.
-- Every function call is qualified with pg_catalog: the script runs as a
-- superuser, and an unqualified call could resolve to a function someone
-- planted in a schema on the search_path.
--
-- Role names default to rls_owner / rls_app / rls_admin. To choose others,
-- set these before running the script (psql shown; the migrations do the same
-- with set_config):
--   SET rls_tenancy.owner_role  = 'acme_owner';
--   SET rls_tenancy.app_role    = 'acme_app';
--   SET rls_tenancy.bypass_role = 'acme_admin';
--
-- Needs a superuser (BYPASSRLS can only be granted by one). Passwords are not
-- set here: ALTER ROLE rls_app PASSWORD '...' is the DBA's job.

DO $roles$
DECLARE
    owner_role  text := coalesce(nullif(pg_catalog.current_setting('rls_tenancy.owner_role', true), ''), 'rls_owner');
    app_role    text := coalesce(nullif(pg_catalog.current_setting('rls_tenancy.app_role', true), ''), 'rls_app');
    bypass_role text := coalesce(nullif(pg_catalog.current_setting('rls_tenancy.bypass_role', true), ''), 'rls_admin');
    recorded    record;
    offender    text;
BEGIN
    IF owner_role = app_role OR owner_role = bypass_role OR app_role = bypass_role THEN
        RAISE EXCEPTION 'rls_tenancy: owner, app and bypass roles must be three different roles (got %, %, %)',
            owner_role, app_role, bypass_role;
    END IF;
    IF current_user IN (app_role, bypass_role) THEN
        RAISE EXCEPTION 'rls_tenancy: do not install as %; run migrations as a superuser or DBA role', current_user
            USING HINT = 'The application and bypass roles must never own or create schema objects.';
    END IF;

    -- A schema installed earlier with other names must not be silently re-pointed.
    IF pg_catalog.to_regclass('rls_tenancy.roles') IS NOT NULL THEN
        FOR recorded IN SELECT purpose, role_name FROM rls_tenancy.roles LOOP
            IF (recorded.purpose = 'owner'  AND recorded.role_name <> owner_role)
            OR (recorded.purpose = 'app'    AND recorded.role_name <> app_role)
            OR (recorded.purpose = 'bypass' AND recorded.role_name <> bypass_role) THEN
                RAISE EXCEPTION 'rls_tenancy: this database is installed with % role %, not %',
                    recorded.purpose, recorded.role_name,
                    CASE recorded.purpose WHEN 'owner' THEN owner_role WHEN 'app' THEN app_role ELSE bypass_role END
                    USING HINT = 'Set rls_tenancy.*_role to the recorded names, or rename the roles with ALTER ROLE.';
            END IF;
        END LOOP;
    END IF;

    -- Roles that exist already are used as they are, or refused: the script
    -- never changes the attributes of a role it did not create.
    -- Owner: owns the library objects and the tenant tables; never logs in.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = owner_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', owner_role);
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = owner_role
                  AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole)) THEN
        RAISE EXCEPTION 'rls_tenancy: existing role % cannot be the owner role: it can log in or escape row level security', owner_role
            USING HINT = pg_catalog.format('Choose another name, or ALTER ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE;', owner_role);
    END IF;

    -- Application: logs in, subject to every policy.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = app_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT', app_role);
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = app_role
                  AND (NOT rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)) THEN
        RAISE EXCEPTION 'rls_tenancy: existing role % cannot be the application role: it cannot log in, or it can escape row level security', app_role
            USING HINT = pg_catalog.format('Choose another name, or ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;', app_role);
    END IF;

    -- Bypass: logs in, ignores row level security; admin paths only.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = bypass_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT', bypass_role);
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = bypass_role
                  AND (NOT rolcanlogin OR rolsuper OR NOT rolbypassrls)) THEN
        RAISE EXCEPTION 'rls_tenancy: existing role % cannot be the bypass role: it needs LOGIN and BYPASSRLS and must not be a superuser', bypass_role
            USING HINT = pg_catalog.format('Choose another name, or ALTER ROLE %I LOGIN NOSUPERUSER BYPASSRLS;', bypass_role);
    END IF;

    -- The application role must not be able to become a role that escapes RLS.
    SELECT pg_catalog.string_agg(r.rolname, ', ') INTO offender
      FROM pg_catalog.pg_roles r
     WHERE r.rolname <> app_role
       AND (r.rolsuper OR r.rolbypassrls OR r.rolname = owner_role)
       AND pg_catalog.pg_has_role(app_role, r.oid, 'MEMBER');
    IF offender IS NOT NULL THEN
        RAISE EXCEPTION 'rls_tenancy: application role % is a member of % and could escape row level security',
            app_role, offender
            USING HINT = pg_catalog.format('REVOKE %s FROM %I;', offender, app_role);
    END IF;

    -- Whoever installs must be able to act as the owner (SET ROLE, ALTER ... OWNER).
    IF NOT pg_catalog.pg_has_role(current_user, owner_role, 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT %I TO %I', owner_role, current_user);
    END IF;

    EXECUTE pg_catalog.format('CREATE SCHEMA IF NOT EXISTS rls_tenancy AUTHORIZATION %I', owner_role);
    EXECUTE pg_catalog.format('ALTER SCHEMA rls_tenancy OWNER TO %I', owner_role);
    REVOKE ALL ON SCHEMA rls_tenancy FROM PUBLIC;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA rls_tenancy TO %I, %I', app_role, bypass_role);

    CREATE TABLE IF NOT EXISTS rls_tenancy.roles (
        purpose   text PRIMARY KEY CHECK (purpose IN ('owner', 'app', 'bypass')),
        role_name name NOT NULL UNIQUE
    );
    COMMENT ON TABLE rls_tenancy.roles IS
        'Which database roles rls_tenancy uses: owner (owns tenant tables), app (subject to RLS), bypass (BYPASSRLS, admin paths).';
    EXECUTE pg_catalog.format('ALTER TABLE rls_tenancy.roles OWNER TO %I', owner_role);
    REVOKE ALL ON rls_tenancy.roles FROM PUBLIC;
    INSERT INTO rls_tenancy.roles (purpose, role_name)
    VALUES ('owner', owner_role), ('app', app_role), ('bypass', bypass_role)
    ON CONFLICT (purpose) DO NOTHING;
END
$roles$;

-- Objects below are created by the owner role, so it owns them.
DO $role$
BEGIN
    EXECUTE pg_catalog.format('SET ROLE %I', (SELECT role_name FROM rls_tenancy.roles WHERE purpose = 'owner'));
END
$role$;

-- The one place the other scripts read role names from.
CREATE OR REPLACE FUNCTION rls_tenancy.role_name(purpose text)
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT role_name FROM rls_tenancy.roles WHERE roles.purpose = role_name.purpose $$;
REVOKE ALL ON FUNCTION rls_tenancy.role_name(text) FROM PUBLIC;
COMMENT ON FUNCTION rls_tenancy.role_name(text) IS
    'Name of the role configured for a purpose: owner, app or bypass.';

RESET ROLE;
