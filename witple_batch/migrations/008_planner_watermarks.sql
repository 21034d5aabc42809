-- Where an incremental plan starts listing (shard_job/watermark.py): per input (s3://bucket/prefix),
-- the oldest hour partition that may still hold a file no run has taken. The planner lists from
-- there minus a lookback for late arrivals; a full listing (--full) walks every key regardless.
CREATE TABLE IF NOT EXISTS planner_watermarks (
    source      text PRIMARY KEY,
    resume_hour timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
