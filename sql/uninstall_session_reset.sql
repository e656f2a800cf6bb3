-- rls_tenancy: remove what sql/015_session_reset.sql installed.
DROP FUNCTION IF EXISTS rls_tenancy.reset_session(text[]);
