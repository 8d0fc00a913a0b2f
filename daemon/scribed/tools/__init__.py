"""Developer tools outside the engine contract (the benchmark)."""
