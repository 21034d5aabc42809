-- Which exported model made each content vector (the sha256 of its model.onnx). With the
-- text version it says when a stored vector is exactly what embedding the place would give,
-- so shards can reuse it, and when a new model must replace it. Rows from before: NULL.
ALTER TABLE place_vectors ADD COLUMN IF NOT EXISTS content_model text;
