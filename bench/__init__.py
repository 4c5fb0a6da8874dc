"""Benchmarks: measured side by side in one run, printed as tables; never run as tests."""
