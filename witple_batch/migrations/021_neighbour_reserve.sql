-- What lets a run keep a place's list from the list itself instead of reading all the place's
-- counts (reduce_job/neighbours.py): the places that came next when the list was last written, and
-- upper bounds on the places off it. Keys are a list's order: similarity key users(p, q) / sqrt(users(q))
-- descending, then number ascending.
CREATE TABLE IF NOT EXISTS place_neighbour_reserve (
    place bigint NOT NULL,
    other bigint NOT NULL,
    users integer NOT NULL,  -- users(place, other): a run that moves it writes the list again
    PRIMARY KEY (place, other)
);

-- a row for each list written since: with none, a run reads all the place's counts
CREATE TABLE IF NOT EXISTS place_neighbour_bounds (
    place       bigint PRIMARY KEY,
    next_key    double precision,  -- at least the key of any place off the list; NULL: there is none
    next_other  bigint,
    floor_key   double precision,  -- at least the key of any place on neither list nor reserve; NULL: none
    floor_other bigint
);

-- lists made before there were bounds are made again from their counts, and serve until then
INSERT INTO place_neighbours_due (place) SELECT DISTINCT place FROM place_neighbours ON CONFLICT DO NOTHING;
