-- Least privilege for the shard children: they read stored content vectors, the catalogue and
-- their run's state, and make exactly three moves through SECURITY DEFINER functions (quarantine
-- a file, fail their run, record its notice). They never write a table. The reduce keeps the
-- writer's DATABASE_URL; the coordinator (planner) needs the writer too (it claims files).
--
-- Run as an administrator in the application's database after `python -m reduce_job migrate`
-- (and again after a later migration adds a table the shards read); it is idempotent:
--   psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/sql/roles.sql
-- then give the shards a login in the group and put its URL in the shard job's secret:
--   CREATE ROLE witple_shard LOGIN PASSWORD '...' IN ROLE witple_shard_reader;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'witple_shard_reader') THEN
        CREATE ROLE witple_shard_reader NOLOGIN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO witple_shard_reader', current_schema());
    -- the catalogue, when the main server's table is here (CATALOGUE_SOURCE=auto)
    IF to_regclass('place_recommendations') IS NOT NULL THEN
        GRANT SELECT ON place_recommendations TO witple_shard_reader;
    END IF;
END $$;

GRANT SELECT ON place_vectors, batch_runs, schema_migrations TO witple_shard_reader;  -- the last for `check`

-- SECURITY DEFINER functions run with their owner's rights: nobody but the jobs may call them
REVOKE EXECUTE ON FUNCTION
    witple_quarantine_file(text, text, bigint, text, text),
    witple_fail_run(text, text),
    witple_record_notice(text, text, text, integer, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    witple_quarantine_file(text, text, bigint, text, text),
    witple_fail_run(text, text),
    witple_record_notice(text, text, text, integer, text)
TO witple_shard_reader;
