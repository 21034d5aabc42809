"""What the shard, reduce and export jobs share: settings, logging, the embedder, the partial format."""
