"""`make bench`: the benchmarks of docs/benchmarks.md (not part of the test suite)."""
