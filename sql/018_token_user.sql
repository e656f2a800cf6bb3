-- rls_tenancy: a token acts for the user bound when it is issued, and for no other.
--
-- A token issued for a user acts as that user in every later request. Before
-- this, issue_token() took the user from its argument, so SQL run for one
-- user (injected, in a signed context too) could issue a token for another
-- user of its tenant, an administrator say, and act as them from then on.
-- Now the token's user must be the user bound to the transaction (no user:
-- a token of no user): SQL cannot choose whom its token acts for, and in a
-- signed context (sql/016_signed_context.sql) it cannot choose the bound
-- user either. The library's issue_token() binds the user it names for
-- that one statement: the application, which holds the key, decides.
--
-- What it leaves to the application: which scopes a token carries. A request
-- acting for no user (a token of no user) may issue another token of no
-- user, with scopes of its choice; the application's own checks decide who
-- may issue tokens at all.
--
-- Idempotent; replaces the definition in sql/007_tokens.sql (the downgrade of
-- migration rls_tenancy_0012 runs that script again).

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.issue_token(
    name text, token_hash bytea, scopes text[], user_id bigint DEFAULT NULL, expires_at timestamptz DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant  bigint := rls_tenancy.current_tenant_id();
    bound   bigint := rls_tenancy.current_user_id();
    issued  bigint;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: issue_token needs a tenant bound to the transaction' USING ERRCODE = '42501';
    END IF;
    IF issue_token.user_id IS DISTINCT FROM bound THEN
        RAISE EXCEPTION 'rls_tenancy: a token for user % is issued only while that user is bound (bound now: %)',
                        coalesce(issue_token.user_id::text, 'none'), coalesce(bound::text, 'none')
            USING ERRCODE = '42501',
                  HINT = 'rls_tenancy.tokens.issue_token() binds the user it is given for the one statement.';
    END IF;
    INSERT INTO rls_tenancy.api_tokens (tenant_id, user_id, name, token_hash, scopes, expires_at)
    VALUES (tenant, bound, issue_token.name, issue_token.token_hash, issue_token.scopes, issue_token.expires_at)
    RETURNING id INTO issued;
    RETURN issued;
END
$fn$;

RESET ROLE;
