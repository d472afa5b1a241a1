"""Benchmarks: each times alternatives side by side in one process and writes a results page."""
