"""`make bench`: the benchmarks of bench/README.md (not part of the test suite)."""
