"""Benchmarks: ratios measured in one run on one machine (``make bench``); never run by the tests."""
