"""Real data (fetch, IDX, checksums) and in-memory tensor datasets."""
