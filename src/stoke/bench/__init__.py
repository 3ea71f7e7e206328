"""``stoke bench``: the benchmark set, the DataLoader baseline, the decode-only ceiling, and the run."""
