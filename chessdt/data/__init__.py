"""Data: PGN archives in, prepared token shards on disk, training batches out."""
