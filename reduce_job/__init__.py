"""The reduce job: merge shard partials and apply them to PostgreSQL exactly once, then notify."""
