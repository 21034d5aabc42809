-- The catalogue is embedded when it changes, not when a run first meets a place (coordinator/sync.py).
-- A place row records which catalogue fields its content vector was made from, so the sync finds
-- an edited row by one comparison in SQL; witple_batch.place_text.CatalogueEntry.sha256 computes
-- the same fingerprint in Python (tests/test_catalogue_sync.py checks they agree).
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS catalogue_sha256 bytea;  -- NULL: no catalogue row

CREATE OR REPLACE FUNCTION witple_catalogue_sha256(
    p_name text, p_overview text, p_region text, p_city text, p_category text
) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(concat_ws(chr(31), coalesce(p_name, ''), coalesce(left(p_overview, 4000), ''),
                                       coalesce(p_region, ''), coalesce(p_city, ''), coalesce(p_category, '')), 'UTF8'))
$$;
