"""Benchmarks run by ``proctor bench NAME``: each compares side by side in one run and prints one
JSON object (figures and ratios) as its last line."""
