"""Benchmarks for instarec (run them as modules, e.g. ``python -m benchmarks.past_recovery``)."""
