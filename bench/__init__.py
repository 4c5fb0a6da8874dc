"""Benchmarks: measured side by side in one run, printed as tables; never timed by the tests."""
