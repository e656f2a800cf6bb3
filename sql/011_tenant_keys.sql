-- rls_tenancy: tenant-consistent foreign keys.
--
-- Foreign key checks ignore row level security: a plain reference such as
-- tasks.project_id -> projects.id lets a row of tenant A point at a row of
-- tenant B, and the error for a wrong id tells whether it exists elsewhere.
-- A composite key (tenant_id, project_id) -> projects (tenant_id, id) makes
-- such a reference impossible: the pair (A, an id of B) matches no row.
--
--   SELECT rls_tenancy.add_tenant_foreign_key('public.tasks', 'project_id', 'public.projects');
--
-- adds UNIQUE (tenant_id, id) to the referenced table when no unique
-- constraint or index covers exactly those columns, then the composite
-- foreign key. Run it as the migrations run (a member of the owner role).

DO $role$ BEGIN EXECUTE pg_catalog.format('SET ROLE %I', rls_tenancy.role_name('owner')); END $role$;

CREATE OR REPLACE FUNCTION rls_tenancy.add_tenant_foreign_key(
    source regclass, source_column name, referent regclass, referent_column name DEFAULT 'id',
    constraint_name name DEFAULT NULL, on_delete text DEFAULT 'NO ACTION'
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    action       text := upper(coalesce(on_delete, 'NO ACTION'));
    tenant_att   int2 := (SELECT attnum FROM pg_attribute
                           WHERE attrelid = referent AND attname = 'tenant_id' AND NOT attisdropped);
    referent_att int2 := (SELECT attnum FROM pg_attribute
                           WHERE attrelid = referent AND attname = referent_column AND NOT attisdropped);
BEGIN
    IF source IS NULL OR referent IS NULL OR source_column IS NULL OR referent_column IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: add_tenant_foreign_key needs a source table and column and a referenced table'
            USING ERRCODE = '22004';
    END IF;
    IF action NOT IN ('NO ACTION', 'RESTRICT', 'CASCADE') THEN
        RAISE EXCEPTION 'rls_tenancy: on_delete must be NO ACTION, RESTRICT or CASCADE, not %', on_delete
            USING ERRCODE = '22023', HINT = 'SET NULL would null tenant_id as well.';
    END IF;
    IF tenant_att IS NULL OR referent_att IS NULL THEN
        RAISE EXCEPTION 'rls_tenancy: % needs the columns tenant_id and %', referent, referent_column
            USING ERRCODE = '42703';
    END IF;
    -- The referenced pair must be unique; add the constraint unless an index already makes it so.
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = referent AND i.indisunique AND i.indimmediate
                      AND i.indpred IS NULL AND i.indexprs IS NULL
                      AND i.indnkeyatts = 2
                      AND ARRAY[i.indkey[0], i.indkey[1]] @> ARRAY[tenant_att, referent_att]) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (tenant_id, %I)', referent,
                       left((SELECT relname FROM pg_class WHERE oid = referent) || '_tenant_id_' || referent_column || '_key', 63),
                       referent_column);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) REFERENCES %s (tenant_id, %I) ON DELETE %s',
                   source,
                   coalesce(constraint_name,
                            left((SELECT relname FROM pg_class WHERE oid = source) || '_' || source_column || '_fkey', 63)),
                   source_column, referent, referent_column, action);
END
$fn$;
COMMENT ON FUNCTION rls_tenancy.add_tenant_foreign_key(regclass, name, regclass, name, name, text) IS
    'Add FOREIGN KEY (tenant_id, col) REFERENCES referent (tenant_id, id), with the unique key it needs.';
REVOKE ALL ON FUNCTION rls_tenancy.add_tenant_foreign_key(regclass, name, regclass, name, name, text) FROM PUBLIC;

RESET ROLE;
