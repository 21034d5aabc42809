-- 1. The planner's watermark (008) reads the partition hour of claimed keys in SQL: a key with
--    an impossible date (month=13, Feb 30) must give NULL, not fail every plan. Such keys are
--    found by a full listing only, as in Python (witple_batch.watermark.partition_hour).
--
-- 2. SECURITY DEFINER functions run with their owner's rights; a caller's temporary tables must
--    not shadow ours inside them, so their search_path is fixed with pg_temp last.

CREATE OR REPLACE FUNCTION witple_partition_hour(p_key text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[] := regexp_match(p_key, 'year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/hour=(\d{1,2})/');
BEGIN
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN make_timestamptz(m[1]::int, m[2]::int, m[3]::int, m[4]::int, 0, 0, 'UTC');
EXCEPTION WHEN datetime_field_overflow OR invalid_parameter_value OR numeric_value_out_of_range THEN
    RETURN NULL;
END $$;

DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION witple_fail_run(text, text) SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION witple_quarantine_file(text, text, bigint, text, text) SET search_path = %s', path);
    EXECUTE format(
        'ALTER FUNCTION witple_record_notice(text, text, text, integer, text) SET search_path = %s', path
    );
    EXECUTE format('ALTER FUNCTION witple_partition_hour(text) SET search_path = %s', path);
END $$;
