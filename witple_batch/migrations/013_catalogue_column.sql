-- CATALOGUE_VECTOR_COLUMN (witple_batch/catalogue_column.py): what the catalogue's vector column was last
-- written from for each place, so a pass writes only the places whose content vector changed since.
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS published_model text;
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS published_text_sha256 bytea;
