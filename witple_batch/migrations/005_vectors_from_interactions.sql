-- Vectors are derived, not accumulated: a user's vector is the weighted mean of the current
-- content vectors of the places in its interactions, a place's behaviour vector the weighted
-- mean of its users' vectors. Weights come from the counts and ACTION_WEIGHTS when vectors are
-- computed, so the stored per-pair weight goes; vector_space says which model, place text
-- version and weights the stored vectors were made with (a batch with others recomputes all).
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS content_text_sha256 bytea;  -- the text the vector embeds
ALTER TABLE user_place_interactions DROP COLUMN IF EXISTS vector_weight;

CREATE TABLE IF NOT EXISTS vector_space (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    content_model      text NOT NULL,
    place_text_version text NOT NULL,
    action_weights     jsonb NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- pgvector multiplies vectors element by element only; a scalar becomes a filled vector.
CREATE OR REPLACE FUNCTION witple_scale(v vector, s double precision) RETURNS vector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT v * array_fill(s::real, ARRAY[vector_dims(v)])::vector $$;
CREATE OR REPLACE FUNCTION witple_zero() RETURNS vector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT array_fill(0::real, ARRAY[384])::vector $$;

-- Most batch updates leave content_vector (the only indexed vector) unchanged: room on the page
-- lets them be HOT updates, which skip the HNSW index entirely.
ALTER TABLE place_vectors SET (fillfactor = 50);
ALTER TABLE user_behavior_vectors SET (fillfactor = 80);
