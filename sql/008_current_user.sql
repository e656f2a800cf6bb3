-- rls_tenancy: the user a transaction acts for.
--
-- Set beside app.current_tenant at the start of every transaction
-- (set_config('app.current_user_id', $1, true)); unset or empty means no user.
-- Nothing filters rows by it: it attributes what the transaction does, for
-- example the audit events that rls_tenancy.log_event() writes, which take
-- the user from here rather than from their caller.

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.current_user_id()
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(pg_catalog.current_setting('app.current_user_id', true), '')::bigint;

COMMENT ON FUNCTION rls_tenancy.current_user_id() IS
    'User bound to the current transaction (app.current_user_id), NULL when none.';

REVOKE ALL ON FUNCTION rls_tenancy.current_user_id() FROM PUBLIC;
DO $grant$
BEGIN
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION rls_tenancy.current_user_id() TO %I, %I',
                              rls_tenancy.role_name('app'), rls_tenancy.role_name('bypass'));
END
$grant$;

RESET ROLE;
