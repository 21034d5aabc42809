-- The place neighbours count co-occurrence within a window of each user's places, in the order they
-- came (reduce_job/neighbours.py), so a run's counting costs its new pairs times the window, however
-- long its users' histories. `position` is that order: a new pair is numbered after every pair its
-- user had, by first action time within its run. Rows from before this migration keep NULL until
-- their user's next run numbers them below 1, by first action time (upsert.POSITIONS): no rewrite
-- of the table here, and only ADD COLUMN's brief lock.
ALTER TABLE user_place_interactions ADD COLUMN IF NOT EXISTS position bigint;
CREATE UNIQUE INDEX IF NOT EXISTS user_place_interactions_position ON user_place_interactions (user_id, position);

-- the counts are made with a window now, not a cap on a user's places: the next maintenance counts
-- them from scratch, and the lists made before serve until their turn to be made again comes
ALTER TABLE place_neighbours_state RENAME COLUMN user_places TO window_places;
DELETE FROM place_neighbours_state;
