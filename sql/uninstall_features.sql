-- rls_tenancy: remove the feature flag overrides (the downgrade of
-- 010_features.sql). Every stored override is lost; the features declared in
-- code then fall back to their rollout and defaults.

DROP TABLE IF EXISTS rls_tenancy.feature_overrides;
DROP FUNCTION IF EXISTS rls_tenancy.override_write_granted();
DROP FUNCTION IF EXISTS rls_tenancy.override_set_by();
DROP FUNCTION IF EXISTS rls_tenancy.override_writer_trusted(oid);
