-- The main server ranks places by the raw cosine of a user's behavior_vector with the catalogue's
-- vector column; it does not centre. Our content vectors share one large direction (a mean
-- cosine of 0.98 between two places), so that cosine mostly says how typical a place's text is.
-- The catalogue column (CATALOGUE_VECTOR_COLUMN) therefore holds each content vector with the
-- space's mean direction projected out, normalised: for one user u, the raw cosine of u with such
-- a vector ranks places as the cosine of u's own projection does, so the shared direction no
-- longer decides. The direction is fixed per space: set once the catalogue is in the space (the
-- normalised mean of its content vectors), cleared only when the model or the place text version
-- changes, so a catalogue edit never shifts every published vector. Each setting has a new
-- content_direction_version; a catalogue row records the version it was written with.
ALTER TABLE vector_space ADD COLUMN IF NOT EXISTS content_direction vector(384);
ALTER TABLE vector_space ADD COLUMN IF NOT EXISTS content_direction_version integer NOT NULL DEFAULT 0;
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS published_direction_version integer;

-- v - (v . d) d, normalised (pgvector's <#> is the negated inner product)
CREATE OR REPLACE FUNCTION witple_without_direction(v vector, d vector) RETURNS vector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT l2_normalize(v + witple_scale(d, v <#> d)) $$;
