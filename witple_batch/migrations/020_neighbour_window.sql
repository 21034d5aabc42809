-- The place neighbours count co-occurrence within a window of each user's places, in the order they
-- first came (reduce_job/neighbours.py), so a run's counting costs its new pairs times the window,
-- however long its users' histories. `position` is that order: a new pair is numbered after every
-- pair its user had, by first action time within its run.
ALTER TABLE user_place_interactions ADD COLUMN IF NOT EXISTS position bigint;
UPDATE user_place_interactions i SET position = r.position
FROM (
    SELECT user_id, place_category, place_id,
           row_number() OVER (PARTITION BY user_id ORDER BY first_action_at NULLS FIRST, place_category, place_id)
             AS position
    FROM user_place_interactions
) r
WHERE i.position IS NULL
  AND (i.user_id, i.place_category, i.place_id) = (r.user_id, r.place_category, r.place_id);
ALTER TABLE user_place_interactions ALTER COLUMN position SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS user_place_interactions_position ON user_place_interactions (user_id, position);

-- the counts are made with a window now, not a cap on a user's places: the next maintenance counts
-- them from scratch (the lists serve meanwhile)
ALTER TABLE place_neighbours_state RENAME COLUMN user_places TO window_places;
DELETE FROM place_neighbours_state;
